"""Markdown tables of benchmark cases, from plain dicts: the latency suite's ``extra_info``.

Each table takes a list of records, one per (net, variant, runtime, batch size, threads)
case, with the keys the latency suite writes into ``extra_info`` (``net``, ``variant``,
``runtime``, ``batch_size``, ``threads``, ``precision``, ``median``, ``per_image``,
``macs_per_second``, ``peak_fraction``, and ``counters`` when counted). A saved
pytest-benchmark JSON gives them back as ``[b["extra_info"] for b in report["benchmarks"]]``.
The pytest plugin prints these tables in its terminal summary, the study's report too.
"""

from quantlab import safe_text
from quantlab.defaults import REFERENCE, REFERENCE_RUNTIME
from quantlab.variant_table import float_counterpart

RATES = ("total_miss_rate", "l1d_miss_rate", "llc_miss_rate")


def markdown_table(headers, rows):
    """A Markdown table; numbers are expected already formatted as strings. Cells may hold
    text from files (names, reasons, kernel and layer names): each is printed as literal
    text, on one line."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(safe_text.markdown(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def megabytes(n):
    return f"{n / 1e6:.2f} MB"


def case_key(record):
    return (record["net"], record["variant"], record.get("runtime"), record["batch_size"],
            record.get("threads") or 1)


def _row_label(record):
    threads = record.get("threads") or 1
    return f"{record['batch_size']}" + (f" ({threads} threads)" if threads != 1 else "")


def variant_label(record):
    """``int8 on openvino``: a variant is only half a case without its runtime."""
    return f"{record['variant']} on {record['runtime']}" if record.get("runtime") else record["variant"]


def _grid(records, cell):
    """Rows: batch size (and threads); columns: net x variant x runtime in run order."""
    columns = list(dict.fromkeys((r["net"], r["variant"], r.get("runtime")) for r in records))
    keys = sorted({(r["batch_size"], r.get("threads") or 1) for r in records})
    lookup = {case_key(r): r for r in records}
    rows = []
    for batch, threads in keys:
        first = next(r for r in records if (r["batch_size"], r.get("threads") or 1) == (batch, threads))
        row = [_row_label(first)]
        for net, variant, runtime in columns:
            record = lookup.get((net, variant, runtime, batch, threads))
            row.append(cell(record) if record else "–")
        rows.append(row)
    headers = [f"{net} {variant}" + (f" ({runtime})" if runtime else "")
               for net, variant, runtime in columns]
    return markdown_table(["batch"] + headers, rows)


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


def latency_table(records, reference=(REFERENCE, REFERENCE_RUNTIME)):
    """Median per batch and per image; ratio to the study's ``reference`` (variant, runtime)
    and to the float32 of the same runtime; the precision that executed; achieved MAC/s and %
    of peak."""
    timed = [r for r in records if r.get("median")]
    medians = {case_key(r): r["median"] for r in timed}

    def versus(record, variant, runtime):
        if (record["variant"], record.get("runtime")) == (variant, runtime):
            return "reference"
        base = medians.get((record["net"], variant, runtime, record["batch_size"],
                            record.get("threads") or 1))
        return speed_ratio(base, record["median"]) if base else "–"

    def share(fraction):
        return f"{100 * fraction:.1f} %" if fraction is not None else "–"

    measured = any(r.get("peak_fraction_measured") for r in timed)
    rows = []
    for r in timed:
        rows.append([r["net"], _row_label(r), r["variant"], r.get("runtime", "–"),
                     r.get("precision", "–"), seconds(r["median"]), seconds(r.get("p90")),
                     seconds(r.get("per_image")), versus(r, *reference),
                     versus(r, float_counterpart(r["variant"]), r.get("runtime")),
                     f"{r['macs_per_second'] / 1e9:.1f}" if r.get("macs_per_second") else "–",
                     share(r.get("peak_fraction"))]
                    + ([share(r.get("peak_fraction_measured"))] if measured else []))
    return markdown_table(["net", "batch", "variant", "runtime", "executed in", "median / batch",
                           "p90", "per image", "vs {} on {}".format(*reference),
                           "vs float32 on the same runtime", "GMAC/s", "of nominal peak"]
                          + (["of peak at measured clock"] if measured else []), rows)


def kernels_text(kernels, top=3):
    """``78 % xnn_qs8_..._avx512vnni (AVX-512 VNNI); 12 % ...`` for a list of kernels; samples
    in code without a symbol name (perf's ``[unknown]``) and an unknown ISA say nothing and are
    left out ("" when nothing is left)."""
    named = [k for k in kernels if k["symbol"] != "[unknown]"][:top]
    return "; ".join(f"{100 * k['share']:.0f} % {k['symbol'][:70]}"
                     + (f" ({k['isa']})" if k.get("isa") not in (None, "unknown") else "") for k in named)


def native_table(records):
    """Per timed case: the kernels that took its samples under perf record, with their ISA."""
    rows = [[r["net"], _row_label(r), r["variant"], r.get("runtime", "–"), str(r["native"]["samples"]),
             kernels_text(r["native"]["kernels"])
             or ("no symbol names" if r["native"]["samples"] else "no samples")]
            for r in records if r.get("native")]
    return markdown_table(["net", "batch", "variant", "runtime", "samples",
                           "native: costliest kernels (share of samples, ISA)"], rows)
