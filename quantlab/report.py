"""The report of a study: Markdown tables in the layout of the P17 study, findings, files."""

from pathlib import Path

from quantlab import tables


def megabytes(n):
    return f"{n / 1e6:.2f} MB"


def markdown_table(headers, rows):
    """A Markdown table; numbers are expected already formatted as strings."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _against_reference(results):
    """(net, reference row, row) for every variant but the reference, from {net: rows}."""
    for net, comparison in results.items():
        reference = next(r for r in comparison if r["variant"] == r["reference"])
        for row in comparison:
            if row is not reference:
                yield net, reference, row


def size_table(results):
    """``results``: {net: comparison rows}. P17: network, standard size, quantized size, ratio."""
    rows = [[net, row["variant"], megabytes(reference["bytes"]), megabytes(row["bytes"]),
             f"{row['size_ratio']:.3f}"] for net, reference, row in _against_reference(results)]
    return markdown_table(
        ["network", "variant", "standard size (float32)", "quantized size", "SN size / QN size"], rows
    )


def accuracy_table(results):
    """P17: network, standard accuracy, quantized accuracy, ratio; plus delta and agreement."""
    rows = [[net, row["variant"], f"{reference['accuracy']:.4f}", f"{row['accuracy']:.4f}",
             f"{row['accuracy'] / reference['accuracy']:.3f}", f"{row['delta_points']:+.2f}",
             f"{100 * row['agreement']:.2f} %", f"{row['max_abs_diff']:.3f}"]
            for net, reference, row in _against_reference(results)]
    return markdown_table(
        ["network", "variant", "standard accuracy", "quantized accuracy", "QN acc / SN acc",
         "change (points)", "top-1 agreement", "max |Δp|"], rows
    )


# --- the study report ---------------------------------------------------------------------

def _rows_by_net(results):
    """{net: comparison rows} from a study's results, for the P17-layout tables."""
    return {net: list(entry["accuracy"].values()) for net, entry in results["nets"].items()}


def records(results):
    """One dict per (net, variant, batch) case, shaped like the latency suite's extra_info,
    so that the report and the pytest plugin print their tables with the same code."""
    threads = results["machine"]["threads"]
    found = []
    for net, entry in results["nets"].items():
        for variant in entry["accuracy"]:
            latency = entry["latency"].get(variant, {})
            counted = entry["counters"].get(variant, {})
            for batch in sorted(set(latency) | set(counted), key=int):
                found.append({"net": net, "variant": variant, "batch_size": int(batch),
                              "threads": threads, **latency.get(batch, {}),
                              "counters": counted.get(batch)})
    return found


def counts_table(cases):
    """Absolute counts per inference: a rate alone misled P17."""
    rows = []
    for case in tables.counted(cases):
        per = case["counters"]["per_inference"]
        rows.append([case["net"], case["variant"], str(case["batch_size"])]
                    + [tables.count(per.get(k)) for k in
                       ("instructions", "cache_references", "cache_misses", "l1d_loads",
                        "l1d_load_misses", "llc_load_misses")]
                    + [f"{per['ipc']:.2f}" if per.get("ipc") else "–"])
    return markdown_table(["network", "variant", "batch", "instructions", "LL refs", "LL misses",
                           "L1d loads", "L1d misses", "LLC load misses", "IPC"], rows)


def kernels_table(cases):
    """The costliest functions inside the counted region, per net and variant."""
    rows, seen = [], set()
    for case in tables.counted(cases):
        top = case["counters"].get("top_kernels")
        if (case["net"], case["variant"]) in seen or not top:
            continue
        seen.add((case["net"], case["variant"]))
        named = "; ".join(f"{k['function'][:60]} ({100 * k['share']:.0f} %)" for k in top[:3])
        rows.append([case["net"], case["variant"], str(case["batch_size"]), named])
    return markdown_table(["network", "variant", "batch", "costliest functions (share of instructions)"],
                          rows)


def layers_table(results):
    rows = []
    for net, entry in results["nets"].items():
        for layer in entry.get("layers", []):
            error = layer["rmse_over_scale"]
            rows.append([net, layer["op"], layer["tensor"][:50],
                         f"{error:.3f}" if error is not None else "–", f"{layer['max_abs_error']:.4f}"])
    return markdown_table(["network", "op", "tensor", "RMSE / scale (steps)", "max |error|"], rows)


