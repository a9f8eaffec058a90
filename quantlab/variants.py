"""Export every variant of one trained net, each with a JSON sidecar, cached and atomic.

All variants come from the same float weights; ``qat_int8`` comes from the QAT fine-tune of
those weights. Every artifact ends in a softmax, so every runtime returns probabilities.
What each variant is (its file, format, precision, readers) is in ``quantlab.variant_table``.

Before a cached artifact is used, its bytes are checked against the sha256 in its sidecar;
a file that changed is exported again. The cache key holds the trained models' keys (the
data's full digest and the training code among them), the data's digest again (a user's own
model is not trained here, but calibrated on the data), a digest of this whole module's code
and the converters' versions, so a change to any of them never returns an old file.
"""

import dataclasses
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import quantlab
from quantlab import _tf, cache, datasets, nncf_int8, onnx_int8, runtime, training, variant_table
from quantlab._tf import versions, without_native_noise
from quantlab.runtime import ir_file
from quantlab.defaults import CALIBRATION_SIZE, VARIANTS
from quantlab.errors import QuantlabError
from quantlab.variant_table import calibrated, file_format, file_name, source_variant

FULL_INTEGER = ("int8", "qat_int8", "int8_per_tensor")  # TFLite files with int8 inputs and outputs
PER_CHANNEL_ONNX = {"onnx_int8": True, "onnx_int8_per_tensor": False}
ONNX_OPSET = 17


@dataclass(frozen=True)
class Artifact:
    variant: str
    path: Path
    meta: dict

    @property
    def bytes(self):
        return self.meta["bytes"]

    @property
    def sha256(self):
        return self.meta["sha256"]

    @property
    def precision(self):
        """The precision a runtime is asked to execute it in (None: the file's own)."""
        return self.meta.get("execute_in")


def check_variants(names):
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise QuantlabError(f"unknown variant {unknown[0]!r}: choose from {', '.join(VARIANTS)}")
    return tuple(names)


def with_softmax(model):
    from quantlab._tf import keras

    k = keras()
    # A fixed name: Keras numbers unnamed models per process ("model_3"), and the name lands
    # in the exported tensor names, so the same weights would give other bytes.
    return k.Model(model.input, k.layers.Softmax(name="probabilities")(model.output),
                   name=f"{model.name}_with_softmax")


def calibration_images(data, size, seed):
    """A fixed random sample of training images (the representative dataset)."""
    rng = np.random.default_rng(seed)
    size = min(size, len(data.x_train))
    return data.x_train[np.sort(rng.choice(len(data.x_train), size, replace=False))]


def _frozen_graph(model, data):
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    from quantlab._tf import tf

    tf = tf()
    spec = tf.TensorSpec([None, *data.input_shape], tf.float32, name="image")
    function = tf.function(lambda image: model(image, training=False)).get_concrete_function(spec)
    return convert_variables_to_constants_v2(function).graph.as_graph_def().SerializeToString()


def saved_model(model, folder):
    """Save ``model`` into ``folder`` as a SavedModel holding its variables and one inference
    function, for the TFLite converter; returns the folder.

    Not Keras's own SavedModel (what ``from_keras_model`` saves and loads again for every
    conversion): that one traces each layer's functions, most of a conversion's cost (the
    vit's float32 took 13 CPU-s that way, 3.4 this way). The converter makes the same file
    of either (but for the model type in its metadata, which ``tflite_converter`` sets).
    """
    from quantlab._tf import tf

    tf = tf()
    module = tf.Module()
    # Its variables only: tracking the Keras model would serialize all its layers again.
    module.weights = list(model.weights)
    # The names Keras's own signature gives: the input's, and the output by the model's
    # output name (the converter copies them into the file's signature).
    spec = tf.TensorSpec([None, *model.input_shape[1:]], model.inputs[0].dtype,
                         name=model.input_names[0])
    module.serve = tf.function(lambda image: {model.output_names[0]: model(image, training=False)},
                               input_signature=[spec])
    tf.saved_model.save(module, str(folder), signatures=module.serve)
    return folder


def tflite_converter(model, variant, calibration):
    """A TFLite converter of a Keras ``model`` (or a folder ``saved_model`` wrote) set up for
    ``variant``; int8 variants get int8 inputs and outputs."""
    from quantlab._tf import tf

    tf = tf()
    if isinstance(model, Path):
        from tensorflow.lite.python.conversion_metadata_schema_py_generated import ModelType

        converter = tf.lite.TFLiteConverter.from_saved_model(str(model))
        # The model is a Keras one: the file's metadata says so, as from_keras_model's did,
        # so the file is byte for byte the one that converter makes.
        converter._metadata.environment.modelType = ModelType.KERAS_MODEL
    else:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if variant in (*FULL_INTEGER, "int16x8"):
        def representative():
            for image in calibration:
                yield [image[None]]

        converter.representative_dataset = representative
    if variant in FULL_INTEGER:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    if variant == "int8_per_tensor":
        # No public setting: the converter's own flag (tf.lite's tests and its
        # QuantizationDebugger use it) for one scale per weight tensor.
        converter._experimental_disable_per_channel = True
    if variant == "int16x8":
        # Input and output stay float32: LiteRT's own quantize and dequantize at the ends.
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    return converter


