"""Lazy, quiet access to TensorFlow, tf-keras and tfmot: the one place quantlab imports them.

tfmot needs Keras 2, so ``TF_USE_LEGACY_KERAS`` must be set before TensorFlow is first
imported; C++ log noise is turned down at the same moment. Keras writes its ``keras.json``
when first imported (tf-keras, and Keras 3, which TensorFlow's converter imports when it
needs it), and matplotlib (which tfmot imports) its font cache: into quantlab's cache, never
the user's home.
"""

import atexit
import contextlib
import gc
import os
import re
import sys
import tempfile
import warnings


def matplotlib_cache_in_quantlab():
    """Matplotlib keeps its font cache where MPLCONFIGDIR says, else in the user's home: under
    quantlab's cache, set before matplotlib is first imported (by ``plots``, or by tfmot)."""
    from quantlab.cache import cache_root

    os.environ.setdefault("MPLCONFIGDIR", str(cache_root() / "matplotlib"))


def _prepare_environment():
    from quantlab.cache import cache_root

    matplotlib_cache_in_quantlab()
    # Unless the user set it: read by each Keras at its import, and by its downloads, which
    # then land in quantlab's cache too (quantlab.datasets looks there and in ~/.keras).
    os.environ.setdefault("KERAS_HOME", str(cache_root() / "keras"))
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Known, harmless converter chatter: int8 input statistics come from the
    # representative dataset, and the deprecated interpreter is used only inside TFLite's
    # own quantization debugger.
    warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
    warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")


# Info lines that native code prints straight to the stderr file descriptor, past Python's
# and TensorFlow's log levels: TensorFlow's import, the TFLite converter's quantizer
# ("fully_quantize: 0, inference_type: 6, ..."), LiteRT creating its XNNPACK delegate, and
# LiteRT's CompiledModel naming each accelerator and vendor plugin it looks for (and, two
# lines, each plugin library it finds but cannot load: none is used here).
NATIVE_NOISE = re.compile(r"^(I0000 |W0000 |WARNING: All log messages before absl::InitializeLog|"
                          r"fully_quantize: |INFO: Created TensorFlow Lite XNNPACK delegate|"
                          r"INFO: \[|WARNING: \[(npu_registry|compiler_plugin)\.cc:|"
                          r"\u2514 Could not load shared library )")


@contextlib.contextmanager
def without_native_noise():
    """Drop the native info lines printed inside the block; pass everything else on."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines(keepends=True):
                if not NATIVE_NOISE.match(line):
                    sys.stderr.write(line)


def tf():
    _prepare_environment()
    if "tensorflow" not in sys.modules:
        with without_native_noise():
            import tensorflow  # noqa: F401
        # TensorFlow's import makes millions of objects that live as long as the process,
        # and every full collection walks them all: frozen, they are skipped (a `quantlab
        # quantize` of one digits net spent 2.4 s in collections, 1.6 s with this). At exit
        # Python collects once more, everything made since too: 1.3-1.8 s of each process's
        # exit, measured, 0.16 s with it frozen (what is left is freed with the process).
        gc.freeze()
        atexit.register(gc.freeze)
    import tensorflow

    tensorflow.get_logger().setLevel("ERROR")
    return tensorflow


def keras():
    tf()
    import tf_keras

    return tf_keras


def tfmot():
    tf()
    import tensorflow_model_optimization

    return tensorflow_model_optimization


def versions():
    """Versions of the numeric stack, without importing TensorFlow."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found
