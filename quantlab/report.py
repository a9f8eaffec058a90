"""The report of a study: what to ship, findings, and the tables in the layout of P17.

It formats what the study measured and measures nothing. Every sentence in it is generated
from the numbers of the run (``findings``, ``recommendations``), never written by hand.
"""

from pathlib import Path

from quantlab import deployment, intervals, tables
from quantlab.defaults import ACCURACY_TOLERANCE, REFERENCE, REFERENCE_RUNTIME
from quantlab.safe_text import markdown as literal  # text from files and the environment
from quantlab.tables import markdown_table, megabytes


def span(values, fmt="{:.2f}", unit=""):
    """``3.42x`` for one value (or equal ends), ``3.42-3.91x`` for a range."""
    low, high = fmt.format(min(values)), fmt.format(max(values))
    return f"{low}{unit}" if low == high else f"{low}-{high}{unit}"


# --- looking things up in the results ------------------------------------------------------

def scored(results):
    return [row for row in results["accuracy"] if not row.get("not_run")]


def accuracy_of(results, net, variant, runtime):
    return next((row for row in scored(results) if (row["net"], row["variant"], row["runtime"])
                 == (net, variant, runtime)), None)


def timed(results):
    return [case for case in results["cases"] if case.get("median")]


def timed_at(results, threads=None):
    """The timed cases at one thread count (default: the first, the one counted)."""
    threads = threads or thread_counts(results)[0]
    return [case for case in timed(results) if (case.get("threads") or 1) == threads]


def reference_case(results, case):
    """LiteRT float32 on the same net, batch size and thread count: what every speed-up is
    against."""
    return next((c for c in timed(results) if
                 (c["net"], c["variant"], c["runtime"], c["batch_size"], c.get("threads") or 1) ==
                 (case["net"], REFERENCE, REFERENCE_RUNTIME, case["batch_size"],
                  case.get("threads") or 1)), None)


def speedup_interval(results, case):
    """The speed-up against LiteRT float32 as an Interval, where the rounds give one."""
    if case.get("speedup"):
        return intervals.Interval(**case["speedup"])
    reference = reference_case(results, case)
    return ratio(reference, case) if reference else None


def speedup(results, case):
    """How many times faster than LiteRT float32 on the same net and batch (None if unknown):
    the median of the per-round ratios where the cases were timed in rounds."""
    interval = speedup_interval(results, case)
    if interval:
        return interval.median
    reference = reference_case(results, case)
    return reference["median"] / case["median"] if reference else None


def _round_seconds(case):
    return (case.get("interleaved") or {}).get("seconds")


def ratio(slow, fast):
    """How many times faster ``fast`` is than ``slow``, as an Interval when both were timed in
    the same rounds (paired, round by round), else None."""
    a, b = _round_seconds(slow), _round_seconds(fast)
    if a and b and len(a) == len(b):
        return intervals.ratio(a, b)
    return None


def times(slow, fast, digits=1):
    """``3.1x (2.9-3.3)``: ``fast`` against ``slow`` with its interval where there is one."""
    interval = ratio(slow, fast)
    if interval:
        return intervals.times_text(interval, digits)
    return f"{slow['median'] / fast['median']:.{digits}f}x"


def slower_or_faster(interval):
    """An interval in the words of its median: ``2.74-3.35x faster`` or ``1.4-1.7x slower``
    (a slow-down's interval is the speed-up's, inverted)."""
    if interval.median >= 1:
        return f"{interval.low:.2f}-{interval.high:.2f}x faster"
    return f"{1 / interval.high:.2f}-{1 / interval.low:.2f}x slower"


def speedup_text(results, case, digits=1):
    """The speed-up against LiteRT float32 with its 95 % interval: ``3.1x (2.9-3.3)``."""
    interval = speedup_interval(results, case)
    if interval:
        return intervals.times_text(interval, digits)
    gain = speedup(results, case)
    return f"{gain:.{digits}f}x" if gain else None


# Among options that cannot be told apart, the one with less to deploy: LiteRT is one small
# library and an interpreter with no compile step; ONNX Runtime a larger library; OpenVINO
# compiles every model for the CPU at load; TensorFlow is the whole framework.
DEPLOYMENT_WEIGHT = {"litert": 0, "onnxruntime": 1, "openvino": 2, "tensorflow": 3}
WHY_LIGHTER = {"litert": "no compile step and the smallest runtime",
               "onnxruntime": "no compile step", "openvino": "", "tensorflow": ""}


