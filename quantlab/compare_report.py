"""The cross-machine report in words, tables and a plot: findings, compare.md, a PNG.

It formats a comparison made by ``quantlab.compare`` (the dict written as compare.json) and
computes nothing new. Every sentence is generated from the numbers, never written by hand;
the same sentence for many cases is one line, and a range whose ends are equal is one number.
What changes the meaning of every comparison (different weights, different data, one CPU
under several names) is said first.
"""

from pathlib import Path

from quantlab import tables
# Every string that comes from a results file (names, versions, reasons, the sentences that
# quote them) is printed through it: literal text, never Markdown or HTML.
from quantlab.safe_text import markdown as _literal

HEADLINE = "int8"  # the variant of the "does int8 pay?" table and plot
# More panels or bars than this are no picture but a wall (a results file may hold
# thousands of cases); the tables say it all then, and the plot is left out.
MAX_PANELS, MAX_BARS = 12, 600
TIE = 1.05  # a machine less than 5 % ahead is not called faster: timing varies that much


# --- sentences --------------------------------------------------------------------------------

def _and(items):
    items = list(items)
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def _times(gains):
    """Speed-ups (times faster) in P17's words: ``2.8x faster``, ``2.5-3.4x faster``,
    ``1.2x slower``, ``from 1.2x slower to 2.0x faster``; equal ends are one number."""
    low, high = min(gains), max(gains)
    if low < 1 < high:
        if f"{1 / low:.1f}" == f"{high:.1f}" == "1.0":
            return "as fast (1.0x)"
        return f"from {tables.speed_ratio(1, 1 / low)} to {tables.speed_ratio(1, 1 / high)}"
    word = "faster" if low >= 1 else "slower"
    ends = sorted((g if low >= 1 else 1 / g for g in (low, high)))
    low_text, high_text = f"{ends[0]:.1f}", f"{ends[1]:.1f}"
    return f"{low_text}x {word}" if low_text == high_text else f"{low_text}-{high_text}x {word}"


def _where_cases(cases):
    """``conv at batch 1, 8 and medium at batch 1``: the cases, grouped by net."""
    by_net = {}
    for net, batch, threads in cases:
        by_net.setdefault(net, []).append(f"{batch}" + (f" ({threads} threads)" if threads != 1 else ""))
    return _and(f"{net} at batch {', '.join(batches)}" for net, batches in by_net.items())


def _names(comparison):
    return [m["name"] for m in comparison["machines"]]


def read_first(comparison):
    """What changes the meaning of every comparison below: said first, in bold."""
    said = []
    split = {}
    for entry in comparison["artifacts"]:
        if entry["same"] is False:
            pattern = " / ".join(", ".join(group) for group in entry["groups"])
            split.setdefault(pattern, {}).setdefault(entry["net"], []).append(entry["variant"])
    for pattern, nets in split.items():
        which = _and(f"{net} ({', '.join(variants)})" for net, variants in nets.items())
        said.append(f"**Different weights**: the artifacts of {which} are not the same bytes on "
                    f"every machine (machines with the same sha256: {pattern}); for these, speed "
                    f"and accuracy compare different files, not only different machines.")
    datasets = {m["name"]: m["dataset"] for m in comparison["machines"]}
    if len(set(datasets.values())) > 1:
        said.append("**Different data**: the machines studied different datasets ("
                    + ", ".join(f"{d} on {n}" for n, d in datasets.items()) + ").")
    hosts = {}
    for machine in comparison["machines"]:
        if machine["host"]:
            hosts.setdefault(machine["host"], []).append(machine["name"])
    for names in hosts.values():
        if len(names) > 1:
            said.append(f"**One CPU**: {_and(names)} ran on one physical host (the same host and "
                        f"boot id): what differs between them is run-to-run variation, not the CPU.")
    return said


