"""LiteRT (TFLite) predictor: the interpreter with XNNPACK, or LiteRT's reference kernels.

The timed call is ``set_tensor`` + ``invoke`` + ``get_tensor``: measured here, it costs the
same as ``litert-benchmark``'s ``CompiledModel.run_by_index`` on buffers it filled once
(within 2 % at batch 1 and 64), so no faster honest path is left on the table.
"""

import math

import numpy as np

from quantlab._tf import without_native_noise
from quantlab.defaults import KERNELS
from quantlab.errors import QuantlabError
from quantlab.runtime import tflite_check
from quantlab.runtime.base import Predictor, dequantize, first_line, runtime_failure

FORMATS = ("tflite",)
PACKAGE = "ai-edge-litert"
MODULE = "ai_edge_litert.interpreter"


class LiteRTPredictor(Predictor):
    runtime = "litert"

    def __init__(self, path, content, sha256, version, threads=None, kernels="xnnpack"):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        if kernels not in KERNELS:
            raise QuantlabError(f"unknown kernel choice {kernels!r}: choose one of {', '.join(KERNELS)}")
        self.path, self.sha256, self.version = path, sha256, version
        self.threads, self.kernels = threads, kernels
        resolver = (OpResolverType.AUTO if kernels == "xnnpack"
                    else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        try:
            with without_native_noise():  # "INFO: Created TensorFlow Lite XNNPACK delegate"
                self.interpreter = Interpreter(model_content=content, num_threads=threads,
                                               experimental_op_resolver_type=resolver)
                self.interpreter.allocate_tensors()
        except Exception as error:  # LiteRT's checks raise ValueError, RuntimeError and more
            raise QuantlabError(f"{path} is truncated or corrupt ({first_line(error)}); "
                                f"export it again") from None
        self._computed = tflite_check.check(path, content)["computed"]
        try:
            inp = self.interpreter.get_input_details()[0]
            out = self.interpreter.get_output_details()[0]
            self.precision = self._precision()
        except Exception as error:
            raise runtime_failure(path, "LiteRT reading it", first_line(error)) from None
        check_computed_sizes(path, self.interpreter, self._computed, int(inp["shape"][0]))
        self._input_index, self._output_index = inp["index"], out["index"]
        self.input_shape = tuple(int(d) for d in inp["shape"][1:])
        self.input_dtype, self.output_dtype = inp["dtype"], out["dtype"]
        self._batch = int(inp["shape"][0])
        if np.issubdtype(self.input_dtype, np.integer):
            self.input_quantization = tuple(float(v) for v in inp["quantization"])
        if np.issubdtype(self.output_dtype, np.integer):
            self.output_quantization = tuple(float(v) for v in out["quantization"])

    def _precision(self):
        """int8 where any convolution or matrix product has int8 weights, else float32.

        XNNPACK computes float16-weight models in float32 on x86, and dynamic-range models
        quantize activations on the fly and multiply int8 x int8 (its "qd8" kernels).
        """
        details = {t["index"]: t for t in self.interpreter.get_tensor_details()}
        for op in self.interpreter._get_ops_details():
            if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D"):
                weights = details.get(op["inputs"][1]) if len(op["inputs"]) > 1 else None
                if weights is not None and weights["dtype"] == np.int8:
                    return "int8"
        return "float32"

    def primitives(self):
        """The TFLite ops of the graph; with XNNPACK most become one delegate node."""
        counts = {}
        for op in self.interpreter._get_ops_details():
            counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
        return counts

    def _resize(self, batch):
        try:
            self.interpreter.resize_tensor_input(self._input_index, [batch, *self.input_shape])
            self.interpreter.allocate_tensors()
        except Exception as error:
            raise runtime_failure(self.path, f"LiteRT resizing it to batch {batch}",
                                  first_line(error)) from None
        check_computed_sizes(self.path, self.interpreter, self._computed, batch)
        self._batch = batch

    def prepare(self, x):
        x = self.checked_input(x)
        if len(x) != self._batch:
            self._resize(len(x))
        return np.ascontiguousarray(x)

    def run(self, prepared):
        if len(prepared) != self._batch:
            self._resize(len(prepared))
        try:  # costs nothing unless raised, so the timed call stays the bare one
            self.interpreter.set_tensor(self._input_index, prepared)
            self.interpreter.invoke()
        except Exception as error:
            raise runtime_failure(self.path, "LiteRT running it", first_line(error)) from None
        return self.interpreter.get_tensor(self._output_index)

    def finish(self, raw):
        if self.output_quantization:
            scale, zero_point = self.output_quantization
            return dequantize(raw, scale, zero_point)
        return raw.astype(np.float32, copy=False)


def check_computed_sizes(path, interpreter, computed, batch):
    """Refuse a model whose tensors, at the shapes LiteRT worked out when it allocated them,
    take more than ``tflite_check.MAX_ACTIVATION_BYTES`` per image of ``batch``.

    Allocating only reserves LiteRT's arena (measured: 45 MiB resident with a 400 MB tensor
    planned), so this runs before any of it is touched. ``computed``: the tensor indices
    from ``tflite_check.check``; weights are left out, being bounded by the file's size.
    """
    try:
        details = {t["index"]: t for t in interpreter.get_tensor_details()}
        taken = sum(math.prod(int(d) for d in details[i]["shape"]) * np.dtype(details[i]["dtype"]).itemsize
                    for i in computed if i in details)
    except Exception as error:
        raise runtime_failure(path, "LiteRT working out its shapes", first_line(error)) from None
    limit = tflite_check.MAX_ACTIVATION_BYTES * max(batch, 1)
    if taken > limit:
        raise QuantlabError(f"{path} takes {taken >> 20} MiB for its activations at batch {batch} "
                            f"once LiteRT has worked out their shapes, more than the "
                            f"{tflite_check.MAX_ACTIVATION_BYTES >> 20} MiB per image quantlab allows: "
                            f"shapes made from its constants (a FILL, a PAD, a broadcast) are far "
                            f"larger than it declares")


def check_model(path, content):
    """``check_computed_sizes`` for a runtime that folds constants while it reads a model
    (OpenVINO), before it does: LiteRT's shapes, at the batch the file declares."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    computed = tflite_check.check(path, content)["computed"]
    try:
        with without_native_noise():
            interpreter = Interpreter(model_content=content, experimental_op_resolver_type=(
                OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
            interpreter.allocate_tensors()
        batch = int(interpreter.get_input_details()[0]["shape"][0])
    except Exception as error:
        raise QuantlabError(f"{path} is truncated or corrupt ({first_line(error)}); "
                            f"export it again") from None
    check_computed_sizes(path, interpreter, computed, batch)


def load(path, content, sha256, version, threads=None, kernels="xnnpack", precision=None):
    if precision not in (None, "float32"):
        raise QuantlabError(f"LiteRT runs models in their own precision; it cannot run {path} "
                            f"in {precision}")
    return LiteRTPredictor(path, content, sha256, version, threads, kernels)