def p17_tables():
    from quantlab import p17

    sizes = markdown_table(
        ["network", "standard size", "quantized size", "SN size / QN size"],
        [[n, f"{s} MB", f"{q} MB", f"{s / q:.3f}"] for n, (s, q) in p17.SIZE_MB.items()])
    accuracy = markdown_table(
        ["network", "standard accuracy", "quantized accuracy", "QN acc / SN acc"],
        [[n, f"{s:.4f}", f"{q:.4f}", f"{q / s:.3f}"] for n, (s, q) in p17.ACCURACY.items()])
    speed = markdown_table(
        ["network"] + [f"batch {b}" for b in p17.BATCH_SIZES],
        [[n] + [tables.speed_ratio(*p17.SECONDS[n][b]) for b in p17.BATCH_SIZES] for n in p17.NETS])
    misses = markdown_table(
        ["batch"] + [f"{n} {k}" for n in p17.NETS for k in ("SN", "QN")],
        [[str(b)] + ["/".join(map(str, p17.MISS_RATES[b][n][i])) for n in p17.NETS for i in (0, 1)]
         for b in p17.BATCH_SIZES])
    ipc = markdown_table(
        ["batch"] + [f"{n} {k}" for n in p17.NETS for k in ("SN", "QN")],
        [[str(b)] + [f"{p17.IPC[b][n][i]:.2f}" for n in p17.NETS for i in (0, 1)]
         for b in p17.BATCH_SIZES])
    return sizes, accuracy, speed, misses, ipc


def findings(results):
    """Short statements derived from the numbers of this run (never hand-written claims)."""
    from quantlab import p17

    said = []
    nets = results["nets"]
    for variant in ("int8", "qat_int8", "dynamic_int8", "float16"):
        rows = [e["accuracy"][variant] for e in nets.values() if variant in e["accuracy"]]
        if rows:
            ratios = [r["size_ratio"] for r in rows]
            deltas = [r["delta_points"] for r in rows]
            agree = [100 * r["agreement"] for r in rows]
            said.append(f"{variant}: {min(ratios):.2f}-{max(ratios):.2f}x smaller than float32; "
                        f"top-1 accuracy changes by {min(deltas):+.2f} to {max(deltas):+.2f} points; "
                        f"agrees with float32 on {min(agree):.1f}-{max(agree):.1f} % of test images.")
    for variant in ("int8", "dynamic_int8", "float16", "float32_tf"):
        ratios = []
        for net, entry in nets.items():
            for batch, figures in entry["latency"].get(variant, {}).items():
                reference = entry["latency"].get("float32", {}).get(batch)
                if reference:
                    ratios.append((reference["median"] / figures["median"], net, batch))
        if ratios:
            faster = sum(r > 1 for r, _, _ in ratios)
            best, worst = max(ratios), min(ratios)
            said.append(f"{variant} vs TFLite float32: faster in {faster} of {len(ratios)} net x batch cases; "
                        f"from {tables.speed_ratio(1, 1 / worst[0])} ({worst[1]}, batch {worst[2]}) "
                        f"to {tables.speed_ratio(1, 1 / best[0])} ({best[1]}, batch {best[2]}).")
    p17_ratios = [q / s for n in p17.NETS for s, q in p17.SECONDS[n].values()]
    said.append(f"P17 (TensorFlow 1 graph transforms, {p17.CPU}) measured its quantized nets "
                f"{min(p17_ratios):.1f}-{max(p17_ratios):.1f}x slower than float over the same "
                f"batch sizes.")
    for net, entry in nets.items():
        counted = entry["counters"]
        if "float32" in counted and "int8" in counted:
            for batch, counts in counted["int8"].items():
                reference = counted["float32"].get(batch)
                if not (counts and reference):
                    continue
                ours, theirs = counts["per_inference"], reference["per_inference"]
                line = (f"{net}, batch {batch}: int8 executes {ours['instructions'] / theirs['instructions']:.2f}x "
                        f"the instructions of float32 per inference")
                rate_lower = (counts["rates"]["total_miss_rate"] or 0) < (reference["rates"]["total_miss_rate"] or 0)
                more_misses = (ours["cache_misses"] or 0) > (theirs["cache_misses"] or 0)
                if rate_lower and more_misses:
                    line += "; its miss rate is lower but it misses more often in absolute terms (as in P17)"
                elif rate_lower:
                    line += "; it has both a lower miss rate and fewer misses"
                elif more_misses:
                    line += "; it has a higher miss rate and more misses"
                said.append(line + ".")
    return said


