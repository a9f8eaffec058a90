"""The names a checked Keras model file may use: Keras's own built-in layers, models and
their parts (initializers, regularizers, constraints, dtype policy), the tags of plain values,
and the built-in activations. Anything else could bring code from anywhere, so ``byo``
refuses it before Keras reads the file (``check_config``)."""

import re

from quantlab.errors import QuantlabError

RESAVE = "save the model again with model.save('model.keras')"
REBUILD = "rebuild the model from Keras's standard layers"

LAYERS = frozenset({
    "InputLayer", "Dense", "EinsumDense",
    "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
    "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
    "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "BatchNormalization", "LayerNormalization", "GroupNormalization", "UnitNormalization",
    "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "ThresholdedReLU", "Softmax",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "ActivityRegularization",
    "Flatten", "Reshape", "Permute", "RepeatVector",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
    "UpSampling1D", "UpSampling2D", "UpSampling3D",
    "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Dot",
    "Rescaling", "Normalization", "Resizing", "CenterCrop",
    "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast",
    "RandomCrop", "RandomBrightness",
})
MODELS = frozenset({"Sequential", "Functional", "Model"})
# Objects a layer's config may hold: its initializers, regularizers, constraints, dtype.
LAYER_PARTS = frozenset({
    "GlorotUniform", "GlorotNormal", "HeUniform", "HeNormal", "LecunUniform", "LecunNormal",
    "Zeros", "Ones", "Constant", "RandomNormal", "RandomUniform", "TruncatedNormal",
    "VarianceScaling", "Orthogonal", "Identity",
    "L1", "L2", "L1L2", "OrthogonalRegularizer",
    "MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm", "RadialConstraint",
    "Policy",
})
ALLOWED_CLASSES = LAYERS | MODELS | LAYER_PARTS
# Plain values Keras writes as tagged dicts; they build arrays or bytes, never code.
VALUE_TAGS = frozenset({"__numpy__", "__tensor__", "__bytes__"})
# Activations are named by string and looked up among a module's globals: allow the names.
ACTIVATIONS = frozenset({
    "elu", "exponential", "gelu", "hard_sigmoid", "leaky_relu", "linear", "log_softmax",
    "mish", "relu", "relu6", "selu", "sigmoid", "silu", "softmax", "softplus", "softsign",
    "swish", "tanh",
})


def _objects(node):
    """Every dict in a config tree, and every (key, string) whose key names an activation."""
    if isinstance(node, dict):
        yield node, None
        for key, value in node.items():
            if "activation" in str(key) and isinstance(value, str):
                yield None, value
            yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)


def _is_keras_module(module):
    return module is None or any(module == root or module.startswith(root + ".")
                                 for root in ("keras", "tf_keras"))


# Layer names as quantlab can use them: the converters build op names from them (a "/" is a
# scope), TensorFlow's node names refuse others ("\\"), and the reports name them.
_LAYER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def _name(node):
    """The name in a configuration node's settings, or None."""
    settings = node.get("config")
    return settings.get("name") if isinstance(settings, dict) else None


def _check_layer_names(config, path):
    """Refuse a layer name the converters would split or refuse, or that would stand for every
    op (the model's own name, or the name of the softmax wrapper quantlab puts around it)."""
    model = _name(config)
    for node, _ in _objects(config):
        if node is None or node.get("class_name") not in LAYERS | MODELS:
            continue
        name = _name(node)
        if name is None or node is config:
            continue
        if not isinstance(name, str) or not _LAYER_NAME.fullmatch(name):
            raise QuantlabError(f"{path} has a layer named {str(name)[:60]!r}; quantlab needs "
                                f"layer names of letters, digits, '_', '.' and '-': rename it")
        if model is not None and name in (model, f"{model}_with_softmax"):
            raise QuantlabError(f"{path} has a layer named {name!r} like its model, which would "
                                f"stand for every layer in the reports: rename it")


def check_config(config, path):
    """Raise a one-line error unless ``config`` names only Keras's built-in layers."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise QuantlabError(f"{path} holds no model configuration; {RESAVE}")
    for node, activation in _objects(config):
        if activation is not None:
            if activation not in ACTIVATIONS:
                raise QuantlabError(f"{path} uses activation {activation!r}, which is not one of "
                                    f"Keras's built-in activations; {REBUILD}")
            continue
        if "class_name" not in node:
            continue
        name = node["class_name"]
        if not isinstance(name, str):
            raise QuantlabError(f"{path} holds a class name that is not a string; {RESAVE}")
        if name in VALUE_TAGS:
            continue
        if name == "Lambda":
            raise QuantlabError(f"{path} contains a Lambda layer, whose Python code quantlab "
                                f"will not run; {REBUILD}")
        if name in ("function", "__lambda__"):
            raise QuantlabError(f"{path} holds a serialised Python function "
                                f"({node.get('config')!r:.60}), which quantlab will not run; "
                                f"{REBUILD}")
        if name not in ALLOWED_CLASSES:
            raise QuantlabError(f"{path} contains a {name!r:.60} layer or object, which is not one "
                                f"of Keras's built-in layers, so its code could come from "
                                f"anywhere; {REBUILD}")
        module = node.get("module")
        if not (module is None or isinstance(module, str)) or not _is_keras_module(module):
            raise QuantlabError(f"{path} says {name} comes from module {module!r:.60}, outside "
                                f"Keras; quantlab imports nothing a model file names: {REBUILD}")
        registered = node.get("registered_name")
        if registered not in (None, name):
            raise QuantlabError(f"{path} registers {name} as {registered!r:.60}, a custom "
                                f"class; {REBUILD}")
    _check_layer_names(config, path)
