"""PNG plots of a study's results: latency vs batch size, sizes, accuracy, miss rates."""

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402


def _save(figure, path):
    from quantlab.cache import atomic_file

    figure.tight_layout()
    with atomic_file(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)
    return path.name


def latency(results, folder):
    """One panel per net: median latency per image vs batch size, one line per variant."""
    studied = [(net, e) for net, e in results["nets"].items() if e["latency"]]
    if not studied:
        return None
    figure, axes = plt.subplots(1, len(studied), figsize=(4.6 * len(studied), 3.8), squeeze=False)
    for axis, (net, entry) in zip(axes[0], studied):
        for variant, by_batch in entry["latency"].items():
            batches = sorted(by_batch, key=int)
            axis.plot([int(b) for b in batches],
                      [by_batch[b]["median"] / int(b) * 1e6 for b in batches], marker="o", label=variant)
        axis.set(title=net, xlabel="batch size", ylabel="median µs per image", xscale="log", yscale="log")
        sizes = sorted({int(b) for by_batch in entry["latency"].values() for b in by_batch})
        axis.set_xticks(sizes, [str(b) for b in sizes])
        axis.minorticks_off()
        axis.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return _save(figure, folder / "latency.png")


def _bars(results, folder, name, value, ylabel, title):
    nets = list(results["nets"])
    variants = list(next(iter(results["nets"].values()))["accuracy"])
    width = 0.8 / len(variants)
    figure, axis = plt.subplots(figsize=(1.8 + 1.9 * len(nets), 3.8))
    for i, variant in enumerate(variants):
        heights = [value(results["nets"][net]["accuracy"].get(variant)) for net in nets]
        axis.bar([n + (i - (len(variants) - 1) / 2) * width for n in range(len(nets))],
                 heights, width, label=variant)
    axis.set_xticks(range(len(nets)), nets)
    axis.set(ylabel=ylabel, title=title)
    axis.grid(True, axis="y", alpha=0.3)
    axis.legend(fontsize=8)
    return _save(figure, folder / name)


def sizes(results, folder):
    return _bars(results, folder, "sizes.png", lambda row: row["bytes"] / 1e6 if row else 0,
                 "MB on disk", "Model size")


def accuracy(results, folder):
    name = _bars(results, folder, "accuracy.png", lambda row: 100 * row["accuracy"] if row else 0,
                 "top-1 accuracy (%)", "Accuracy on the test split")
    return name


def miss_rates(results, folder):
    """Total, L1d and LLC miss rates per net x variant at the first counted batch size."""
    cases = []
    for net, entry in results["nets"].items():
        for variant, by_batch in entry["counters"].items():
            batch = min(by_batch, key=int)
            if by_batch[batch]:
                cases.append((f"{net}\n{variant}\nb{batch}", by_batch[batch]["rates"]))
    if not cases:
        return None
    figure, axis = plt.subplots(figsize=(max(6, 0.75 * len(cases)), 4))
    for i, (key, label) in enumerate((("total_miss_rate", "total (LL refs)"),
                                      ("l1d_miss_rate", "L1d loads"), ("llc_miss_rate", "LLC loads"))):
        axis.bar([n + (i - 1) * 0.27 for n in range(len(cases))],
                 [100 * (rates.get(key) or 0) for _, rates in cases], 0.27, label=label)
    axis.set_xticks(range(len(cases)), [c[0] for c in cases], fontsize=7)
    axis.set(ylabel="miss rate (%)", title="Cache miss rates per inference")
    axis.grid(True, axis="y", alpha=0.3)
    axis.legend(fontsize=8)
    return _save(figure, folder / "miss_rates.png")


def all_plots(results, folder):
    """Write every plot that the results support; return their file names."""
    names = [plot(results, folder) for plot in (latency, sizes, accuracy, miss_rates)]
    return [name for name in names if name]
