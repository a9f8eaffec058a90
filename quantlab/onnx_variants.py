"""The variants of a user's float32 ONNX model, cached like every other export.

The user hands over a checked float32 ONNX file (``quantlab.byo_onnx``) and calibration
images already in the model's layout and preprocessing (NCHW, normalized: whatever the
model takes). ``onnx_float32`` is that file as given; ``onnx_int8`` and
``onnx_int8_per_tensor`` are ONNX Runtime's static quantization of it, ``openvino_int8``
NNCF's. The cache key holds the model's sha256, the calibration images' sha256, the code
that makes the files and the tools' versions: a change to any of them never returns an old
file, and a file whose bytes no longer match its sidecar is made again.
"""

import hashlib
import re
import sys

import numpy as np

import quantlab
from quantlab import cache, nncf_int8, onnx_int8, variant_table
from quantlab.errors import QuantlabError
from quantlab.runtime import ir_file
from quantlab.variants import PER_CHANNEL_ONNX, _cached, _converter_versions

VARIANTS = ("onnx_float32", "onnx_int8", "onnx_int8_per_tensor", "openvino_int8")


def export(content, calibration, name="model", variants=VARIANTS, progress=None):
    """{variant: quantlab.variants.Artifact} of the ONNX model ``content`` for ``variants``.

    ``calibration``: float images, N x the model's input without its batch dimension.
    ``name`` labels the cache folder (any text; only its plain characters are kept).
    """
    wanted = _check_variants(variants)
    calibration = np.ascontiguousarray(calibration, dtype=np.float32)
    input_shape = _check_calibration(content, calibration)
    key = {
        "model": hashlib.sha256(content).hexdigest(),
        "calibration": _digest(calibration),
        "calibration_size": len(calibration),
        "recipe": cache.code_digest(*RECIPE),
        "converters": _converter_versions(),
    }
    label = re.sub(r"[^A-Za-z0-9_.-]", "_", str(name))[:40].strip(".") or "model"
    folder = cache.cache_root() / "onnx-variants" / f"{label}-{cache.config_hash(key)}"
    with cache.locked(folder, progress):
        artifacts = {v: _cached(folder, v, progress) for v in wanted}
        for variant in [v for v, a in artifacts.items() if a is None]:
            if progress:
                progress(f"{label}: making {variant}")
            made = _content(variant, content, calibration)
            path = folder / variant_table.file_name(variant)
            cache.write_bytes(path, made)
            # The sidecar is written last: an artifact without one is never trusted.
            cache.write_json(folder / f"{variant}.json",
                             _sidecar(path, variant, made, key, input_shape))
            artifacts[variant] = _cached(folder, variant)
    return artifacts


def _check_variants(names):
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise QuantlabError(f"variant {unknown[0]!r} is not made from an ONNX model: choose "
                            f"from {', '.join(VARIANTS)}")
    return tuple(dict.fromkeys(names))


def _check_calibration(content, calibration):
    """The model's input shape without the batch, once the images are seen to fit it."""
    import onnxruntime

    if calibration.ndim < 2 or len(calibration) == 0:
        raise QuantlabError(f"calibration images must be a batch (N x the model's input), got "
                            f"shape {calibration.shape}; give at least one image")
    if not np.isfinite(calibration).all():
        raise QuantlabError("calibration images contain NaN or infinite values; clean them first")
    try:
        dims = onnxruntime.InferenceSession(content).get_inputs()[0].shape[1:]
    except Exception as error:  # onnxruntime's own pybind error types
        raise QuantlabError(f"ONNX Runtime cannot load the model ({str(error).strip()[:200]}); "
                            f"check it with quantlab.byo_onnx first") from None
    fixed = all(isinstance(d, int) for d in dims)
    if len(dims) != calibration.ndim - 1 or (fixed and tuple(dims) != calibration.shape[1:]):
        raise QuantlabError(f"the model takes images of shape {'x'.join(map(str, dims))}, the "
                            f"calibration images are {'x'.join(map(str, calibration.shape[1:]))}; "
                            f"give them in the model's layout")
    return list(calibration.shape[1:])


def _digest(array):
    """sha256 of an array's type, shape and values."""
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def _content(variant, content, calibration):
    try:
        if variant == "onnx_float32":
            return content
        if variant == "openvino_int8":
            return nncf_int8.quantize(content, calibration)
        return onnx_int8.quantize(content, calibration, PER_CHANNEL_ONNX[variant])
    except QuantlabError:
        raise
    except Exception as error:  # the quantizers raise many types, on graphs they cannot handle
        line = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise QuantlabError(f"making {variant} from the ONNX model failed ({line}); leave "
                            f"{variant} out of --variants") from None


def _sidecar(path, variant, made, key, input_shape):
    from quantlab import runtime

    return {
        "variant": variant,
        "file": path.name,
        "format": runtime.format_of(made),
        "bytes": len(made),
        "sha256": hashlib.sha256(made).hexdigest(),
        "execute_in": None,
        "model_sha256": key["model"],
        "calibration_size": key["calibration_size"] if variant != "onnx_float32" else None,
        "calibration_sha256": key["calibration"],
        "input_shape": input_shape,
        "quantlab": quantlab.__version__,
        "versions": key["converters"],
        "key": key,  # checked when read: the folder's name must be this key's
    }


# The code that decides the files' bytes: part of their cache key.
RECIPE = (variant_table, onnx_int8, nncf_int8, ir_file, sys.modules[__name__])