def _tied_with(fastest, options):
    """The options whose per-round time cannot be told apart from the fastest's."""
    fast = _round_seconds(fastest)
    return [c for c in options if c is not fastest and fast and _round_seconds(c)
            and len(_round_seconds(c)) == len(fast)
            and intervals.tied(_round_seconds(c), fast)]


def _deployment_note(results, case):
    """What a deployment of this option also pays (load, first inference, memory), if measured."""
    record = next((r for r in results.get("deployment") or []
                   if (r["net"], r["variant"], r["runtime"], r.get("threads") or 1) ==
                   (case["net"], case["variant"], case["runtime"], _threads(case))), None)
    return deployment.deployment_note(record) if record else None


def rounds_line(results):
    """How the interleaved rounds went: how many, and whether every interval got narrow."""
    groups = {}
    for case in timed(results):
        if case.get("interleaved"):  # one group of rounds per net and batch size
            groups[(case["net"], case["batch_size"])] = case["interleaved"]
    if not groups:
        return ("Each case was timed in one window of its own (no interleaved rounds): the "
                "ratios carry no interval.")
    counts = [g["rounds"] for g in groups.values()]
    short = {k: g for k, g in groups.items() if g["stopped"] != "converged"}
    target = 100 * next(iter(groups.values()))["target"]
    line = (f"Timed in interleaved rounds (every case once per round, in a shuffled order): "
            f"{span(counts, '{:d}')} rounds per net and batch size; every speed-up known "
            f"within +-{target:g} % in {len(groups) - len(short)} of {len(groups)} groups")
    if short:
        (net, batch), worst = max(short.items(), key=lambda item: item[1]["widest"])
        line += (f"; the others stopped at their time budget (widest +-"
                 f"{100 * worst['widest']:.1f} %, {net} at batch {batch})")
    return line + "."


def _lighter(results, case):
    """The deployment weight of an option: its runtime, then its file's size."""
    files = results["nets"].get(case["net"], {}).get("artifacts", {})
    return (DEPLOYMENT_WEIGHT.get(case["runtime"], len(DEPLOYMENT_WEIGHT)),
            files.get(case["variant"], {}).get("bytes") or case.get("model_bytes") or 0)


def quantized(variant):
    return variant not in (REFERENCE, "float32_tf", "onnx_float32", "float16")


def _shippable(results, case):
    row = accuracy_of(results, case["net"], case["variant"], case["runtime"])
    return row is not None and row["delta_points"] >= -ACCURACY_TOLERANCE


# --- sentences -------------------------------------------------------------------------------

def thread_counts(results):
    """The thread counts the cases were timed at, in the order the study gave them."""
    return list(dict.fromkeys(c.get("threads") or 1 for c in timed(results))) or [1]


def threads_text(n):
    return f"{n} thread" + ("s" if n != 1 else "")


def _threads(case):
    return case.get("threads") or 1


def pick(results, net, batch, threads):
    """(the option to ship, the fastest, the ties) among the options of one net, batch size
    and thread count that keep accuracy; (None, None, []) when there is none."""
    options = [c for c in timed(results) if c["net"] == net and c["batch_size"] == batch
               and _threads(c) == threads and _shippable(results, c)]
    if not options:
        return None, None, []
    fastest = min(options, key=lambda c: c["median"])
    ties = [fastest] + _tied_with(fastest, options)
    return min(ties, key=lambda c: _lighter(results, c)), fastest, ties


