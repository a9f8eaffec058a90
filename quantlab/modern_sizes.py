"""What the modern nets (``nets.MODERN``) hold and write per image, from their layer plans,
for the roofline's bytes: weights, per-channel vectors, activation elements, and the
features the logits layer reads (which the roofline adds with the logits)."""

from quantlab import nets


def sizes(net, input_shape):
    """(weights, biases, activations, features) of ``net`` on images of ``input_shape``."""
    return (mobilenet if net == "mobilenet" else vit)(input_shape)


def mobilenet(input_shape):
    """(weights, biases, activations, features): a kernel and a folded bias per convolution,
    its output (ReLU6 fused), and each residual add's output."""
    height, width, channels = input_shape
    sizes = [0, 0, height * width * channels]

    def conv(kernel, c_in, c_out, outputs):
        sizes[0] += kernel * kernel * c_in * c_out
        sizes[1] += c_out
        sizes[2] += outputs * c_out

    for kind, arg in nets.layer_plan("mobilenet", input_shape):
        if kind == "stem":
            conv(arg[0], channels, arg[1], height * width)
            channels = arg[1]
        elif kind == "inverted_residual":
            expansion, out, stride = arg
            wide = channels * expansion
            if expansion != 1:
                conv(1, channels, wide, height * width)
            height, width = -(-height // stride), -(-width // stride)
            conv(3, 1, wide, height * width)  # depthwise: one 3x3 kernel per channel
            conv(1, wide, out, height * width)
            if stride == 1 and channels == out:
                sizes[2] += height * width * out
            channels = out
        elif kind == "head":
            conv(1, channels, arg, height * width)
            channels = arg
    return sizes[0], sizes[1], sizes[2] + channels, channels  # + the pooled features


def vit(input_shape):
    """(weights, biases, activations, features): per block 4d^2 + 2dm weights (query, key,
    value, output; the MLP), two LayerNorms, heads x N^2 scores and as many softmax
    outputs; reshapes move nothing."""
    plan = nets.layer_plan("vit", input_shape)
    side, d = plan[0][1]
    tokens = -(-input_shape[0] // side) * -(-input_shape[1] // side)
    kernel = plan[1][1]
    weights = side * side * input_shape[2] * d + kernel * kernel * d
    biases = 2 * d
    activations = input_shape[0] * input_shape[1] * input_shape[2] + 3 * tokens * d
    for _, (heads, m) in plan[2:-2]:
        weights += 4 * d * d + 2 * d * m
        biases += 4 * d + m + d + 2 * 2 * d
        # norm1, query, scaled query, key, value, mix, output, add1, norm2, mlp2, add2
        activations += 11 * tokens * d + tokens * m + 2 * heads * tokens * tokens
    return weights, biases + 2 * d, activations + tokens * d + d, d
