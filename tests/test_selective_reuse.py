"""What the quantizers of ``quantlab.selective`` keep between the models of one search (the
calibration ranges, the models made, the accuracies scored) changes none of them: the planted
net of test_sensitivity, quantized by the real tools."""

import pytest
from test_sensitivity import PLANTED, _Shape, planted, quantizers  # noqa: F401 (fixtures)

from quantlab import sensitivity


@pytest.fixture(scope="module")
def onnx_float(planted):
    """The planted net's ONNX float bytes (each export names its folded constants anew)."""
    from quantlab.variants import _onnx_float, with_softmax

    model, splits = planted
    return _onnx_float(with_softmax(model), _Shape(splits))


def test_onnx_models_made_of_the_kept_ranges_are_those_a_new_calibration_makes(planted,
                                                                               onnx_float):
    from quantlab.selective import OnnxInt8

    model, splits = planted
    names = [layer.name for layer in model.layers]
    quantizer = OnnxInt8(onnx_float, splits.calibration, names)
    layers = {row["layer"]: row for row in quantizer.layers(splits.validation_x)}
    assert quantizer._ranges.is_file()  # calibrated once, by the full int8 model above
    excluded = layers[PLANTED]["nodes"]
    kept = quantizer.quantize(excluded)
    fresh = OnnxInt8(onnx_float, splits.calibration, names)
    assert kept == fresh.quantize(excluded)  # its first model: calibrated anew
    assert quantizer.quantize(excluded) is kept  # asked again: not made again


def test_a_tflite_model_made_without_the_debug_model_is_the_one_made_with_it(quantizers,
                                                                             planted):
    _, splits = planted
    quantizer = quantizers["int8"]
    statistics = quantizer.layer_errors(splits.validation_x)
    nodes = next(row["node"] for row in statistics if row["layer"] == PLANTED)
    made = quantizer.quantize([nodes])
    debugger = quantizer._debugger
    debugger.options = quantizer._tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=[nodes], fully_quantize=True)  # the public way, which re-makes both
    assert made == debugger.get_nondebug_quantized_model()
    assert quantizer.layer_errors(splits.validation_x) == statistics  # all int8 again


def test_a_model_is_scored_once_and_as_the_loader_scores_it(quantizers, planted):
    from quantlab.selective import accuracy

    _, splits = planted
    quantizer = quantizers["onnx_int8"]
    content = quantizer.quantize()
    first = sensitivity.validation_accuracy(quantizer, content, splits)
    scored = len(quantizer.validation_scores)
    assert sensitivity.validation_accuracy(quantizer, content, splits) == first
    assert len(quantizer.validation_scores) == scored  # not scored again
    assert first == accuracy(content, ".onnx", splits.validation_x, splits.validation_y)
    other = splits.validation_x[:100], splits.validation_y[:100]  # other images: scored anew
    fewer = sensitivity.Splits(splits.calibration, None, *other, None, None, None)
    assert sensitivity.validation_accuracy(quantizer, content, fewer) == accuracy(
        content, ".onnx", *other)
    assert len(quantizer.validation_scores) == scored + 1


def test_a_quantizer_keeps_only_its_latest_models():
    """A search of a large model must not hold every step's copy: the oldest goes first."""
    from quantlab.selective import Recent

    made = Recent()
    for step in range(Recent.KEEP + 3):
        made[(f"layer{step}",)] = b"model"
    assert len(made) == Recent.KEEP
    assert ("layer0",) not in made and (f"layer{Recent.KEEP + 2}",) in made
