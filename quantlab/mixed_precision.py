"""Accuracy-aware mixed precision: keep the most sensitive layers in float until the
accuracy drop on validation images is within a budget (``--max-drop`` points).

``greedy`` is the rule alone, over any ranked groups and any way of measuring accuracy:
starting from full int8, it tries the next group kept in float, keeps that revert only if
validation accuracy rose, and stops as soon as the drop is within the budget. ``search``
runs it for a quantizer of ``quantlab.selective`` over a ``sensitivity.rank`` ranking.
OpenVINO has its own search (NNCF's ``quantize_with_accuracy_control``, which ranks and
reverts by itself): ``openvino_accuracy_control`` runs it and records what it reverted.
"""

import logging
import time

from quantlab import telemetry
from quantlab.sensitivity import validation_accuracy, within

MAX_DROP = 1.0  # accuracy points a quantized model may lose against float (--max-drop)


def greedy(groups, accuracy_of, float_accuracy, max_drop=MAX_DROP):
    """Keep groups in float, in the order given, until the drop is within ``max_drop``.

    ``groups``: [(name, nodes)], most sensitive first; ``accuracy_of(nodes)`` the accuracy
    (0..1) with ``nodes`` kept float and everything else int8. Returns {kept_float, nodes,
    accuracy, drop_points, met, steps}; ``steps`` has one row per accuracy measured, the
    first for full int8, each with ``kept``: whether its revert stayed (it helped)."""
    def drop(accuracy):
        return 100.0 * (float_accuracy - accuracy)

    nodes, kept = [], []
    accuracy = accuracy_of([])
    steps = [{"step": 0, "tried": None, "accuracy": accuracy, "drop_points": drop(accuracy),
              "kept": True, "float_layers": []}]
    for name, group in groups:
        if within(drop(accuracy), max_drop):
            break
        trial = accuracy_of([*nodes, *group])
        helped = trial > accuracy  # a revert that does not help costs speed for nothing
        if helped:
            nodes, kept, accuracy = [*nodes, *group], [*kept, name], trial
        steps.append({"step": len(steps), "tried": name, "accuracy": trial,
                      "drop_points": drop(trial), "kept": helped, "float_layers": list(kept)})
    return {"kept_float": kept, "nodes": nodes, "accuracy": accuracy,
            "drop_points": drop(accuracy), "met": within(drop(accuracy), max_drop), "steps": steps}


def search(quantizer, splits, ranking, max_drop=MAX_DROP):
    """``greedy`` over ``ranking``'s layers for ``quantizer``, measured on the validation
    images; also {models}: the bytes of full int8 and of each revert that stayed (each a
    candidate ``int8_mixed`` variant), and {seconds} the search took."""
    started = time.perf_counter()
    models = {}

    def accuracy_of(nodes):
        content = quantizer.quantize(nodes)
        models[tuple(nodes)] = content
        return validation_accuracy(quantizer, content, splits)

    groups = search_order(ranking)
    result = greedy(groups, accuracy_of, ranking["float_accuracy"], max_drop)
    result["kept_float"] = float_layers(result["kept_float"])
    for step in result["steps"]:
        step["float_layers"] = float_layers(step["float_layers"])
    kept_steps = [step for step in result["steps"] if step["kept"]]
    by_layers = {}
    nodes = []
    for step in kept_steps:  # the model of each kept step, keyed by the layers it keeps float
        if step["tried"] is not None:
            nodes += dict(groups)[step["tried"]]
        by_layers[tuple(step["float_layers"])] = models[tuple(nodes)]
    return {**result, "quantizer": ranking["quantizer"], "max_drop": max_drop,
            "models": by_layers, "content": models[tuple(result["nodes"])],
            "seconds": time.perf_counter() - started}


