"""The sentences of a report, each generated from the numbers of the run, never written by
hand: what to ship, the findings that matter (one line per kind, the per-case repetition
merged), and the longer per-option and per-case lines that go to the details."""

from quantlab import tables
from quantlab.lookups import (
    DEPLOYMENT_WEIGHT, PACE_NOTED, WHY_LIGHTER, accuracy_of, batch_sizes, deployment_note,
    faster_rounds, is_reference, labelled, max_drop, pick, reference, reference_text, scored,
    shippable, slower_or_faster, span, speedup, speedup_interval, speedup_method, speedup_text,
    thread_counts, threads_of, threads_text, timed, timed_at)
from quantlab.variant_table import quantized


def what_to_ship(results):
    """The rule the picks of What to ship follow, in the words of this study's reference."""
    variant, budget = reference(results)[0], max_drop(results)
    kept = ("accuracy change on the test images scored" if labelled(results) else
            f"the images have no labels, so an option is kept when its top-1 agreement with "
            f"{variant} is at least {100 - budget:g} %, which bounds the accuracy "
            f"it can lose at {budget:g} point")
    return (f"The fastest option per net and batch size among those within "
            f"{budget:g} accuracy point (--max-drop) of {variant} (speed against "
            f"{reference_text(results)}, {speedup_method(results)} with its 95 % interval; "
            f"{kept}). Options that the rounds cannot tell apart from the fastest are named as "
            f"ties, and among ties the one with less to deploy is chosen.")


# A float model whose top-1 accuracy is below this many times chance (1 / classes) is not
# seeing the pixels it was trained on: a trained classifier of 10 classes that scores under
# 15 % is that, far more often than a bad model.
NEAR_CHANCE = 1.5
# ... nor is one that names one class for at least this share of the images (of at least
# DOMINANT_IMAGES), when the labels, if there are any, do not: a Fashion-MNIST classifier fed
# pixels of 0-255 where it expects 0-1 answered one class for 72 % of the images.
DOMINANT, DOMINANT_IMAGES = 0.6, 20


PREPROCESSING_FIX = ("the images are likely not preprocessed as the model expects: check "
                     "--scale, --mean, --std and --layout against the model's own evaluation")


def doubt(row, classes):
    """What is wrong with a float model's answers on ``row["test_images"]`` images (the
    fields of an accuracy row: classes_predicted, top_class_share, top_class_label_share,
    accuracy), in words, or None; ``classes``: how many the model has (None: unknown). The
    one rule of the report's Read first and of the study's check of the first batch."""
    images, share = row.get("test_images") or 0, row.get("top_class_share") or 0
    if row.get("classes_predicted") == 1 and images > 1:
        return f"predicts the same class for all {images} images"
    if classes and row.get("accuracy") is not None and row["accuracy"] < NEAR_CHANCE / classes:
        return (f"scores {100 * row['accuracy']:.1f} % top-1, near chance "
                f"({100 / classes:.1f} % for {classes} classes)")
    if images >= DOMINANT_IMAGES and share >= DOMINANT and (
            row.get("top_class_label_share") or 0) < share / 2:
        labels = ("" if row.get("top_class_label_share") is None else
                  f" (the labels: {100 * row['top_class_label_share']:.0f} %)")
        return f"predicts one class for {100 * share:.0f} % of the {images} images{labels}"
    return None


def read_first(results):
    """What makes every other number of the report doubtful: the reference predicting one
    class for every image, or scoring near chance, which a wrong --scale, --mean, --std or
    --layout gives (the model then sees other pixels than it was trained on)."""
    classes = (results.get("dataset") or {}).get("classes")
    return [f"{row['net']}: {reference_text(results)} {found}; {PREPROCESSING_FIX}."
            for row in scored(results) if is_reference(results, row["variant"], row["runtime"])
            and (found := doubt(row, classes))]


def accuracy_words(row):
    """``+0.12 points`` or, without labels, ``99.4 % top-1 agreement``."""
    if row.get("delta_points") is not None:
        return f"{row['delta_points']:+.2f} points"
    return f"{100 * row['agreement']:.1f} % top-1 agreement"


