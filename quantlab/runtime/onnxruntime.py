"""ONNX Runtime predictor (CPU execution provider) for the ONNX artifacts.

The timed call is ``run_with_iobinding`` on an input bound before timing and an output
buffer allocated once: the path a deployment that cares takes, with no per-call copy of
the input or allocation of the output (``session.run``, which ``onnxruntime_test`` times,
does both).
"""

import functools
import json
import tempfile
from pathlib import Path

import numpy as np

from quantlab.errors import QuantlabError
from quantlab.runtime.base import Predictor, first_line, ranked

PACKAGE = "onnxruntime"
MODULE = "onnxruntime"
_QUANTIZED_OPS = ("QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "QGemm",
                  "DynamicQuantizeMatMul", "QuantizeLinear")


class OnnxRuntimePredictor(Predictor):
    runtime = "onnxruntime"
    kernels = "mlas"

    def __init__(self, path, content, sha256, version, threads=None):
        self.path, self.sha256, self.version, self.threads = path, sha256, version, threads
        self._content = content
        with tempfile.TemporaryDirectory(prefix="quantlab-ort-") as folder:
            optimized = Path(folder, "optimized.onnx")
            # ONNX Runtime writes the graph it will execute: its fused operators name the
            # kernels it chose (QLinearConv, QGemm, FusedConv...).
            self.session = self._session(optimized_model_filepath=str(optimized))
            # Read now, parsed when asked (primitives, precision): after loading is timed,
            # since a deployment does not parse the graph.
            self._optimized = optimized.read_bytes()
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self._input_name, self._output_name = inp.name, out.name
        self.input_shape = tuple(int(d) for d in inp.shape[1:])
        self.num_classes = int(out.shape[-1])
        self._binding = self.session.io_binding()
        self._batch, self._output, self._fed = None, None, None

    def _session(self, **settings):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads or 0
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        for name, value in settings.items():
            setattr(options, name, value)
        try:
            return ort.InferenceSession(self._content, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime's errors are its own pybind types
            raise QuantlabError(f"ONNX Runtime cannot load {self.path}: {first_line(error)}") from None

    @functools.cached_property
    def _executed(self):
        counts, self._optimized = _op_counts(self._optimized), None
        return counts

    @property
    def precision(self):
        return "int8" if set(self._executed) & set(_QUANTIZED_OPS) else "float32"

    def primitives(self):
        """Operator types of the graph ONNX Runtime executes, after its own fusions."""
        return dict(self._executed)

    def _feed(self, x):
        import onnxruntime as ort

        if len(x) != self._batch:
            self._output = ort.OrtValue.ortvalue_from_shape_and_type((len(x), self.num_classes), np.float32)
            self._binding.bind_ortvalue_output(self._output_name, self._output)
            self._batch = len(x)
        self._binding.bind_cpu_input(self._input_name, x)
        self._fed = x

    def prepare(self, x):
        x = np.ascontiguousarray(self.checked_input(x))
        self._feed(x)
        return x

    def run(self, prepared):
        if prepared is not self._fed:
            self._feed(prepared)
        self.session.run_with_iobinding(self._binding)
        return self._output

    def finish(self, raw):
        return np.array(raw.numpy(), dtype=np.float32)  # a copy: the buffer is reused

    def node_profile(self, prepared, runs=20):
        """ONNX Runtime's own per-node profile over ``runs`` inferences: operator, time."""
        with tempfile.TemporaryDirectory(prefix="quantlab-ort-") as folder:
            session = self._session(enable_profiling=True, profile_file_prefix=f"{folder}/profile")
            for _ in range(runs):
                session.run(None, {self._input_name: prepared})
            events = json.loads(Path(session.end_profiling()).read_text())
        totals = {}
        for event in events:
            args = event.get("args", {})
            if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
                continue
            name = event["name"].removesuffix("_kernel_time")
            entry = totals.setdefault(name, {"layer": name, "type": args.get("op_name", "?"),
                                             "primitive": args.get("provider", "?"), "seconds": 0.0})
            entry["seconds"] += event["dur"] / 1e6 / runs
        return ranked(totals.values())


def _op_counts(content):
    """{operator type: nodes} of the main graph of the ONNX model ONNX Runtime wrote."""
    counts = {}
    for node in _graph_reader().FromString(content).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


@functools.cache
def _graph_reader():
    """A protobuf message class that reads only ModelProto.graph (7), GraphProto.node (1) and
    NodeProto.op_type (4) of an ONNX file, skipping every other field: google.protobuf alone
    (90 ms to import) instead of the onnx package, whose import (ml_dtypes registering its
    types with numpy) costs most of a second in every fresh process that loads a model."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    Field = descriptor_pb2.FieldDescriptorProto
    schema = descriptor_pb2.FileDescriptorProto(name="quantlab_onnx_graph.proto",
                                                package="quantlab_onnx_graph")
    for message, name, number, kind, label, of in (
            ("Node", "op_type", 4, Field.TYPE_STRING, Field.LABEL_OPTIONAL, None),
            ("Graph", "node", 1, Field.TYPE_MESSAGE, Field.LABEL_REPEATED, "Node"),
            ("Model", "graph", 7, Field.TYPE_MESSAGE, Field.LABEL_OPTIONAL, "Graph")):
        schema.message_type.add(name=message).field.add(
            name=name, number=number, type=kind, label=label,
            **({"type_name": f".quantlab_onnx_graph.{of}"} if of else {}))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(schema)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("quantlab_onnx_graph.Model"))


def load(path, content, sha256, version, threads=None, kernels=None, precision=None):
    if precision not in (None, "float32"):
        raise QuantlabError(f"ONNX Runtime runs models in their own precision; it cannot run "
                            f"{path} in {precision}")
    return OnnxRuntimePredictor(path, content, sha256, version, threads)
