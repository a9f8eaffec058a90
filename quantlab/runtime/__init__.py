"""Load an exported artifact on any runtime that can run it, behind one predictor interface.

    >>> from quantlab import runtime
    >>> predictor = runtime.load("medium/int8.tflite", runtime="openvino", threads=1)  # doctest: +SKIP
    >>> probabilities = predictor.predict(images)                                    # doctest: +SKIP

Runtimes: ``litert`` (TFLite files), ``openvino`` (TFLite and ONNX files: the very bytes the
other runtime runs), ``onnxruntime`` (ONNX files) and ``tensorflow`` (frozen GraphDefs). The
format is decided from the file's content, never from its name, and the file is read once:
the predictor runs exactly the bytes whose sha256 it reports.
"""

import hashlib
import importlib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from quantlab.defaults import KERNELS, RUNTIMES  # noqa: F401
from quantlab.errors import QuantlabError
from quantlab.runtime.base import (  # noqa: F401  (the public names of the runtime API)
    PixelRangeWarning, Predictor, check_images, check_threads, dequantize, quantize,
    sample_batch, whole_number)

# Which runtimes read each format, the natural one first.
FORMATS = {"tflite": ("litert", "openvino"), "onnx": ("onnxruntime", "openvino"),
           "graphdef": ("tensorflow",)}
PACKAGES = {"litert": "ai-edge-litert", "openvino": "openvino", "onnxruntime": "onnxruntime",
            "tensorflow": "tensorflow"}
_IMPORTS = {"litert": "ai_edge_litert.interpreter", "openvino": "openvino",
            "onnxruntime": "onnxruntime", "tensorflow": "tensorflow"}


def check_runtime(name):
    if name not in RUNTIMES:
        raise QuantlabError(f"unknown runtime {name!r}: choose one of {', '.join(RUNTIMES)}")
    return name


def runtime_version(name):
    try:
        return version(PACKAGES[check_runtime(name)])
    except PackageNotFoundError:
        return None


def require(name):
    """Raise one line naming the runtime and the fix unless it is installed and imports here."""
    if runtime_version(name) is None:
        raise QuantlabError(f"runtime {name} is not installed: pip install {PACKAGES[name]} "
                            f"(or leave it out of --runtimes)")
    if name == "tensorflow":
        return  # imported lazily and quietly by quantlab._tf
    try:
        importlib.import_module(_IMPORTS[name])
    except Exception as error:  # a broken install or a CPU the wheel was not built for
        line = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise QuantlabError(f"runtime {name} cannot load on this machine ({line}); reinstall it "
                            f"with pip install --force-reinstall {PACKAGES[name]}, or leave it "
                            f"out of --runtimes") from None


def usable(named=None):
    """(runtimes to use, {runtime: why not} for the others).

    Runtimes the user named must all work here (else a one-line error); by default every
    runtime that loads here is used and the others are reported, not fatal.
    """
    chosen, skipped = [], {}
    for name in named or RUNTIMES:
        try:
            require(name)
        except QuantlabError as error:
            if named:
                raise
            skipped[name] = str(error)
            continue
        chosen.append(name)
    return tuple(chosen), skipped


def format_of(content):
    """"tflite", "onnx" or "graphdef", from the first bytes; None for anything else.

    A TFLite flatbuffer carries "TFL3" at offset 4. Both ONNX and GraphDef are protobufs,
    serialized in field order: an ONNX ModelProto starts with field 1 (ir_version, a
    varint: byte 0x08), a GraphDef with field 1 (node, a message: byte 0x0a).
    """
    if content[4:8] == b"TFL3":
        return "tflite"
    if content[:1] == b"\x08":
        return "onnx"
    if content[:1] == b"\x0a":
        return "graphdef"
    return None


def runtimes_for(fmt):
    return FORMATS.get(fmt, ())


def read(path):
    """(bytes, sha256) of a model file, or a one-line error for a missing or unreadable one."""
    path = Path(path)
    if path.is_dir():
        raise QuantlabError(f"{path} is a folder, not a model file")
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise QuantlabError(f"no model file at {path}") from None
    except OSError as error:
        raise QuantlabError(f"cannot read {path}: {error.strerror}") from None
    return content, hashlib.sha256(content).hexdigest()


def load(path, runtime=None, threads=None, kernels="xnnpack", precision=None, sha256=None):
    """A predictor for the model file at ``path`` on ``runtime`` (its natural one if None).

    ``threads``: None for the runtime's default (every core), else at least 1.
    ``kernels``: LiteRT only, ``xnnpack`` or ``builtin``. ``precision``: ``bf16`` asks
    OpenVINO to run a float model in bfloat16. ``sha256``: the digest the caller expects;
    a file whose bytes differ is refused, so a changed file is never measured by mistake.
    """
    threads = check_threads(threads)
    path = Path(path)
    content, digest = read(path)
    if sha256 is not None and digest != sha256:
        raise QuantlabError(f"{path} changed since it was exported (sha256 {digest[:12]}, "
                            f"expected {sha256[:12]}); export it again")
    fmt = format_of(content)
    if fmt is None:
        hint = " (no TFL3 identifier)" if path.suffix == ".tflite" else ""
        raise QuantlabError(f"{path} is not a TFLite model{hint}, an ONNX model or a frozen "
                            f"TensorFlow GraphDef; export it again")
    runtime = runtime or FORMATS[fmt][0]
    check_runtime(runtime)
    if runtime not in FORMATS[fmt]:
        raise QuantlabError(f"{runtime} cannot run {path}, a {fmt} model: use "
                            f"{' or '.join(FORMATS[fmt])}")
    require(runtime)
    if fmt == "onnx":
        from quantlab.runtime.onnx_check import check_onnx

        check_onnx(path, content)
    module = importlib.import_module(f"quantlab.runtime.{runtime}")
    options = dict(threads=threads, kernels=kernels, precision=precision)
    if runtime == "openvino":
        options["fmt"] = fmt
    predictor = module.load(path, content, digest, runtime_version(runtime), **options)
    predictor.format = fmt
    return predictor