def recommendations(results):
    """For each net, batch size (and thread count), the fastest option that keeps accuracy,
    its ties, and what it costs to deploy, in one line."""
    said = []
    counts = thread_counts(results)
    for net in results["nets"]:
        for batch in batch_sizes(results, net):
            for threads in counts:
                best, fastest, ties = pick(results, net, batch, threads)
                if best is None:
                    continue
                row = accuracy_of(results, net, best["variant"], best["runtime"])
                where = f"{net}, batch {batch}" + (f", {threads_text(threads)}" if len(counts) > 1 else "")
                if is_reference(results, best["variant"], best["runtime"]):
                    line = (f"{where}: {reference_text(results)} itself: no other option within "
                            f"the tolerance was faster")
                else:
                    line = (f"{where}: {best['variant']} on {best['runtime']}: "
                            f"{speedup_text(results, best)} faster than "
                            f"{reference_text(results)}, {accuracy_words(row)}")
                paid = deployment_note(results, best)
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


def each_quantizer(results):
    """Per net, every quantized variant on its fastest runtime at the largest batch size
    (first thread count): its speed-up on the reference, accuracy, how many times smaller
    its file is than the reference's, and whether it keeps within --max-drop; in one line,
    so that a quantizer that is never the pick is still weighed here."""
    said, float_variant = [], reference(results)[0]
    for net, entry in results["nets"].items():
        files = entry.get("artifacts") or {}
        cases = [c for c in timed_at(results) if c["net"] == net and quantized(c["variant"])]
        if not cases:
            continue
        batch = max(c["batch_size"] for c in cases)
        best = {}
        for case in sorted((c for c in cases if c["batch_size"] == batch),
                           key=lambda c: c["median"]):
            best.setdefault(case["variant"], case)  # the first is the fastest
        parts = []
        for variant, case in best.items():
            row = accuracy_of(results, net, variant, case["runtime"])
            ratio = ((files.get(float_variant) or {}).get("bytes") or 0) / (
                (files.get(variant) or {}).get("bytes") or float("inf"))
            size = f"{ratio:.2f}x smaller" if ratio >= 1.05 else "no smaller"
            kept = ("not scored" if row is None else
                    f"{accuracy_words(row)}, " + ("within the budget" if shippable(results, case)
                                                  else "loses more than --max-drop"))
            parts.append(f"{variant} on {case['runtime']} {speedup_text(results, case) or '?'}, "
                         f"{kept}, {size}")
        said.append(f"each quantizer of {net} at its best (batch {batch}): " + "; ".join(parts))
    return said


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
    line = (f"Timed in interleaved rounds (every case once per round, in a shuffled order, "
            f"the groups of every net and batch size in turn; a case whose speed-up was known "
            f"within the target left the rounds): "
            f"{span(counts, '{:d}')} rounds per net and batch size; every speed-up known "
            f"within +-{target:g} % in {len(groups) - len(short)} of {len(groups)} groups")
    if short:
        (net, batch), worst = max(short.items(), key=lambda item: item[1]["widest"])
        line += (f"; the others stopped at their time budget (widest +-"
                 f"{100 * worst['widest']:.1f} %, {net} at batch {batch})")
    return line + f". {_loads_line(results)}{_pace_line(results)}A latency is a case's median " \
                  f"over its rounds; a speed-up is {speedup_method(results)}."


def _loads_line(results):
    """Which cases' rounds ran on a second load of their model (quantlab.rounds), if any."""
    starts = [(case.get("interleaved") or {}).get("loads_from", [0]) for case in timed(results)
              if case.get("interleaved")]
    again = [loads[1] for loads in starts if len(loads) > 1]
    if not again:
        return ""
    which = "Every case's" if len(again) == len(starts) else f"{len(again)} of {len(starts)} cases'"
    return (f"{which} model was loaded a second time before round {min(again) + 1}, so that "
            f"its rounds see two placements of its weights in memory, not one. ")


def _pace_line(results):
    """Rounds in which the whole machine ran faster than usual (``intervals.pace``), if any."""
    fast, rounds = faster_rounds(results)
    if not fast:
        return ""
    low, (net, batch), number = fast[0]
    return (f"In {len(fast)} of {rounds} rounds the whole machine ran faster: every case of "
            f"the round together at least {100 * PACE_NOTED:g} % faster than its median (up to "
            f"{100 * (1 - low):.0f} %, {net} at batch {batch}, round {number + 1}; a neighbour "
            f"that paused, or a higher clock). Cases do not all gain alike from a faster "
            f"machine, so a speed-up measured at another pace may not repeat: a second study "
            f"shows how far. ")


def _signed(values):
    low, high = min(values), max(values)
    return f"{low:+.2f}" if f"{low:+.2f}" == f"{high:+.2f}" else f"{low:+.2f} to {high:+.2f}"


