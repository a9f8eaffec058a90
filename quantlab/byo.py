"""Bring your own model: load a user's saved Keras model safely and export its variants.

Loading must never run code from the file: the model's configuration is read and checked
before Keras sees it (Lambda layers carry Python bytecode, so they are refused), and Keras
loads the rest in safe mode.
"""

import dataclasses
import json
import zipfile
from pathlib import Path

from quantlab import cache, training, variants
from quantlab.errors import QuantlabError

REFUSED_LAYERS = {"Lambda"}


def _config_of(path):
    """The model configuration stored in a .keras archive or an .h5 file, as a dict."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                return json.loads(archive.read("config.json"))
        except (KeyError, ValueError, zipfile.BadZipFile):
            raise QuantlabError(f"{path} is a zip file but not a saved Keras model (no config.json)") from None
    try:
        import h5py

        with h5py.File(path, "r") as h5:
            text = h5.attrs.get("model_config")
    except OSError:
        text = None
    if text is None:
        raise QuantlabError(f"{path} is not a saved Keras model: save it with model.save('model.keras')")
    return json.loads(text.decode() if isinstance(text, bytes) else text)


def _class_names(node):
    """Every class_name anywhere in a Keras config tree."""
    if isinstance(node, dict):
        if "class_name" in node:
            yield node["class_name"]
        for value in node.values():
            yield from _class_names(value)
    elif isinstance(node, list):
        for value in node:
            yield from _class_names(value)


def load(path, data):
    """The user's model, checked against ``data``; returns a ``training.Trained``."""
    path = Path(path)
    if not path.is_file():
        raise QuantlabError(f"no model file at {path}; give a model saved with model.save('model.keras')")
    refused = REFUSED_LAYERS & set(_class_names(_config_of(path)))
    if refused:
        raise QuantlabError(f"{path} contains a {sorted(refused)[0]} layer, whose Python code quantlab "
                            f"will not run; rebuild the model from standard layers")
    from quantlab._tf import keras

    try:
        model = keras().models.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many types for unloadable files
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise QuantlabError(f"cannot load {path} as a Keras model: {first}") from None
    expected = tuple(data.input_shape)
    got = tuple(model.input_shape[1:])
    if got != expected:
        raise QuantlabError(
            f"{path.name} takes inputs of shape {'x'.join(map(str, got))} but {data.name} images are "
            f"{'x'.join(map(str, expected))}; choose the dataset the model was trained on")
    if model.output_shape[-1] != data.num_classes:
        raise QuantlabError(f"{path.name} has {model.output_shape[-1]} outputs but {data.name} has "
                            f"{data.num_classes} classes")
    if _ends_in_softmax(model):
        model = _strip_softmax(model)
    info = {"stage": "float", "source": str(path), "sha256": cache.sha256_of(path)}
    return training.Trained(model, path, info, from_cache=True)


def _ends_in_softmax(model):
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    return type(last).__name__ == "Softmax" or getattr(activation, "__name__", "") == "softmax"


def _strip_softmax(model):
    """Logits from a model that ends in softmax: variants add their own softmax layer."""
    from quantlab._tf import keras

    last = model.layers[-1]
    if type(last).__name__ == "Softmax":
        return keras().Model(model.input, last.input)
    last.activation = keras().activations.linear
    return model


def export(path, data, config, wanted=variants.VARIANTS, progress=None):
    """Export ``wanted`` variants of the user's model; ``config`` sets the QAT fine-tune.

    The model is loaded (and checked) only if a variant is missing from the cache: the
    cache key is the file's sha256, so a cached variant was made from this very file.
    """
    path = Path(path)
    config = dataclasses.replace(config, net=path.stem, dataset=data.name)
    return variants.export_model(lambda: load(path, data), config, data, wanted,
                                 progress=progress,
                                 base_key=f"user-model-{cache.sha256_of(path)[:16]}")
