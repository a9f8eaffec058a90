"""TFLite's selective quantizer converts from one lean SavedModel of the net
(``variants.saved_model``), not through ``from_keras_model`` (which saves and reloads Keras's
own SavedModel, tracing every layer): every model it makes must be the one the Keras route
makes, byte for byte, and the SavedModel's folder must go with the quantizer. The planted net
of test_sensitivity, quantized by the real converter."""

import gc
from pathlib import Path

from test_sensitivity import PLANTED, planted  # noqa: F401 (fixture)

from quantlab._tf import without_native_noise


def test_tflite_models_are_those_the_keras_route_makes_and_the_folder_goes(planted):
    from quantlab.selective import TFLiteInt8
    from quantlab.variants import tflite_converter, with_softmax

    model, splits = planted
    quantizer = TFLiteInt8(model, splits.calibration)
    rows = quantizer.layer_errors(splits.validation_x)
    nodes = [row["node"] for row in rows if row["layer"] == PLANTED]
    assert nodes
    keras_model, lite = with_softmax(model), quantizer._tf.lite
    with without_native_noise():
        debugger = lite.experimental.QuantizationDebugger(
            converter=tflite_converter(keras_model, "int8", splits.calibration),
            debug_dataset=quantizer._images)
        float_keras = lite.TFLiteConverter.from_keras_model(keras_model).convert()
    assert quantizer._debugger.calibrated_model == debugger.calibrated_model
    # The instrumented model layer_errors ran (every layer in int8), as the Keras route's
    assert quantizer._debugger.quant_model == debugger.quant_model
    for excluded in ([], nodes):  # full int8, then the planted layer in float
        debugger.options = lite.experimental.QuantizationDebugOptions(
            denylisted_nodes=excluded or None, fully_quantize=True)
        assert quantizer.quantize(excluded) == debugger.get_nondebug_quantized_model()
    assert quantizer.quantize(nodes) != quantizer.quantize()  # the layer really is float
    assert quantizer.float_content() == float_keras
    folder = Path(quantizer._folder.name)
    assert (folder / "net" / "saved_model.pb").is_file()
    del quantizer, debugger  # each holds its debugger's dataset, a method of the quantizer
    gc.collect()
    assert not folder.exists()