def _size_and_accuracy(results):
    by_variant = {}
    variant_of_reference = reference(results)[0]
    for row in scored(results):
        if row["variant"] != variant_of_reference:
            by_variant.setdefault(row["variant"], []).append(row)
    if not by_variant:
        return []
    smaller = [f"{v} {span([r['size_ratio'] for r in rows], unit='x')}"
               for v, rows in by_variant.items() if max(r["size_ratio"] for r in rows) >= 1.05]
    same = [v for v, rows in by_variant.items() if max(r["size_ratio"] for r in rows) < 1.05]
    agreements = {v: f"{span([100 * r['agreement'] for r in rows], '{:.1f}')} %"
                  for v, rows in by_variant.items() if quantized(v)}
    said = []
    if smaller:
        said.append(f"Smaller than {variant_of_reference}: {', '.join(smaller)}"
                    + (f"; {', '.join(same)} the same size." if same else "."))
    if agreements and labelled(results):
        changed = [f"{v} {_signed([r['delta_points'] for r in by_variant[v]])} ({agreed})"
                   for v, agreed in agreements.items()]
        said.append(f"Top-1 accuracy change against {variant_of_reference} in points (agreement "
                    f"with it on the test images): {', '.join(changed)}.")
    elif agreements:
        said.append(f"The test images have no labels, so no accuracy: top-1 agreement with "
                    f"{variant_of_reference} instead: "
                    f"{', '.join(f'{v} {agreed}' for v, agreed in agreements.items())}.")
    return said


def _gains(results):
    """{(variant, runtime): [(speed-up, case), ...]} over the nets and batch sizes, at the
    first thread count, for every option but the reference."""
    gains = {}
    for case in timed_at(results):
        gain = speedup(results, case)
        if gain and not is_reference(results, case["variant"], case["runtime"]):
            gains.setdefault((case["variant"], case["runtime"]), []).append((gain, case))
    return gains


def speed_lines(results):
    """Each option against the reference over the nets and batch sizes: how often faster,
    its slowest and fastest case with their intervals."""
    said = []
    for (variant, runtime), gains in _gains(results).items():
        faster = sum(g > 1 for g, _ in gains)
        worst, best = min(gains, key=lambda g: g[0]), max(gains, key=lambda g: g[0])

        def end(gain):
            interval = speedup_interval(results, gain[1])
            around = f", 95 % interval {slower_or_faster(interval)}" if interval else ""
            return (f"{tables.speed_ratio(1, 1 / gain[0])} ({gain[1]['net']}, batch "
                    f"{gain[1]['batch_size']}{around})")
        ends = end(worst) if worst is best else f"from {end(worst)} to {end(best)}"
        said.append(f"{variant} on {runtime} vs {reference_text(results)}: faster in "
                    f"{faster} of {len(gains)} net x batch cases; {ends}.")
    return said


def _speed(results):
    """The speed lines merged: the options always faster, mixed, and always slower."""
    kinds = {"always": [], "mixed": [], "never": []}
    gains = _gains(results)
    for (variant, runtime), found in sorted(gains.items(), key=lambda item: -max(g for g, _ in item[1])):
        values = [g for g, _ in found]
        faster = sum(g > 1 for g in values)
        kind = "always" if faster == len(values) else "never" if faster == 0 else "mixed"
        kinds[kind].append(f"{variant} on {runtime} {span(values, '{:.1f}', 'x')}"
                           + (f" ({faster} of {len(values)})" if kind == "mixed" else ""))
    against = reference_text(results)
    at = f"at {threads_text(thread_counts(results)[0])}, over every net and batch size"
    words = {"always": f"Faster than {against} in every case ({at}, times as fast)",
             "mixed": f"Faster than {against} in some cases only (times as fast; cases faster)",
             "never": f"Never faster than {against} (times as fast)"}
    return [f"{words[kind]}: {'; '.join(options)}." for kind, options in kinds.items() if options]


def _runtimes(results):
    """The same int8 file on different runtimes: which is faster, how often, by how much."""
    pairs = {}
    for net in results["nets"]:
        for batch in batch_sizes(results, net):
            int8 = [c for c in timed_at(results) if c["net"] == net and c["batch_size"] == batch
                    and c["variant"] == "int8"]
            if len(int8) > 1:
                fast = min(int8, key=lambda c: c["median"])
                slow = max(int8, key=lambda c: c["median"])
                pairs.setdefault((fast["runtime"], slow["runtime"]), []).append(
                    (f"{net} b{batch}", slow["median"] / fast["median"]))
    if not pairs:
        return []
    parts = [f"on {fast} than on {slow} in {len(cases)} case(s), by "
             f"{span([r for _, r in cases], '{:.1f}', 'x')}"
             + (f" ({', '.join(where for where, _ in cases)})" if len(cases) <= 2 else "")
             for (fast, slow), cases in pairs.items()]
    return [f"The same int8 file runs faster {'; '.join(parts)}."]


