"""The accuracy / speed trade-off of each net in words: which layers int8 hurts and what
keeping them in float regained (results.json's ``sensitivity``), the Pareto front of every
option measured at each batch size, and what to ship on it under ``--max-drop``.

report.md gets a few lines a net; details.md every layer ranked and every search step.
"""

import re

from quantlab import pareto
from quantlab.lookups import max_drop, thread_counts, timed_at, worst_change
from quantlab.lookups import accuracy_of
from quantlab.safe_text import markdown as literal  # layer names come from the user's model
from quantlab.variant_table import natural_reader, quantized

SHOWN_LAYERS = 3  # layers named per quantizer in report.md (details.md: all)


def plot_name(net, batch):
    return f"pareto_{re.sub(r'[^A-Za-z0-9_.-]', '_', net)}_b{batch}.png"


def batches(results, net):
    return sorted({c["batch_size"] for c in timed_at(results) if c["net"] == net})


def pareto_rows(results, net, batch):
    """Every option of ``net`` timed at ``batch`` (first thread count) and scored."""
    artifacts = results["nets"][net].get("artifacts") or {}
    rows = []
    for case in timed_at(results):
        scored = accuracy_of(results, net, case["variant"], case["runtime"])
        if case["net"] != net or case["batch_size"] != batch or scored is None:
            continue
        rows.append({"variant": case["variant"], "runtime": case["runtime"],
                     "delta_points": worst_change(scored), "latency": case["median"],
                     "bytes": (artifacts.get(case["variant"]) or {}).get("bytes") or 1,
                     "precision": "int8" if quantized(case["variant"]) else "float32"})
    return rows


def float_layers(results, net):
    """{mixed variant: [Keras layers it keeps in float]}."""
    found = {}
    for entry in ((results.get("sensitivity") or {}).get(net) or {}).values():
        if entry.get("mixed") and entry.get("search"):
            found[entry["mixed"]["variant"]] = [literal(n) for n in entry["search"]["kept_float"]]
    return found


def ship_lines(results):
    """Per net and batch size: the front in words, what to ship on it, and its plot."""
    lines, budget = [], max_drop(results)
    for net in results["nets"]:
        for batch in batches(results, net):
            rows = pareto_rows(results, net, batch)
            if not rows:
                continue
            _, sentence = pareto.what_to_ship(rows, budget, float_layers(results, net))
            lines.append(f"on the front of {literal(net)} at batch {batch}: {sentence}; "
                         f"{pareto.describe_front(rows)} ([plot]({plot_name(net, batch)}))")
    return lines


def _layer_text(ranking, row):
    statistic = row.get(ranking["statistic"])
    regained = row.get("points_regained")
    return (f"{literal(row['layer'])} ({ranking['statistic']} "
            f"{'-' if statistic is None else f'{statistic:.3g}'}"
            + ("" if regained is None else f", {regained:+.2f} points kept float") + ")")


def _latency(results, net, variant, batch):
    case = next((c for c in timed_at(results) if (c["net"], c["variant"], c["batch_size"],
                                                  c["runtime"]) == (net, variant, batch,
                                                                    natural_reader(variant))), None)
    return f"{case['median'] * 1e3:.3g} ms" if case else "not timed"


def _speed_cost(results, net, variant, base):
    """The mixed variant's latency beside its quantizer's and float32's, on its own runtime."""
    counterpart = "onnx_float32" if variant.startswith("onnx") else "float32"
    return "; ".join(
        f"batch {batch} on {natural_reader(variant)}: {_latency(results, net, variant, batch)} "
        f"against {base} {_latency(results, net, base, batch)} and {counterpart} "
        f"{_latency(results, net, counterpart, batch)}" for batch in batches(results, net))


def section(results):
    """report.md's Sensitivity section: per net and quantizer, why layers were or were not
    kept in float, the worst layers, and what the mixed model regained and costs."""
    parts = []
    for net, quantizers in (results.get("sensitivity") or {}).items():
        lines = []
        for name, entry in quantizers.items():
            control = entry.get("accuracy_control")
            if control:
                reverted = ", ".join(map(literal, control["reverted"])) or "nothing"
                lines.append(f"{name} (NNCF accuracy control): reverted {reverted}; "
                             f"{control['drop_points']:+.2f} points lost on validation images "
                             f"({'within' if control['met'] else 'beyond'} the budget)")
                continue
            ranking, search = entry["ranking"], entry.get("search")
            worst = ", ".join(_layer_text(ranking, row) for row in ranking["layers"][:SHOWN_LAYERS])
            lines.append(f"{name}: {literal(entry['fallback'])}. Most sensitive: {worst or 'none'}")
            if search:
                kept = ", ".join(map(literal, search["kept_float"])) or "none"
                regained = ranking["drop_points"] - search["drop_points"]
                lines.append(f"  - {entry['mixed']['variant']}: layers kept in float: {kept}; "
                             f"{search['drop_points']:.2f} points lost on validation images "
                             f"({regained:+.2f} regained, {len(search['steps']) - 1} tried, "
                             f"{'within' if search['met'] else 'still beyond'} "
                             f"{search['max_drop']:g}); speed: "
                             f"{_speed_cost(results, net, entry['mixed']['variant'], name)}")
        parts.append(f"**{literal(net)}**\n\n" + "\n".join(
            line if line.startswith("  ") else f"- {line}" for line in lines))
    return "\n\n".join(parts)


def details(results):
    """details.md: every layer of every ranking and every step of every search."""
    parts = []
    for net, quantizers in (results.get("sensitivity") or {}).items():
        for name, entry in quantizers.items():
            ranking, search = entry.get("ranking"), entry.get("search")
            if not ranking:
                continue
            parts.append(f"### {literal(net)}: {name}\n\nfloat {100 * ranking['float_accuracy']:.2f} %, "
                         f"int8 {100 * ranking['int8_accuracy']:.2f} % on "
                         f"{ranking['validation_images']} validation images; layers most "
                         f"sensitive first (points regained measured for the worst "
                         f"{ranking['top_k']} by {ranking['statistic']}).")
            parts.append("| layer | ops | " + ranking["statistic"] + " | points regained |\n"
                         "|---|---|---:|---:|\n" + "\n".join(
                             f"| {literal(row['layer'])} | {literal(', '.join(row['ops']))} | "
                             f"{_number(row.get(ranking['statistic']))} | "
                             f"{_number(row.get('points_regained'), '{:+.2f}')} |"
                             for row in ranking["layers"]))
            if search:
                parts.append("| step | kept in float | tried | accuracy | drop | stayed |\n"
                             "|---:|---|---|---:|---:|---|\n" + "\n".join(
                                 f"| {s['step']} | {literal(', '.join(s['float_layers'])) or '-'} | "
                                 f"{literal(s['tried'] or 'full int8')} | "
                                 f"{100 * s['accuracy']:.2f} % | {s['drop_points']:.2f} | "
                                 f"{'yes' if s['kept'] else 'no'} |" for s in search["steps"]))
    return "\n\n".join(parts)


def _number(value, fmt="{:.3g}"):
    return "-" if value is None else fmt.format(value)


def plot_all(results, folder):
    """One Pareto plot per net and batch size; their file names."""
    names = []
    for net in results["nets"]:
        for batch in batches(results, net):
            rows = pareto_rows(results, net, batch)
            if rows:
                names.append(pareto.plot(rows, folder / plot_name(net, batch),
                                         f"{net}, batch {batch}, {thread_counts(results)[0]} "
                                         f"thread(s)"))
    return names
