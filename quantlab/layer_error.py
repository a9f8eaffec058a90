"""Per-layer quantization error of the full-integer variant (TFLite quantization debugger).

For each quantized tensor the debugger runs the float and the int8 op on the same
(quantized) inputs, so the error it reports belongs to that layer alone. The error is
given in units of the tensor's quantization step (RMSE / scale): about 0.29 is the floor
of uniform rounding, and much more than that names a layer that loses accuracy.
"""

import csv
import io
import math

from quantlab.variants import calibration_images, tflite_converter, with_softmax

DEBUG_IMAGES = 200


def int8_layer_errors(model, data, int8_meta):
    """Rows {op, tensor, elements, rmse_over_scale, max_abs_error, scale} in graph order."""
    from quantlab._tf import tf, without_native_noise

    calibration = calibration_images(data, int8_meta["calibration_size"],
                                      int8_meta["train_config"]["seed"])
    converter = tflite_converter(with_softmax(model), "int8", calibration)

    def debug_images():
        for image in data.x_test[:DEBUG_IMAGES]:
            yield [image[None]]

    with without_native_noise():
        debugger = tf().lite.experimental.QuantizationDebugger(converter=converter,
                                                               debug_dataset=debug_images)
        debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    rows = []
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        scale = float(row["scale"])
        rows.append({
            "op": row["op_name"],
            "tensor": row["tensor_name"].split(";")[0],
            "elements": int(float(row["num_elements"])),
            "rmse_over_scale": math.sqrt(float(row["mean_squared_error"])) / scale if scale else None,
            "max_abs_error": float(row["max_abs_error"]),
            "scale": scale,
        })
    return rows