def recommendations(results):
    """For each net, batch size (and thread count), the fastest option that keeps accuracy,
    its ties, and what it costs to deploy, in one line."""
    said = []
    counts = thread_counts(results)
    for net in results["nets"]:
        for batch in results["config"]["batch_sizes"]:
            for threads in counts:
                best, fastest, ties = pick(results, net, batch, threads)
                if best is None:
                    continue
                row = accuracy_of(results, net, best["variant"], best["runtime"])
                where = f"{net}, batch {batch}" + (f", {threads_text(threads)}" if len(counts) > 1 else "")
                line = (f"{where}: {best['variant']} on {best['runtime']}: "
                        f"{speedup_text(results, best)} faster than {REFERENCE} on "
                        f"{REFERENCE_RUNTIME}, {row['delta_points']:+.2f} points")
                paid = _deployment_note(results, best)
                if paid:
                    line += f" ({paid})"
                if len(ties) > 1:
                    others = [tables.variant_label(c) for c in ties if c is not best]
                    lighter_runtime = (DEPLOYMENT_WEIGHT.get(best["runtime"], 9) <
                                       DEPLOYMENT_WEIGHT.get(fastest["runtime"], 9))
                    why = WHY_LIGHTER.get(best["runtime"]) if lighter_runtime else ""
                    line += (f"; tie (not told apart within the 95 % interval): {', '.join(others)}"
                             + (f"; chosen for less to deploy: {why or 'the smaller file'}"
                                if best is not fastest else ""))
                said.append(line)
    return said


def _size_and_accuracy_findings(results):
    said = []
    by_variant = {}
    for row in scored(results):
        if row["variant"] != REFERENCE:
            by_variant.setdefault(row["variant"], []).append(row)
    for variant, rows in by_variant.items():
        said.append(
            f"{variant}: {span([r['size_ratio'] for r in rows], unit='x')} smaller than {REFERENCE}; "
            f"top-1 accuracy changes by {span([r['delta_points'] for r in rows], '{:+.2f}')} points; "
            f"agrees with {REFERENCE} on {span([100 * r['agreement'] for r in rows], '{:.1f}')} % "
            f"of test images ({', '.join(dict.fromkeys(r['runtime'] for r in rows))}).")
    return said


def _speed_findings(results):
    said = []
    groups = {}
    for case in timed_at(results):
        gain = speedup(results, case)
        if gain and (case["variant"], case["runtime"]) != (REFERENCE, REFERENCE_RUNTIME):
            groups.setdefault((case["variant"], case["runtime"]), []).append(
                (gain, case["net"], case["batch_size"], case))
    for (variant, runtime), gains in groups.items():
        faster = sum(g > 1 for g, *_ in gains)
        worst = min(gains, key=lambda g: g[0])
        best = max(gains, key=lambda g: g[0])

        def end(gain):
            interval = speedup_interval(results, gain[3])
            around = f", 95 % interval {slower_or_faster(interval)}" if interval else ""
            return f"{tables.speed_ratio(1, 1 / gain[0])} ({gain[1]}, batch {gain[2]}{around})"
        ends = end(worst) if worst is best else f"from {end(worst)} to {end(best)}"
        said.append(f"{variant} on {runtime} vs {REFERENCE} on {REFERENCE_RUNTIME}: faster in "
                    f"{faster} of {len(gains)} net x batch cases; {ends}.")
    return said


def _runtime_findings(results):
    """The same int8 file, different runtimes: how far apart their speeds are."""
    said = []
    for net in results["nets"]:
        for batch in results["config"]["batch_sizes"]:
            int8 = {c["runtime"]: c for c in timed_at(results) if c["net"] == net
                    and c["batch_size"] == batch and c["variant"] == "int8"}
            if len(int8) > 1:
                fast = min(int8.values(), key=lambda c: c["median"])
                slow = max(int8.values(), key=lambda c: c["median"])
                said.append((net, batch, fast["runtime"], slow["runtime"], times(slow, fast)))
    lines = []
    for pair in dict.fromkeys((fast, slow) for _, _, fast, slow, _ in said):
        cases = [(net, batch, text) for net, batch, fast, slow, text in said if (fast, slow) == pair]
        where = ", ".join(f"{net} b{batch} {text}" for net, batch, text in cases)
        lines.append(f"The same int8 file runs faster on {pair[0]} than on {pair[1]} in "
                     f"{len(cases)} case(s): {where}.")
    return lines


