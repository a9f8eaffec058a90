"""Refuse ONNX models that would make a runtime read other files, load other code, or
allocate memory without bound.

ONNX operators compute, they do no I/O, but a model can point at tensors stored in other
files (external data: any path, relative to wherever the model is read from) and use
operators from other domains, which a runtime resolves by loading custom-op libraries. A
quantlab artifact needs neither, so a model that uses them is refused before any runtime
sees it; the model is parsed from the bytes read, so nothing it names is ever opened. Its
IR and operator-set versions must be ones the installed onnx package knows (its checks and
shape inference follow those versions' rules), and a user's classifier may use only the
operators an image classifier is built of (``check_onnx(..., classifier=True)``).

Memory: every tensor the graph computes is bounded (``quantlab.tensor_budget``), its shape
inferred by ONNX shape inference (constant shapes propagated) at batch 1 and 2. For that
to bound every batch size, a shape read from the input (Shape, Size) may only be passed
along, sliced and assembled (the flatten idiom), never computed with; control flow, whose
iterations no shape shows, is refused; and a sparse tensor counts at its dense size, since
runtimes make it dense.
"""

from collections import Counter

from quantlab import tensor_budget
from quantlab.errors import QuantlabError
from quantlab.tensor_budget import FIXED_BYTES, elements

DOMAINS = ("", "ai.onnx")  # the standard operator set
# Loops and branches run subgraphs any number of times: an image classifier has none.
CONTROL_FLOW = frozenset({"If", "Loop", "Scan", "SequenceMap"})
SHAPE_READERS = frozenset({"Shape", "Size"})
# What may be done to a shape read from the input: select and assemble its dimensions...
SHAPE_PLUMBING = frozenset({"Gather", "Slice", "Squeeze", "Unsqueeze", "Concat", "Cast",
                            "Identity", "Reshape"})
# ... and use them as a shape: a Reshape to it is the flatten idiom; the others are bounded
# by the shape check, which sees their outputs at two batch sizes.
SHAPE_OPERANDS = {"Reshape": 1, "Expand": 1, "ConstantOfShape": 0, "Tile": 1}
FIX = "export the classifier again from standard layers with a fixed image size"
ONE_FILE = ("save it as one file: onnx.save_model(model, 'model.onnx', "
            "save_as_external_data=False)")
# ONNX Runtime runs operator sets from 7 on (ONNX 1.2); newer than the onnx package knows,
# no check here knows the operators' rules.
MIN_OPSET = 7
# What PyTorch, tf2onnx and Keras exports of image classifiers (CNNs, ViTs) are built of:
# arithmetic, activations, convolutions, pooling, normalizations, and shape plumbing.
CLASSIFIER_OPS = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Neg", "Abs", "Exp", "Log",
    "Erf", "Min", "Max", "Sum", "Mean", "Clip", "Floor", "Ceil", "Round", "Sign",
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid",
    "HardSwish", "Tanh", "Softmax", "LogSoftmax", "Softplus", "Softsign", "Gelu", "Mish",
    "ThresholdedRelu",
    "Conv", "ConvTranspose", "Gemm", "MatMul",
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
    "BatchNormalization", "LayerNormalization", "InstanceNormalization",
    "GroupNormalization", "LRN",
    "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL2", "ArgMax",
    "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice",
    "Gather", "Shape", "Expand", "Tile", "Pad", "Resize", "DepthToSpace", "SpaceToDepth",
    "Identity", "Constant", "ConstantOfShape", "Cast", "Dropout", "Equal", "Where",
})
# Operators of a model quantized already: quantlab quantizes the float model itself.
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
                           "MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul"})


def _graphs(model):
    """The main graph, every subgraph held in a node attribute, and the training graphs."""
    roots = [model.graph]
    for info in model.training_info:
        roots += [info.initialization, info.algorithm]
    while roots:
        graph = roots.pop()
        yield graph
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    roots.append(attribute.g)
                roots.extend(attribute.graphs)


def _held(model, stored, one, many):
    """Every tensor of one kind in the model: each graph's ``stored`` list (its initializers),
    and each node attribute's single ``one`` and repeated ``many`` field."""
    for graph in _graphs(model):
        yield from getattr(graph, stored)
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField(one):
                    yield getattr(attribute, one)
                yield from getattr(attribute, many)


def _sparse_tensors(model):
    return _held(model, "sparse_initializer", "sparse_tensor", "sparse_tensors")


def _tensors(model):
    """Every TensorProto of the model; a sparse tensor as its values and its indices."""
    yield from _held(model, "initializer", "t", "tensors")
    for sparse in _sparse_tensors(model):
        yield from (sparse.values, sparse.indices)


def _itemsize(elem_type):
    from onnx import helper

    try:
        return max(helper.tensor_dtype_to_np_dtype(elem_type).itemsize, 1)
    except (KeyError, ValueError, TypeError):
        return 8


