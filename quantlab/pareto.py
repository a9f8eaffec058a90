"""The accuracy / latency trade-off of one net at one batch size: its Pareto front, what to
ship under an accuracy budget, and the plot.

Rows are options measured by the study: {variant, runtime, delta_points (accuracy change
against float, points), latency (seconds per batch), bytes, precision}. An option is on the
front when no other is at least as accurate and at least as fast, and strictly better in
one. Pure functions but ``plot``, which draws what was measured and measures nothing.
"""



def front(rows):
    """The rows no other row dominates, fastest first."""
    def dominated(row):
        return any(other["delta_points"] >= row["delta_points"] and other["latency"] <= row["latency"]
                   and (other["delta_points"] > row["delta_points"] or other["latency"] < row["latency"])
                   for other in rows)

    return sorted((row for row in rows if not dominated(row)), key=lambda row: row["latency"])


def _name(row):
    return f"{row['variant']} on {row['runtime']}"


def describe_front(rows):
    """The front in words, fastest first."""
    chosen = front(rows)
    if not chosen:
        return "nothing was measured"
    parts = [f"{_name(row)} ({row['latency'] * 1e3:.3g} ms, {row['delta_points']:+.2f} points)"
             for row in chosen]
    return "the front, fastest first: " + ", then ".join(parts)


def what_to_ship(rows, max_drop, float_layers=None):
    """(row or None, sentence): the fastest option on the front that loses at most
    ``max_drop`` points. ``float_layers``: {variant: [layers kept in float]} of the mixed
    variants, named in the sentence with the speed given up for them against the fastest
    option on the front, whatever its accuracy."""
    chosen = front(rows)
    within = [row for row in chosen if row["delta_points"] >= -max_drop]
    if not within:
        return None, "nothing measured is within the budget"
    best = within[0]
    fastest = chosen[0]
    sentence = (f"ship {_name(best)}: {best['latency'] * 1e3:.3g} ms, "
                f"{best['delta_points']:+.2f} points, {best['bytes'] / 1e6:.3g} MB")
    kept = (float_layers or {}).get(best["variant"])
    if kept:
        sentence += f"; layers kept in float: {', '.join(kept)}"
    if best is not fastest:
        sentence += (f"; {best['latency'] / fastest['latency']:.2f}x the time of the fastest, "
                     f"{_name(fastest)}, which loses {-fastest['delta_points']:.2f} points")
    if not any(row.get("precision") != "float32" and row["delta_points"] >= -max_drop
               for row in rows):
        sentence = (f"no quantized option loses at most {max_drop:g} points; the best float "
                    f"option: " + sentence.removeprefix("ship "))
    return best, sentence


def plot(rows, path, title):
    """Accuracy change against latency; marker area: bytes; colour: runtime; the front
    joined by a line. Returns the file's name."""
    from quantlab.plots import plain_numbers, plt, save

    figure, axis = plt.subplots(figsize=(6.4, 4.6))
    colours = {}
    largest = max(row["bytes"] for row in rows)
    for row in rows:
        colour = colours.setdefault(row["runtime"], f"C{len(colours) % 10}")
        axis.scatter(row["latency"] * 1e3, row["delta_points"], s=20 + 400 * row["bytes"] / largest,
                     color=colour, alpha=0.6, edgecolors="black", linewidths=0.5,
                     label=row["runtime"])
        axis.annotate(row["variant"], (row["latency"] * 1e3, row["delta_points"]), fontsize=6,
                      xytext=(3, 3), textcoords="offset points")
    best = front(rows)
    axis.plot([row["latency"] * 1e3 for row in best], [row["delta_points"] for row in best],
              color="grey", linestyle="--", linewidth=1, label="front")
    handles, labels = axis.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    axis.legend(unique.values(), unique.keys(), fontsize=7)
    axis.set(title=title, xlabel="median ms per batch", ylabel="accuracy change (points)",
             xscale="log")
    plain_numbers(axis.xaxis)
    axis.grid(True, alpha=0.3)
    return save(figure, path)