def _erfc_to_onnx(ctx, node, name, args):
    """erfc(x) as 1 - erf(x): TensorFlow computes the exact GELU with erfc, which ONNX lacks
    and tf2onnx does not translate (ONNX has Erf)."""
    from tf2onnx import utils

    node.type = "Erf"
    negated = ctx.insert_new_node_on_output("Neg", node.output[0], name=utils.make_name(node.name))
    one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.ones((), np.float32))
    ctx.insert_new_node_on_output("Add", negated.output[0], name=utils.make_name(node.name),
                                  inputs=[negated.output[0], one.output[0]])


def _onnx_float(model, data):
    """The float net in ONNX (tf2onnx), with its batch dimension named ``batch``."""
    import logging

    from quantlab._tf import tf

    tf = tf()
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    spec = tf.TensorSpec([None, *data.input_shape], tf.float32, name="image")

    def convert():
        return tf2onnx.convert.from_keras(model, input_signature=[spec], opset=ONNX_OPSET,
                                          custom_op_handlers={"Erfc": (_erfc_to_onnx, ())})[0]

    # tf2onnx copies the whole graph before each of its optimizers, to go on without one
    # that fails: a third of the vit's conversion. Told not to catch, it makes the same file;
    # only if an optimizer does fail is the model converted again, tf2onnx's way.
    if "TF2ONNX_CATCH_ERRORS" in os.environ:  # the user's own choice
        proto = convert()
    else:
        os.environ["TF2ONNX_CATCH_ERRORS"] = "FALSE"
        try:
            proto = convert()
        except Exception:  # noqa: BLE001 (whatever an optimizer raises)
            os.environ["TF2ONNX_CATCH_ERRORS"] = "TRUE"
            proto = convert()
        finally:
            del os.environ["TF2ONNX_CATCH_ERRORS"]
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    return proto.SerializeToString()


def export_key(config, data, calibration_size, base_key=None):
    """Everything that determines the artifacts of one net (their folder's name)."""
    return {
        "float": base_key or training.model_dir(config, data).name,
        "qat": training.model_dir(config, data, qat=True, base_key=base_key).name,
        "calibration_size": calibration_size,
        "data": data.sha256,
        "recipe": cache.code_digest(*RECIPE),
        "converters": _converter_versions(),
    }


def export_dir(config, data, calibration_size, base_key=None):
    key = export_key(config, data, calibration_size, base_key)
    return cache.cache_root() / "variants" / f"{config.net}-{data.name}-{cache.config_hash(key)}"