def check_onnx(path, content, classifier=False):
    """The parsed ModelProto, or a one-line QuantlabError naming what is refused.

    ``classifier``: a user's image classifier, whose operators must be in CLASSIFIER_OPS
    (checked before shape inference runs any operator's inference code).
    """
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model_from_string(content)
    except (DecodeError, ValueError, RuntimeError):
        raise QuantlabError(f"{path} is not a readable ONNX model; export it again") from None
    _check_self_contained(path, model)
    _check_versions(path, model)
    _check_operators(path, model)
    if classifier:
        _check_classifier_ops(path, model)
    _check_declared_sizes(path, model, len(content))
    _check_shape_arithmetic(path, model.graph)
    _check_memory(path, model)
    return model


def _check_self_contained(path, model):
    import onnx

    external = [t.name for t in _tensors(model)
                if t.data_location == onnx.TensorProto.EXTERNAL or t.external_data]
    if external:
        raise QuantlabError(f"{path} refers to tensor {external[0]!r:.80} stored in another file "
                            f"(external data), which quantlab never opens: it runs only "
                            f"self-contained models; {ONE_FILE}")


def _check_versions(path, model):
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if model.ir_version > onnx.IR_VERSION:
        raise QuantlabError(f"{path} is of ONNX IR version {model.ir_version}, newer than the "
                            f"{onnx.IR_VERSION} quantlab's onnx package reads; export it with "
                            f"an older IR version or upgrade onnx")
    opsets = [entry.version for entry in model.opset_import if entry.domain in DOMAINS]
    if len(opsets) != 1 or not MIN_OPSET <= opsets[0] <= newest:
        found = f"operator set {opsets[0]}" if len(opsets) == 1 else "no single operator set"
        raise QuantlabError(f"{path} uses {found} of ONNX; quantlab reads operator sets "
                            f"{MIN_OPSET} to {newest}: export it again with opset in that range")


def _check_operators(path, model):
    if model.functions:  # checked first: a function's name is what hides the ops it holds
        raise QuantlabError(f"{path} defines its own functions ({model.functions[0].name!r:.80}), "
                            f"which can hide any operator; quantlab checks only models of standard "
                            f"operators: inline them (onnx.inliner.inline_local_functions) and "
                            f"save the model again")
    for graph in _graphs(model):
        for node in graph.node:
            if node.domain not in DOMAINS:
                raise QuantlabError(f"{path} uses operator {node.op_type!r:.80} of domain "
                                    f"{node.domain!r:.80}, outside the standard ONNX operators, "
                                    f"which a runtime would look for in libraries of custom "
                                    f"operators; {FIX}")
            if node.op_type in CONTROL_FLOW:
                raise QuantlabError(f"{path} holds control flow ({node.op_type} node "
                                    f"{node.name!r:.80}), which an image classifier does not "
                                    f"need and whose cost no shape shows; {FIX}")


def _check_classifier_ops(path, model):
    """Refuse a user's model that uses an operator image classifiers are not built of, or
    names two nodes of a graph alike (ONNX Runtime refuses such a file as invalid)."""
    for graph in _graphs(model):
        # Counted, not searched name by name: a crafted graph may have a million nodes.
        twice = [name for name, count in Counter(n.name for n in graph.node if n.name).items()
                 if count > 1]
        if twice:
            raise QuantlabError(f"{path} has two nodes named {twice[0]!r:.80}, which ONNX Runtime "
                                f"refuses; export it again with unique node names")
        for node in graph.node:
            if node.op_type in QUANTIZED_OPS:
                raise QuantlabError(f"{path} is quantized already ({node.op_type} node "
                                    f"{node.name!r:.80}); give quantlab the float32 model, "
                                    f"which it quantizes itself")
            if node.op_type not in CLASSIFIER_OPS:
                raise QuantlabError(f"{path} uses operator {node.op_type!r:.80} (node "
                                    f"{node.name!r:.80}), which is not one an image classifier "
                                    f"is built of; {FIX}")


def _check_declared_sizes(path, model, file_size):
    # A stored tensor holds its data in the file, at least half a byte per element (4-bit
    # types): tensors that declare more, each or all together (a thousand tensors of a
    # few bytes each declaring the file's size), are a lie a runtime might allocate for.
    declared = [(elements(t.dims), t.name, list(t.dims)) for t in _tensors(model)]
    total = sum(count for count, _, _ in declared)
    if total > 2 * file_size:
        count, name, dims = max(declared, key=lambda entry: entry[0])
        others = "" if count > 2 * file_size else f" and {len(declared) - 1:,} others"
        raise QuantlabError(f"{path} declares tensor {name!r:.80} of shape {dims}{others}, more "
                            f"data than the whole file holds; export it again")
    dense = sum(elements(s.dims) * _itemsize(s.values.data_type) for s in _sparse_tensors(model))
    if dense > FIXED_BYTES:  # runtimes make sparse tensors dense, whatever few values they hold
        raise QuantlabError(f"{path} declares sparse tensors of {dense / 2**20:,.0f} MiB once made "
                            f"dense, over quantlab's limit of {FIXED_BYTES >> 20} MiB; {FIX}")


