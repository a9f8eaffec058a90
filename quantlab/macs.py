"""How many multiply-accumulates one image costs, from the layer plan of a net.

Counted from ``nets.layer_plan``. A convolution (``same`` padding) costs
H_out x W_out x k x k x C_in x C_out, a depthwise one H_out x W_out x k x k x C, a fully
connected layer in x out, and the final logits layer in x classes. The mobilenet's batch
norms are folded into its convolutions when exported, so they cost nothing of their own.
The vit's attention, per block on N tokens of width d: the query, key and value projections
3 N d^2, the scores N^2 d and their mix of the values N^2 d (over all heads together), the
output projection N d^2, and the MLP of width m 2 N d m. Pools, ReLU(6), GELU, softmax,
layer norm, the attention's scaling, residual adds, dropout and bias adds are not counted:
they are elementwise, a rounding error next to the MACs, and no peak figure is quoted for
them.

    >>> macs_per_image("medium", (28, 28, 1), 10)
    13883904
"""

from quantlab import nets


def _halved(size, stride):
    return -(-size // stride)  # ``same`` padding: ceil


def macs_per_image(net, input_shape, num_classes):
    """Multiply-accumulates of one forward pass of ``net`` on one image of ``input_shape``."""
    height, width, channels = input_shape
    features = None  # set by flatten, the global pool and the token mean
    total = 0
    for kind, arg in nets.layer_plan(net, input_shape):
        if kind in ("conv", "stem"):
            kernel, filters = arg
            total += height * width * kernel * kernel * channels * filters
            channels = filters
        elif kind == "head":
            total += height * width * channels * arg
            channels = arg
        elif kind == "pool":  # 2x2 max pool, stride 2, valid padding: floor
            height, width = height // 2, width // 2
        elif kind == "flatten":
            features = height * width * channels
        elif kind == "fc":
            total += features * arg
            features = arg
        elif kind == "inverted_residual":
            expansion, out, stride = arg
            wide = channels * expansion
            if expansion != 1:
                total += height * width * channels * wide
            height, width = _halved(height, stride), _halved(width, stride)
            total += height * width * 9 * wide + height * width * wide * out
            channels = out
        elif kind == "patches":
            side, dim = arg
            height, width = _halved(height, side), _halved(width, side)
            total += height * width * side * side * channels * dim
            channels = dim
        elif kind == "position":
            total += height * width * arg * arg * channels
        elif kind == "encoder":
            _, mlp = arg
            tokens = height * width
            total += (4 * tokens * channels * channels + 2 * tokens * tokens * channels
                      + 2 * tokens * channels * mlp)
        elif kind in ("global_pool", "token_mean"):
            features = channels
    return total + features * num_classes
