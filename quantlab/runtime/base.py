"""What every runtime's predictor shares: input checks, quantization arithmetic, batching.

A predictor splits inference into three steps so that benchmarks time only the middle one:
``prepare`` (validate float images, quantize them with the model's own scale and zero
point, hand them to the runtime), ``run`` (the bare inference call on a prepared batch) and
``finish`` (dequantize the output to float probabilities). ``predict`` chains them over
batches of any size.
"""

import math
import operator
import warnings
from pathlib import Path

import numpy as np

from quantlab.errors import QuantlabError


class PixelRangeWarning(UserWarning):
    """Images outside [0, 1]: the nets were trained on pixels scaled to [0, 1]."""


# --- quantization arithmetic (affine, per tensor), shared with the tests -------------------

def quantize(x, scale, zero_point, dtype):
    """float -> integer: round half away from zero, as TFLite does, then saturate."""
    info = np.iinfo(dtype)
    scaled = np.asarray(x, dtype=np.float64) / scale
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    return np.clip(rounded + zero_point, info.min, info.max).astype(dtype)


def dequantize(q, scale, zero_point):
    return ((np.asarray(q, dtype=np.float32) - np.float32(zero_point)) * np.float32(scale))


# --- argument and input validation -----------------------------------------------------------

def whole_number(value, what, least=1):
    """``value`` as an int of at least ``least``, or a one-line error naming ``what``."""
    try:
        number = operator.index(value)  # refuses 2.5 and "2", accepts numpy integers
    except TypeError:
        raise QuantlabError(f"{what} must be a whole number, got {value!r}") from None
    if number < least:
        raise QuantlabError(f"{what} must be at least {least}, got {number}")
    return number


def check_threads(threads):
    """None (the runtime's default: every core) or a whole number of at least 1."""
    return None if threads is None else whole_number(threads, "threads")


# The largest input batch timing and counting make up (64 images of 28 x 28 take 200 KiB).
MAX_SAMPLE_BYTES = 1 << 30


def sample_batch(input_shape, batch_size, seed=0):
    """The input that timing and counting feed: seeded uniform floats in [0, 1).

    Dense kernels do the same work whatever the values, so any fixed batch will do; one
    function makes sure the benchmarks and the counters run exactly the same input.
    """
    check_sample_size(input_shape, batch_size)
    return np.random.default_rng(seed).random((batch_size, *input_shape), dtype=np.float32)


def check_sample_size(input_shape, batch_size):
    """A one-line error where ``sample_batch`` would not make the batch."""
    size = 4 * batch_size * math.prod(input_shape)
    if size > MAX_SAMPLE_BYTES:
        raise QuantlabError(f"a batch of {batch_size} images of shape {_shape_text(input_shape)} "
                            f"takes {size / (1 << 30):.3g} GiB, more than the "
                            f"{MAX_SAMPLE_BYTES >> 30} GiB quantlab feeds at once; choose a "
                            f"smaller batch size")


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


def first_line(error):
    """The first line of a runtime's error message, for a one-line QuantlabError."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:300]


def runtime_failure(path, doing, line):
    """The one-line error for what a runtime raised while ``doing`` (reading, compiling,
    running) the model at ``path``: once tflite_check or onnx_check has passed a file, what
    is left is a file the runtime itself rejects, which is no fault of quantlab's code."""
    return QuantlabError(f"{path}: {doing} failed ({line}); the file is corrupt or not a model "
                         f"this runtime runs; export it again")


def ranked(rows):
    """Per-layer profile rows, costliest first, each with its ``share`` of the summed time."""
    rows = sorted(rows, key=lambda row: -row["seconds"])
    whole = sum(row["seconds"] for row in rows) or 1.0
    return [{**row, "share": row["seconds"] / whole} for row in rows]


# --- the predictor interface ---------------------------------------------------------------------

class Predictor:
    """Common batching and description; runtimes provide ``prepare``, ``run`` and ``finish``.

    Every predictor is built from the bytes it was given (``sha256`` names them), so a result
    always comes from the bytes its caller checked, never from a file that changed since.
    """

    path: Path
    format: str  # tflite, onnx or graphdef: read from the content, set by runtime.load
    sha256: str
    input_shape: tuple
    runtime: str
    version: str
    kernels: str = "default"
    precision: str  # the arithmetic that actually executes: float32, bf16, int8
    threads = None
    input_quantization = None  # (scale, zero_point) for integer inputs
    output_quantization = None
    _checked_range = False

    def predict(self, x, batch_size=32):
        """Float images (N x H x W x C) -> float class probabilities (N x classes)."""
        batch_size = whole_number(batch_size, "batch size")
        x = check_images(x, self.input_shape)
        outputs = []
        for start in range(0, len(x), batch_size):
            prepared = self.prepare(x[start:start + batch_size])
            outputs.append(self.checked_output(self.finish(self.run(prepared)), len(prepared)))
        return np.concatenate(outputs)

    def checked_output(self, scores, images):
        """``scores`` if they are one row per image: a corrupt graph may compute another shape."""
        if scores.ndim != 2 or len(scores) != images:
            raise QuantlabError(f"{self.path} gave outputs of shape {'x'.join(map(str, scores.shape))} "
                                f"for {images} images, not one row of class scores per image; the "
                                f"file is corrupt or not an image classifier")
        return scores

    def checked_input(self, x):
        """``x`` checked, and quantized with the model's own parameters if it takes integers."""
        x = check_images(x, self.input_shape)
        self.check_pixel_range(x)
        if self.input_quantization:
            scale, zero_point = self.input_quantization
            x = quantize(x, scale, int(zero_point), self.input_dtype)
        return x

    def check_pixel_range(self, x):
        """Warn once per predictor when images are not scaled to [0, 1] (e.g. raw 0..255)."""
        if self._checked_range:
            return
        self._checked_range = True
        low, high = float(x.min()), float(x.max())
        if low < 0 or high > 1:
            warnings.warn(PixelRangeWarning(
                f"pixels range from {low:g} to {high:g}, but the nets take images scaled to [0, 1] "
                f"(divide 8-bit pixels by 255)"), stacklevel=3)

    def primitives(self):
        """The kernels or primitives the runtime says it chose, per layer type (may be empty)."""
        return {}

    def describe(self):
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "format": self.format,
            "runtime": self.runtime,
            "runtime_version": self.version,
            "kernels": self.kernels,
            "precision": self.precision,
            "primitives": self.primitives(),
            "threads": self.threads,
            "input_shape": list(self.input_shape),
            "input_quantization": self.input_quantization,
            "output_quantization": self.output_quantization,
        }