def _machine_section(results, cases):
    machine = results["machine"]
    cpu = machine["cpu"]
    flags = ", ".join(name for name, present in cpu.get("flags", {}).items() if present) or "none found"
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    lines = [f"- CPU: {cpu.get('model', 'unknown')}, {cpu.get('available_cores', '?')} cores available, "
             f"{machine['threads']} thread(s) used for inference",
             f"- ISA flags that matter for int8: {flags}",
             f"- Software: {versions}"]
    backend = machine["counter_backend"]
    if backend:
        lines.append(f"- Counters: {backend}"
                     + (f", simulated cache {machine['cache_geometry']}" if machine["cache_geometry"] else ""))
        caveats = sorted({c for case in tables.counted(cases) for c in case["counters"].get("caveats", [])})
        lines += [f"  - caveat: {c}" for c in caveats]
    else:
        lines.append("- Counters: off")
    return "\n".join(lines)


def markdown(results, plots):
    """The whole report as Markdown."""
    data = results["dataset"]
    mode = "quick (small training subset, one epoch)" if results["config"]["quick"] else "full"
    sizes, accuracy, speed, misses, ipc = p17_tables()
    batches = results["config"]["batch_sizes"]
    cases = records(results)
    counted = tables.counted(cases)
    parts = [
        "# quantlab report: what 8-bit quantization does to these nets on this CPU",
        f"Dataset **{data['name']}** ({data['train']} training / {data['test']} test images, "
        f"{'x'.join(map(str, data['input_shape']))}, from {data['source']}); training: {mode}.",
        "## Machine", _machine_section(results, cases),
        "## Findings", "\n".join(f"- {line}" for line in results["findings"]),
        "## Size", size_table(_rows_by_net(results)),
        f"## Accuracy on the {data['test']} test images", accuracy_table(_rows_by_net(results)),
        "## Latency",
        "Only the inference call on a prepared batch is timed (pytest-benchmark); "
        "GMAC/s is the arithmetic achieved, 'of peak' its share of the nominal peak of the "
        "data type on this CPU.",
    ]
    for batch in batches:
        parts += [f"### Batch size {batch}",
                  tables.latency_table([c for c in cases if c["batch_size"] == batch])]
    if counted:
        parts += [
            "## Cache behaviour",
            "Miss rates in %, total / L1d / LLC, as P17 reported them (total = last-level "
            "references that missed).", tables.miss_rate_table(cases),
            "### Instructions per inference", tables.instructions_table(cases),
            "### Counts per inference", counts_table(cases),
            "### Where the time goes", kernels_table(cases),
        ]
    if any(entry.get("layers") for entry in results["nets"].values()):
        parts += ["### Per-layer quantization error of int8",
                  "Error of each layer's int8 output against float on the same inputs, in "
                  "quantization steps (uniform rounding alone gives about 0.29).", layers_table(results)]
    parts += [
        "## P17 (2018) side by side",
        "P17 quantized CIFAR-10 nets with TensorFlow 1 graph transforms and timed whole "
        "processes on an Intel Core i7-6500U.",
        "### P17 size", sizes, "### P17 accuracy", accuracy,
        "### P17 speed of the quantized nets", speed,
        "### P17 miss rates (total / L1 / LLC, %)", misses, "### P17 IPC", ipc,
    ]
    if plots:
        parts += ["## Plots"] + [f"![{name[:-4]}]({name})" for name in plots]
    return "\n\n".join(parts) + "\n"


def write(results, folder):
    """Write report.md, results.json and the PNG plots into ``folder``."""
    from quantlab import cache, plots

    folder = Path(folder)
    names = plots.all_plots(results, folder)
    results["plots"] = names
    cache.write_json(folder / "results.json", results)
    with cache.atomic_file(folder / "report.md") as tmp:
        tmp.write_text(markdown(results, names))
