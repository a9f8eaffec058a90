import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlab import runtime, variant_table
from quantlab.errors import QuantlabError

# --- quantization arithmetic ---------------------------------------------------------------

scales = st.floats(min_value=1e-4, max_value=10.0, allow_nan=False)
int8_zero_points = st.integers(min_value=-128, max_value=127)


@settings(max_examples=300, deadline=None)
@given(scale=scales, zero_point=int8_zero_points, fraction=st.floats(0.0, 1.0))
def test_round_trip_error_is_at_most_half_a_step_inside_the_representable_range(scale, zero_point, fraction):
    low, high = (-128 - zero_point) * scale, (127 - zero_point) * scale
    x = low + fraction * (high - low)
    back = runtime.dequantize(runtime.quantize(x, scale, zero_point, np.int8), scale, zero_point)
    # half a step, plus float32 rounding of the dequantized value
    assert abs(float(back) - x) <= scale / 2 * (1 + 1e-6) + abs(x) * 2e-7 + 1e-6


@settings(max_examples=200, deadline=None)
@given(scale=scales, zero_point=int8_zero_points, beyond=st.floats(1.0, 1e6))
def test_values_outside_the_range_saturate_at_the_integer_limits(scale, zero_point, beyond):
    high = (127 - zero_point) * scale
    low = (-128 - zero_point) * scale
    assert runtime.quantize(high + beyond * scale, scale, zero_point, np.int8) == 127
    assert runtime.quantize(low - beyond * scale, scale, zero_point, np.int8) == -128


@settings(max_examples=200, deadline=None)
@given(scale=scales, zero_point=int8_zero_points)
def test_zero_maps_exactly_to_the_zero_point_and_back_to_zero(scale, zero_point):
    q = runtime.quantize(0.0, scale, zero_point, np.int8)
    assert q == zero_point
    assert runtime.dequantize(q, scale, zero_point) == 0.0


def test_quantize_rounds_halves_away_from_zero_like_tflite():
    assert runtime.quantize([0.5, -0.5, 1.5, -1.5], 1.0, 0, np.int8).tolist() == [1, -1, 2, -2]


# --- predictors on real artifacts ------------------------------------------------------------

@pytest.fixture(scope="module")
def medium(quick_variants):
    return quick_variants["medium"]


PAIRS = [(v, r) for v in variant_table.VARIANTS for r in variant_table.readers(v)]


@pytest.mark.parametrize("variant, runtime_name", PAIRS)
def test_results_do_not_depend_on_the_batch_size_including_a_last_partial_batch(
        medium, fashion, variant, runtime_name):
    artifact = medium[variant]
    predictor = runtime.load(artifact.path, runtime=runtime_name, precision=artifact.precision)
    images = fashion.x_test[:100]
    by_batch = [predictor.predict(images, batch_size=b) for b in (1, 16, 64, 100)]
    for probs in by_batch:
        assert probs.shape == (100, 10)
        np.testing.assert_allclose(probs, by_batch[0], atol=1e-5)
    np.testing.assert_allclose(by_batch[0].sum(axis=1), 1.0, atol=0.02)


def test_int8_predictor_quantizes_inputs_with_the_models_own_parameters(medium, fashion):
    predictor = runtime.load(medium["int8"].path)
    scale, zero_point = predictor.input_quantization
    prepared = predictor.prepare(fashion.x_test[:4])
    assert prepared.dtype == np.int8
    np.testing.assert_array_equal(prepared, runtime.quantize(fashion.x_test[:4], scale, int(zero_point), np.int8))
    raw = predictor.run(prepared)
    assert raw.dtype == np.int8 and raw.shape == (4, 10)


def test_builtin_kernels_without_xnnpack_give_the_same_answers(medium, fashion):
    images = fashion.x_test[:500]
    # int8 kernels may round requantization differently: allow a few output steps of 1/256
    for variant, tolerance in (("float32", 1e-4), ("int8", 8 / 256)):
        fast = runtime.load(medium[variant].path).predict(images, batch_size=50)
        plain = runtime.load(medium[variant].path, kernels="builtin").predict(images, batch_size=50)
        assert np.mean(fast.argmax(1) == plain.argmax(1)) >= 0.99
        np.testing.assert_allclose(fast, plain, atol=tolerance)


