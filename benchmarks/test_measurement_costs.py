"""What quantlab's own measurements cost: native sampling's overhead, the ceilings' run time.

    pytest benchmarks/test_measurement_costs.py

The group "sampling overhead" times one fixed native loop (a chain of 48M dependent adds,
about 12 ms: a dozen samples each round) with and without ``perf record -e cpu-clock``
attached to this process at the sampler's rate: the ratio of the two minimums (or
medians, on a quiet machine) is the overhead every sampled case pays. The group
"ceilings" times ``measure_clock`` and ``measure_bandwidth`` as the study would run them.
"""

import ctypes
import shutil

import pytest

from quantlab import ceilings
from quantlab.counters import sampling

pytestmark = pytest.mark.skipif(ceilings.unsupported_reason() is not None,
                                reason=ceilings.unsupported_reason() or "")


@pytest.fixture(scope="module")
def add_chain():
    with ceilings.native(ceilings.ADD_CHAIN, ctypes.c_uint64) as chain:
        yield chain


@pytest.mark.parametrize("sampled", [False, True], ids=["without-perf", "with-perf"])
def test_sampling_overhead_on_a_native_loop(benchmark, add_chain, sampled):
    if sampled and shutil.which("perf") is None:
        pytest.skip("perf is not installed")
    benchmark.group = "sampling overhead"
    sampler = sampling.Sampler().start() if sampled else None
    try:
        benchmark.pedantic(add_chain, (48_000_000 // 16,), rounds=40, warmup_rounds=2)
    finally:
        if sampler:
            sampler.stop()
            benchmark.extra_info["samples"] = len(sampler.samples)
            benchmark.extra_info["period_ns"] = sampler.period_ns
            benchmark.extra_info["perf_seconds"] = sampler.seconds


@pytest.mark.parametrize("measure", [ceilings.measure_clock, ceilings.measure_bandwidth],
                         ids=["clock", "bandwidth"])
def test_ceilings_measurement_time(benchmark, measure):
    benchmark.group = "ceilings"
    result = benchmark.pedantic(measure, rounds=3, iterations=1)
    assert result["measured"], result.get("reason")
