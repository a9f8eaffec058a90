"""Export every variant of one trained net, each with a JSON sidecar, cached and atomic.

All variants come from the same float weights; ``qat_int8`` comes from the QAT fine-tune of
those weights. Every artifact ends in a softmax, so every runtime returns probabilities.
"""

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import quantlab
from quantlab import cache, datasets, training
from quantlab._tf import versions
from quantlab.errors import QuantlabError

VARIANTS = ("float32_tf", "float32", "dynamic_int8", "float16", "int8", "qat_int8")
REFERENCE = "float32"
DEFAULT_CALIBRATION_SIZE = 500
_SUFFIX = {"float32_tf": ".pb"}
FULL_INTEGER = ("int8", "qat_int8")  # int8 inputs and outputs, calibrated


@dataclass(frozen=True)
class Artifact:
    variant: str
    path: Path
    meta: dict

    @property
    def bytes(self):
        return self.meta["bytes"]


def check_variants(names):
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise QuantlabError(f"unknown variant {unknown[0]!r}: choose from {', '.join(VARIANTS)}")
    return tuple(names)


def with_softmax(model):
    from quantlab._tf import keras

    k = keras()
    return k.Model(model.input, k.layers.Softmax(name="probabilities")(model.output))


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


def tflite_converter(model, variant, calibration):
    """A TFLite converter set up for ``variant``; int8 variants get int8 inputs and outputs."""
    from quantlab._tf import tf

    tf = tf()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if variant in FULL_INTEGER:
        def representative():
            for image in calibration:
                yield [image[None]]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter


def export_dir(config, data, calibration_size, base_key=None):
    key = {
        "float": base_key or training.model_dir(config, data).name,
        "qat": training.model_dir(config, data, qat=True, base_key=base_key).name,
        "calibration_size": calibration_size,
        "quantlab": quantlab.__version__,
    }
    return cache.cache_root() / "variants" / f"{config.net}-{data.name}-{cache.config_hash(key)}"


def _sidecar(artifact_path, variant, config, data, calibration_size, source):
    from quantlab.runtime import load

    predictor = load(artifact_path)
    return {
        "net": config.net,
        "dataset": data.name,
        "variant": variant,
        "file": artifact_path.name,
        "bytes": artifact_path.stat().st_size,
        "sha256": cache.sha256_of(artifact_path),
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "input_quantization": predictor.input_quantization,
        "output_quantization": predictor.output_quantization,
        "calibration_size": calibration_size if variant in FULL_INTEGER else None,
        "trained_model": str(source),
        "train_config": dataclasses.asdict(config),
        "quantlab": quantlab.__version__,
        "versions": versions(),
    }


def _cached(folder, variant):
    sidecar = folder / f"{variant}.json"
    if not sidecar.is_file():
        return None
    meta = json.loads(sidecar.read_text())
    path = folder / meta["file"]
    if not path.is_file() or path.stat().st_size != meta["bytes"]:
        return None
    return Artifact(variant, path, meta)


def export(config, variants=VARIANTS, data=None, data_dir=None,
           calibration_size=DEFAULT_CALIBRATION_SIZE, progress=None):
    """Train (or reuse) ``config``'s net and return {variant: Artifact} for ``variants``."""
    data = data or datasets.load(config.dataset, data_dir)
    return export_model(lambda: training.train(config, data, progress=progress), config, data,
                        variants, calibration_size, progress)


def export_model(float_model, config, data, variants=VARIANTS,
                 calibration_size=DEFAULT_CALIBRATION_SIZE, progress=None, base_key=None):
    """Export ``variants`` of one float model; ``float_model()`` returns it as a ``Trained``.

    ``base_key`` identifies a float model that quantlab did not train (a user's own).
    Only variants missing from the cache are made, so nothing is trained when all exist.
    """
    variants = check_variants(variants)
    if calibration_size < 1:
        raise QuantlabError("calibration size must be at least 1 image")
    folder = export_dir(config, data, calibration_size, base_key)
    artifacts = {v: _cached(folder, v) for v in variants}
    missing = [v for v, a in artifacts.items() if a is None]
    if not missing:
        return artifacts
    trained = float_model()
    qat = (training.train_qat(config, data, progress=progress, base=trained, base_key=base_key)
           if "qat_int8" in missing else None)
    calibration = calibration_images(data, calibration_size, config.seed)
    for variant in missing:
        if progress:
            progress(f"{config.net}: exporting {variant}")
        source = qat if variant == "qat_int8" else trained
        model = with_softmax(source.model)
        content = (_frozen_graph(model, data) if variant == "float32_tf"
                   else tflite_converter(model, variant, calibration).convert())
        path = folder / f"{variant}{_SUFFIX.get(variant, '.tflite')}"
        with cache.atomic_file(path) as tmp:
            tmp.write_bytes(content)
        # The sidecar is written last: an artifact without one is never trusted.
        cache.write_json(folder / f"{variant}.json",
                         _sidecar(path, variant, config, data, calibration_size, source.path))
        artifacts[variant] = _cached(folder, variant)  # exactly what a later run will read
    return artifacts
