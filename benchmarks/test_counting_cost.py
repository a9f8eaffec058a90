"""What counting costs: valgrind per model and per batch size, and what perf's window leaks.

    pytest benchmarks/test_counting_cost.py                      # time them
    pytest benchmarks/test_counting_cost.py --benchmark-disable  # run each once

A tiny model (see ``tiny_models`` in conftest.py) keeps a round to seconds; with it the cost
is mostly valgrind's start and the imports, which is what counting several batch sizes in
one worker saves (one batch size alone is the "one worker per batch size" case divided by
two). ``extra_info`` keeps the counted figures beside the times.
"""

import shutil

import pytest

from quantlab import counters
from quantlab.counters import perf, valgrind

BATCH_SIZES = (1, 64)
ROUNDS = 3

needs_valgrind = pytest.mark.skipif(not valgrind.available(), reason="valgrind is not installed")


@needs_valgrind
@pytest.mark.parametrize("workers", ["one worker per batch size", "one worker for all"])
def test_counting_two_batch_sizes_of_a_tiny_model_under_valgrind(benchmark, tiny_models, workers):
    model = tiny_models["int8"]

    def count():
        if workers == "one worker for all":
            return counters.measure_many(model, BATCH_SIZES, backend="valgrind")
        return {b: counters.measure(model, b, backend="valgrind") for b in BATCH_SIZES}

    results = benchmark.pedantic(count, rounds=ROUNDS, iterations=1)
    assert sorted(results) == sorted(BATCH_SIZES)
    benchmark.extra_info["workers"] = workers
    benchmark.extra_info["instructions_per_inference"] = {
        b: r["per_inference"]["instructions"] for b, r in results.items()}


@pytest.mark.skipif(shutil.which("perf") is None, reason="perf is not installed")
def test_an_empty_perf_window_around_a_tiny_model(benchmark, tiny_models):
    # Software events count everywhere; what the empty window still counts (task-clock, ms)
    # is the control round trip, against hundreds of ms for loading Python and LiteRT.
    events = ("task-clock", "page-faults", "context-switches")
    result = benchmark.pedantic(perf.count, args=(tiny_models["float32"], 1),
                                kwargs={"iterations": 0, "warmup": 0, "events": events},
                                rounds=ROUNDS, iterations=1)
    benchmark.extra_info["empty_window_task_clock_ms"] = result["totals"]["task-clock"]
