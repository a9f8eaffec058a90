"""The counters result: one JSON-able dict per (model, batch), its miss rates and its text form.

Keys of a result:

- ``schema``: the version of this layout (SCHEMA), bumped whenever a key changes meaning;
- ``backend`` ("perf" or "valgrind"), ``artifact``, ``batch_size``, ``iterations`` (measured
  runs), ``warmup``, ``threads``, ``kernels``: what was counted and how;
- ``events``: the perf events or callgrind events that were read;
- ``per_inference``: ``instructions``, ``cache_references``, ``cache_misses`` (last level),
  ``l1d_loads``, ``l1d_load_misses``, ``llc_loads``, ``llc_load_misses``, ``cycles`` and
  ``ipc`` (perf only, else None), each per ``run`` of one batch; None where not counted;
- ``rates``: ``total_miss_rate`` (cache_misses / cache_references), ``l1d_miss_rate``,
  ``llc_miss_rate``, as fractions (None when the denominator is zero or unknown);
- ``scaling``: perf's fraction of the window each event was counted (multiplexing), or None;
- ``caveats``: sentences to print next to the figures;
- ``top_kernels``: the costliest functions in the window (valgrind only), each
  ``{"function", "instructions" (own, per inference), "share" (of all instructions)}``;
- ``cache_geometry``: the simulated caches (valgrind only): ``name`` (host, i7-6500u or
  custom), ``I1`` / ``D1`` / ``LL`` as ``{"size", "assoc", "line"}`` and ``spec``;
- ``seconds``: wall time of the whole measurement, worker start-up included (under valgrind,
  of the one worker that counted all the batch sizes asked for together).
"""

SCHEMA = 1
KEYS = ("instructions", "cache_references", "cache_misses", "l1d_loads", "l1d_load_misses",
        "llc_loads", "llc_load_misses", "cycles", "ipc")


def _ratio(part, whole):
    # A rate over nothing is unknown, not zero: a tiny window may see no LL traffic at all.
    if part is None or not whole:
        return None
    return part / whole


def rates(counts):
    """Miss rates as fractions: total (last level), L1d loads and LLC loads."""
    return {
        "total_miss_rate": _ratio(counts.get("cache_misses"), counts.get("cache_references")),
        "l1d_miss_rate": _ratio(counts.get("l1d_load_misses"), counts.get("l1d_loads")),
        "llc_miss_rate": _ratio(counts.get("llc_load_misses"), counts.get("llc_loads")),
    }


def assemble(backend, part, *, artifact, batch_size, threads, kernels, seconds):
    """A result from a backend's part, which holds the ``warmup`` and ``iterations`` it ran."""
    per_inference = {key: part["per_inference"].get(key) for key in KEYS}
    return {
        "schema": SCHEMA,
        "backend": backend,
        "artifact": str(artifact),
        "batch_size": batch_size,
        "iterations": part["iterations"],
        "warmup": part["warmup"],
        "short_runs": part.get("short_runs"),
        "threads": threads,
        "kernels": kernels,
        "runtime": (part.get("worker") or {}).get("runtime"),
        "events": part["events"],
        "per_inference": per_inference,
        "rates": rates(per_inference),
        "scaling": part.get("scaling"),
        "caveats": part.get("caveats", []),
        "top_kernels": part.get("top_kernels", []),
        "cache_geometry": part.get("cache_geometry"),
        "seconds": seconds,
    }


def _count(value):
    return "n/a" if value is None else f"{value:,.0f}"


def _rate(value):
    return "n/a" if value is None else f"{value:.2%}"


def format_result(result):
    """A short human-readable block for the ``quantlab counters`` command."""
    if result is None:
        return "counters: off"
    per, rate = result["per_inference"], result["rates"]
    how = {"valgrind": "valgrind cache simulation", "perf": "perf hardware counters"}
    lines = [
        f"counters: {how.get(result['backend'], result['backend'])} - {result['artifact']}, "
        f"batch {result['batch_size']}, {result['iterations']} iterations, "
        f"{result['seconds']:.1f} s",
        f"per inference: {_count(per['instructions'])} instructions, "
        f"{_count(per['cycles'])} cycles, IPC "
        f"{'n/a' if per['ipc'] is None else format(per['ipc'], '.2f')}",
        f"  last level: {_count(per['cache_references'])} references, "
        f"{_count(per['cache_misses'])} misses (total miss rate {_rate(rate['total_miss_rate'])})",
        f"  L1d loads:  {_count(per['l1d_loads'])}, {_count(per['l1d_load_misses'])} misses "
        f"({_rate(rate['l1d_miss_rate'])})",
        f"  LLC loads:  {_count(per['llc_loads'])}, {_count(per['llc_load_misses'])} misses "
        f"({_rate(rate['llc_miss_rate'])})",
    ]
    if result["top_kernels"]:
        lines.append("top functions (own instructions per inference):")
        lines += [f"  {k['share']:6.1%}  {_count(k['instructions']):>12}  {k['function'][:90]}"
                  for k in result["top_kernels"]]
    lines += [f"note: {caveat}" for caveat in result["caveats"]]
    return "\n".join(lines)
