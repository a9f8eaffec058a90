"""Check a .tflite file's structure before any runtime parses it.

LiteRT and OpenVINO trust the flatbuffer they are given: an index out of range, a name that
is not UTF-8 or a shape of 30000 x 30000 reaches them as a crash, a Python exception of
their own or gigabytes allocated. So the file is read here first, with every offset checked
against its length (the TFLite schema, ``schema.fbs``, version 3), and refused in one line
unless it is what quantlab runs: one graph with one image input and one output, tensors of
the types an image classifier uses and of bounded declared size, weights inside the file,
no custom operators. Reading it costs one pass over its tables, not over its weights.
"""

import math
import struct

from quantlab import tensor_budget
from quantlab.errors import QuantlabError

SCHEMA_VERSION = 3
# Declared sizes, for the shapes written in the file (batch included): one tensor, and all
# the tensors a runtime allocates for one inference (inputs, outputs, activations), which
# get the per-image budget ONNX and GraphDef files get. The nets studied here need under
# 1 MiB of activations and 16 MiB of weights.
MAX_TENSOR_BYTES = 256 << 20
MAX_ACTIVATION_BYTES = tensor_budget.PER_IMAGE_BYTES
MAX_RANK = 8

# TensorType -> (name, bits per value), for the types an image classifier uses; any other
# (strings, complex numbers, resources, variants) is refused.
TYPES = {0: ("FLOAT32", 32), 1: ("FLOAT16", 16), 2: ("INT32", 32), 3: ("UINT8", 8),
         4: ("INT64", 64), 6: ("BOOL", 8), 7: ("INT16", 16), 9: ("INT8", 8), 17: ("INT4", 4)}
INPUT_TYPES = ("FLOAT32", "INT8", "UINT8")  # what Predictor.checked_input can feed
OUTPUT_TYPES = ("FLOAT32", "INT8", "UINT8")  # what Predictor.finish can read
_OTHER_TYPES = {5: "STRING", 8: "COMPLEX64", 10: "FLOAT64", 11: "COMPLEX128", 12: "UINT64",
                13: "RESOURCE", 14: "VARIANT", 15: "UINT32", 16: "UINT16", 18: "BFLOAT16"}
_CUSTOM = 32  # BuiltinOperator.CUSTOM: code the runtimes look up by name, or TensorFlow's
_DEQUANTIZE = 6  # BuiltinOperator.DEQUANTIZE: of float16 weights, a float32 copy of weights
# Operators that run other subgraphs: none in a classifier, and one graph may not call itself.
_CONTROL_FLOW = {31: "CALL", 118: "IF", 119: "WHILE", 129: "CALL_ONCE", 200: "STABLEHLO_WHILE",
                 206: "STABLEHLO_COMPOSITE", 209: "STABLEHLO_CASE"}
# Operators whose output shape is given by the values of some inputs (their positions here).
# From constants, the runtimes work the shape out when they allocate, where it is checked
# (litert.check_computed_sizes); from values computed while running, nothing can bound it
# beforehand (a FILL of dims cast from the pixels), so those inputs must be constants.
_SHAPE_FROM_VALUES = {
    23: ("RESIZE_BILINEAR", (1,)), 34: ("PAD", (1,)), 60: ("PADV2", (1,)),
    67: ("TRANSPOSE_CONV", (0,)), 68: ("SPARSE_TO_DENSE", (1,)), 69: ("TILE", (1,)),
    85: ("ONE_HOT", (1,)), 94: ("FILL", (0,)), 96: ("RANGE", (0, 1, 2)),
    97: ("RESIZE_NEAREST_NEIGHBOR", (1,)), 100: ("MIRROR_PAD", (1,)), 122: ("SCATTER_ND", (2,)),
    130: ("BROADCAST_TO", (1,)), 141: ("CONV_3D_TRANSPOSE", (0,)), 145: ("BROADCAST_ARGS", (0, 1)),
    146: ("RANDOM_STANDARD_NORMAL", (0,)), 148: ("RANDOM_UNIFORM", (0,)),
    149: ("MULTINOMIAL", (1,)), 203: ("DILATE", (1,)),
}

