"""ONNX Runtime's static int8 quantization of a float32 ONNX model (QDQ, int8 weights and
activations, min/max ranges from calibration images), per channel or per tensor.

Used for quantlab's own nets (their tf2onnx export) and for a user's ONNX model alike, so the
model's batch dimension may be fixed (the calibration images then go in batches of that size)
or symbolic.
"""

import tempfile
from pathlib import Path

from quantlab import telemetry
from quantlab.errors import QuantlabError

telemetry.onnxruntime_off()  # before ONNX Runtime is imported

CALIBRATION_BATCH = 50  # images per calibration call where the model's batch is symbolic


def input_batches(calibration, batch):
    """``calibration`` in batches of ``batch`` images (None: of up to CALIBRATION_BATCH):
    a model with a fixed batch takes no other; the few left over then are not used."""
    import numpy as np

    if batch is None:
        return np.array_split(calibration, max(1, len(calibration) // CALIBRATION_BATCH))
    if len(calibration) < batch:
        raise QuantlabError(f"the model takes batches of exactly {batch} images, but only "
                            f"{len(calibration)} calibration images were given; give at least "
                            f"{batch}")
    return [calibration[start:start + batch]
            for start in range(0, len(calibration) - batch + 1, batch)]


def fixed_batch(dim):
    """The model input's first dimension as a number, or None where it is symbolic."""
    return dim if isinstance(dim, int) and dim > 0 else None


def quantize(float_content, calibration, per_channel):
    """The QDQ int8 model's bytes; ``per_channel`` False gives one scale per weight tensor."""
    import numpy as np
    import onnxruntime
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    first = onnxruntime.InferenceSession(float_content).get_inputs()[0]
    batches = input_batches(calibration, fixed_batch(first.shape[0]))

    class Images(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(batches)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {first.name: np.ascontiguousarray(batch)}

    with tempfile.TemporaryDirectory(prefix="quantlab-onnx-") as folder:
        source, prepared, target = (Path(folder, name) for name in ("float.onnx", "pre.onnx", "int8.onnx"))
        source.write_bytes(float_content)
        # ONNX Runtime's recommended first step: fold and fuse (MatMul + Add -> Gemm) so that
        # the quantizer sees the graph the kernels will run. The symbolic shape inference
        # (which needs sympy) is skipped: the image models' shapes are static but the batch.
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(prepared, target, Images(), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8)
        return target.read_bytes()