def _converter_versions():
    """Versions of the ONNX and OpenVINO tools, which make files beside the TensorFlow stack
    (whose versions are in the trained models' keys)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("tf2onnx", "onnx", "onnxruntime", "openvino", "nncf"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def _sidecar(artifact_path, variant, config, data, calibration_size, source, key):
    probe = runtime.load(artifact_path)
    return {
        "net": config.net,
        "dataset": data.name,
        "variant": variant,
        "file": artifact_path.name,
        "format": probe.format,
        "bytes": artifact_path.stat().st_size,
        "sha256": probe.sha256,
        "execute_in": variant_table.executed_in(variant),
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "input_quantization": probe.input_quantization,
        "output_quantization": probe.output_quantization,
        "calibration_size": calibration_size if calibrated(variant) else None,
        "trained_model": str(source),
        "train_config": dataclasses.asdict(config),
        "quantlab": quantlab.__version__,
        "versions": versions(),
        "key": key,  # checked when read: the folder's name must be this key's
    }


def _cached(folder, variant, progress=None):
    """The cached artifact if its sidecar is readable, was written for this folder's key, and
    its file (by the variant's own name: a sidecar may not point elsewhere) has the recorded
    bytes."""
    sidecar = folder / f"{variant}.json"
    if not sidecar.is_file():
        return None
    try:
        meta = json.loads(sidecar.read_text())
        path = folder / file_name(variant)
        ok = (meta["file"] == path.name and cache.is_folder_of(folder, meta["key"])
              and path.is_file() and meta["bytes"] == path.stat().st_size
              and cache.sha256_of(path) == meta["sha256"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        ok, path = False, sidecar
    if not ok and progress:
        progress(f"{folder.name}: cached {variant} ({path.name}) is damaged or changed; "
                 f"exporting it again")
    return Artifact(variant, path, meta) if ok else None


def export(config, variants=VARIANTS, data=None, data_dir=None,
           calibration_size=CALIBRATION_SIZE, progress=None):
    """Train (or reuse) ``config``'s net and return {variant: Artifact} for ``variants``."""
    data = data or datasets.load(config.dataset, data_dir)
    return export_model(lambda: training.train(config, data, progress=progress), config, data,
                        variants, calibration_size, progress)


def _content(variant, trained, qat, data, calibration, made, scratch):
    """The bytes of one variant's file; ``made`` holds those of files exported already, and
    the SavedModel of each model the TFLite variants are converted from (in ``scratch``)."""
    fmt = file_format(variant)
    if fmt in ("onnx", "openvino") and calibrated(variant):  # quantized from the ONNX export
        if "onnx_float32" not in made:
            made["onnx_float32"] = _onnx_float(with_softmax(trained.model), data)
        if fmt == "openvino":
            return nncf_int8.quantize(made["onnx_float32"], calibration)
        return onnx_int8.quantize(made["onnx_float32"], calibration, PER_CHANNEL_ONNX[variant])
    source = "qat" if variant == "qat_int8" else "float"
    model = with_softmax((qat if source == "qat" else trained).model)
    if fmt == "graphdef":
        return _frozen_graph(model, data)
    if fmt == "onnx":
        return _onnx_float(model, data)
    if ("SavedModel", source) not in made:  # saved once, converted to each TFLite variant
        made["SavedModel", source] = saved_model(model, Path(scratch) / source)
    with without_native_noise():
        return tflite_converter(made["SavedModel", source], variant, calibration).convert()


def export_model(float_model, config, data, variants=VARIANTS,
                 calibration_size=CALIBRATION_SIZE, progress=None, base_key=None):
    """Export ``variants`` of one float model; ``float_model()`` returns it as a ``Trained``.

    ``base_key`` identifies a float model that quantlab did not train (a user's own).
    Only variants missing from the cache are made, so nothing is trained when all exist.
    """
    variants = check_variants(variants)
    if calibration_size < 1:
        raise QuantlabError("calibration size must be at least 1 image")
    key = export_key(config, data, calibration_size, base_key)
    folder = export_dir(config, data, calibration_size, base_key)
    skipped = {}
    variants = _applicable(variants, config.net, (), skipped, progress)
    # A variant executed from another's file needs that file first.
    needed = tuple(dict.fromkeys([*map(source_variant, variants), *variants]))
    # One process makes them, others wait and read; the scratch folder holds SavedModels.
    with (cache.locked(folder, progress),
          tempfile.TemporaryDirectory(prefix="quantlab-export-") as scratch):
        artifacts = {v: _cached(folder, v, progress) for v in needed}
        missing = [v for v, a in artifacts.items() if a is None]
        if missing:
            trained = float_model()
            # A user's model is known by its layers only once it is loaded.
            kinds = {type(layer).__name__ for layer in trained.model.submodules}
            missing = _applicable(missing, config.net, kinds, skipped, progress)
            qat = (training.train_qat(config, data, progress=progress, base=trained,
                                      base_key=base_key) if "qat_int8" in missing else None)
            calibration = calibration_images(data, calibration_size, config.seed)
            made = {}
            for variant in missing:
                path = folder / file_name(variant)
                if source_variant(variant) == variant:
                    if progress:
                        progress(f"{config.net}: exporting {variant}")
                    made[variant] = _content(variant, trained, qat, data, calibration, made,
                                             scratch)
                    cache.write_bytes(path, made[variant])
                source = qat if variant == "qat_int8" else trained
                # The sidecar is written last: an artifact without one is never trusted.
                cache.write_json(folder / f"{variant}.json",
                                 _sidecar(path, variant, config, data, calibration_size,
                                          source.path, key))
                artifacts[variant] = _cached(folder, variant)  # exactly what a later run will read
    return Exported({v: artifacts[v] for v in variants if v not in skipped}, skipped)


class Exported(dict):
    """{variant: Artifact}; ``skipped`` says {variant: why} for those asked for that cannot
    be made of this net (``variant_table.not_applicable``)."""

    def __init__(self, artifacts, skipped):
        super().__init__(artifacts)
        self.skipped = skipped


def _applicable(variants, net, layer_kinds, skipped, progress):
    """``variants`` but those that cannot be made of ``net``, each of which is added to
    ``skipped`` with its reason and said once."""
    kept = []
    for variant in variants:
        why = variant_table.not_applicable(variant, net, layer_kinds)
        if why is None:
            kept.append(variant)
        elif variant not in skipped:
            skipped[variant] = why
            if progress:
                progress(f"{net}: skipping {why}")
    return tuple(kept)


# The code that decides an artifact's bytes: part of its cache key. This whole module, not a
# list of its functions: _content, the constants and every helper on the export path count,
# and a list would miss the next one added. TensorFlow's setup in _tf counts too, and so do
# the table of variants (file names, formats, which are calibrated), the ONNX and NNCF
# quantizers and the IR's one-file layout.
RECIPE = (_tf, variant_table, onnx_int8, nncf_int8, ir_file, sys.modules[__name__])
