"""Tables (Markdown) for what quantlab measured, in the layout of the P17 study."""


def megabytes(n):
    return f"{n / 1e6:.2f} MB"


def markdown_table(headers, rows):
    """A Markdown table; numbers are expected already formatted as strings."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def size_table(results):
    """``results``: {net: comparison rows}. P17: network, standard size, quantized size, ratio."""
    rows = []
    for net, comparison in results.items():
        reference = next(r for r in comparison if r["variant"] == r["reference"])
        for row in comparison:
            if row is reference:
                continue
            rows.append([net, row["variant"], megabytes(reference["bytes"]),
                         megabytes(row["bytes"]), f"{row['size_ratio']:.3f}"])
    return markdown_table(
        ["network", "variant", "standard size (float32)", "quantized size", "SN size / QN size"], rows
    )


def accuracy_table(results):
    """P17: network, standard accuracy, quantized accuracy, ratio; plus delta and agreement."""
    rows = []
    for net, comparison in results.items():
        reference = next(r for r in comparison if r["variant"] == r["reference"])
        for row in comparison:
            if row is reference:
                continue
            rows.append([net, row["variant"], f"{reference['accuracy']:.4f}", f"{row['accuracy']:.4f}",
                         f"{row['accuracy'] / reference['accuracy']:.3f}",
                         f"{row['delta_points']:+.2f}", f"{100 * row['agreement']:.2f} %",
                         f"{row['max_abs_diff']:.3f}"])
    return markdown_table(
        ["network", "variant", "standard accuracy", "quantized accuracy", "QN acc / SN acc",
         "change (points)", "top-1 agreement", "max |Δp|"], rows
    )
