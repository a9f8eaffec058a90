"""Load any exported artifact and run it: one small interface over LiteRT and TensorFlow.

A predictor splits inference into three steps so that benchmarks time only the middle one:
``prepare`` (validate float images, quantize them with the model's own scale and zero
point), ``run`` (the bare inference call on a prepared batch) and ``finish`` (dequantize the
output to float probabilities). ``predict`` chains them over batches of any size.
"""

from pathlib import Path

import numpy as np

from quantlab.errors import QuantlabError

TFLITE_IDENTIFIER = b"TFL3"
KERNELS = ("xnnpack", "builtin")


# --- quantization arithmetic (affine, per tensor), shared with the tests -------------------

def quantize(x, scale, zero_point, dtype):
    """float -> integer: round half away from zero, as TFLite does, then saturate."""
    info = np.iinfo(dtype)
    scaled = np.asarray(x, dtype=np.float64) / scale
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    return np.clip(rounded + zero_point, info.min, info.max).astype(dtype)


def dequantize(q, scale, zero_point):
    return ((np.asarray(q, dtype=np.float32) - np.float32(zero_point)) * np.float32(scale))


# --- input validation --------------------------------------------------------------------

def _shape_text(shape):
    return "x".join(str(d) for d in shape)


def check_images(x, input_shape):
    """Return ``x`` as float32 N x H x W x C, or raise a one-line error saying what is wrong."""
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.floating)):
        raise QuantlabError(
            f"expected float images in [0, 1], got dtype {x.dtype}; convert them "
            f"(for 8-bit pixels: x.astype('float32') / 255)"
        )
    expected = tuple(input_shape)
    if x.ndim != len(expected) + 1:
        raise QuantlabError(
            f"expected a batch of rank {len(expected) + 1} (N x {_shape_text(expected)}), "
            f"got rank {x.ndim} with shape {x.shape}; add or remove the batch axis"
        )
    if x.shape[0] == 0:
        raise QuantlabError("empty batch: give at least one image")
    if tuple(x.shape[1:]) != expected:
        raise QuantlabError(
            f"this model takes images of shape {_shape_text(expected)}, "
            f"got {_shape_text(x.shape[1:])}; use the dataset the model was trained on"
        )
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise QuantlabError("input contains NaN or infinite values; clean the images first")
    return x


# --- predictors ----------------------------------------------------------------------------

class Predictor:
    """Common batching logic; subclasses provide ``prepare``, ``run`` and ``finish``."""

    path: Path
    input_shape: tuple
    runtime: str
    kernels: str
    input_quantization = None  # (scale, zero_point) for integer inputs
    output_quantization = None

    def predict(self, x, batch_size=32):
        """Float images (N x H x W x C) -> float class probabilities (N x classes)."""
        if int(batch_size) < 1:
            raise QuantlabError(f"batch size must be at least 1, got {batch_size}")
        x = check_images(x, self.input_shape)
        outputs = []
        for start in range(0, len(x), batch_size):
            prepared = self.prepare(x[start:start + batch_size])
            outputs.append(self.finish(self.run(prepared)))
        return np.concatenate(outputs)

    def describe(self):
        return {
            "path": str(self.path),
            "runtime": self.runtime,
            "kernels": self.kernels,
            "threads": self.threads,
            "input_shape": list(self.input_shape),
            "input_quantization": self.input_quantization,
            "output_quantization": self.output_quantization,
        }


