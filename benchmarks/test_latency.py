"""The latency suite (nets x variants x batch sizes), collected from ``quantlab.latency_suite``.

    pytest benchmarks/ --benchmark-autosave          # time and save
    pytest benchmarks/ --benchmark-compare --benchmark-compare-fail=median:10%
    pytest benchmarks/ --benchmark-disable           # run every case once (smoke test)

Select cases with --quantlab-nets, --quantlab-variants, --quantlab-batch-sizes and
--quantlab-threads; count cache misses with --quantlab-counters (see ``pytest --help``).
"""

from quantlab.latency_suite import test_latency  # noqa: F401
