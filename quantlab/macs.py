"""How many multiply-accumulates one image costs, from the layer plan of a net.

Counted from ``nets.layer_plan``: a convolution (stride 1, ``same`` padding) costs
H x W x k x k x C_in x C_out, a fully connected layer in x out, and the final logits layer
in x classes. Pools, ReLU, dropout, bias adds and the softmax are not counted: they are a
rounding error next to the MACs and no peak figure is quoted for them.

    >>> macs_per_image("medium", (28, 28, 1), 10)
    13883904
"""

from quantlab import nets
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
