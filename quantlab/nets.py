"""The three CNN families of the P17 study, built for any input shape and class count.

All convolutions: stride 1, padding ``same``, ReLU. All pools: 2x2 max pool, stride 2.
Dropout 0.5 where P17 had it (active in training only). The models output logits; the
exported variants append a softmax so that every artifact returns probabilities.
"""

from quantlab.errors import QuantlabError

# (kind, argument) per layer; "conv" is (kernel, filters), "fc" is units.
_LAYERS = {
    "dense": [("conv", (5, 32)), ("pool", None), ("flatten", None),
              ("fc", 512), ("fc", 1024), ("dropout", 0.5)],
    "medium": [("conv", (5, 32)), ("pool", None), ("conv", (5, 64)), ("pool", None),
               ("flatten", None), ("fc", 1024), ("dropout", 0.5)],
    "conv": [("conv", (2, 32)), ("pool", None), ("conv", (2, 128)), ("pool", None),
             ("conv", (2, 256)), ("pool", None), ("flatten", None),
             ("fc", 256), ("dropout", 0.5)],
}

NAMES = tuple(_LAYERS)


def check_name(name):
    if name not in _LAYERS:
        raise QuantlabError(f"unknown net {name!r}: choose one of {', '.join(NAMES)}")
    return name


def layer_plan(name):
    """The layer list of a net, for documentation and tests."""
    return list(_LAYERS[check_name(name)])


def build(name, input_shape, num_classes):
    """An uncompiled tf_keras model of net ``name`` that outputs ``num_classes`` logits."""
    check_name(name)
    from quantlab._tf import keras

    layers = keras().layers
    stack = [layers.InputLayer(input_shape=tuple(input_shape), name="image")]
    counts = {}

    def numbered(kind):
        # Fixed names keep exported artifacts byte-identical across processes.
        counts[kind] = counts.get(kind, 0) + 1
        return f"{kind}{counts[kind]}"

    for kind, arg in _LAYERS[name]:
        if kind == "conv":
            kernel, filters = arg
            stack.append(layers.Conv2D(filters, kernel, padding="same", activation="relu",
                                       name=numbered("conv")))
        elif kind == "pool":
            stack.append(layers.MaxPooling2D(pool_size=2, strides=2, name=numbered("pool")))
        elif kind == "flatten":
            stack.append(layers.Flatten(name="flatten"))
        elif kind == "fc":
            stack.append(layers.Dense(arg, activation="relu", name=numbered("fc")))
        elif kind == "dropout":
            stack.append(layers.Dropout(arg, name="dropout"))
    stack.append(layers.Dense(num_classes, name="logits"))
    return keras().Sequential(stack, name=name)