def _p17():
    from quantlab import p17

    ratios = [q / s for n in p17.NETS for s, q in p17.SECONDS[n].values()]
    return (f"P17 (TensorFlow 1 graph transforms, {p17.CPU}) measured its quantized nets "
            f"{span(ratios, '{:.1f}', 'x')} slower than float over the same batch sizes.")


def _counters(results):
    """int8 against float32 under the counters, one line per runtime."""
    counted = {(c["net"], c["variant"], c["runtime"], c["batch_size"]): c["counters"]
               for c in results["cases"] if c.get("counters")}
    by_runtime = {}
    for (net, variant, runtime, batch), counts in counted.items():
        float32 = counted.get((net, reference(results)[0], runtime, batch))
        if variant != "int8" or not float32:
            continue
        ours, theirs = counts["per_inference"], float32["per_inference"]
        lower_rate = (counts["rates"]["total_miss_rate"] or 0) < (float32["rates"]["total_miss_rate"] or 0)
        more_misses = (ours["cache_misses"] or 0) > (theirs["cache_misses"] or 0)
        by_runtime.setdefault(runtime, []).append(
            (ours["instructions"] / theirs["instructions"], lower_rate, more_misses))
    said = []
    for runtime, cases in by_runtime.items():
        n = len(cases)
        said.append(f"On {runtime}, int8 executes {span([c[0] for c in cases], unit='x')} the "
                    f"instructions of float32 per inference ({n} counted case(s)); a lower miss "
                    f"rate in {sum(c[1] for c in cases)} of {n}, more misses in "
                    f"{sum(c[2] for c in cases)} of {n}, both at once (P17's pattern) in "
                    f"{sum(c[1] and c[2] for c in cases)} of {n}.")
    return said


def thread_findings(results):
    """Where the pick changes with the thread count, and threads that did not run as asked."""
    counts = thread_counts(results)
    said = []
    for net in results["nets"]:
        for batch in batch_sizes(results, net):
            picks = {n: pick(results, net, batch, n) for n in counts}
            first, _, first_ties = picks[counts[0]]
            for n in counts[1:]:
                best, _, ties = picks[n]
                if first and best and tables.case_key(best)[1:3] not in [
                        tables.case_key(c)[1:3] for c in first_ties]:
                    said.append(f"{net}, batch {batch}: with {n} threads the pick changes from "
                                f"{tables.variant_label(first)} to {tables.variant_label(best)}.")
    for case in timed(results):
        busy, asked = case.get("threads_busy"), threads_of(case)
        if busy and busy != asked:
            said.append(f"{tables.variant_label(case)} ({case['net']}, batch {case['batch_size']}) "
                        f"kept {threads_text(busy)} busy where {asked} were asked.")
    return said


def _threads(results):
    """The thread findings merged: how many picks change, which options ran other counts."""
    counts = thread_counts(results)
    if len(counts) < 2:
        return []
    groups = [(net, batch) for net in results["nets"] for batch in batch_sizes(results, net)]
    lines = thread_findings(results)
    changed = sum(any(line.startswith(f"{net}, batch {batch}: with ") for line in lines)
                  for net, batch in groups)
    said = [f"The pick changes with the thread count in {changed} of {len(groups)} net x batch "
            f"cases (What to ship gives each)."]
    other = {}
    for case in timed(results):
        busy, asked = case.get("threads_busy"), threads_of(case)
        if busy and busy != asked:
            other.setdefault(tables.variant_label(case), set()).add(f"{busy} where {asked} asked")
    if other:
        said.append("Threads busy other than asked: " + "; ".join(
            f"{option} ({', '.join(sorted(seen))})" for option, seen in other.items()) + ".")
    return said


def findings(results):
    """The findings that matter, at most a dozen lines: one line per kind, merged over the
    nets, batch sizes and options (the per-option lines are in the details)."""
    p17 = [] if results.get("model") else [_p17()]  # P17's nets, not a user's model
    return (_size_and_accuracy(results) + _speed(results) + _runtimes(results) + p17
            + _counters(results) + _threads(results))
