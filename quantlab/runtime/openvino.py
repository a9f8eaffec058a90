"""OpenVINO predictor: runs the TFLite artifacts themselves (its TFLite frontend), ONNX ones,
and its own IR (NNCF's quantized models; one file, see ``quantlab.runtime.ir_file``).

Float models run in float32 unless asked otherwise: OpenVINO's CPU plugin would otherwise
execute them in bfloat16 on CPUs with AMX or AVX512-BF16 (measured: 99.85 % top-1 agreement
with LiteRT instead of ~100 %). ``precision="bf16"`` asks for bfloat16 on purpose, where the
CPU has it. What actually executed is read back from the compiled model's execution graph.

The timed call is the one ``benchmark_app -api sync`` makes: ``infer()`` on an input tensor
set before timing (no copy of the input) with output views (no copy of the output).
"""

import copy
import io
import tempfile
import threading
from pathlib import Path

import numpy as np

from quantlab import telemetry
from quantlab.errors import QuantlabError
from quantlab.runtime.base import Predictor, dequantize, ranked, runtime_failure

telemetry.openvino_off()  # every import of openvino below comes after it

PACKAGE = "openvino"
MODULE = "openvino"
PRECISIONS = {None: "f32", "float32": "f32", "bf16": "bf16"}
_SUFFIX = {"tflite": ".tflite", "onnx": ".onnx"}
# Layer types whose arithmetic decides what a net costs.
_COMPUTE = ("Convolution", "FullyConnected", "MatMul", "GroupConvolution")
_PRECISION_NAMES = {"u8": "int8", "i8": "int8", "f32": "float32", "bf16": "bf16", "f16": "float16"}

_core, _core_lock = None, threading.Lock()


