"""Load an exported artifact on any runtime that can run it, behind one predictor interface.

    >>> from quantlab import runtime
    >>> predictor = runtime.load("medium/int8.tflite", runtime="openvino", threads=1)  # doctest: +SKIP
    >>> probabilities = predictor.predict(images)                                    # doctest: +SKIP

Runtimes: ``litert`` (TFLite files), ``openvino`` (TFLite and ONNX files: the very bytes the
other runtime runs; and its own IR, packed in one file by ``quantlab.runtime.ir_file``),
``onnxruntime`` (ONNX files) and ``tensorflow`` (frozen GraphDefs). The
format is decided from the file's content, never from its name, and the file is read once:
the predictor runs exactly the bytes whose sha256 it reports.
"""

import hashlib
import importlib
import os
import stat
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from quantlab import telemetry
from quantlab.defaults import KERNELS, RUNTIMES  # noqa: F401
from quantlab.errors import QuantlabError
from quantlab.runtime.base import (  # noqa: F401  (the public names of the runtime API)
    PixelRangeWarning, Predictor, check_images, check_threads, dequantize, quantize,
    check_sample_size, sample_batch, whole_number)
from quantlab.variant_table import runtimes_reading

telemetry.onnxruntime_off()  # before ONNX Runtime is imported (OpenVINO: where it is)

PACKAGES = {"litert": "ai-edge-litert", "openvino": "openvino", "onnxruntime": "onnxruntime",
            "tensorflow": "tensorflow"}
# The nets studied here are at most 15 MB; a model 30 times larger is no small classifier,
# and reading it whole must not take the memory a study needs.
MAX_MODEL_BYTES = 512 << 20
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
        if name == "openvino":  # its telemetry package is part of what must import
            telemetry.openvino_off()
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
    """"tflite", "onnx", "graphdef" or "openvino" (an IR in quantlab's one-file layout), from
    the first bytes; None for anything else.

    A TFLite flatbuffer carries "TFL3" at offset 4. Both ONNX and GraphDef are protobufs,
    serialized in field order: an ONNX ModelProto starts with field 1 (ir_version, a
    varint: byte 0x08), a GraphDef with field 1 (node, a message: byte 0x0a).
    """
    from quantlab.runtime import ir_file

    if content[4:8] == b"TFL3":
        return "tflite"
    if ir_file.is_ir(content):
        return "openvino"
    if content[:1] == b"\x08":
        return "onnx"
    if content[:1] == b"\x0a":
        return "graphdef"
    return None


