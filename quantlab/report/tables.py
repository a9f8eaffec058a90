"""The report's tables: the summary ones of report.md (sizes, accuracy, best-of, thread
scaling, compact) and the per-case ones of details.md. They format, they measure nothing."""

from quantlab import tables
from quantlab.defaults import VARIANTS
from quantlab.lookups import (
    accuracy_of, batch_sizes, is_reference, reference, reference_text, scored, span,
    speedup_text, thread_counts, threads_of, threads_text, timed, timed_at, times)
from quantlab.safe_text import markdown as literal  # text from files and the environment
from quantlab.tables import markdown_table, megabytes, seconds, variant_label
from quantlab.variant_table import quantized


def _files(results):
    """{net: {variant: meta}} of the nets whose reference file is known, file-backed variants
    only."""
    float32 = reference(results)[0]
    return {net: {v: meta for v, meta in entry["artifacts"].items() if not meta.get("execute_in")}
            for net, entry in results["nets"].items() if float32 in entry["artifacts"]}


def size_table(results):
    """P17: network, standard size, quantized size, ratio; one row per file-backed variant."""
    rows = []
    float32 = reference(results)[0]
    for net, files in _files(results).items():
        for variant, meta in files.items():
            if variant != float32:
                rows.append([net, variant, megabytes(files[float32]["bytes"]),
                             megabytes(meta["bytes"]), f"{files[float32]['bytes'] / meta['bytes']:.3f}"])
    return markdown_table(["network", "variant", "standard size (float32)", "quantized size",
                           "SN size / QN size"], rows)


def size_summary(results):
    """One row per net: each file's size and how many times smaller than the reference's."""
    files = _files(results)
    float32 = reference(results)[0]
    found = {v for by_variant in files.values() for v in by_variant}
    variants = [float32] + [v for v in VARIANTS if v in found and v != float32]
    variants += sorted(found - set(variants))  # a variant this quantlab does not know
    rows = []
    for net, by_variant in files.items():
        base = by_variant[float32]["bytes"]
        rows.append([net] + [f"{megabytes(by_variant[v]['bytes'])}" + (
            f" ({base / by_variant[v]['bytes']:.3f}x)" if v != float32 else "")
            if v in by_variant else "–" for v in variants])
    return markdown_table(["network"] + variants, rows)


def accuracy_table(results):
    """P17: standard and quantized accuracy and their ratio; plus change, agreement, Δp."""
    rows = []
    for row in scored(results):
        reference = accuracy_of(results, row["net"], row["reference"], row["reference_runtime"])
        if row is reference or reference is None:
            continue
        if row.get("accuracy") is None:  # no labels: agreement and Δp alone
            accuracies = ["–"] * 4
        else:
            ratio = row["accuracy"] / reference["accuracy"] if reference["accuracy"] else None
            accuracies = [f"{reference['accuracy']:.4f}", f"{row['accuracy']:.4f}",
                          "–" if ratio is None else f"{ratio:.3f}", f"{row['delta_points']:+.2f}"]
        rows.append([row["net"], row["variant"], row["runtime"], row["precision"], *accuracies,
                     f"{100 * row['agreement']:.2f} %", f"{row['max_abs_diff']:.3f}"])
    return markdown_table(["network", "variant", "runtime", "executed in", "standard accuracy",
                           "quantized accuracy", "QN acc / SN acc", "change (points)",
                           "top-1 agreement", "largest Δp"], rows)


def accuracy_summary(results):
    """Rows: each option; columns: each net; cells: top-1 accuracy, its change in points
    against the reference and the agreement with it (the reference: its accuracy; without
    labels, every option: its agreement and largest probability difference)."""
    nets = list(results["nets"])
    found = {(r["net"], r["variant"], r["runtime"]): r for r in scored(results)}
    options = list(dict.fromkeys((v, rt) for _, v, rt in found))
    rows = []
    for variant, runtime in options:
        cells = []
        for net in nets:
            row = found.get((net, variant, runtime))
            if row is None:
                cells.append("–")
            elif row.get("accuracy") is None:
                cells.append("reference" if is_reference(results, variant, runtime) else
                             f"{100 * row['agreement']:.1f} %, Δp {row['max_abs_diff']:.3f}")
            elif is_reference(results, variant, runtime):
                cells.append(f"{100 * row['accuracy']:.2f} %")
            else:
                cells.append(f"{row['delta_points']:+.2f} ({100 * row['agreement']:.1f} %)")
        rows.append([f"{variant} on {runtime}"] + cells)
    rows.sort(key=lambda row: row[0] != reference_text(results))
    return markdown_table(["option"] + nets, rows)


