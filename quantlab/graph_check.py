"""Refuse a frozen TensorFlow GraphDef that could do anything but classify images.

A GraphDef may hold any TensorFlow op: ops that read and write files, run Python, print to
a file or loop. TensorFlow runs whatever the graph holds, so a ``.pb`` is checked before
TensorFlow imports it: every node's op must be one an image classifier's inference needs
(an allow-list), and no function may be defined or referenced, since a function's body is
a graph of its own that the node list does not show.

Nor may a graph take memory without bound: every node's inputs must exist, and the graph
must import into TensorFlow with its input's batch set to 1 and to 2, every tensor's shape
then known and within ``quantlab.tensor_budget``. Importing runs TensorFlow's shape
inference, which evaluates the subgraphs that compute shapes, axes and sizes (a Reshape's
shape, a Fill's dims, a Pad's paddings); so before that, such operands must come from
constants and the input's shape, only passed along (sliced, stacked, concatenated, cast),
never computed: otherwise the evaluation itself could fill gigabytes, and the two batch
sizes would not bound the others.
"""

from quantlab import tensor_budget
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
    "StopGradient", "SquaredDifference",
})
ALLOWED_OPS = QUANTLAB_OPS | INFERENCE_OPS

FIX = "export the model again as a frozen graph of standard layers"

# The inputs whose values (not only their shapes) TensorFlow's shape inference reads to know
# an allowed op's output shape; ConcatV2's axis is its last input.
VALUE_OPERANDS = {
    "Reshape": (1,), "Fill": (0,), "Pad": (1,), "ResizeNearestNeighbor": (1,),
    "ResizeBilinear": (1,), "StridedSlice": (1, 2, 3), "Slice": (1, 2), "Transpose": (1,),
    "ExpandDims": (1,), "Mean": (1,), "Max": (1,), "Min": (1,), "Sum": (1,), "Prod": (1,),
    "Conv2DBackpropInput": (0,), "ConcatV2": (-1,),
}
# What such an operand may be computed from: constants and the shape of any tensor...
SHAPE_SOURCES = frozenset({"Const", "Shape"})
# ... passed along by ops that select and assemble values, never compute new ones.
SHAPE_PLUMBING = frozenset({"StridedSlice", "Slice", "Pack", "ConcatV2", "Cast", "Identity",
                            "Squeeze", "ExpandDims", "Reshape"})
# A shape, axes or paddings constant holds a handful of values; TensorFlow builds it whole
# to read it, and a constant may declare any number of copies of one stored value.
MAX_SHAPE_VALUES = 1 << 16


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
    _check_inputs_exist(graph_def, source)
    _check_shape_operands(graph_def, source)
    _check_memory(tf(), graph_def, source)
    return graph_def


def _node_name(input_name):
    """The node an input names: "^node" (a control input), "node:1" or "node"."""
    return input_name.lstrip("^").split(":")[0]


def _check_inputs_exist(graph_def, source):
    names = {node.name for node in graph_def.node}
    for node in graph_def.node:
        for name in node.input:
            if _node_name(name) not in names:
                kind = "a control input" if name.startswith("^") else "input"
                raise QuantlabError(f"{source} node {node.name!r:.80} ({node.op}) takes {kind} "
                                    f"from {_node_name(name)!r:.80}, which the graph does not "
                                    f"have: {FIX}")


def _check_shape_operands(graph_def, source):
    """Refuse a shape, axis or size operand computed otherwise than from constants and shapes."""
    nodes = {node.name: node for node in graph_def.node}
    for node in graph_def.node:
        data = [name for name in node.input if not name.startswith("^")]
        for position in VALUE_OPERANDS.get(node.op, ()):
            if not -len(data) <= position < len(data):
                continue  # too few inputs: TensorFlow's import says so
            pending, seen = [_node_name(data[position])], set()
            while pending:
                upstream = nodes[pending.pop()]
                if upstream.op == "Const" and _declared_values(upstream) > MAX_SHAPE_VALUES:
                    raise QuantlabError(
                        f"{source} node {node.name!r:.80} ({node.op}) takes a shape from constant "
                        f"{upstream.name!r:.80} of {_declared_values(upstream):,} values, where a "
                        f"shape has a few: {FIX}")
                if upstream.name in seen or upstream.op in SHAPE_SOURCES:
                    continue
                seen.add(upstream.name)
                if upstream.op not in SHAPE_PLUMBING:
                    raise QuantlabError(
                        f"{source} node {node.name!r:.80} ({node.op}) takes a shape computed by "
                        f"{upstream.op} node {upstream.name!r:.80}; quantlab bounds a graph's "
                        f"memory only when shapes come from constants or are passed along: {FIX}")
                pending += [_node_name(i) for i in upstream.input if not i.startswith("^")]


def _declared_values(const):
    count = 1
    for dim in const.attr["value"].tensor.tensor_shape.dim:
        count *= max(dim.size, 0)
    return count


def _shapes_at(tf, graph_def, batch, source):
    """[(tensor, op, dims or None, bytes per element)] of the graph imported at ``batch``."""
    copy = tf.compat.v1.GraphDef()
    copy.CopyFrom(graph_def)
    for node in copy.node:
        if node.op == "Placeholder":
            node.attr["shape"].shape.dim[0].size = batch
    graph = tf.Graph()
    try:
        with graph.as_default():
            tf.graph_util.import_graph_def(copy, name="")
    except Exception as error:  # ValueError, TypeError, MemoryError: with a NodeDef dump
        raise QuantlabError(f"TensorFlow cannot import {source}: {import_error(error)}; "
                            f"{FIX}") from None
    return [(tensor.name, op.type, tensor.shape.as_list() if tensor.shape.is_fully_defined()
             else None, max(tensor.dtype.size, 1))
            for op in graph.get_operations() for tensor in op.outputs]


def import_error(error):
    """The first line of TensorFlow's import error, without the NodeDef it dumps after it."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    for dump in (" for node ", " for '{{node ", "\tNodeDef"):
        line = line.split(dump)[0]
    return line.strip()[:200]


def _check_memory(tf, graph_def, source):
    """Refuse a graph whose tensors could outgrow the budget at any batch size."""
    shapes = [node.attr["shape"].shape for node in graph_def.node
              if node.op == "Placeholder" and "shape" in node.attr]
    if len(shapes) < sum(node.op == "Placeholder" for node in graph_def.node) or any(
            shape.unknown_rank or not shape.dim or any(d.size < 1 for d in shape.dim[1:])
            for shape in shapes):
        raise QuantlabError(f"{source} takes an input of no fixed image shape (only the batch "
                            f"dimension may vary): {FIX}")
    fixed = {shape.dim[0].size for shape in shapes}
    batches = sorted(fixed) if len(fixed) == 1 and -1 not in fixed else [1, 2]
    imported = [_shapes_at(tf, graph_def, batch, source) for batch in batches]
    tensor_budget.check(source, [(name, op, dims, again[2], size) for (name, op, dims, size), again
                                 in zip(imported[0], imported[-1])], FIX)