def read(path, limit=MAX_MODEL_BYTES, what="model file"):
    """(bytes, sha256) of a model file, or a one-line error for a missing or unreadable one.

    Only a regular file of at most ``limit`` bytes is read: a FIFO would block the read until
    a writer came, a device such as /dev/zero never ends, and a /proc file claims 0 bytes.
    The file is opened without blocking and checked again once open, so nothing swapped in
    between the two looks is read either.
    """
    path = Path(path)
    try:
        _check_regular(path, os.stat(path), limit, what)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise QuantlabError(f"no {what} at {path}") from None
    except OSError as error:
        raise QuantlabError(f"cannot read {path}: {error.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        _check_regular(path, os.fstat(fd), limit, what)
        try:
            content = f.read(limit + 1)
        except OSError as error:
            raise QuantlabError(f"cannot read {path}: {error.strerror}") from None
    if len(content) > limit:  # it grew since it was looked at
        raise QuantlabError(f"{path} is larger than the {limit >> 20} MiB quantlab reads as a "
                            f"{what}")
    return content, hashlib.sha256(content).hexdigest()


def read_expected(path, sha256=None):
    """(bytes, sha256) of a model file (``read``), refused in one line where they are not
    the bytes of digest ``sha256`` (None: any)."""
    content, digest = read(path)
    if sha256 is not None and digest != sha256:
        raise QuantlabError(f"{path} changed since it was exported (sha256 {digest[:12]}, "
                            f"expected {sha256[:12]}); export it again")
    return content, digest


def check_regular(path, limit=MAX_MODEL_BYTES, what="model file"):
    """Refuse, before it is opened, a path that is a FIFO, device, socket or /proc file, or
    larger than ``limit``. A missing path raises FileNotFoundError and a folder passes: the
    caller names those in its own words."""
    status = os.stat(path)
    if not stat.S_ISDIR(status.st_mode):
        _check_regular(path, status, limit, what)


def _check_regular(path, status, limit, what):
    if stat.S_ISDIR(status.st_mode):
        raise QuantlabError(f"{path} is a folder, not a {what}")
    if not stat.S_ISREG(status.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(status.st_mode) else "a socket"
                if stat.S_ISSOCK(status.st_mode) else "a device")
        raise QuantlabError(f"{path} is {kind}, not a {what}; give the file itself")
    if status.st_size == 0:
        raise QuantlabError(f"{path} is empty (or a /proc file, which claims no size), not a "
                            f"{what}; give the file itself")
    if status.st_size > limit:
        raise QuantlabError(f"{path} is {status.st_size >> 20} MiB, larger than the "
                            f"{limit >> 20} MiB quantlab reads as a {what}")


# sha256 of the model files this process has checked and found safe to load: a study loads
# one file for every batch size, thread count and runtime, and the checks (the ONNX ones
# parse the model and infer its shapes) gave the same answer each time.
_CHECKED = set()


def check_model(path, content, digest, fmt):
    """Refuse, in one line, a model file whose bytes (``content``, of format ``fmt``) a runtime
    must not be given (see tflite_check and onnx_check); the same bytes are checked once per
    process."""
    if digest in _CHECKED:
        return
    if fmt == "tflite":
        from quantlab.runtime import tflite_check

        tflite_check.check(path, content)
    if fmt == "onnx":
        from quantlab.runtime.onnx_check import check_onnx

        check_onnx(path, content)
    _CHECKED.add(digest)


def vouch_for(sha256):
    """Take the model bytes whose digest is ``sha256`` as checked in this process: the
    process that started this one checked them (check_model); bytes with any other digest
    are checked as ever. So a deployment's fresh process times loading as a deployment pays
    it, without quantlab's checks (the ONNX ones parse the model and infer its shapes: more
    than the loading itself for some files)."""
    _CHECKED.add(sha256)


def load(path, runtime=None, threads=None, kernels="xnnpack", precision=None, sha256=None,
         batch=None):
    """A predictor for the model file at ``path`` on ``runtime`` (its natural one if None).

    ``threads``: None for the runtime's default (every core), else at least 1.
    ``kernels``: LiteRT only, ``xnnpack`` or ``builtin``. ``precision``: ``bf16`` asks
    OpenVINO to run a float model in bfloat16. ``sha256``: the digest the caller expects;
    a file whose bytes differ is refused, so a changed file is never measured by mistake.
    ``batch``: the batch size the caller runs first (None: 1); OpenVINO compiles the model
    for it while loading, and compiles each other batch size anew when it first comes.
    """
    threads = check_threads(threads)
    batch = 1 if batch is None else whole_number(batch, "batch size")
    path = Path(path)
    content, digest = read_expected(path, sha256)
    fmt = format_of(content)
    if fmt is None:
        hint = " (no TFL3 identifier)" if path.suffix == ".tflite" else ""
        raise QuantlabError(f"{path} is not a TFLite model{hint}, an ONNX model or a frozen "
                            f"TensorFlow GraphDef; export it again")
    readers = runtimes_reading(fmt)
    runtime = runtime or readers[0]
    check_runtime(runtime)
    if runtime not in readers:
        raise QuantlabError(f"{runtime} cannot run {path}, a {fmt} model: use "
                            f"{' or '.join(readers)}")
    require(runtime)
    check_model(path, content, digest, fmt)
    module = importlib.import_module(f"quantlab.runtime.{runtime}")
    options = dict(threads=threads, kernels=kernels, precision=precision)
    if runtime == "openvino":
        options.update(fmt=fmt, batch=batch)
    predictor = module.load(path, content, digest, runtime_version(runtime), **options)
    predictor.format = fmt
    return predictor
