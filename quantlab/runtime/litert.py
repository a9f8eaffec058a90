"""LiteRT (TFLite) predictor: the interpreter with XNNPACK, or LiteRT's reference kernels.

The timed call is ``set_tensor`` + ``invoke`` + ``get_tensor``. LiteRT 2.x also offers
``CompiledModel`` (what ``litert-benchmark`` times): on the CPU both build XNNPACK from its
default options with only the thread count set, so they run the same kernels (``perf
record``: the same AVX-512 microkernels), and they differ only in the Python binding around
the call. ``call_paths`` times the two against each other in rounds, so that a report can
say so with a measured interval rather than assume it.
"""

import contextlib
import math
import time

import numpy as np

from quantlab import intervals, rounds
from quantlab._tf import without_native_noise
from quantlab.defaults import KERNELS
from quantlab.errors import QuantlabError
from quantlab.runtime import tflite_check
from quantlab.runtime.base import Predictor, dequantize, first_line, runtime_failure

PACKAGE = "ai-edge-litert"
MODULE = "ai_edge_litert.interpreter"


class LiteRTPredictor(Predictor):
    runtime = "litert"

    def __init__(self, path, content, sha256, version, threads=None, kernels="xnnpack"):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        if kernels not in KERNELS:
            raise QuantlabError(f"unknown kernel choice {kernels!r}: choose one of {', '.join(KERNELS)}")
        self.path, self.sha256, self.version = path, sha256, version
        self.content = content  # the checked bytes, for a second call path (call_paths)
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
        """int8 where any convolution or matrix product has int8 weights (int16x8 where its
        activations are int16), else float32.

        XNNPACK computes float16-weight models in float32 on x86, and dynamic-range models
        quantize activations on the fly and multiply int8 x int8 (its "qd8" kernels).
        """
        details = {t["index"]: t for t in self.interpreter.get_tensor_details()}
        for op in self.interpreter._get_ops_details():
            if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D"):
                data, weights = ([details.get(i) for i in op["inputs"][:2]] + [None, None])[:2]
                if weights is not None and weights["dtype"] == np.int8:
                    int16 = data is not None and data["dtype"] == np.int16
                    return "int16x8" if int16 else "int8"
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


# --- LiteRT 2.x's CompiledModel, timed against the interpreter ------------------------------

@contextlib.contextmanager
def compiled_model(predictor, prepared):
    """``prepared`` run by LiteRT's ``CompiledModel`` from the predictor's own checked bytes,
    threads and kernels, as ``litert-benchmark`` runs it: ``run_by_index`` on buffers filled
    once. Yields ``(call, output)``: ``call()`` runs one inference, ``output()`` reads what
    the last one wrote, as ``predictor.run`` returns it.

    The runtime's native log stays inside the block: it names every accelerator it
    registers, looks for (vendor plugins absent here) and destroys, on creation and on
    deletion alike, and none of it concerns the measurement. (Writing a buffer makes LiteRT
    keep an environment of its own until the process ends, which then logs two lines.)
    """
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.options import CpuKernelMode, CpuOptions, Options

    if len(prepared) != predictor._batch:  # the interpreter checks the sizes at this batch first
        predictor._resize(len(prepared))
    mode = CpuKernelMode.XNNPACK if predictor.kernels == "xnnpack" else CpuKernelMode.BUILTIN
    # The interpreter takes threads=None as one thread; CompiledModel would take 0 as "decide".
    options = Options(cpu_options=CpuOptions(num_threads=predictor.threads or 1, kernel_mode=mode))
    with without_native_noise():
        try:
            model = CompiledModel.from_buffer(predictor.content, options=options)
            # Not strict: the file may declare a fixed batch, as the interpreter allows too.
            model.resize_input_tensor(0, [len(prepared), *predictor.input_shape], strict=False)
            inputs, outputs = model.create_input_buffers(0), model.create_output_buffers(0)
            inputs[0].write(prepared)
            shape = tuple(int(d) for d in outputs[0].get_tensor_details()["shape"])
        except Exception as error:  # LiteRT raises RuntimeError, ValueError and more
            raise runtime_failure(predictor.path, "LiteRT's CompiledModel reading it",
                                  first_line(error)) from None

        def call():
            model.run_by_index(0, inputs, outputs)

        def output():
            return outputs[0].read(math.prod(shape), predictor.output_dtype).reshape(shape)

        try:
            yield call, output
        finally:  # freed here, so that its log on deletion is dropped with the rest
            del inputs, outputs, model


def call_paths(predictor, prepared, budget_seconds=2.0, clock=time.perf_counter):
    """The interpreter's call (``predictor.run``) against ``CompiledModel``'s (see
    ``compiled_model``) on one prepared batch, timed in rounds like every other comparison
    (``quantlab.rounds``), so that both see the same machine.

    Returns ``interpreter`` and ``compiled_model``, each one's seconds per call (the median
    over rounds with its interval), ``ratio``: the interpreter's lower quartile of rounds
    over CompiledModel's (above 1: the interpreter is the slower), and how the rounds ended.

    Read it against the spread between instances: where a model streams its weights from the
    shared last-level cache (medium's float32 at batch 1), two interpreters of the same file
    in one process differed from each other by up to 10 %, steadily over a hundred rounds,
    as much as the two call paths ever did; int8 instances agreed within 0.3 %.
    """
    with compiled_model(predictor, prepared) as (compiled_call, _):
        interpreter_call = lambda: predictor.run(prepared)  # noqa: E731
        guesses = []
        for call in (interpreter_call, compiled_call):
            call()  # the first call of each pays for planning and packing, not the steady one
            start = clock()
            call()
            guesses.append(clock() - start)
        seconds, how = rounds.run([rounds.Timed("interpreter", interpreter_call, guesses[0]),
                                   rounds.Timed("compiled_model", compiled_call, guesses[1])],
                                  "interpreter", budget_seconds, clock=clock)
    return {"interpreter": intervals.median_interval(seconds["interpreter"]),
            "compiled_model": intervals.median_interval(seconds["compiled_model"]),
            "ratio": intervals.ratio(seconds["interpreter"], seconds["compiled_model"]),
            "rounds": how["rounds"], "stopped": how["stopped"]}


def load(path, content, sha256, version, threads=None, kernels="xnnpack", precision=None):
    if precision not in (None, "float32"):
        raise QuantlabError(f"LiteRT runs models in their own precision; it cannot run {path} "
                            f"in {precision}")
    return LiteRTPredictor(path, content, sha256, version, threads, kernels)
