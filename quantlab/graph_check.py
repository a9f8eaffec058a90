"""Refuse a frozen TensorFlow GraphDef that could do anything but classify images.

A GraphDef may hold any TensorFlow op: ops that read and write files, run Python, print to
a file or loop. TensorFlow runs whatever the graph holds, so a ``.pb`` is checked before
TensorFlow imports it: every node's op must be one an image classifier's inference needs
(an allow-list), and no function may be defined or referenced, since a function's body is
a graph of its own that the node list does not show.
"""

from quantlab.errors import QuantlabError

# What quantlab's own frozen graphs hold (variants._frozen_graph of the dense, medium and
# conv nets): the input, the weights, and the layers' arithmetic.
QUANTLAB_OPS = frozenset({
    "Placeholder", "Const", "Identity", "NoOp",
    "Conv2D", "BiasAdd", "Relu", "MaxPool", "Reshape", "MatMul", "Softmax",
})
# The same kind of pure tensor arithmetic for the other Keras layers an image classifier is
# built from, as Keras freezes them: convolutions and pooling, batch normalization (fused, or
# unfused into Mul/AddV2/Rsqrt), activations, elementwise arithmetic of merge and rescaling
# layers, reductions of global pooling, and the shape bookkeeping that Flatten and Reshape
# of a dynamic batch emit. None of them reads or writes anything but tensors.
INFERENCE_OPS = frozenset({
    "DepthwiseConv2dNative", "Conv2DBackpropInput", "AvgPool", "BatchMatMulV2",
    "FusedBatchNorm", "FusedBatchNormV3", "Rsqrt", "Sqrt", "Square",
    "Relu6", "Elu", "Selu", "LeakyRelu", "Sigmoid", "Tanh", "Softplus", "Softsign",
    "Erf", "Erfc", "Exp", "Log", "LogSoftmax",
    "Add", "AddV2", "AddN", "Sub", "Mul", "RealDiv", "Neg", "Maximum", "Minimum",
    "Mean", "Max", "Min", "Sum", "Prod",
    "Transpose", "Squeeze", "ExpandDims", "ConcatV2", "Pack", "Shape", "StridedSlice",
    "Slice", "Pad", "Fill", "Cast", "ResizeNearestNeighbor", "ResizeBilinear", "IdentityN",
})
ALLOWED_OPS = QUANTLAB_OPS | INFERENCE_OPS

FIX = "export the model again as a frozen graph of standard layers"


def check_graph_def(content, source="the GraphDef"):
    """The GraphDef parsed from ``content``, or a one-line error naming the refused op.

    ``source`` names the file in the message.
    """
    from quantlab._tf import tf

    graph_def = tf().compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(content)
    except Exception:  # protobuf raises DecodeError, whose module path varies by version
        raise QuantlabError(f"{source} is not a TensorFlow GraphDef; export it again") from None
    for node in graph_def.node:
        if node.op not in ALLOWED_OPS:
            raise QuantlabError(
                f"{source} holds op {node.op!r:.80} (node {node.name!r:.80}), which inference "
                f"of an image classifier does not need; quantlab runs only pure tensor ops, so "
                f"that no graph can touch files or run code: {FIX}")
        for name, value in node.attr.items():
            if value.WhichOneof("value") == "func" or value.list.func:
                raise QuantlabError(
                    f"{source} node {node.name!r:.80} ({node.op}) refers to a function in "
                    f"attribute {name!r:.80}, which quantlab will not run: {FIX}")
    if graph_def.library.ByteSize():
        names = [f.signature.name for f in graph_def.library.function] or ["gradients"]
        raise QuantlabError(f"{source} defines a function library ({', '.join(names)[:80]}), "
                            f"which a frozen classifier does not need and quantlab will not "
                            f"run: {FIX}")
    return graph_def