def _check_shape_arithmetic(path, graph):
    """Refuse a graph that computes with the input's shape instead of passing it along.

    This follows the graph in its stored order, which ONNX requires to be topological (so
    that each value is made before it is used); a graph stored otherwise is refused too.
    """
    known = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {
        s.values.name for s in graph.sparse_initializer} | {""}
    from_shape = set()
    for node in graph.node:
        unmade = [name for name in node.input if name not in known]
        if unmade:
            raise QuantlabError(f"{path} is not a valid ONNX graph: {node.op_type} node "
                                f"{node.name!r:.80} uses {unmade[0]!r:.80} before any node makes "
                                f"it; export it again")
        known.update(node.output)
        if node.op_type in SHAPE_READERS:
            from_shape.update(node.output)
            continue
        positions = [i for i, name in enumerate(node.input) if name in from_shape]
        if not positions or positions == [SHAPE_OPERANDS.get(node.op_type)]:
            continue
        if node.op_type not in SHAPE_PLUMBING:
            raise QuantlabError(f"{path} computes with its input's shape ({node.op_type} node "
                                f"{node.name!r:.80}), so the memory it takes cannot be bounded "
                                f"before it runs; {FIX}")
        from_shape.update(node.output)


def _batch_dim(path, model):
    """The inputs' batch dimension: a number if fixed, else None; every other one must be fixed."""
    fixed = set()
    for value in fed_inputs(model):
        dims = value.type.tensor_type.shape.dim if value.type.HasField("tensor_type") else []
        if not dims or any(not d.HasField("dim_value") or d.dim_value < 1 for d in dims[1:]):
            raise QuantlabError(f"{path} input {value.name!r:.80} has no fixed image shape "
                                f"(only the batch dimension may vary); {FIX}")
        fixed.add(dims[0].dim_value if dims[0].HasField("dim_value") else None)
    if len(fixed) > 1:
        raise QuantlabError(f"{path} has inputs of different batch sizes; {FIX}")
    return fixed.pop() if fixed else 1


def _inferred_shapes(path, model, batch, data_prop):
    """{tensor name: (dims, or None where unknown; bytes per element)} at ``batch``."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for value in fed_inputs(copy):
        value.type.tensor_type.shape.dim[0].dim_value = batch
    # Shapes the file declares for outputs and intermediates are inferred anew, at this batch.
    del copy.graph.value_info[:]
    for value in copy.graph.output:
        if value.type.HasField("tensor_type"):
            value.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(copy, check_type=True, strict_mode=True,
                                                     data_prop=data_prop)
    except Exception as error:  # onnx raises its own InferenceError, and ValueError
        line = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise QuantlabError(f"{path} does not pass ONNX shape inference ({line}); "
                            f"export it again") from None
    shapes = {}
    # The inputs count too: a runtime holds them, and a declared image of 10^5 x 10^5
    # pixels that the first node pools away is computed with nowhere else.
    for value in (*fed_inputs(inferred), *inferred.graph.value_info, *inferred.graph.output):
        kind = value.type.tensor_type
        known = value.type.HasField("tensor_type") and kind.HasField("shape") and all(
            d.HasField("dim_value") for d in kind.shape.dim)
        shapes[value.name] = ([d.dim_value for d in kind.shape.dim] if known else None,
                              _itemsize(kind.elem_type))
    return shapes


def _check_memory(path, model):
    """Refuse a model whose computed tensors could outgrow the budget at any batch size."""
    fixed_batch = _batch_dim(path, model)
    batches = (fixed_batch,) if fixed_batch else (1, 2)
    # Propagating computed shapes makes ONNX compute small tensors' values, and some ops'
    # values whatever their size (Range): only a graph that reads its input's shape needs
    # it, and it runs only once every tensor known without it is within the budget.
    data_prop = _reads_shapes(model)
    if data_prop:
        first = _inferred_shapes(path, model, batches[0], False)
        tensor_budget.check(path, _computed(model, first, first), FIX, complete=False)
    inferred = [_inferred_shapes(path, model, batch, data_prop) for batch in batches]
    tensor_budget.check(path, _computed(model, inferred[0], inferred[-1]), FIX)


def _reads_shapes(model):
    return any(node.op_type in SHAPE_READERS for node in model.graph.node)


def shapes_at(path, model, batch):
    """{input, computed tensor or output name: its dims at ``batch``, None where unknown} of a
    model ``check_onnx`` passed."""
    inferred = _inferred_shapes(path, model, batch, _reads_shapes(model))
    return {name: dims for name, (dims, _) in inferred.items()}


def fed_inputs(model):
    """The graph's inputs that are fed (an initializer may be listed as an input too)."""
    initializers = {t.name for t in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def _computed(model, at_one, at_two):
    named = [(value.name, "input") for value in fed_inputs(model)]
    named += [(name, node.op_type) for node in model.graph.node for name in filter(None, node.output)]
    for name, op in named:
        (dims, itemsize), (again, _) = (shapes.get(name, (None, 1)) for shapes in (at_one, at_two))
        yield name, op, dims, again, itemsize
