"""The nets quantlab trains, built for any input shape and class count.

``NAMES``: the three CNN families of the P17 study. All convolutions: stride 1, padding
``same``, ReLU. All pools: 2x2 max pool, stride 2. Dropout 0.5 where P17 had it (active in
training only).

``MODERN``: two families of today, from Keras's built-in layers only (so that they pass
quantlab's own checks of a user's model, and every converter knows them):

- ``mobilenet``: MobileNetV2's inverted residual blocks (1x1 expand, 3x3 depthwise, 1x1
  project, each followed by batch norm, ReLU6 but after the projection; a residual add where
  the shape stays), the kind of net deployed on CPUs and phones. The converters fold each
  batch norm into the convolution before it.
- ``vit``: a small vision transformer: patch embedding (a strided convolution), a 3x3
  depthwise convolution on the patch grid added to it as the position encoding (CPVT's
  conditional position encoding: Keras has no built-in learned position table), pre-norm
  blocks of multi-head attention and a GELU MLP with residual adds, and the tokens' mean.

The models output logits; the exported variants append a softmax so that every artifact
returns probabilities.
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
MODERN = ("mobilenet", "vit")
ALL = NAMES + MODERN

# mobilenet: the stem's filters; per inverted residual block (expansion, output channels,
# wants stride 2); the head's 1x1 filters. A block halves the feature map only while it is
# larger than _SMALLEST (28 -> 14 -> 7 -> 4, 32 -> 16 -> 8 -> 4, 8 -> 4 -> 4 -> 4).
_MOBILENET_STEM, _MOBILENET_HEAD = 16, 128
_MOBILENET_BLOCKS = ((1, 16, False), (4, 24, True), (4, 24, False), (4, 32, True),
                     (4, 32, False), (4, 48, True), (4, 48, False))
_SMALLEST = 4
# Batch norm's moving statistics decay per step: Keras's 0.99 averages over ~100 steps, and
# a quick training (300 steps) ends with statistics of weights long gone, so inference
# scored far below training (88.6 % against 15.7 % seen). 0.9 follows the last ~10 steps.
BN_MOMENTUM = 0.9
# vit: token width, heads, blocks, MLP width.
_VIT = dict(dim=64, heads=4, blocks=3, mlp=128)


def check_name(name):
    if name not in ALL:
        raise QuantlabError(f"unknown net {name!r}: choose one of {', '.join(ALL)}")
    return name


def patch_size(input_shape):
    """The vit's patch side: 4 where that leaves at least a 4x4 grid of patches, else 2
    (28 and 32 -> 4, digits' 8 -> 2). Patches at a border the side does not divide are
    zero-padded."""
    return 4 if min(input_shape[:2]) >= 16 else 2


def _mobilenet_plan(input_shape):
    height = input_shape[0]
    plan = [("stem", (3, _MOBILENET_STEM))]
    for expansion, channels, halves in _MOBILENET_BLOCKS:
        stride = 2 if halves and height > _SMALLEST else 1
        height = -(-height // stride)
        plan.append(("inverted_residual", (expansion, channels, stride)))
    return plan + [("head", _MOBILENET_HEAD), ("global_pool", None)]


def _vit_plan(input_shape):
    return ([("patches", (patch_size(input_shape), _VIT["dim"])), ("position", 3)]
            + [("encoder", (_VIT["heads"], _VIT["mlp"]))] * _VIT["blocks"]
            + [("norm", None), ("token_mean", None)])


def layer_plan(name, input_shape=(28, 28, 1)):
    """The layer list of a net, for documentation, tests and counting; the modern nets'
    depend on the input (strides, patch side). Kinds: "conv" (kernel, filters), "pool",
    "flatten", "fc" units, "dropout" rate; "stem" (kernel, filters) and "head" filters (a
    convolution, batch norm, ReLU6), "inverted_residual" (expansion, channels, stride),
    "global_pool"; "patches" (side, width), "position" kernel, "encoder" (heads, MLP width),
    "norm", "token_mean". The logits layer follows every plan."""
    check_name(name)
    if name == "mobilenet":
        return _mobilenet_plan(input_shape)
    if name == "vit":
        return _vit_plan(input_shape)
    return list(_LAYERS[name])


def build(name, input_shape, num_classes):
    """An uncompiled tf_keras model of net ``name`` that outputs ``num_classes`` logits."""
    check_name(name)
    if name == "mobilenet":
        return _build_mobilenet(tuple(input_shape), num_classes)
    if name == "vit":
        return _build_vit(tuple(input_shape), num_classes)
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


def _build_mobilenet(input_shape, num_classes):
    from quantlab._tf import keras

    layers = keras().layers
    image = layers.Input(input_shape, name="image")

    def conv_bn(x, name, filters=None, kernel=1, stride=1, relu6=True, depthwise=False):
        # No bias: the batch norm after it has one, and the converters fold both together.
        if depthwise:
            x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False,
                                       name=f"{name}_depthwise")(x)
        else:
            x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False,
                              name=name)(x)
        # Not fused: frozen, a fused batch norm holds an output whose size TensorFlow knows
        # only when it runs, which quantlab's check of a frozen graph refuses.
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, fused=False, name=f"{name}_bn")(x)
        return layers.ReLU(6.0, name=f"{name}_relu6")(x) if relu6 else x

    plan = layer_plan("mobilenet", input_shape)
    kernel, filters = plan[0][1]
    x = conv_bn(image, "stem", filters, kernel)
    for number, (_, (expansion, channels, stride)) in enumerate(plan[1:-2], 1):
        name, block_input = f"block{number}", x
        if expansion != 1:
            x = conv_bn(x, f"{name}_expand", x.shape[-1] * expansion)
        x = conv_bn(x, name, kernel=3, stride=stride, depthwise=True)
        x = conv_bn(x, f"{name}_project", channels, relu6=False)  # linear bottleneck
        if stride == 1 and block_input.shape[-1] == channels:
            x = layers.Add(name=f"{name}_add")([block_input, x])
    x = conv_bn(x, "head", plan[-2][1])
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras().Model(image, logits, name="mobilenet")


def _build_vit(input_shape, num_classes):
    """The tokens stay on their patch grid, so that every per-token linear map is a 1x1
    convolution: a Dense layer on a 3-D tensor computes its reshape from the input's shape at
    run time, which the frozen-graph and ONNX checks refuse. Each head has its own query, key
    and value convolutions (the same weights as one projection split into heads):
    MultiHeadAttention is neither among the layers quantlab accepts in a user's model nor
    frozen without Einsum."""
    from quantlab._tf import keras

    layers = keras().layers
    image = layers.Input(input_shape, name="image")
    plan = layer_plan("vit", input_shape)
    side, dim = plan[0][1]
    grid = layers.Conv2D(dim, side, side, padding="same", name="patches")(image)
    position = layers.DepthwiseConv2D(plan[1][1], padding="same", name="position")(grid)
    grid = layers.Add(name="with_position")([grid, position])
    rows, columns = grid.shape[1], grid.shape[2]

    def tokens(x, name):  # the grid as a sequence, for attention's matrix products
        return layers.Reshape((rows * columns, x.shape[-1]), name=name)(x)

    def norm(x, name):
        return layers.LayerNormalization(epsilon=1e-6, name=name)(x)

    for number, (_, (heads, mlp)) in enumerate(plan[2:-2], 1):
        name, width = f"block{number}", dim // heads
        x = norm(grid, f"{name}_norm1")
        outputs = []
        for head in range(1, heads + 1):
            part = f"{name}_head{head}"
            query = layers.Conv2D(width, 1, name=f"{part}_query")(x)
            query = layers.Rescaling(width ** -0.5, name=f"{part}_scale")(query)
            key = layers.Conv2D(width, 1, name=f"{part}_key")(x)
            value = layers.Conv2D(width, 1, name=f"{part}_value")(x)
            scores = layers.Dot(axes=2, name=f"{part}_scores")(
                [tokens(query, f"{part}_query_tokens"), tokens(key, f"{part}_key_tokens")])
            weights = layers.Softmax(name=f"{part}_softmax")(scores)
            outputs.append(layers.Dot(axes=(2, 1), name=f"{part}_mix")(
                [weights, tokens(value, f"{part}_value_tokens")]))
        x = layers.Concatenate(name=f"{name}_heads")(outputs)
        x = layers.Reshape((rows, columns, dim), name=f"{name}_grid")(x)
        x = layers.Conv2D(dim, 1, name=f"{name}_attention_output")(x)
        grid = layers.Add(name=f"{name}_add1")([grid, x])
        x = norm(grid, f"{name}_norm2")
        x = layers.Conv2D(mlp, 1, activation="gelu", name=f"{name}_mlp1")(x)
        x = layers.Conv2D(dim, 1, name=f"{name}_mlp2")(x)
        grid = layers.Add(name=f"{name}_add2")([grid, x])
    x = norm(grid, "norm")
    x = layers.GlobalAveragePooling2D(name="token_mean")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras().Model(image, logits, name="vit")
