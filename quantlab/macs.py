"""How many multiply-accumulates one image costs, and in which arithmetic each variant does them.

Counted from ``nets.layer_plan``: a convolution (stride 1, ``same`` padding) costs
H x W x k x k x C_in x C_out, a fully connected layer in x out, and the final logits layer
in x classes. Pools, ReLU, dropout, bias adds and the softmax are not counted: they are a
rounding error next to the MACs and no peak figure is quoted for them.

    >>> macs_per_image("medium", (28, 28, 1), 10)
    13883904
"""

from quantlab import nets

# The data type of the multiply-accumulates each variant's kernels run, on x86 with XNNPACK.
ARITHMETIC = {
    "float32_tf": "float32",
    "float32": "float32",
    # fp16 weights are converted to float32 when the model is prepared; XNNPACK computes in
    # float32 on x86 unless told to force fp16 (LiteRT does not, by default).
    "float16": "float32",
    # int8 weights, float activations: XNNPACK quantizes the activations per batch on the
    # fly ("qd8" kernels) and multiplies int8 x int8, so the MACs are int8.
    "dynamic_int8": "int8",
    "int8": "int8",
    "qat_int8": "int8",
}

NOTES = {
    "float16": "fp16 weights, computed in float32 (XNNPACK on x86)",
    "dynamic_int8": "int8 weights; activations quantized per batch on the fly (XNNPACK qd8 kernels)",
}


def macs_per_image(net, input_shape, num_classes):
    """Multiply-accumulates of one forward pass of ``net`` on one image of ``input_shape``."""
    height, width, channels = input_shape
    features = None  # set by flatten
    total = 0
    for kind, arg in nets.layer_plan(net):
        if kind == "conv":
            kernel, filters = arg
            total += height * width * kernel * kernel * channels * filters
            channels = filters
        elif kind == "pool":  # 2x2 max pool, stride 2, valid padding: floor
            height, width = height // 2, width // 2
        elif kind == "flatten":
            features = height * width * channels
        elif kind == "fc":
            total += features * arg
            features = arg
    return total + features * num_classes


def arithmetic(variant):
    """"float32" or "int8": the data type whose peak a variant's MAC/s is compared with."""
    return ARITHMETIC[variant]
