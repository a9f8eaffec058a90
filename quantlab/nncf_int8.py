"""OpenVINO's own int8 quantization: NNCF's ``quantize`` (its default preset, fast bias
correction) on a float32 ONNX model read by OpenVINO, with the same calibration images as
the other int8 variants; written as OpenVINO IR in one file (``quantlab.runtime.ir_file``).
"""

import contextlib
import tempfile
from pathlib import Path

from quantlab import telemetry
from quantlab.onnx_int8 import fixed_batch, input_batches


def quantize(float_content, calibration):
    """The quantized model as the bytes of one IR file."""
    telemetry.openvino_off()
    import openvino

    import nncf
    from quantlab.runtime import ir_file
    from quantlab.runtime.openvino import core

    with tempfile.TemporaryDirectory(prefix="quantlab-nncf-") as folder:
        source = Path(folder, "float.onnx")
        source.write_bytes(float_content)
        model = core().read_model(str(source))
        dim = model.inputs[0].get_partial_shape()[0]
        batch = fixed_batch(dim.get_length() if dim.is_static else None)
        # One image a call where the batch is free: NNCF collects statistics per item.
        items = input_batches(calibration, batch) if batch else [image[None] for image in calibration]
        with quiet():
            quantized = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items))
        target = Path(folder, "int8.xml")
        # Float constants (biases, scales) stay float32, as in the other variants' files;
        # the weights are int8 either way.
        openvino.save_model(quantized, target, compress_to_fp16=False)
        return ir_file.pack(target.read_bytes(), target.with_suffix(".bin").read_bytes())


@contextlib.contextmanager
def quiet(reader=None):
    """Without NNCF's notes and progress bars on the terminal: the study says what it does.
    Its progress bars (rich) are drawn on sys.stdout; its notes go through a handler that
    holds the sys.stdout of NNCF's import, which redirecting sys.stdout misses, so that
    handler is silenced (and restored after). ``reader``, a logging handler, gets the notes
    meanwhile (NNCF's accuracy control says only there what it reverted)."""
    import io
    import logging

    logger = logging.getLogger("nncf")
    theirs = [(handler, handler.level) for handler in logger.handlers]
    level = logger.level
    for handler, _ in theirs:
        handler.setLevel(logging.CRITICAL)
    if reader is not None:
        logger.setLevel(logging.INFO)
        logger.addHandler(reader)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        if reader is not None:
            logger.removeHandler(reader)
        logger.setLevel(level)
        for handler, was in theirs:
            handler.setLevel(was)