def _speed_findings(comparison):
    """Per variant and runtime: what it buys on each machine, over the cases all measured."""
    groups = {}
    for entry in comparison["cases"]:
        gains = {name: m["speedup"] for name, m in entry["machines"].items() if m.get("speedup")}
        if gains:
            groups.setdefault((entry["variant"], entry["runtime"], entry["reference"]), []).append(
                ((entry["net"], entry["batch_size"], entry["threads"]), gains))
    said = []
    for (variant, runtime, reference), cases in groups.items():
        names = [n for n in _names(comparison) if any(n in gains for _, gains in cases)]
        common = [(where, gains) for where, gains in cases if all(n in gains for n in names)]
        scope = common if common else cases
        by_text = {}  # machines with the same numbers share one phrase
        for name in names:
            by_text.setdefault(_times([g[name] for _, g in scope if name in g]), []).append(name)
        per_machine = [f"{text} on {_and(which)}" for text, which in by_text.items()]
        line = f"{variant} on {runtime} against {reference} on {runtime}: {'; '.join(per_machine)}"
        line += (f" ({_where_cases(w for w, _ in scope)})" if common or len(names) == 1
                 else " (no case measured on all of them)")
        if len(names) > 1 and common:
            where, gains = max(common, key=lambda c: max(c[1].values()) / min(c[1].values()))
            if max(gains.values()) / min(gains.values()) >= 1.1:
                line += (f"; the machines differ most for {where[0]} at batch {where[1]}: "
                         + _and(f"{tables.speed_ratio(1, 1 / gains[n])} on {n}" for n in names))
        said.append(line + ".")
    return said


def _fastest_findings(comparison):
    """One line per machine and option that is fastest somewhere, listing where."""
    wins, ties = {}, []
    for entry in comparison["fastest"]:
        where = (entry["net"], entry["batch_size"], entry["threads"])
        if entry["ahead"] is None:
            continue
        if entry["ahead"] < TIE:
            ties.append(where)
            continue
        best = entry["machines"][entry["fastest"]]
        wins.setdefault((entry["fastest"], best["variant"], best["runtime"]), []).append(
            (where, entry["ahead"]))
    said = [f"{name} with {variant} on {runtime} is the fastest for "
            f"{_where_cases(w for w, _ in cases)}, "
            f"{_times([a for _, a in cases]).replace('faster', 'ahead of the next machine')}."
            for (name, variant, runtime), cases in wins.items()]
    if ties:
        said.append(f"No machine is {100 * (TIE - 1):.0f} % ahead of the next for "
                    f"{_where_cases(ties)}: there their fastest options tie within timing noise.")
    return said


def _accuracy_findings(comparison):
    """The same bytes on the same data should score the same: say whether they did."""
    if len({m["dataset"] for m in comparison["machines"]}) > 1:
        return []
    same, differ = 0, []
    for entry in comparison["accuracy"]:
        files = {}
        for name, scored in entry["machines"].items():
            if scored.get("accuracy") is not None and scored["sha256"]:  # labelled images
                files.setdefault(scored["sha256"], {})[name] = scored["accuracy"]
        for scores in files.values():
            if len(scores) < 2:
                continue
            if len(set(scores.values())) == 1:
                same += 1
            else:
                differ.append(f"{entry['net']} {entry['variant']} on {entry['runtime']} ("
                              + ", ".join(f"{a:.4f} on {n}" for n, a in scores.items()) + ")")
    said = [f"The same bytes give the same top-1 accuracy on every machine in {same} case(s)."
            ] if same else []
    if differ:
        said.append(f"The same bytes give different top-1 accuracy on different machines: "
                    f"{'; '.join(differ)}.")
    return said


def _coverage_findings(comparison):
    """What not every machine measured: the tables show it as –."""
    said = []
    for what, field in (("nets", "net"), ("variants", "variant"), ("runtimes", "runtime"),
                        ("batch sizes", "batch_size"), ("thread counts", "threads")):
        have = {n: list(dict.fromkeys(str(e[field]) for e in comparison["cases"]
                                      if n in e["machines"])) for n in _names(comparison)}
        if len({tuple(sorted(v)) for v in have.values()}) > 1:
            said.append(f"Not every machine measured the same {what}: "
                        + "; ".join(f"{', '.join(v) or 'none'} on {n}" for n, v in have.items())
                        + " (– in the tables).")
    versions = {}
    for machine in comparison["machines"]:
        for key, value in machine["versions"].items():
            versions.setdefault(key, {})[machine["name"]] = value
    names = _names(comparison)
    differ = [f"{key} " + ", ".join(f"{by.get(n, '–')} on {n}" for n in names)
              for key, by in versions.items() if len(set(by.values())) > 1 or len(by) < len(names)]
    if differ:
        said.append(f"Software differs: {'; '.join(differ)}.")
    return said