def first_line(error):
    """The line of an OpenVINO error that says what went wrong.

    Its messages start with a stack of "Exception from src/...cpp:117:" and "Check '...'
    failed at ..." lines; the explanation comes after them.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()
             and not line.startswith("Exception from")]
    plain = [line for line in lines if not line.startswith("Check '")]
    return ((plain or lines or [type(error).__name__])[0])[:300]


def core():
    """One OpenVINO Core per process: creating it loads the plugins (the latency suite
    compiles models on several threads)."""
    global _core
    with _core_lock:
        if _core is None:
            import openvino

            _core = openvino.Core()
    return _core


def supports_bf16():
    return "BF16" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


# sha256 -> the model OpenVINO read from those bytes: the latency suite loads one file for
# every batch size and thread count (a model is cloned before it is reshaped and compiled).
# The last few only: a fleet's worker lives for many studies.
_READ, _READ_KEPT, _read_lock = {}, 32, threading.Lock()


def _read_once(path, content, fmt, sha256):
    with _read_lock:
        if sha256 not in _READ:
            if len(_READ) >= _READ_KEPT:
                del _READ[next(iter(_READ))]
            _READ[sha256] = _read(path, content, fmt)
        return _READ[sha256]


def _read(path, content, fmt):
    """Read the model from exactly ``content``: a private copy, not the file at ``path``.

    OpenVINO computes constant subgraphs while it reads (a FILL of 400 MB: 400 MB taken),
    so a TFLite file's computed shapes are checked first, as LiteRT works them out. An IR
    (one file: ``ir_file``) is read from memory, its weights a view of the checked bytes."""
    if fmt == "tflite":
        from quantlab.runtime import litert

        litert.check_model(path, content)
    try:
        if fmt == "openvino":
            return _read_ir(path, content)
        with tempfile.TemporaryDirectory(prefix="quantlab-ov-") as folder:
            copy = Path(folder, "model" + _SUFFIX[fmt])
            copy.write_bytes(content)
            return core().read_model(str(copy))
    except QuantlabError:
        raise
    except Exception as error:  # OpenVINO raises RuntimeError subclasses of its own
        raise QuantlabError(f"OpenVINO cannot read {path}: {first_line(error)}") from None


def _read_ir(path, content):
    import openvino

    from quantlab.runtime import ir_file

    xml, weights = ir_file.unpack(path, content)
    # A copy of the weights: the model keeps pointing at them, whatever becomes of ``content``.
    tensor = openvino.Tensor(np.frombuffer(weights, dtype=np.uint8).copy())
    return core().read_model(xml.decode("utf-8", "replace"), tensor)


class OpenVINOPredictor(Predictor):
    runtime = "openvino"

    def __init__(self, path, content, fmt, sha256, version, threads=None, precision=None, batch=1):
        if precision not in PRECISIONS:
            raise QuantlabError(f"OpenVINO cannot run {path} in {precision}: choose float32 or bf16")
        if precision == "bf16" and not supports_bf16():
            raise QuantlabError("this CPU has no bfloat16 arithmetic (AMX or AVX512-BF16), so "
                                "OpenVINO cannot run the bf16 variant here")
        self.path, self.sha256, self.version, self.threads = path, sha256, version, threads
        self._model = _read_once(path, content, fmt, sha256)
        self._config = {"INFERENCE_NUM_THREADS": threads or 0, "PERFORMANCE_HINT": "LATENCY",
                        "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": PRECISIONS[precision]}
        try:  # a dynamic or empty dimension raises here, as OpenVINO's RuntimeError
            parameter = self._model.inputs[0]
            self.input_shape = tuple(int(d.get_length()) for d in parameter.get_partial_shape()[1:])
            self.input_dtype = np.dtype(parameter.get_element_type().to_dtype())
        except Exception as error:
            raise runtime_failure(path, "OpenVINO reading its input", first_line(error)) from None
        self._requests = {}  # batch size -> infer request of a model compiled for it
        self._fed = None
        # Compiled now, so that a model OpenVINO cannot compile fails at loading; for the batch
        # the caller runs first, as each batch size is compiled anew (seconds for an int8 vit).
        self._compile(batch)
        self.input_quantization, self.output_quantization = _io_quantization(path, content, fmt)

    def _compile(self, batch):
        """The infer request for ``batch`` images, now the one ``run`` uses."""
        self._request = self._request_for(batch)
        return self._request

    def _request_for(self, batch):
        """An infer request for ``batch`` images: static shapes let the plugin pick kernels."""
        if batch not in self._requests:
            try:  # reshaping checks every shape anew: a malformed graph may fail here
                with _read_lock:  # the read model is shared with this file's other predictors
                    model = self._model.clone()
                model.reshape({model.inputs[0]: [batch, *self.input_shape]})
                compiled = core().compile_model(model, "CPU", self._config)
            except Exception as error:
                raise QuantlabError(f"OpenVINO cannot compile {self.path}: {first_line(error)}") from None
            self._requests[batch] = compiled.create_infer_request()
        return self._requests[batch]

    def _layers(self):
        """(layer type, primitive) of each compute layer that executes, e.g.
        ("Convolution", "brgconv_avx512_amx_I8"): the primitive names its ISA and precision."""
        found = []
        for op in self._request.get_compiled_model().get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            kind = info["layerType"].astype(str) if "layerType" in info else ""
            if kind in _COMPUTE:
                found.append((kind, info["primitiveType"].astype(str)))
        return found

    @property
    def precision(self):
        """The narrowest arithmetic any compute primitive ran in (int8 weights that are
        decompressed to float for a float32 primitive count as float32)."""
        executed = {_PRECISION_NAMES.get(primitive.rsplit("_", 1)[-1].lower())
                    for _, primitive in self._layers()}
        for name in ("int8", "bf16", "float16"):
            if name in executed:
                return name
        return "float32"

    def primitives(self):
        counts = {}
        for kind, primitive in self._layers():
            key = f"{kind}: {primitive}"
            counts[key] = counts.get(key, 0) + 1
        return counts

    def prepare(self, x):
        x = self.checked_input(x)
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        self._feed(x)
        return x

    def _feed(self, x):
        """Hand ``x`` to the request for its batch size, without a copy."""
        import openvino

        self._compile(len(x)).set_input_tensor(openvino.Tensor(x, shared_memory=True))
        self._fed = x

    def run(self, prepared):
        if prepared is not self._fed:  # another batch than the one handed over in prepare
            self._feed(prepared)
        try:  # costs nothing unless raised, so the timed call stays the bare one
            self._request.infer(share_outputs=True)
        except Exception as error:
            raise runtime_failure(self.path, "OpenVINO running it", first_line(error)) from None
        return self._request.get_output_tensor().data

    def finish(self, raw):
        if self.output_quantization:
            scale, zero_point = self.output_quantization
            return dequantize(raw, scale, zero_point)
        return np.array(raw, dtype=np.float32)  # a copy: the view is overwritten by the next run

    def anew(self):
        """This predictor with its compiled model in memory of its own: exported and
        imported, the very primitives ``run`` executes, for a quarter of the CPU time of
        compiling again. Where its weights land in memory is drawn anew (see
        quantlab.rounds)."""
        compiled = self._imported(self._request.get_compiled_model(), self._config)
        twin = copy.copy(self)
        batch = int(compiled.inputs[0].get_shape()[0])
        twin._request = compiled.create_infer_request()
        twin._requests, twin._fed = {batch: twin._request}, None
        return twin

    @staticmethod
    def _imported(compiled, config):
        blob = io.BytesIO()
        compiled.export_model(blob)
        blob.seek(0)
        return core().import_model(blob, "CPU", config)

    def layer_profile(self, prepared, runs=20):
        """OpenVINO's own per-layer counts over ``runs`` inferences: type, primitive, time.

        Profiling is chosen when a model is compiled, so the model compiled for this batch
        is exported and imported with it on: the very graph and primitives that ``run``
        executes (the same as a fresh compilation gives, up to node ids), for a quarter of
        the CPU time of compiling again (an int8 vit: 0.6 s instead of 2.2 s).
        """
        import openvino

        compiled = self._imported(self._request_for(len(prepared)).get_compiled_model(),
                                  {**self._config, "PERF_COUNT": True})
        request = compiled.create_infer_request()
        request.set_input_tensor(openvino.Tensor(np.ascontiguousarray(prepared), shared_memory=True))
        totals = {}
        for _ in range(runs):
            request.infer()
            for layer in request.profiling_info:
                if layer.status.name != "EXECUTED":
                    continue
                entry = totals.setdefault(layer.node_name, {
                    "layer": layer.node_name, "type": layer.node_type, "primitive": layer.exec_type,
                    "seconds": 0.0})
                entry["seconds"] += layer.real_time.total_seconds() / runs
        return ranked(totals.values())


def _io_quantization(path, content, fmt):
    """(scale, zero point) of integer model inputs and outputs, read from the TFLite file.

    OpenVINO takes the int8 TFLite model's int8 input as is: the caller quantizes with the
    file's own parameters, as LiteRT does, so both runtimes see the same integers.
    """
    if fmt != "tflite":
        return None, None
    from quantlab.runtime import tflite_check

    return tflite_check.check(path, content)["quantization"]


def load(path, content, sha256, version, fmt, threads=None, kernels=None, precision=None,
         batch=1):
    return OpenVINOPredictor(path, content, fmt, sha256, version, threads, precision, batch)
