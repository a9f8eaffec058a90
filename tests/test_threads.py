"""Thread counts: the threads a runtime really ran on, counted from the kernel's per-thread
run time on real runtimes, and the report's thread table and pick changes from hand-made
results."""

import numpy as np
import pytest

from quantlab import busy_threads, report, runtime
from test_deployment import dense_onnx, dense_tflite


def test_busy_counts_threads_that_ran_a_fifth_as_long_as_the_busiest():
    before = {"1": 100, "2": 100, "3": 100, "4": 0}
    after = {"1": 1100, "2": 500, "3": 250, "4": 0, "5": 300}  # grew 1000, 400, 150, 0, 300
    assert busy_threads.busy(before, after) == 3  # 1000, 400, 300 >= 200
    assert busy_threads.busy(before, before) is None  # nothing ran


@pytest.fixture(scope="module")
def dense_models(tmp_path_factory):
    """A 1024 x 2048 fully connected layer, enough work per call for a second thread."""
    weights = np.random.default_rng(0).standard_normal((1024, 2048), dtype=np.float32)
    folder = tmp_path_factory.mktemp("dense")
    return {"litert": dense_tflite(folder / "dense.tflite", weights),
            "onnxruntime": dense_onnx(folder / "dense.onnx", weights),
            "openvino": folder / "dense.onnx"}


@pytest.mark.parametrize("name", ["litert", "onnxruntime", "openvino"])
@pytest.mark.parametrize("threads", [1, 2])
def test_each_runtime_runs_on_the_threads_it_is_told(dense_models, name, threads):
    predictor = runtime.load(dense_models[name], runtime=name, threads=threads)
    batch = predictor.prepare(runtime.sample_batch(predictor.input_shape, 64))
    busy = busy_threads.count(lambda: predictor.run(batch), seconds=0.3)
    if name == "openvino" and threads > 1:
        # OpenVINO decides per call how to split this layer: on a loaded machine its second
        # thread was seen with 2 % of the first's time. Never more threads than it was told.
        assert 1 <= busy <= threads
    else:
        assert busy == threads


# --- the report, from hand-made results -------------------------------------------------------

def _case(variant, runtime_name, threads, seconds, busy=None):
    return {"net": "medium", "variant": variant, "runtime": runtime_name, "batch_size": 16,
            "threads": threads, "median": sorted(seconds)[len(seconds) // 2],
            "threads_busy": busy or threads,
            "interleaved": {"seconds": seconds, "rounds": len(seconds), "stopped": "converged",
                            "widest": 0.01, "target": 0.05}}


def _results(cases):
    accuracy = [{"net": "medium", "variant": v, "runtime": r, "delta_points": 0.0,
                 "size_ratio": 1.0, "agreement": 1.0}
                for v, r in {(c["variant"], c["runtime"]) for c in cases}]
    return {"nets": {"medium": {"artifacts": {}}}, "config": {"batch_sizes": [16]},
            "accuracy": accuracy, "cases": cases}


ROUND = [1.00, 1.01, 0.99, 1.00, 1.02, 0.98, 1.00, 1.01, 0.99]


def _at(scale):
    return [scale * s for s in ROUND]


def test_the_pick_that_changes_with_threads_is_named_and_the_table_pairs_the_counts():
    # One thread: int8 on LiteRT is fastest. Two threads: LiteRT's int8 gains 1.25x, OpenVINO's
    # 2x, so OpenVINO wins there.
    cases = [_case("float32", "litert", 1, _at(4.0)), _case("int8", "litert", 1, _at(1.0)),
             _case("int8", "openvino", 1, _at(1.2)),
             _case("float32", "litert", 2, _at(2.2)), _case("int8", "litert", 2, _at(0.8)),
             _case("int8", "openvino", 2, _at(0.6), busy=3)]
    results = _results(cases)
    lines = report.recommendations(results)
    assert lines[0].startswith("medium, batch 16, 1 thread: int8 on litert: 4.0x (4.0-4.0)")
    # 2.2 / 0.6 = 3.67
    assert lines[1].startswith("medium, batch 16, 2 threads: int8 on openvino: 3.7x (3.7-3.7)")
    said = report.thread_findings(results)
    assert "medium, batch 16: with 2 threads the pick changes from int8 on litert to int8 on openvino." in said
    assert ("int8 on openvino (medium, batch 16) kept 3 threads busy where 2 were asked." in said)
    table = report.thread_scaling_table(results)
    row = next(line for line in table.splitlines() if "int8 on openvino" in line)
    assert "(2.0x (2.0-2.0))" in row and row.rstrip(" |").endswith("1/3")
    # The speed-up tables and findings stay at the first thread count.
    speed = [line for line in report.speed_lines(results) if " vs float32 on litert" in line]
    assert speed == ["int8 on litert vs float32 on litert: faster in 1 of 1 net x batch cases; "
                     "4.0x faster (medium, batch 16, 95 % interval 4.00-4.00x faster).",
                     "int8 on openvino vs float32 on litert: faster in 1 of 1 net x batch cases; "
                     "3.3x faster (medium, batch 16, 95 % interval 3.33-3.33x faster)."]


def test_one_thread_count_has_no_thread_table():
    cases = [_case("float32", "litert", 1, _at(4.0)), _case("int8", "litert", 1, _at(1.0))]
    assert report.thread_scaling_table(_results(cases)) is None
    assert report.recommendations(_results(cases))[0].startswith("medium, batch 16: int8 on litert")