# Field numbers of the tables read here, as schema.fbs declares them.
_MODEL_VERSION, _MODEL_OPCODES, _MODEL_SUBGRAPHS, _MODEL_BUFFERS = 0, 1, 2, 4
_MODEL_EXTERNAL = (8, 9)  # external_buffer_groups, external_buffers: data in other files
_GRAPH_TENSORS, _GRAPH_INPUTS, _GRAPH_OUTPUTS, _GRAPH_OPERATORS = 0, 1, 2, 3
_TENSOR_SHAPE, _TENSOR_TYPE, _TENSOR_BUFFER, _TENSOR_NAME, _TENSOR_QUANT = 0, 1, 2, 3, 4
_TENSOR_EXTERNAL = 10
_QUANT_SCALE, _QUANT_ZERO_POINT = 2, 3
_OP_OPCODE, _OP_INPUTS, _OP_OUTPUTS = 0, 1, 2
_OPCODE_DEPRECATED, _OPCODE_CUSTOM, _OPCODE_BUILTIN = 0, 1, 3
_BUFFER_DATA, _BUFFER_OFFSET, _BUFFER_SIZE = 0, 1, 2


class _Malformed(Exception):
    """A structural fault: the file is damaged (or crafted)."""


class _Unsupported(Exception):
    """A well-formed file that is not a model quantlab runs, or not within its limits."""