class LiteRTPredictor(Predictor):
    runtime = "litert"

    def __init__(self, path, threads=None, kernels="xnnpack"):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        if kernels not in KERNELS:
            raise QuantlabError(f"unknown kernel choice {kernels!r}: choose one of {', '.join(KERNELS)}")
        self.path, self.threads, self.kernels = Path(path), threads, kernels
        content = self.path.read_bytes()
        if content[4:8] != TFLITE_IDENTIFIER:
            raise QuantlabError(f"{path} is not a TFLite model (no TFL3 identifier); export it again")
        resolver = (OpResolverType.AUTO if kernels == "xnnpack"
                    else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        try:
            self.interpreter = Interpreter(
                model_content=content, num_threads=threads, experimental_op_resolver_type=resolver
            )
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise QuantlabError(f"{path} is truncated or corrupt ({first}); export it again") from None
        inp = self.interpreter.get_input_details()[0]
        out = self.interpreter.get_output_details()[0]
        self._input_index, self._output_index = inp["index"], out["index"]
        self.input_shape = tuple(int(d) for d in inp["shape"][1:])
        self.input_dtype, self.output_dtype = inp["dtype"], out["dtype"]
        self._batch = int(inp["shape"][0])
        if np.issubdtype(self.input_dtype, np.integer):
            self.input_quantization = tuple(float(v) for v in inp["quantization"])
        if np.issubdtype(self.output_dtype, np.integer):
            self.output_quantization = tuple(float(v) for v in out["quantization"])

    def _resize(self, batch):
        self.interpreter.resize_tensor_input(self._input_index, [batch, *self.input_shape])
        self.interpreter.allocate_tensors()
        self._batch = batch

    def prepare(self, x):
        x = check_images(x, self.input_shape)
        if self.input_quantization:
            scale, zero_point = self.input_quantization
            x = quantize(x, scale, int(zero_point), self.input_dtype)
        if len(x) != self._batch:
            self._resize(len(x))
        return np.ascontiguousarray(x)

    def run(self, prepared):
        if len(prepared) != self._batch:
            self._resize(len(prepared))
        self.interpreter.set_tensor(self._input_index, prepared)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output_index)

    def finish(self, raw):
        if self.output_quantization:
            scale, zero_point = self.output_quantization
            return dequantize(raw, scale, zero_point)
        return raw.astype(np.float32, copy=False)


class GraphDefPredictor(Predictor):
    """Runs a frozen GraphDef (one float input placeholder, one output) with TensorFlow."""

    runtime = "tensorflow"
    kernels = "tensorflow"

    def __init__(self, path, threads=None):
        from quantlab._tf import tf

        tf = tf()
        self.path, self.threads = Path(path), threads
        if threads:
            _set_tf_threads(tf, threads)
        from quantlab.graph_check import check_graph_def  # before TensorFlow imports the graph

        graph_def = check_graph_def(self.path.read_bytes(), path)
        placeholders = [n for n in graph_def.node if n.op == "Placeholder"]
        consumed = {i.split(":")[0].lstrip("^") for n in graph_def.node for i in n.input}
        outputs = [n for n in graph_def.node if n.name not in consumed and n.op != "NoOp"
                   and n.op != "Placeholder"]
        if len(placeholders) != 1 or len(outputs) != 1:
            raise QuantlabError(
                f"{path} is a GraphDef but not a frozen single-input, single-output model "
                f"({len(placeholders)} inputs, {len(outputs)} outputs)"
            )
        dims = placeholders[0].attr["shape"].shape.dim
        self.input_shape = tuple(int(d.size) for d in dims[1:])

        def imported():
            tf.graph_util.import_graph_def(graph_def, name="")

        pruned = tf.compat.v1.wrap_function(imported, []).prune(
            placeholders[0].name + ":0", outputs[0].name + ":0"
        )
        # A pruned function has no structured signature: calling it directly fails to bind,
        # formats the whole input tensor into an error message and falls back, on every
        # call. Wrapping it once in a typed tf.function keeps that out of the timed call.
        spec = tf.TensorSpec([None, *self.input_shape], tf.float32)
        self._function = tf.function(pruned, input_signature=[spec]).get_concrete_function()
        self._tf = tf

    def prepare(self, x):
        return self._tf.constant(check_images(x, self.input_shape))

    def run(self, prepared):
        return self._function(prepared)

    def finish(self, raw):
        return raw.numpy().astype(np.float32, copy=False)


def _set_tf_threads(tf, threads):
    """TensorFlow fixes its thread pools at first use; later requests cannot take effect."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass


def load(path, threads=None, kernels="xnnpack"):
    """A predictor for a ``.tflite`` or frozen-GraphDef ``.pb`` artifact."""
    path = Path(path)
    if not path.is_file():
        raise QuantlabError(f"no model file at {path}")
    with open(path, "rb") as f:
        head = f.read(8)
    if path.suffix == ".pb":
        return GraphDefPredictor(path, threads)
    if path.suffix == ".tflite" or head[4:8] == TFLITE_IDENTIFIER:
        return LiteRTPredictor(path, threads, kernels)
    raise QuantlabError(f"{path}: unknown model format; expected a .tflite or a frozen-graph .pb file")