def _counter_findings(results):
    """int8 against float32 under the counters, one line per pattern rather than per case."""
    patterns = {}
    counted = {(c["net"], c["variant"], c["runtime"], c["batch_size"]): c["counters"]
               for c in results["cases"] if c.get("counters")}
    for (net, variant, runtime, batch), counts in counted.items():
        if variant != "int8":
            continue
        reference = counted.get((net, REFERENCE, runtime, batch))
        if not reference:
            continue
        ours, theirs = counts["per_inference"], reference["per_inference"]
        ratio = ours["instructions"] / theirs["instructions"]
        rate_lower = (counts["rates"]["total_miss_rate"] or 0) < (reference["rates"]["total_miss_rate"] or 0)
        more_misses = (ours["cache_misses"] or 0) > (theirs["cache_misses"] or 0)
        if rate_lower and more_misses:
            pattern = "a lower miss rate but more misses in absolute terms (as in P17)"
        elif rate_lower:
            pattern = "a lower miss rate and fewer misses"
        elif more_misses:
            pattern = "a higher miss rate and more misses"
        else:
            pattern = "a higher miss rate but fewer misses"
        patterns.setdefault((runtime, pattern), []).append((ratio, f"{net} b{batch}"))
    said = []
    for (runtime, pattern), cases in patterns.items():
        ratios = [r for r, _ in cases]
        said.append(f"On {runtime}, int8 executes {span(ratios, unit='x')} the instructions of "
                    f"float32 per inference and has {pattern} ({', '.join(c for _, c in cases)}).")
    return said


def findings(results):
    """Short statements derived from the numbers of this run (never hand-written claims)."""
    from quantlab import p17

    said = _size_and_accuracy_findings(results) + _speed_findings(results)
    said += _runtime_findings(results)
    p17_ratios = [q / s for n in p17.NETS for s, q in p17.SECONDS[n].values()]
    said.append(f"P17 (TensorFlow 1 graph transforms, {p17.CPU}) measured its quantized nets "
                f"{span(p17_ratios, '{:.1f}', 'x')} slower than float over the same batch sizes.")
    return said + _counter_findings(results)


# --- tables ----------------------------------------------------------------------------------

def size_table(results):
    """P17: network, standard size, quantized size, ratio; one row per file-backed variant."""
    rows = []
    for net, entry in results["nets"].items():
        files = entry["artifacts"]
        if REFERENCE not in files:
            continue
        for variant, meta in files.items():
            if variant != REFERENCE and not meta.get("execute_in"):
                rows.append([net, variant, megabytes(files[REFERENCE]["bytes"]),
                             megabytes(meta["bytes"]), f"{files[REFERENCE]['bytes'] / meta['bytes']:.3f}"])
    return markdown_table(["network", "variant", "standard size (float32)", "quantized size",
                           "SN size / QN size"], rows)


def accuracy_table(results):
    """P17: standard and quantized accuracy and their ratio; plus change, agreement, Δp."""
    rows = []
    for row in scored(results):
        reference = accuracy_of(results, row["net"], row["reference"], row["reference_runtime"])
        if row is reference or reference is None:
            continue
        rows.append([row["net"], row["variant"], row["runtime"], row["precision"],
                     f"{reference['accuracy']:.4f}", f"{row['accuracy']:.4f}",
                     f"{row['accuracy'] / reference['accuracy']:.3f}", f"{row['delta_points']:+.2f}",
                     f"{100 * row['agreement']:.2f} %", f"{row['max_abs_diff']:.3f}"])
    return markdown_table(["network", "variant", "runtime", "executed in", "standard accuracy",
                           "quantized accuracy", "QN acc / SN acc", "change (points)",
                           "top-1 agreement", "largest Δp"], rows)


def runtime_table(results, net, batch):
    """Which runtime: every (variant, runtime) latency of one net and batch size; n/a where
    the runtime does not read that file, "failed" where it could not run it."""
    first = thread_counts(results)[0]
    cases = {(c["variant"], c["runtime"]): c for c in results["cases"]
             if c["net"] == net and c["batch_size"] == batch and (c.get("threads") or 1) == first}
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
                cells.append(tables.seconds(case["median"]) + (f" ({gain})" if gain else ""))
        rows.append([variant] + cells)
    return markdown_table(["variant"] + runtimes, rows)