class _Reader:
    """Flatbuffer tables, vectors and strings read with every offset checked."""

    def __init__(self, content):
        self.content = memoryview(content)
        self.size = len(content)

    def number(self, fmt, at, what):
        if at < 0 or at + struct.calcsize(fmt) > self.size:
            raise _Malformed(f"{what} points outside the file")
        return struct.unpack_from(fmt, self.content, at)[0]

    def table(self, at, what):
        """(position, vtable entries) of the table at ``at``."""
        vtable = at - self.number("<i", at, what)
        vtable_size = self.number("<H", vtable, what)
        table_size = self.number("<H", vtable + 2, what)
        if vtable_size < 4 or vtable_size % 2 or vtable + vtable_size > self.size \
                or at + table_size > self.size:
            raise _Malformed(f"{what} is not a valid table")
        fields = [self.number("<H", vtable + 4 + 2 * i, what) for i in range((vtable_size - 4) // 2)]
        for offset in fields:
            if offset and offset + 1 > table_size:
                raise _Malformed(f"{what} has a field outside its table")
        return at, fields

    @staticmethod
    def _field(table, index):
        at, fields = table
        return at + fields[index] if index < len(fields) and fields[index] else None

    def has(self, table, index):
        return self._field(table, index) is not None

    def scalar(self, table, index, fmt, default, what):
        at = self._field(table, index)
        return default if at is None else self.number(fmt, at, what)

    def target(self, table, index, what):
        at = self._field(table, index)
        return None if at is None else at + self.number("<I", at, what)

    def vector(self, table, index, fmt, what):
        """The vector's values (numbers), or () when the field is absent."""
        start = self.target(table, index, what)
        if start is None:
            return ()
        count = self.number("<I", start, what)
        width = struct.calcsize(fmt)
        if start + 4 + count * width > self.size:
            raise _Malformed(f"{what} ({count} entries) runs past the end of the file")
        return struct.unpack_from(f"<{count}{fmt[-1]}", self.content, start + 4)

    def byte_count(self, table, index, what):
        """The length of a byte vector, checked to lie inside the file (0 when absent)."""
        start = self.target(table, index, what)
        if start is None:
            return 0
        count = self.number("<I", start, what)
        if start + 4 + count > self.size:
            raise _Malformed(f"{what} ({count} bytes) runs past the end of the file")
        return count

    def tables(self, table, index, what):
        """The tables of a vector of tables, each checked."""
        start = self.target(table, index, what)
        if start is None:
            return []
        count = self.number("<I", start, what)
        if start + 4 + 4 * count > self.size:
            raise _Malformed(f"{what} ({count} entries) runs past the end of the file")
        return [self.table(start + 4 + 4 * i + self.number("<I", start + 4 + 4 * i, what),
                           f"{what}[{i}]") for i in range(count)]

    def string(self, table, index, what):
        length = self.byte_count(table, index, what)
        if not length:
            return ""
        start = self.target(table, index, what) + 4
        try:
            return bytes(self.content[start:start + length]).decode("utf-8")
        except UnicodeDecodeError:
            raise _Malformed(f"{what} is not UTF-8 text") from None


def check(path, content):
    """Raise a one-line QuantlabError naming ``path`` unless ``content`` is a .tflite model
    that quantlab's runtimes can load safely; else return what was read: the number of
    tensors, the input's shape, the bytes of activations declared, the indices of the
    tensors a runtime computes (``computed``: all but the weights), and the (scale, zero
    point) of the input and output (None for a float one).

    Declared shapes are what the converter wrote; a runtime works out the real ones, which
    ops that take their output shape from constants (FILL, PAD, broadcasts) can make far
    larger: ``quantlab.runtime.litert.check_computed_sizes`` checks those."""
    try:
        return _check(_Reader(content))
    except _Malformed as problem:
        raise QuantlabError(f"{path} is truncated or corrupt ({problem}); export it again") from None
    except _Unsupported as problem:
        raise QuantlabError(f"{path} is not a TFLite model quantlab runs: {problem}") from None


def _check(reader):
    if reader.size < 8 or bytes(reader.content[4:8]) != b"TFL3":
        raise _Malformed("no TFL3 identifier")
    model = reader.table(reader.number("<I", 0, "the root table"), "the model table")
    version = reader.scalar(model, _MODEL_VERSION, "<I", 0, "the schema version")
    if version != SCHEMA_VERSION:
        raise _Malformed(f"schema version {version}, where LiteRT reads version {SCHEMA_VERSION}")
    if any(reader.has(model, field) for field in _MODEL_EXTERNAL):
        raise _Unsupported("it keeps weights in external files")
    buffers = [_buffer(reader, buffer, i)
               for i, buffer in enumerate(reader.tables(model, _MODEL_BUFFERS, "buffers"))]
    opcodes = [_opcode(reader, code, i)
               for i, code in enumerate(reader.tables(model, _MODEL_OPCODES, "operator codes"))]
    graphs = reader.tables(model, _MODEL_SUBGRAPHS, "subgraphs")
    if len(graphs) != 1:
        raise _Unsupported(f"{len(graphs)} subgraphs, where an image classifier has one "
                         f"(several mean control flow, which quantlab does not run)")
    return _graph(reader, graphs[0], buffers, opcodes)


def _buffer(reader, buffer, index):
    """The number of bytes buffer ``index`` holds, checked to lie within the file."""
    what = f"buffer {index}"
    held = reader.byte_count(buffer, _BUFFER_DATA, what)
    offset = reader.scalar(buffer, _BUFFER_OFFSET, "<Q", 0, what)
    size = reader.scalar(buffer, _BUFFER_SIZE, "<Q", 0, what)
    if offset > 1:  # data stored after the flatbuffer, at an offset from the file's start
        if offset + size > reader.size:
            raise _Malformed(f"{what} points to bytes {offset}..{offset + size} of a file of "
                             f"{reader.size}")
        held += size
    return held


def _opcode(reader, code, index):
    what = f"operator code {index}"
    builtin = max(reader.scalar(code, _OPCODE_DEPRECATED, "<b", 0, what),
                  reader.scalar(code, _OPCODE_BUILTIN, "<i", 0, what))
    custom = reader.string(code, _OPCODE_CUSTOM, what)
    if builtin == _CUSTOM or custom:
        raise _Unsupported(f"it uses the custom operator {custom[:60]!r}, code that quantlab "
                         f"does not run")
    return builtin


def _graph(reader, graph, buffers, opcodes):
    tensors = [_tensor(reader, tensor, i, buffers)
               for i, tensor in enumerate(reader.tables(graph, _GRAPH_TENSORS, "tensors"))]
    inputs = reader.vector(graph, _GRAPH_INPUTS, "<i", "the graph's inputs")
    outputs = reader.vector(graph, _GRAPH_OUTPUTS, "<i", "the graph's outputs")
    for kind, indices, types in (("input", inputs, INPUT_TYPES), ("output", outputs, OUTPUT_TYPES)):
        if len(indices) != 1:
            raise _Unsupported(f"the graph lists {len(indices)} {kind}s, where an image classifier "
                             f"has one")
        tensor = _indexed(tensors, indices[0], f"the graph's {kind}")
        _check_end(tensor, kind, types)
    for i, operator in enumerate(reader.tables(graph, _GRAPH_OPERATORS, "operators")):
        what = f"operator {i}"
        code = _indexed(opcodes, reader.scalar(operator, _OP_OPCODE, "<I", 0, what), f"{what}'s code")
        ends = {}
        for field, role in ((_OP_INPUTS, "input"), (_OP_OUTPUTS, "output")):
            ends[role] = [None if index == -1 else _indexed(tensors, index, f"{what}'s {role}")
                          for index in reader.vector(operator, field, "<i", f"{what}'s {role}s")]
        _check_operator(what, code, ends["input"])
        if code == _DEQUANTIZE and all(t and t["constant"] for t in ends["input"]):
            for tensor in ends["output"]:  # computed once, and as large as the weights
                if tensor:
                    tensor["constant"] = True
    allocated = sum(t["bytes"] for t in tensors if not t["constant"])
    if allocated > MAX_ACTIVATION_BYTES:
        raise _Unsupported(f"its inputs, outputs and activations declare {allocated >> 20} MiB, "
                         f"more than the {MAX_ACTIVATION_BYTES >> 20} MiB quantlab allows per "
                         f"inference")
    ends = (tensors[inputs[0]], tensors[outputs[0]])
    return {"tensors": len(tensors), "input_shape": ends[0]["shape"], "activation_bytes": allocated,
            "computed": [i for i, t in enumerate(tensors) if not t["constant"]],
            # (scale, zero point) of an integer input and output, as LiteRT reports them
            "quantization": tuple((float(t["quantization"][0][0]), float(t["quantization"][1][0]))
                                  if t["type"] != "FLOAT32" else None for t in ends)}


def _check_operator(what, code, inputs):
    """Refuse control flow, and shapes that only the values met while running could give."""
    if code in _CONTROL_FLOW:
        raise _Unsupported(f"{what} is {_CONTROL_FLOW[code]}: control flow, which quantlab does "
                           f"not run")
    name, positions = _SHAPE_FROM_VALUES.get(code, ("", ()))
    for position in positions:
        given = inputs[position] if position < len(inputs) else None
        if given is not None and not given["constant"]:
            raise _Unsupported(f"{what} ({name}) takes its output's shape from values computed "
                               f"while the model runs, which quantlab cannot bound before running it")


def _indexed(items, index, what):
    if not 0 <= index < len(items):
        raise _Malformed(f"{what} is number {index}, of {len(items)}")
    return items[index]


def _tensor(reader, tensor, index, buffers):
    what = f"tensor {index}"
    name = reader.string(tensor, _TENSOR_NAME, f"{what}'s name")
    what = f"tensor {index} ({name[:60]!r})" if name else what
    code = reader.scalar(tensor, _TENSOR_TYPE, "<b", 0, what)
    if code not in TYPES:
        kind = _OTHER_TYPES.get(code, f"number {code}")
        raise _Unsupported(f"{what} has type {kind}, which no image classifier uses")
    kind, bits = TYPES[code]
    shape = reader.vector(tensor, _TENSOR_SHAPE, "<i", f"{what}'s shape")
    if len(shape) > MAX_RANK or any(d < 0 for d in shape):
        raise _Malformed(f"{what} has the shape {list(shape)[:MAX_RANK + 1]}")
    size = math.ceil(math.prod(shape) * bits / 8)
    if size > MAX_TENSOR_BYTES:
        raise _Unsupported(f"{what} declares {'x'.join(map(str, shape))} values ({size >> 20} MiB), "
                         f"more than the {MAX_TENSOR_BYTES >> 20} MiB quantlab allows a tensor")
    if reader.has(tensor, _TENSOR_EXTERNAL):
        raise _Unsupported(f"{what} keeps its values in an external file")
    buffer = reader.scalar(tensor, _TENSOR_BUFFER, "<I", 0, what)
    held = _indexed(buffers, buffer, f"{what}'s buffer") if buffer or buffers else 0
    return {"type": kind, "shape": shape, "bytes": size, "constant": held > 0,
            "what": what, "quantization": _quantization(reader, tensor, what)}


def _quantization(reader, tensor, what):
    if not reader.has(tensor, _TENSOR_QUANT):
        return (), ()
    at = reader.target(tensor, _TENSOR_QUANT, what)
    table = reader.table(at, f"{what}'s quantization")
    return (reader.vector(table, _QUANT_SCALE, "<f", f"{what}'s scales"),
            reader.vector(table, _QUANT_ZERO_POINT, "<q", f"{what}'s zero points"))


def _check_end(tensor, kind, types):
    """The graph's input or output: a batch of images or of class scores, of a type the
    predictors convert, with the scale and zero point an integer one needs."""
    what = f"the {kind}, {tensor['what']}"
    if tensor["type"] not in types:
        raise _Unsupported(f"{what} has type {tensor['type']}, where quantlab feeds and reads "
                         f"{', '.join(types)}")
    shape = tensor["shape"]
    if not 2 <= len(shape) <= 4 or 0 in shape:
        raise _Unsupported(f"{what} has the shape {list(shape)}, not a batch of images or scores "
                         f"(2 to 4 dimensions, none empty)")
    if tensor["type"] != "FLOAT32":
        scales, zero_points = tensor["quantization"]
        bits = {"INT8": (-128, 127), "UINT8": (0, 255)}[tensor["type"]]
        if not scales or not zero_points or not (math.isfinite(scales[0]) and scales[0] > 0) \
                or not bits[0] <= zero_points[0] <= bits[1]:
            raise _Malformed(f"{what} is an integer tensor without a valid scale and zero point")
