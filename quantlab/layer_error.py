"""Per-layer quantization error of the full-integer variant (TFLite quantization debugger).

For each quantized tensor the debugger runs the float and the int8 op on the same
(quantized) inputs, so the error it reports belongs to that layer alone. The error is
given in units of the tensor's quantization step (RMSE / scale): about 0.29 is the floor
of uniform rounding, and much more than that names a layer that loses accuracy. The
debugger itself is driven by ``quantlab.selective.TFLiteInt8``, which the sensitivity
ranking and the mixed-precision search share.
"""

from quantlab.selective import TFLiteInt8
from quantlab.variants import calibration_images

DEBUG_IMAGES = 200


def int8_layer_errors(model, data, int8_meta):
    """Rows {op, tensor, layer, elements, rmse_over_scale, max_abs_error, scale} in graph
    order; ``layer`` is the Keras layer's name, ``tensor`` the first name TFLite gives."""
    calibration = calibration_images(data, int8_meta["calibration_size"],
                                      int8_meta["train_config"]["seed"])
    rows = TFLiteInt8.shared(model, calibration).layer_errors(data.x_test[:DEBUG_IMAGES])
    return [{"op": row["op"], "tensor": row["node"].split(";")[0], "layer": row["layer"],
             **{key: row[key] for key in ("elements", "rmse_over_scale", "max_abs_error",
                                          "scale")}}
            for row in rows]