def runtime_table(results, net, batch):
    """Which runtime: every (variant, runtime) latency of one net and batch size; n/a where
    the runtime does not read that file, "failed" where it could not run it."""
    first = thread_counts(results)[0]
    cases = {(c["variant"], c["runtime"]): c for c in results["cases"]
             if c["net"] == net and c["batch_size"] == batch and threads_of(c) == first}
    runtimes = [r for r in results["runtimes"] if any(k[1] == r for k in cases)]
    variants = list(dict.fromkeys(v for v, _ in cases))
    rows = []
    for variant in variants:
        cells = []
        for runtime in runtimes:
            case = cases.get((variant, runtime))
            if case is None or case.get("not_run"):
                cells.append("failed" if case else "n/a")
            else:
                gain = speedup_text(results, case)
                cells.append(seconds(case["median"]) + (f" ({gain})" if gain else ""))
        rows.append([variant] + cells)
    return markdown_table(["variant"] + runtimes, rows)


def best_table(results):
    """Per net and batch: the best float32 and the best int8, and what each buys."""
    rows = []
    for net in results["nets"]:
        for batch in batch_sizes(results, net):
            cases = [c for c in timed_at(results) if c["net"] == net and c["batch_size"] == batch]
            floats = [c for c in cases if not quantized(c["variant"]) and c["precision"] == "float32"]
            ints = [c for c in cases if c["precision"] == "int8"]
            if not floats or not ints:
                continue
            best_float = min(floats, key=lambda c: c["median"])
            best_int = min(ints, key=lambda c: c["median"])
            same = next((c for c in floats if c["runtime"] == best_int["runtime"]), None)
            rows.append([net, str(batch), variant_label(best_float), seconds(best_float["median"]),
                         variant_label(best_int), seconds(best_int["median"]),
                         times(same, best_int) if same else "–", times(best_float, best_int)])
    return markdown_table(["network", "batch", "best float32", "median", "best int8", "median",
                           "int8 vs float32, same runtime", "best vs best"], rows)


def _by_option_and_count(results):
    return {(c["net"], c["batch_size"], c["variant"], c["runtime"], threads_of(c)): c
            for c in timed(results)}


def thread_scaling_table(results):
    """Each option's latency at every thread count, and how many times faster than itself at
    the first count (paired by round, with its interval); the threads seen busy."""
    counts = thread_counts(results)
    if len(counts) < 2:
        return None
    by_key = _by_option_and_count(results)
    rows = []
    for (net, batch, variant, runtime, threads), one in by_key.items():
        if threads != counts[0]:
            continue
        row = [net, str(batch), f"{variant} on {runtime}", seconds(one["median"])]
        for more in counts[1:]:
            case = by_key.get((net, batch, variant, runtime, more))
            row.append(f"{seconds(case['median'])} ({times(one, case)})" if case else "–")
        busy = [str(c["threads_busy"]) for c in (by_key.get((net, batch, variant, runtime, n))
                                                for n in counts) if c and c.get("threads_busy")]
        row.append("/".join(busy) or "–")
        rows.append(row)
    return markdown_table(["network", "batch", "option", threads_text(counts[0])]
                          + [f"{n} threads (x faster)" for n in counts[1:]]
                          + ["threads busy"], rows)


def thread_summary(results):
    """Per option, over the nets and batch sizes: how many times faster each further thread
    count made it than the first (the range of the medians), and the threads seen busy."""
    counts = thread_counts(results)
    if len(counts) < 2:
        return None
    by_key = _by_option_and_count(results)
    gains, busy = {}, {}
    for (net, batch, variant, runtime, threads), case in by_key.items():
        option = f"{variant} on {runtime}"
        if case.get("threads_busy"):
            busy.setdefault(option, {}).setdefault(threads, set()).add(case["threads_busy"])
        first = by_key.get((net, batch, variant, runtime, counts[0]))
        if threads != counts[0] and first:
            gains.setdefault(option, {}).setdefault(threads, []).append(first["median"] / case["median"])
    rows = [[option] + [span(by_count[n], "{:.1f}", "x") if n in by_count else "–" for n in counts[1:]]
            + ["/".join(span(sorted(busy[option][n]), "{:d}") for n in counts if n in busy.get(option, {}))
               or "–"] for option, by_count in gains.items()]
    return markdown_table(["option"] + [f"{n} threads vs {counts[0]}" for n in counts[1:]]
                          + ["threads busy"], rows)