def findings(comparison):
    """Statements derived from the numbers of the compared results (never hand-written)."""
    return (_speed_findings(comparison) + _fastest_findings(comparison)
            + _accuracy_findings(comparison) + _coverage_findings(comparison))


# --- the Markdown report ----------------------------------------------------------------------

def _size(n):
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} B"


def machine_table(comparison):
    """One column per machine: CPU, cores, clock, caches, ISA flags, software."""
    machines = comparison["machines"]
    first_on_host = {}
    for m in machines:
        first_on_host.setdefault(m["host"], m["name"])

    def host(m):
        if not m["host"]:
            return "–"
        shown = m["host"].split("/")[0]
        first = first_on_host[m["host"]]
        return shown if first == m["name"] else f"{shown} (same host as {first})"

    rows = [
        ["CPU"] + [m["cpu"]["model"] for m in machines],
        ["cores available / logical"] + [f"{m['cpu']['available_cores'] or '?'} / "
                                         f"{m['cpu']['logical_cores'] or '?'}" for m in machines],
        ["clock"] + [f"{m['cpu']['mhz']:.0f} MHz" if m["cpu"]["mhz"] else "–" for m in machines],
        ["caches"] + [", ".join(f"{k.upper().replace('D', 'd')} {_size(v)}"
                                for k, v in m["cpu"]["caches"].items()) or "–" for m in machines],
        ["ISA flags"] + [", ".join(m["cpu"]["flags"]) or "none found" for m in machines],
        ["inference threads"] + [str(m["threads"] or "–") for m in machines],
        ["runtimes"] + [", ".join(m["runtimes"]) or "–" for m in machines],
        ["counters"] + [m["counter_backend"] or "off" for m in machines],
        ["host"] + [host(m) for m in machines],
        ["dataset"] + [f"{m['dataset'] or '?'} ({'quick' if m['quick'] else 'full'} training)"
                       for m in machines],
    ]
    keys = list(dict.fromkeys(k for m in machines for k in m["versions"]))
    rows += [[key] + [m["versions"].get(key, "–") for m in machines] for key in keys]
    rows.append(["results"] + [m["source"] or "–" for m in machines])
    return tables.markdown_table([""] + [_literal(m["name"]) for m in machines], rows)


def _batch_label(entry):
    return f"{entry['batch_size']}" + (f" ({entry['threads']} threads)" if entry["threads"] != 1 else "")


def _latency_cell(measured):
    if measured is None:
        return "–"
    if "not_run" in measured:
        return "failed"
    cell = tables.seconds(measured["median"])
    return cell + (f" ({tables.speed_ratio(1, 1 / measured['speedup'])})" if measured["speedup"] else "")


def headline_variant(comparison):
    """``int8``, or the first variant that ran in int8 when no machine has it."""
    variants = [e["variant"] for e in comparison["cases"]]
    if HEADLINE in variants:
        return HEADLINE
    return next((e["variant"] for e in comparison["cases"] if any(
        m.get("precision") == "int8" for m in e["machines"].values())), None)


def int8_table(comparison, variant):
    """Per net and batch: what ``variant`` buys over float32 on each machine and runtime."""
    names = _names(comparison)
    rows = {}
    for entry in comparison["cases"]:
        if entry["variant"] != variant:
            continue
        row = rows.setdefault((entry["net"], _batch_label(entry)), {n: [] for n in names})
        for name, measured in entry["machines"].items():
            if measured.get("speedup"):
                row[name].append(f"{entry['runtime']} {tables.speed_ratio(1, 1 / measured['speedup'])}")
    return tables.markdown_table(["net", "batch"] + [_literal(n) for n in names],
                                 [[net, batch] + [", ".join(row[n]) or "–" for n in names]
                                  for (net, batch), row in rows.items()])