def search_order(ranking):
    """[(name, nodes)] in the order the search tries them: the layers whose float copy was
    measured to help; then each kind of layer at once (the layers made of the same operations,
    such as every LayerNorm of a transformer), the noisiest kind first; then every other layer
    alone. By kind because a statistic of one layer's output can rank the layer that matters
    last: in the vit, full int8 lost 7-9 points, the first LayerNorm alone brought them back,
    and ranked layer by layer the search reached it after 40 steps (164 for ONNX Runtime)."""
    statistic, layers = ranking["statistic"], ranking["layers"]
    helped = [row for row in layers if (row["points_regained"] or 0.0) > 0]
    kinds = {}
    for row in layers:
        kinds.setdefault(tuple(sorted(set(row["ops"]))), []).append(row)
    shared = sorted((rows for rows in kinds.values() if len(rows) > 1),
                    key=lambda rows: -max(row[statistic] or 0.0 for row in rows))
    return ([(row["layer"], row["nodes"]) for row in helped]
            + [(KIND_JOIN.join(row["layer"] for row in rows),
                [node for row in rows for node in row["nodes"]]) for rows in shared]
            + [(row["layer"], row["nodes"]) for row in layers if row not in helped])


KIND_JOIN = " + "  # the name of a group of layers of one kind: its layers' names, joined


def float_layers(kept):
    """The layer names in a search's ``kept_float`` (a kind's group named by its layers)."""
    return list(dict.fromkeys(layer for name in kept for layer in name.split(KIND_JOIN)))


class _Messages(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def openvino_accuracy_control(float_path, splits, max_drop=MAX_DROP, subset_size=None):
    """NNCF's accuracy-controlled int8 of the float model at ``float_path`` (TFLite or
    ONNX, read by OpenVINO). Returns {model (an openvino.Model), reverted (operation names,
    as NNCF logged them), float_accuracy, accuracy (validation), drop_points, met, seconds,
    log}; both accuracies on the validation images in float32 arithmetic. NNCF returns no
    list of what it reverted: it is read from NNCF's own log lines."""
    telemetry.openvino_off()
    import nncf
    import numpy as np
    import openvino as ov

    from quantlab import nncf_int8

    core = ov.Core()
    model = core.read_model(str(float_path))
    batch = [1, *splits.calibration.shape[1:]]
    model.reshape({model.inputs[0]: batch})
    calibration = nncf.Dataset(list(splits.calibration[:, None]))
    validation = nncf.Dataset(list(zip(splits.validation_x[:, None], splits.validation_y)))

    def validate(compiled, items):
        output = compiled.outputs[0]
        hits = [float(np.argmax(compiled(image)[output]) == label) for image, label in items]
        return float(np.mean(hits)), hits  # per item: NNCF ranks by it

    def accuracy(ov_model):
        # float32 asked for, as NNCF's own engine does: by default OpenVINO runs float parts
        # in bf16 on CPUs that have it, and the drop would be against bf16.
        compiled = core.compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return validate(compiled, zip(splits.validation_x[:, None], splits.validation_y))[0]

    handler = _Messages()
    started = time.perf_counter()
    with nncf_int8.quiet(reader=handler):
        quantized = nncf.quantize_with_accuracy_control(
            model, calibration, validation, validation_fn=validate,
            max_drop=max_drop / 100.0, drop_type=nncf.DropType.ABSOLUTE,
            subset_size=subset_size or len(splits.calibration))
    seconds = time.perf_counter() - started
    float_accuracy, mixed_accuracy = accuracy(model), accuracy(quantized)
    drop = 100.0 * (float_accuracy - mixed_accuracy)
    return {"model": quantized, "reverted": _reverted(handler.lines),
            "float_accuracy": float_accuracy, "accuracy": mixed_accuracy,
            "drop_points": drop, "met": within(drop, max_drop), "seconds": seconds,
            "log": handler.lines}


def _reverted(lines):
    """Operation names from NNCF's "Reverted N operations to the floating-point precision:"
    messages (one name a line after the first), in the order reverted."""
    names = []
    for line in lines:
        if line.startswith("Reverted "):
            names += [name.strip() for name in line.splitlines()[1:] if name.strip()]
    return names
