"""The export converts each TFLite variant from one SavedModel of the net, not through
``from_keras_model`` (which saves and reloads a Keras SavedModel per conversion): the files
must be those the Keras route makes, byte for byte."""

import pytest

from conftest import quick_config
from quantlab import training, variants
from quantlab.defaults import CALIBRATION_SIZE
from quantlab.variants import calibration_images, tflite_converter, with_softmax

pytestmark = pytest.mark.fashion_mnist


@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_exported_tflite_files_are_the_keras_converters_byte_for_byte(fashion, variant):
    config = quick_config("medium")  # the quick suite's net: trained and exported once
    exported = variants.export(config, variants=(variant,), data=fashion)
    model = with_softmax(training.train(config, fashion).model)
    calibration = calibration_images(fashion, CALIBRATION_SIZE, config.seed)
    with variants.without_native_noise():
        keras_route = tflite_converter(model, variant, calibration).convert()
    assert exported[variant].path.read_bytes() == keras_route