def best_table(results):
    """Per net and batch: the best float32 and the best int8, and what each buys."""
    rows = []
    for net in results["nets"]:
        for batch in results["config"]["batch_sizes"]:
            cases = [c for c in timed_at(results) if c["net"] == net and c["batch_size"] == batch]
            floats = [c for c in cases if not quantized(c["variant"]) and c["precision"] == "float32"]
            ints = [c for c in cases if c["precision"] == "int8"]
            if not floats or not ints:
                continue
            best_float = min(floats, key=lambda c: c["median"])
            best_int = min(ints, key=lambda c: c["median"])
            same = next((c for c in floats if c["runtime"] == best_int["runtime"]), None)
            rows.append([net, str(batch), tables.variant_label(best_float),
                         tables.seconds(best_float["median"]), tables.variant_label(best_int),
                         tables.seconds(best_int["median"]),
                         times(same, best_int) if same else "–", times(best_float, best_int)])
    return markdown_table(["network", "batch", "best float32", "median", "best int8", "median",
                           "int8 vs float32, same runtime", "best vs best"], rows)


def thread_scaling_table(results):
    """Each option's latency at every thread count, and how many times faster than itself at
    the first count (paired by round, with its interval); the threads seen busy."""
    counts = thread_counts(results)
    if len(counts) < 2:
        return None
    by_key = {(c["net"], c["batch_size"], c["variant"], c["runtime"], c.get("threads") or 1): c
              for c in timed(results)}
    rows = []
    for (net, batch, variant, runtime, threads), one in by_key.items():
        if threads != counts[0]:
            continue
        row = [net, str(batch), f"{variant} on {runtime}", tables.seconds(one["median"])]
        for more in counts[1:]:
            case = by_key.get((net, batch, variant, runtime, more))
            row.append(f"{tables.seconds(case['median'])} ({times(one, case)})" if case else "–")
        busy = [str(c["threads_busy"]) for c in (by_key.get((net, batch, variant, runtime, n))
                                                for n in counts) if c and c.get("threads_busy")]
        row.append("/".join(busy) or "–")
        rows.append(row)
    return markdown_table(["network", "batch", "option", threads_text(counts[0])]
                          + [f"{n} threads (x faster)" for n in counts[1:]]
                          + ["threads busy"], rows)


def thread_findings(results):
    """Where the pick changes with the thread count, and threads that did not run as asked."""
    counts = thread_counts(results)
    said = []
    for net in results["nets"]:
        for batch in results["config"]["batch_sizes"]:
            picks = {n: pick(results, net, batch, n) for n in counts}
            first, _, first_ties = picks[counts[0]]
            for n in counts[1:]:
                best, _, ties = picks[n]
                if first and best and tables.case_key(best)[1:3] not in [
                        tables.case_key(c)[1:3] for c in first_ties]:
                    said.append(f"{net}, batch {batch}: with {n} threads the pick changes from "
                                f"{tables.variant_label(first)} to {tables.variant_label(best)}.")
    for case in timed(results):
        busy, asked = case.get("threads_busy"), case.get("threads") or 1
        if busy and busy != asked:
            said.append(f"{tables.variant_label(case)} ({case['net']}, batch {case['batch_size']}) "
                        f"kept {threads_text(busy)} busy where {asked} were asked.")
    return said


def counts_table(cases):
    """Absolute counts per inference: a rate alone misled P17."""
    rows = []
    for case in tables.counted(cases):
        per = case["counters"]["per_inference"]
        rows.append([case["net"], tables.variant_label(case), str(case["batch_size"])]
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
                f"{case['net']} {tables.variant_label(case)} b{case['batch_size']}")
    return [f"- {literal(reason)}: {len(which)} case(s)" + (f" ({literal(', '.join(which))})" if len(which) <= 6 else "")
            for reason, which in reasons.items()]


def not_run_lines(results):
    """Every (variant, runtime) that a runtime could not evaluate or time, with its reason."""
    reasons = {}
    for row in results["accuracy"] + results["cases"]:
        if row.get("not_run"):
            where = f"{row['net']} {tables.variant_label(row)}"
            reasons.setdefault(row["not_run"], []).append(
                where + (f" b{row['batch_size']}" if "batch_size" in row else " (accuracy)"))
    return [f"- {literal(reason)}: {literal(', '.join(which))}" for reason, which in reasons.items()]