def test_describe_names_runtime_kernels_and_quantization(medium):
    info = runtime.load(medium["int8"].path, threads=1, kernels="builtin").describe()
    assert info["runtime"] == "litert" and info["kernels"] == "builtin" and info["threads"] == 1
    assert info["input_quantization"] is not None
    assert runtime.load(medium["float32_tf"].path).describe()["runtime"] == "tensorflow"


# --- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("variant, runtime_name", [("float32_tf", "tensorflow"), ("int8", "litert"),
                                                   ("int8", "openvino"), ("onnx_int8", "onnxruntime")])
@pytest.mark.parametrize("images, message", [
    (np.zeros((2, 32, 32, 3), np.float32), "takes images of shape 28x28x1, got 32x32x3"),
    (np.zeros((28, 28, 1), np.float32), "rank 4 .* got rank 3"),
    (np.zeros((0, 28, 28, 1), np.float32), "empty batch"),
    (np.full((1, 28, 28, 1), np.nan, np.float32), "NaN"),
    (np.zeros((1, 28, 28, 1), np.uint8), "float images .* uint8"),
])
def test_bad_images_get_a_one_line_error_naming_the_problem(medium, variant, runtime_name, images, message):
    predictor = runtime.load(medium[variant].path, runtime=runtime_name)
    with pytest.raises(QuantlabError, match=message) as caught:
        predictor.predict(images)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("batch_size, message", [(0, "batch size must be at least 1, got 0"),
                                                  (2.5, "batch size must be a whole number, got 2.5"),
                                                  ("16", "batch size must be a whole number, got '16'")])
def test_a_batch_size_that_is_not_a_whole_number_of_at_least_one_is_refused(medium, fashion, batch_size,
                                                                             message):
    with pytest.raises(QuantlabError, match=message):
        runtime.load(medium["float32"].path).predict(fashion.x_test[:2], batch_size=batch_size)


@pytest.mark.parametrize("threads, message", [(0, "threads must be at least 1, got 0"),
                                              (1.5, "threads must be a whole number, got 1.5")])
def test_a_thread_count_below_one_is_named_as_such(medium, threads, message):
    with pytest.raises(QuantlabError, match=message):
        runtime.load(medium["int8"].path, threads=threads)


def test_a_file_whose_bytes_differ_from_the_expected_ones_is_refused(medium, tmp_path):
    copy = tmp_path / "int8.tflite"
    content = bytearray(medium["int8"].path.read_bytes())
    content[-100] ^= 0xFF  # same size, different bytes
    copy.write_bytes(content)
    with pytest.raises(QuantlabError, match="changed since it was exported"):
        runtime.load(copy, sha256=medium["int8"].sha256)
    assert runtime.load(medium["int8"].path, sha256=medium["int8"].sha256).sha256 == medium["int8"].sha256


def test_images_outside_zero_to_one_get_one_warning_on_the_first_batch(medium, fashion):
    predictor = runtime.load(medium["int8"].path)
    with pytest.warns(runtime.PixelRangeWarning, match="pixels range from 0 to 255") as caught:
        predictor.predict(fashion.x_test[:4] * 255, batch_size=2)
        predictor.predict(fashion.x_test[:4] * 255, batch_size=2)
    assert len(caught) == 1


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(QuantlabError, match="no model file at"):
        runtime.load(tmp_path / "nothing.tflite")


def test_a_file_that_is_not_a_model_is_refused(tmp_path):
    path = tmp_path / "notes.tflite"
    path.write_text("these are not the weights you are looking for")
    with pytest.raises(QuantlabError, match="not a TFLite model"):
        runtime.load(path)
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(QuantlabError, match="not a TFLite model, an ONNX model or a frozen"):
        runtime.load(other)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_a_truncated_tflite_model_is_reported_as_truncated_or_corrupt(medium, tmp_path, keep):
    content = medium["int8"].path.read_bytes()
    path = tmp_path / "cut.tflite"
    path.write_bytes(content[: int(len(content) * keep)])
    with pytest.raises(QuantlabError, match="truncated or corrupt"):
        runtime.load(path)


def test_a_pb_that_is_not_a_graphdef_is_refused(medium, tmp_path):
    path = tmp_path / "model.pb"
    path.write_bytes(b"\xff\xfe not a protobuf " * 10)
    with pytest.raises(QuantlabError, match="or a frozen TensorFlow GraphDef"):
        runtime.load(path)
    truncated = tmp_path / "cut.pb"
    truncated.write_bytes(medium["float32_tf"].path.read_bytes()[:1000])
    with pytest.raises(QuantlabError, match="GraphDef"):
        runtime.load(truncated)
