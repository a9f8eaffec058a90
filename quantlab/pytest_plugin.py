"""pytest plugin of quantlab: hardware-counter measurement around benchmarks (in progress)."""