def fastest_table(comparison):
    names = _names(comparison)
    rows = []
    for entry in comparison["fastest"]:
        cells = []
        for name in names:
            best = entry["machines"].get(name)
            cells.append("–" if best is None else
                         f"{best['variant']} on {best['runtime']}, "
                         f"{tables.seconds(best['median'])}")
        winner = entry["fastest"]
        if entry["ahead"]:
            winner += f", {entry['ahead']:.2f}x ahead of {entry['next']}"
        rows.append([entry["net"], _batch_label(entry)] + cells + [winner])
    return tables.markdown_table(["net", "batch"] + [_literal(n) for n in names] + ["fastest"], rows)


def latency_table(comparison, entries):
    """The cases ``entries`` (of one net), one column per machine."""
    names = _names(comparison)
    rows = [[_batch_label(e), e["runtime"], e["variant"]]
            + [_latency_cell(e["machines"].get(n)) for n in names] for e in entries]
    return tables.markdown_table(["batch", "runtime", "variant"] + [_literal(n) for n in names], rows)


def accuracy_table(comparison):
    names = _names(comparison)

    def cell(scored):
        if scored is None:
            return "–"
        if "not_run" in scored:
            return "failed"
        agree = f"{100 * scored['agreement']:.1f} % agree"
        if scored.get("accuracy") is None:  # unlabelled images: agreement alone
            return agree
        if scored.get("delta_points") is None:  # no float32 scored beside it
            return f"{scored['accuracy']:.4f} ({agree})"
        return f"{scored['accuracy']:.4f} ({scored['delta_points']:+.2f} points, {agree})"

    return tables.markdown_table(
        ["net", "variant", "runtime"] + [_literal(n) for n in names],
        [[e["net"], e["variant"], e["runtime"]] + [cell(e["machines"].get(n)) for n in names]
         for e in comparison["accuracy"]])


def _artifact_summary(comparison):
    shared = [e for e in comparison["artifacts"] if e["same"] is not None]
    differ = sum(e["same"] is False for e in shared)
    return (f"{len(shared)} artifact(s) are on more than one machine; "
            + (f"**{differ} of them are not the same bytes everywhere**." if differ else
               "all of them are the same bytes everywhere.")
            + " Below, the first 12 hex digits of each file's sha256 on each machine.")


def artifact_table(comparison):
    names = _names(comparison)
    verdict = {True: "yes", False: "**no**", None: "(on one machine)"}
    return tables.markdown_table(
        ["net", "variant"] + [_literal(n) for n in names] + ["same bytes"],
        [[e["net"], e["variant"]]
         + [e["machines"][n]["sha256"][:12] if n in e["machines"] else "–" for n in names]
         + [verdict[e["same"]]] for e in comparison["artifacts"]])


def not_run_lines(comparison):
    reasons = {}
    for entry in comparison["cases"]:
        for name, measured in entry["machines"].items():
            if "not_run" in measured:
                reasons.setdefault((name, measured["not_run"]), []).append(
                    f"{entry['net']} {entry['variant']} on {entry['runtime']} b{entry['batch_size']}")
    return [f"- {_literal(name)}: {_literal(reason)}: {_literal(', '.join(which))}"
            for (name, reason), which in reasons.items()]


