"""PNG plots of a study's results: latency vs batch size, speed-up by runtime, sizes,
accuracy, miss rates. They draw what was measured and measure nothing.

The one place quantlab imports matplotlib: the other plots (``roofline``,
``compare_report``) take ``plt`` from here.
"""

from quantlab._tf import matplotlib_cache_in_quantlab
from quantlab.lookups import labelled, reference_text, speedup, thread_counts, timed, timed_at

matplotlib_cache_in_quantlab()  # a study writes nothing outside --out and quantlab's cache

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # files only; no display on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

_LINES = {"litert": "-", "openvino": "--", "onnxruntime": ":", "tensorflow": "-."}
# The figure is laid out at the resolution it is written at: laid out at another, every
# label would be measured twice (the text sizes are cached per resolution), 0.2 s of a
# two-net study's 1.9 s of plots.
DPI = 110


def save(figure, path):
    """``figure`` laid out and written to ``path`` under a temporary name renamed into place,
    then closed; the file's name."""
    from quantlab.cache import atomic_file

    figure.set_dpi(DPI)
    figure.tight_layout()
    with atomic_file(path) as tmp:
        figure.savefig(tmp, dpi=DPI, format="png")
    plt.close(figure)
    return path.name


class _PlainLog(ticker.LogFormatter):
    """matplotlib's choice of which log ticks to label, each labelled "0.02", not "2e-02"."""

    def __call__(self, value, pos=None):
        return f"{value:g}" if super().__call__(value, pos) else ""


def plain_numbers(axis):
    """Label a log axis's ticks as plain numbers ("0.02", "300") instead of "2 x 10^-2": a
    latency reads at a glance, and no label needs math typesetting."""
    axis.set_major_formatter(_PlainLog())
    axis.set_minor_formatter(_PlainLog(labelOnlyBase=False))


def _timed(results, net):
    """The timed cases of one net at the first thread count (the others: ``threads``)."""
    return [c for c in timed_at(results) if c["net"] == net]


def latency(results, folder):
    """One panel per net: median latency per image vs batch size, one line per variant and
    runtime (colour: variant, line style: runtime)."""
    studied = [net for net in results["nets"] if _timed(results, net)]
    if not studied:
        return None
    figure, axes = plt.subplots(1, len(studied), figsize=(5.2 * len(studied), 4.4), squeeze=False)
    colours = {}
    for axis, net in zip(axes[0], studied):
        lines = {}
        for case in _timed(results, net):
            lines.setdefault((case["variant"], case["runtime"]), []).append(case)
        for (variant, runtime), cases in lines.items():
            cases.sort(key=lambda c: c["batch_size"])
            colour = colours.setdefault(variant, f"C{len(colours) % 10}")
            axis.plot([c["batch_size"] for c in cases], [c["per_image"] * 1e6 for c in cases],
                      marker="o", markersize=3, color=colour, linestyle=_LINES.get(runtime, "-"),
                      label=f"{variant} ({runtime})")
        axis.set(title=net, xlabel="batch size", ylabel="median µs per image", xscale="log", yscale="log")
        plain_numbers(axis.yaxis)
        sizes = sorted({c["batch_size"] for c in _timed(results, net)})
        axis.set_xticks(sizes, [str(b) for b in sizes])
        axis.xaxis.set_minor_locator(ticker.NullLocator())  # the batch sizes alone
        axis.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save(figure, folder / "latency.png")


def speedup_by_runtime(results, folder):
    """Per net: the fastest int8 and float option on each runtime, as times faster than
    the study's reference, per batch size."""
    studied = [net for net in results["nets"] if _timed(results, net)]
    if not studied:
        return None
    figure, axes = plt.subplots(1, len(studied), figsize=(5.2 * len(studied), 4), squeeze=False)
    for axis, net in zip(axes[0], studied):
        batches = sorted({c["batch_size"] for c in _timed(results, net)})
        bars = []
        for runtime in results["runtimes"]:
            for kind in ("int8", "float32"):
                gains = []
                for batch in batches:
                    found = [speedup(results, c) or 0 for c in _timed(results, net)
                             if c["runtime"] == runtime and c["batch_size"] == batch
                             and c.get("precision") == kind]
                    gains.append(max(found, default=0))
                if any(gains):
                    bars.append((f"{kind} on {runtime}", gains))
        width = 0.8 / max(1, len(bars))
        for i, (label, gains) in enumerate(bars):
            axis.bar([n + (i - (len(bars) - 1) / 2) * width for n in range(len(batches))], gains,
                     width, label=label)
        axis.axhline(1.0, color="black", linewidth=0.8)
        axis.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
        axis.set(title=net, ylabel=f"x faster than {reference_text(results)}")
        axis.grid(True, axis="y", alpha=0.3)
        axis.legend(fontsize=6)
    return save(figure, folder / "speedup_by_runtime.png")