def attribution_table(cases):
    """Where the time goes, natively and simulated, side by side for each case that has either.

    native: perf record samples of the timed loop on this CPU (the kernels that really ran);
    simulated: valgrind's instruction counts, on a virtual CPU without AVX-512 or AMX.
    """
    rows = []
    for case in cases:
        native = case.get("native")
        simulated = (case.get("counters") or {}).get("top_kernels")
        if not (native and native["kernels"]) and not simulated:
            continue
        rows.append([case["net"], tables.variant_label(case), str(case["batch_size"]),
                     tables.kernels_text(native["kernels"]) if native else "–",
                     "; ".join(f"{100 * k['share']:.0f} % {k['function'][:60]}" for k in simulated[:3])
                     if simulated else "–"])
    return markdown_table(["network", "variant", "batch", "native: share of samples (ISA)",
                           "simulated: share of instructions"], rows)


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
            rows.append([case["net"], tables.variant_label(case), str(case["batch_size"]),
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


def _clock_line(machine):
    clock = machine.get("clock") or {}
    nominal = machine["cpu"].get("mhz")
    nominal = f"{nominal / 1000:.2f} GHz nominal" if nominal else "nominal clock unknown"
    if not clock.get("measured"):
        return f"- Clock: {nominal}; not measured ({clock.get('reason', 'no measurement')})"
    return (f"- Clock: {clock['ghz']:.2f} GHz measured ({clock['method']}), {nominal}; "
            f"% of peak is given against both")


def _bandwidth_line(machine):
    bandwidth = machine.get("bandwidth") or {}
    if not bandwidth.get("measured"):
        return f"- Read bandwidth of one core: not measured ({bandwidth.get('reason', 'no measurement')})"
    levels = ", ".join(f"{name} {level['bytes_per_second'] / 1e9:.0f} GB/s"
                       for name, level in bandwidth["levels"].items())
    return f"- Read bandwidth of one core ({bandwidth['reader']} loads): {levels}"


def _ceilings_lines(machine):
    """The compute peaks as measured, and every ceiling's spread over the measurements."""
    from quantlab import ceiling_spread, peaks

    kept = machine.get("ceilings")
    if not kept or not kept.get("spread"):
        return []
    ghz = (machine.get("clock") or {}).get("ghz")
    said = peaks.format_peaks(machine["peaks"], ghz) if machine.get("peaks") else "compute peaks: none"
    lines = [f"- {said[0].upper()}{said[1:]}",
             f"- Ceilings used for the roofline and % of peak: {kept['used']['rule']}"]
    lines += [f"  - {line}" for line in ceiling_spread.format_spread(kept)]
    if kept.get("moved"):
        lines.append(f"  - **{kept['moved']}**")
    return lines


def _machine_section(results, cases):
    machine = results["machine"]
    cpu = machine["cpu"]
    flags = ", ".join(name for name, present in cpu.get("flags", {}).items() if present) or "none found"
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    lines = [f"- Machine: {literal(machine.get('name', 'unnamed'))}",
             f"- CPU: {literal(cpu.get('model', 'unknown'))}, {cpu.get('available_cores', '?')} cores available, "
             f"{machine['threads']} thread(s) used for inference",
             f"- ISA flags that matter for int8: {flags}",
             _clock_line(machine), _bandwidth_line(machine), *_ceilings_lines(machine),
             f"- Software: {literal(versions)}",
             f"- Runtimes: {', '.join(results['runtimes'])}"]
    lines += [f"  - left out: {name}: {literal(why)}" for name, why in machine.get("runtimes_skipped", {}).items()]
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
    mode = "quick (small training subset)" if results["config"]["quick"] else "full"
    sizes, accuracy, speed, misses, ipc = p17_tables()
    batches = results["config"]["batch_sizes"]
    cases = timed(results)
    counted = tables.counted(results["cases"])
    parts = [
        "# quantlab report: what 8-bit quantization does to these nets on this CPU",
        f"Dataset **{data['name']}** ({data['train']} training / {data['test']} test images, "
        f"{'x'.join(map(str, data['input_shape']))}, from {literal(data['source'])}); training: {mode}.",
        "## What to ship",
        f"The fastest option per net and batch size among those within {ACCURACY_TOLERANCE:g} "
        f"accuracy point of {REFERENCE} (speed against {REFERENCE} on {REFERENCE_RUNTIME}, "
        f"the median of per-round ratios with its 95 % interval; accuracy change on the whole "
        f"test split). Options that the rounds cannot tell apart from the fastest are named "
        f"as ties, and among ties the one with less to deploy is chosen.",
        "\n".join(f"- {line}" for line in results["recommendations"]) or "- nothing was timed",
        "## Machine", _machine_section(results, counted),
        "## Findings", "\n".join(f"- {line}" for line in results["findings"]),
        "## Size", size_table(results),
        f"## Accuracy on the {data['test']} test images", accuracy_table(results),
        "## Which runtime",
        f"Median latency of one batch per variant and runtime at "
        f"{threads_text(thread_counts(results)[0])} (x: times faster than {REFERENCE} "
        f"on {REFERENCE_RUNTIME}, with its 95 % interval; n/a: the runtime cannot run that "
        f"file). {rounds_line(results)}",
    ]
    for net in results["nets"]:
        for batch in batches:
            parts += [f"### {net}, batch {batch}", runtime_table(results, net, batch)]
    if results.get("deployment"):
        parts += ["### What a deployment also pays",
                  "Each (variant, runtime) loaded in a fresh process: the runtime's import, the "
                  "load (read, compile or interpreter creation, tensor allocation), the first "
                  "inference against the steady one (batch 1), and the peak resident memory "
                  "above an empty process that imported the same runtime.",
                  deployment.deployment_table(results)]
    scaling = thread_scaling_table(results)
    if scaling:
        parts += ["### Threads",
                  "Every case at each thread count, timed in the same rounds, so each speed-up "
                  "over the first count is paired by round; 'threads busy': the threads of the "
                  "process that worked while the case ran (read from the kernel's per-thread "
                  "run time), at each count.", scaling,
                  "\n".join(f"- {line}" for line in thread_findings(results))
                  or "- The pick is the same at every thread count."]
    parts += ["### Best float32 and best int8", best_table(results),
              "## Latency",
              "Only the inference call on a prepared batch is timed (pytest-benchmark); "
              "'executed in' is the arithmetic the runtime reports it ran; GMAC/s is the "
              "arithmetic achieved, 'of peak' its share of the nominal peak of that arithmetic "
              "on this CPU."]
    for batch in batches:
        parts += [f"### Batch size {batch}",
                  tables.latency_table([c for c in cases if c["batch_size"] == batch])]
    if counted:
        parts += [
            "## Cache behaviour",
            "Miss rates in %, total / L1d / LLC, as P17 reported them (total = last-level "
            "references that missed).", tables.miss_rate_table(counted),
            "### Instructions per inference", tables.instructions_table(counted),
            "### Counts per inference", counts_table(counted),
        ]
    attributed = [c for c in cases if c.get("native") or c.get("counters")]
    if attributed:
        parts += ["## Where the time goes",
                  "Native: perf record (cpu-clock) samples of each timed loop, the kernels that "
                  "really ran on this CPU and the instruction set their names say. Simulated: "
                  "valgrind's instruction counts of the counted cases, whose virtual CPU has no "
                  "AVX-512 or AMX, so XNNPACK runs its AVX2 kernels there.",
                  attribution_table(attributed)]
    missing = next((c["native_missing"] for c in cases if c.get("native_missing")), None)
    if missing and not any(c.get("native") for c in cases):
        parts += [f"Native attribution: none, {missing}"]
    if any(c.get("layers") for c in cases):
        parts += ["### The runtimes' own per-layer times",
                  "OpenVINO's performance counts and ONNX Runtime's node profile: the primitive "
                  "each layer ran and its share of the inference.", layers_by_runtime_table(cases)]
    roofline = results.get("roofline") or {}
    if roofline.get("cases"):
        lines = [line for by_net in roofline["findings"].values() for line in by_net.values()]
        parts += ["## Roofline",
                  "MACs per byte moved (weights once per batch, activations per image) against "
                  "the MAC/s achieved, under the compute peaks at the measured clock and the "
                  "measured read bandwidth of each cache level; each case is bound by the lower "
                  "roof at its intensity, memory taken from the level its working set fits in.",
                  "\n".join(f"- {line}" for line in lines)]
        if roofline.get("plot"):
            parts.append(f"![roofline]({roofline['plot']})")
    failures = not_run_lines(results)
    if failures:
        parts += ["## Could not run", "\n".join(failures)]
    missing = not_counted_lines(results["cases"])
    if missing:
        parts += ["### Not counted", "\n".join(missing)]
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
