"""Markdown tables of benchmark cases, from plain dicts: the latency suite's ``extra_info``.

Each table takes a list of records, one per (net, variant, batch size, threads) case, with
the keys the latency suite writes into ``extra_info`` (``net``, ``variant``, ``batch_size``,
``threads``, ``median``, ``per_image``, ``macs_per_second``, ``peak_fraction``, and
``counters`` when counted). A saved pytest-benchmark JSON gives them back as
``[b["extra_info"] for b in report["benchmarks"]]``. The pytest plugin prints these tables
in its terminal summary; ``quantlab.report`` can reuse them.
"""

REFERENCE = "float32"  # as quantlab.variants.REFERENCE, which imports numpy
RATES = ("total_miss_rate", "l1d_miss_rate", "llc_miss_rate")


def _markdown(headers, rows):
    # Imported when used: report may import this module, and the plugin must stay cheap.
    from quantlab.report import markdown_table

    return markdown_table(headers, rows)


def _row_label(record):
    threads = record.get("threads") or 1
    return f"{record['batch_size']}" + (f" ({threads} threads)" if threads != 1 else "")


def _grid(records, cell):
    """Rows: batch size (and threads); columns: net x variant in run order."""
    columns = list(dict.fromkeys((r["net"], r["variant"]) for r in records))
    keys = sorted({(r["batch_size"], r.get("threads") or 1) for r in records})
    lookup = {(r["net"], r["variant"], r["batch_size"], r.get("threads") or 1): r for r in records}
    rows = []
    for batch, threads in keys:
        first = next(r for r in records if (r["batch_size"], r.get("threads") or 1) == (batch, threads))
        row = [_row_label(first)]
        for net, variant in columns:
            record = lookup.get((net, variant, batch, threads))
            row.append(cell(record) if record else "–")
        rows.append(row)
    return _markdown(["batch"] + [f"{net} {variant}" for net, variant in columns], rows)


def percent(fraction):
    """A miss rate in %: whole numbers as P17 printed them, one decimal below 10 %."""
    if fraction is None:
        return "n/a"
    value = 100 * fraction
    return f"{value:.0f}" if value >= 10 or value == 0 else f"{value:.1f}"


def count(n):
    if n is None:
        return "n/a"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def seconds(s):
    if s is None:
        return "n/a"
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    return f"{s * 1e3:.3f} ms" if s < 1 else f"{s:.3f} s"


def speed_ratio(reference_seconds, measured_seconds):
    """P17's wording: how many times faster or slower than the reference."""
    if measured_seconds <= reference_seconds:
        return f"{reference_seconds / measured_seconds:.1f}x faster"
    return f"{measured_seconds / reference_seconds:.1f}x slower"


def counted(records):
    return [r for r in records if r.get("counters")]


def miss_rate_table(records):
    """P17 layout: rows batch sizes, columns net x variant, cells total / L1d / LLC miss %."""
    def cell(record):
        rates = record["counters"]["rates"]
        return "/".join(percent(rates.get(key)) for key in RATES)

    return _grid(counted(records), cell)


def instructions_table(records):
    """Instructions per inference (one run of one batch), with IPC where perf measured it."""
    def cell(record):
        per = record["counters"]["per_inference"]
        ipc = per.get("ipc")
        return count(per.get("instructions")) + (f" @ {ipc:.2f} IPC" if ipc else "")

    return _grid(counted(records), cell)


def latency_table(records, reference=REFERENCE):
    """Median per batch and per image, ratio to ``reference``, achieved MAC/s and % of peak."""
    timed = [r for r in records if r.get("median")]
    medians = {(r["net"], r["batch_size"], r.get("threads") or 1, r["variant"]): r["median"]
               for r in timed}
    rows = []
    for r in timed:
        base = medians.get((r["net"], r["batch_size"], r.get("threads") or 1, reference))
        versus = ("reference" if r["variant"] == reference
                  else speed_ratio(base, r["median"]) if base else "–")
        peak = r.get("peak_fraction")
        rows.append([r["net"], _row_label(r), r["variant"], seconds(r["median"]),
                     seconds(r.get("p90")), seconds(r.get("per_image")), versus,
                     f"{r['macs_per_second'] / 1e9:.1f}" if r.get("macs_per_second") else "–",
                     f"{100 * peak:.2f} %" if peak is not None else "–"])
    return _markdown(["net", "batch", "variant", "median / batch", "p90", "per image",
                      f"vs {reference}", "GMAC/s", "of peak"], rows)