def _bars(results, folder, name, value, ylabel, title):
    nets = list(results["nets"])
    rows = {}
    for row in results["accuracy"]:  # each variant on its natural runtime, which comes first
        if not row.get("not_run"):  # a variant that ran nowhere has no bar
            rows.setdefault((row["net"], row["variant"]), row)
    variants = list(dict.fromkeys(variant for _, variant in rows))
    if not variants:
        return None
    width = 0.8 / len(variants)
    figure, axis = plt.subplots(figsize=(1.8 + 2.2 * len(nets), 3.8))
    for i, variant in enumerate(variants):
        heights = [value(rows.get((net, variant))) for net in nets]
        axis.bar([n + (i - (len(variants) - 1) / 2) * width for n in range(len(nets))],
                 heights, width, label=variant)
    axis.set_xticks(range(len(nets)), nets)
    axis.set(ylabel=ylabel, title=title)
    axis.grid(True, axis="y", alpha=0.3)
    axis.legend(fontsize=7)
    return save(figure, folder / name)


def sizes(results, folder):
    return _bars(results, folder, "sizes.png", lambda row: row["bytes"] / 1e6 if row else 0,
                 "MB on disk", "Model size")


def accuracy(results, folder):
    if not labelled(results):  # no labels: the agreement with the reference stands in
        return _bars(results, folder, "agreement.png",
                     lambda row: 100 * row["agreement"] if row else 0,
                     f"top-1 agreement with {reference_text(results)} (%)",
                     "Agreement on the unlabelled images")
    return _bars(results, folder, "accuracy.png", lambda row: 100 * row["accuracy"] if row else 0,
                 "top-1 accuracy (%)", "Accuracy on the test split")


def miss_rates(results, folder):
    """Total, L1d and LLC miss rates of every counted case at its smallest batch size."""
    first = {}
    for case in results["cases"]:
        if case.get("counters"):
            key = (case["net"], case["variant"], case["runtime"])
            if key not in first or case["batch_size"] < first[key]["batch_size"]:
                first[key] = case
    if not first:
        return None
    cases = [(f"{net}\n{variant}\n{runtime} b{case['batch_size']}", case["counters"]["rates"])
             for (net, variant, runtime), case in first.items()]
    figure, axis = plt.subplots(figsize=(max(6, 0.8 * len(cases)), 4.2))
    for i, (key, label) in enumerate((("total_miss_rate", "total (LL refs)"),
                                      ("l1d_miss_rate", "L1d loads"), ("llc_miss_rate", "LLC loads"))):
        axis.bar([n + (i - 1) * 0.27 for n in range(len(cases))],
                 [100 * (rates.get(key) or 0) for _, rates in cases], 0.27, label=label)
    axis.set_xticks(range(len(cases)), [c[0] for c in cases], fontsize=6)
    axis.set(ylabel="miss rate (%)", title="Cache miss rates per inference")
    axis.grid(True, axis="y", alpha=0.3)
    axis.legend(fontsize=8)
    return save(figure, folder / "miss_rates.png")


def threads(results, folder):
    """Per net, at its largest batch size: images per second against the thread count, one
    line per variant and runtime (colour: variant, line style: runtime)."""
    counts = thread_counts(results)
    studied = [net for net in results["nets"] if _timed(results, net)]
    if len(counts) < 2 or not studied:
        return None
    figure, axes = plt.subplots(1, len(studied), figsize=(5.2 * len(studied), 4.4), squeeze=False)
    colours = {}
    for axis, net in zip(axes[0], studied):
        batch = max(c["batch_size"] for c in _timed(results, net))
        lines = {}
        for case in timed(results):
            if case["net"] == net and case["batch_size"] == batch:
                lines.setdefault((case["variant"], case["runtime"]), []).append(case)
        for (variant, runtime), cases in lines.items():
            cases.sort(key=lambda c: c.get("threads") or 1)
            colour = colours.setdefault(variant, f"C{len(colours) % 10}")
            axis.plot([c.get("threads") or 1 for c in cases], [batch / c["median"] for c in cases],
                      marker="o", markersize=3, color=colour, linestyle=_LINES.get(runtime, "-"),
                      label=f"{variant} ({runtime})")
        axis.set(title=f"{net}, batch {batch}", xlabel="threads", ylabel="images per second")
        axis.set_xticks(counts, [str(n) for n in counts])
        axis.grid(True, alpha=0.3)
    axes[0][-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save(figure, folder / "threads.png")


def all_plots(results, folder):
    """Write every plot that the results support; return their file names."""
    names = [plot(results, folder) for plot in (latency, speedup_by_runtime, threads, sizes,
                                                accuracy, miss_rates)]
    return [name for name in names if name]