def counts_table(cases):
    """Absolute counts per inference: a rate alone misled P17."""
    rows = []
    for case in tables.counted(cases):
        per = case["counters"]["per_inference"]
        rows.append([case["net"], variant_label(case), str(case["batch_size"])]
                    + [tables.count(per.get(k)) for k in
                       ("instructions", "cache_references", "cache_misses", "l1d_loads",
                        "l1d_load_misses", "llc_load_misses")]
                    + [f"{per['ipc']:.2f}" if per.get("ipc") else "–"])
    return markdown_table(["network", "variant", "batch", "instructions", "LL refs", "LL misses",
                           "L1d loads", "L1d misses", "LLC load misses", "IPC"], rows)


def not_counted_lines(cases):
    """Every timed case that was not counted, grouped by the reason: none is dropped silently."""
    reasons = {}
    for case in cases:
        if case.get("not_counted"):
            reasons.setdefault(case["not_counted"], []).append(
                f"{case['net']} {variant_label(case)} b{case['batch_size']}")
    return [f"- {literal(reason)}: {len(which)} case(s)" + (f" ({literal(', '.join(which))})" if len(which) <= 6 else "")
            for reason, which in reasons.items()]


def not_run_lines(results):
    """Every (variant, runtime) that a runtime could not evaluate or time, with its reason."""
    reasons = {}
    for row in results["accuracy"] + results["cases"]:
        if row.get("not_run"):
            where = f"{row['net']} {variant_label(row)}"
            reasons.setdefault(row["not_run"], []).append(
                where + (f" b{row['batch_size']}" if "batch_size" in row else " (accuracy)"))
    return [f"- {literal(reason)}: {literal(', '.join(which))}" for reason, which in reasons.items()]


def _profile_text(layers, top=3):
    return "; ".join(f"{100 * layer['share']:.0f} % {layer['type']} ({layer['primitive']})"
                     for layer in layers[:top])


def attribution_table(cases):
    """Where the time goes, natively and simulated, side by side, and what was left out.

    native: perf record samples of the timed loop on this CPU (the kernels that really ran);
    where the costliest samples fell in code without symbol names (OpenVINO's JIT-compiled
    kernels, stripped libraries), the runtime's own per-layer profile of the case stands in;
    without one either, the row would say nothing and is left out. simulated: valgrind's
    instruction counts, on a virtual CPU without AVX-512 or AMX.
    Returns (the table, the line that says what was left out, or None).
    """
    rows, dropped = [], {}
    for case in cases:
        native = case.get("native")
        simulated = (case.get("counters") or {}).get("top_kernels")
        named = native and native["kernels"] and native["kernels"][0]["symbol"] != "[unknown]"
        if named:
            said = tables.kernels_text(native["kernels"])
        elif native and native["kernels"] and case.get("layers"):
            said = f"{case['runtime']}'s own profile: {_profile_text(case['layers'])}"
        elif simulated:
            said = "–"
        else:
            if native and native["kernels"]:
                dropped.setdefault(case["runtime"], []).append(case)
            continue
        threads = threads_of(case)
        rows.append([case["net"], variant_label(case),
                     f"{case['batch_size']}" + (f" ({threads_text(threads)})" if threads != 1 else ""),
                     said, "; ".join(f"{100 * k['share']:.0f} % {k['function'][:60]}" for k in simulated[:3])
                     if simulated else "–"])
    table = markdown_table(["network", "variant", "batch", "native: share of samples (ISA)",
                            "simulated: share of instructions"], rows)
    if not dropped:
        return table, None
    return table, (f"Left out: {sum(map(len, dropped.values()))} case(s) of "
                   f"{', '.join(dropped)}, whose costliest perf samples fell in code without "
                   f"symbol names and whose runtime recorded no per-layer profile: such a row "
                   f"would name no kernel.")


def layers_by_runtime_table(cases, top=4):
    """OpenVINO's and ONNX Runtime's own per-layer times, at each case's largest batch."""
    largest = {}
    for case in cases:
        if case.get("layers"):
            key = (case["net"], case["variant"], case["runtime"])
            if key not in largest or case["batch_size"] > largest[key]["batch_size"]:
                largest[key] = case
    rows = []
    for case in largest.values():
        for layer in case["layers"][:top]:
            rows.append([case["net"], variant_label(case), str(case["batch_size"]),
                         layer["layer"][:40], layer["type"], layer["primitive"],
                         f"{100 * layer['share']:.0f} %"])
    return markdown_table(["network", "variant", "batch", "layer", "type", "primitive", "share of time"],
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
