"""A user's own model in the study: the file (its format decided from its content), the
images it is studied on, in its layout and preprocessing, the reference every ratio of it is
against, and what results.json says of both.

The file is read once (``byo.open_model``); from then on only those bytes are used: the
model's variants are made from them and it is reported by their sha256, whatever becomes of
the file. An ONNX model is checked at once. It has no TFLite float32, so its reference is
its own float32 on ONNX Runtime, the runtime it was exported for. A Keras model is checked
and exported by ``byo.export``, against LiteRT float32 like quantlab's own nets.
"""

from quantlab import defaults, safe_text
from quantlab.errors import QuantlabError

ONNX_REFERENCE = ("onnx_float32", "onnxruntime")


def open_model(config):
    """(the user's ONNX model, checked: a ``byo_onnx.CheckedOnnx``, or None; the user's Keras
    model file as read: a ``byo.KerasFile``, or None); both None for quantlab's own nets."""
    if config.model is None:
        return None, None
    from quantlab import byo

    opened = byo.open_model(config.model, config.layout)
    return (None, opened) if isinstance(opened, byo.KerasFile) else (opened, None)


def load_data(config, onnx_model, keras_file):
    """The images the study runs on: the user's --data in the layout, size and channels the
    user's model takes (a Keras model: channels last); else the built-in dataset (which an
    ONNX model must take as it is)."""
    from quantlab.study.config import load_data as load

    if onnx_model is None and config.model is not None and config.data is not None:
        from quantlab import byo

        image_shape, classes = byo.keras_input(keras_file)
        return load(config, image_shape, "NHWC", classes)
    if onnx_model is None:
        return load(config)
    data = load(config, onnx_model.image_shape, onnx_model.layout, onnx_model.num_classes)
    fixed = [d for d in onnx_model.input_shape[1:]]
    if config.data is None and (list(data.input_shape) != fixed
                                or data.num_classes != onnx_model.num_classes):
        raise QuantlabError(
            f"{onnx_model.path.name} takes {'x'.join(map(str, fixed))} inputs ({onnx_model.layout}) "
            f"and gives {onnx_model.num_classes} classes, but {data.name} images are "
            f"{'x'.join(map(str, data.input_shape))} of {data.num_classes} classes; give your "
            f"own images with --data FOLDER (and --mean/--std as the model was trained with)")
    return data


def reference(onnx_model):
    """(variant, runtime) every ratio of the study is against."""
    return ONNX_REFERENCE if onnx_model is not None else (defaults.REFERENCE,
                                                          defaults.REFERENCE_RUNTIME)


# The float model's answers on this many test images are checked before the long work.
FIRST_BATCH = 64


def first_batch_doubt(config, data, onnx_model, keras_file, images=FIRST_BATCH):
    """What looks wrong with the user's float model's answers on the first test images (one
    class for most, or near chance: report.sentences.doubt) in a warning's words, or None;
    None for quantlab's own nets. Seconds, against minutes of export, calibration and timing
    that a wrong --scale, --mean, --std or --layout would spoil."""
    if config.model is None or not len(data.x_test):
        return None
    import numpy as np

    from quantlab.evaluate import dominance  # the statistics the report reads
    from quantlab.report.sentences import PREPROCESSING_FIX, doubt

    x = np.ascontiguousarray(data.x_test[:images], dtype=np.float32)
    if onnx_model is not None:
        import onnxruntime

        session = onnxruntime.InferenceSession(onnx_model.content,
                                               providers=["CPUExecutionProvider"])
        [scores] = session.run([onnx_model.output_name], {onnx_model.input_name: x})
        which = "{} on {}".format(*ONNX_REFERENCE)
    else:
        from quantlab import byo

        scores = np.asarray(byo.load(keras_file, data).model(x, training=False))
        which = "the Keras model"
    classes = scores.reshape(len(x), -1).argmax(axis=1)
    labels = None if data.y_test is None else data.y_test[:images]
    row = {"test_images": len(x), **dominance(classes, labels),
           "accuracy": None if labels is None else float(np.mean(classes == labels))}
    found = doubt(row, data.num_classes)
    return found and (f"{safe_text.net_name(config.model)}: {which}, on the first {len(x)} test "
                      f"images before the study goes on, {found}; {PREPROCESSING_FIX}.")


def calibration(config, data):
    """The images int8 calibration reads: the user's calibration split (all of it), or a
    seeded sample of a built-in training set."""
    from quantlab import variants

    return variants.calibration_images(data, config.calibration_size, config.seed)


def describe(results, config, data, onnx_model, keras_file):
    """``results`` with what schema 4 records of the study: its reference, the user's model
    (file, sha256, format, input), and the images (labels or not, calibration count,
    preprocessing, classes)."""
    from quantlab import records

    variant, runtime = reference(onnx_model)
    record = getattr(data, "record", None) or {}
    labelled = getattr(data, "labelled", True)
    dataset = {**results["dataset"], "labelled": labelled, "classes": data.num_classes,
               "calibration": min(config.calibration_size, len(data.x_train))}
    if record:
        dataset.update(source=record.get("source") or dataset["source"],
                       preprocessing={key: record.get(key) for key in (
                           "scale", "mean", "std", "layout", "image_size", "color", "resize")},
                       splits=record.get("splits"), seed=record.get("seed"),
                       files_per_class=record.get("files_per_class"))
    return {**results, "schema": records.SCHEMA, "dataset": dataset,
            "reference": {"variant": variant, "runtime": runtime},
            "model": _model_entry(config, onnx_model, keras_file)}


def _model_entry(config, onnx_model, keras_file):
    if config.model is None:
        return None
    if onnx_model is not None:
        return {"file": onnx_model.path.name, "path": str(onnx_model.path),
                "sha256": onnx_model.sha256, "format": "onnx", "bytes": len(onnx_model.content),
                "input": onnx_model.input_name, "input_shape": list(onnx_model.input_shape),
                "layout": onnx_model.layout, "classes": onnx_model.num_classes,
                "opset": onnx_model.opset}
    from quantlab import byo

    return {"file": config.model.name, "path": str(config.model), "sha256": keras_file.sha256,
            "bytes": len(keras_file.content),
            "format": byo.model_format(keras_file.content, keras_file.path)}