def markdown(comparison):
    """The whole cross-machine report as Markdown."""
    names = _names(comparison)
    variant = headline_variant(comparison)
    parts = [f"# quantlab compare: {len(names)} machine(s) side by side",
             "Machines: " + _and(_literal(n) for n in names) + "."]
    if comparison["warnings"]:
        parts += ["## Read this first",
                  "\n".join(f"- {_literal(line)}" for line in comparison["warnings"])]
    parts += ["## Machines", machine_table(comparison),
              "## Findings",
              "\n".join(f"- {_literal(line)}" for line in comparison["findings"]) or "- none"]
    if variant:
        parts += [f"## Does {variant} pay?",
                  f"{variant} against the float32 of the same file format on the same runtime, "
                  f"on each machine (–: not measured there).", int8_table(comparison, variant)]
    references = " / ".join(dict.fromkeys(m.get("reference") or "?" for m in comparison["machines"]))
    parts += ["## Fastest machine and runtime",
              f"Per net and batch size, each machine's fastest option among those within "
              f"{comparison['accuracy_tolerance']:g} accuracy point of float32 (median latency "
              f"of one batch), and the fastest machine.", fastest_table(comparison),
              "## Every variant against float32",
              "Median latency of one batch on each machine; in brackets, against the float32 of "
              "the same file format on the same runtime and machine (the reference of the "
              f"study itself is {references}). –: that machine did not "
              "measure the case; failed: the runtime could not run it there."]
    by_net = {}
    for entry in comparison["cases"]:
        by_net.setdefault(entry["net"], []).append(entry)
    for net in comparison["nets"]:
        if net in by_net:
            parts += [f"### {_literal(net)}", latency_table(comparison, by_net[net])]
    parts += ["## Accuracy",
              "Top-1 accuracy on the test split, change against float32 in points, and top-1 "
              "agreement with float32, on each machine.", accuracy_table(comparison),
              "## Are the artifacts the same bytes?", _artifact_summary(comparison),
              artifact_table(comparison)]
    failed = not_run_lines(comparison)
    if failed:
        parts += ["## Could not run", "\n".join(failed)]
    if comparison["plots"]:
        parts += ["## Plots"] + [f"![{name[:-4]}]({name})" for name in comparison["plots"]]
    return "\n\n".join(parts) + "\n"


# --- the plot ---------------------------------------------------------------------------------

def _plain(text):
    """A label from a results file, never read as matplotlib math ($...$), nor left out of
    the legend (matplotlib leaves out labels that start with "_")."""
    text = text.replace("$", r"\$")
    return " " + text if text.startswith("_") else text


def speedup_plot(comparison, folder, progress=lambda message: None):
    """Per net: the headline variant's speed-up over float32, per batch size, one bar per
    machine (colour) and runtime (hatch). Returns the file name, or None with nothing to draw
    or too much."""
    variant = headline_variant(comparison)
    # {net: {"batches": {label: None}, "runtimes": {name: None},
    #        "gains": {(machine, runtime): {label: speed-up}}}}
    panels = {}
    for entry in comparison["cases"]:
        if entry["variant"] != variant:
            continue
        for name, measured in entry["machines"].items():
            if measured.get("speedup"):
                panel = panels.setdefault(entry["net"], {"batches": {}, "runtimes": {}, "gains": {}})
                label = _batch_label(entry)
                panel["batches"][label] = panel["runtimes"][entry["runtime"]] = None
                panel["gains"].setdefault((name, entry["runtime"]), {})[label] = measured["speedup"]
    if not panels:
        return None
    if len(panels) > MAX_PANELS or sum(len(p["batches"]) * len(p["gains"])
                                       for p in panels.values()) > MAX_BARS:
        progress(f"no speed-up plot: more than {MAX_PANELS} nets or {MAX_BARS} bars; the "
                 f"tables of compare.md hold every number")
        return None
    from quantlab.plots import plt, save

    colours = {name: number % 10 for number, name in enumerate(_names(comparison))}
    hatches = ["", "//", "..", "xx", "\\\\", "oo"]
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for axis, (net, panel) in zip(axes[0], panels.items()):
        batches, runtimes = list(panel["batches"]), list(panel["runtimes"])
        bars = sorted(panel["gains"], key=lambda bar: (colours[bar[0]], runtimes.index(bar[1])))
        width = 0.8 / len(bars)
        for i, (name, runtime) in enumerate(bars):
            gains = [panel["gains"][(name, runtime)].get(batch, 0) for batch in batches]
            axis.bar([b + (i - (len(bars) - 1) / 2) * width for b in range(len(batches))], gains,
                     width, color=f"C{colours[name]}", edgecolor="black", linewidth=0.4,
                     hatch=hatches[runtimes.index(runtime) % len(hatches)],
                     label=_plain(f"{name}, {runtime}"))
        axis.axhline(1.0, color="black", linewidth=0.8)
        axis.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
        axis.set(title=_plain(f"{net}: {variant} vs float32"),
                 ylabel="x faster than float32, same runtime")
        axis.grid(True, axis="y", alpha=0.3)
        axis.legend(fontsize=6)
    return save(figure, Path(folder) / "compare_speedup.png")  # never a name from the inputs
