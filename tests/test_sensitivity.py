"""Per-layer sensitivity and accuracy-aware mixed precision on a small net with one planted
outlier: a real net trained on real digits, quantized by the real tools.

The plant is the shape weight outliers take in trained nets: a few huge weights on an input
that carries nothing. The digits' corner pixel is 0 on every image; the first dense layer's
weights reading it are set 1000x larger than any other. Float predictions do not change at
all (they multiply zeros), but every int8 weight scale of that layer, per tensor or per
output channel, is set by the outlier, so its real weights round to zero. (A dead ReLU
channel would not do: ONNX Runtime drops the ReLU after a quantized conv and lets the
quantized conv's small negative outputs through, so the "dead" channel is not 0 there.)
"""

import numpy as np
import pytest

from quantlab import mixed_precision, sensitivity
from quantlab.errors import QuantlabError

PLANTED = "outlier"


@pytest.fixture(scope="module")
def planted(digits):
    """(Keras model with the planted outlier, splits) on the digits."""
    from quantlab._tf import keras

    k = keras()
    k.utils.set_random_seed(0)
    model = k.Sequential([
        k.layers.Input(digits.input_shape),
        k.layers.Flatten(name="flat"),
        k.layers.Dense(32, activation="relu", name=PLANTED),
        k.layers.Dense(32, activation="relu", name="hidden"),
        k.layers.Dense(digits.num_classes, name="logits"),
    ], name="tiny")
    splits = sensitivity.splits(digits, calibration_size=200, validation_size=300)
    train = np.setdiff1d(np.arange(len(digits.x_train)), splits.validation_indices)
    model.compile("adam", k.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(digits.x_train[train], digits.y_train[train], epochs=15, batch_size=32, verbose=0)
    before = model.predict(digits.x_test, verbose=0)
    images = np.concatenate([digits.x_train, digits.x_test]).reshape(-1, 64)
    dark = np.flatnonzero(~images.any(axis=0))
    assert dark.size  # the corner pixel, 0 on every image
    weights, bias = model.get_layer(PLANTED).get_weights()
    weights[dark[0]] = 1000.0 * np.abs(weights).max()
    model.get_layer(PLANTED).set_weights([weights, bias])
    assert np.array_equal(model.predict(digits.x_test, verbose=0), before)  # float unchanged
    return model, splits


def test_calibration_validation_and_test_images_are_disjoint(digits):
    from quantlab.variants import calibration_images

    splits = sensitivity.splits(digits, calibration_size=200, validation_size=300)
    assert not set(splits.calibration_indices) & set(splits.validation_indices)
    assert len(splits.validation_y) == 300
    # The calibration images are the int8 variants' own; the test images the test split's.
    assert np.array_equal(splits.calibration, calibration_images(digits, 200, 0))
    assert np.array_equal(splits.test_x, digits.x_test)
    train_bytes = {image.tobytes() for image in digits.x_train[splits.validation_indices]}
    assert train_bytes.isdisjoint(image.tobytes() for image in splits.calibration)
    with pytest.raises(QuantlabError, match="calibration-size"):
        sensitivity.splits(digits, calibration_size=len(digits.x_train))


@pytest.fixture(scope="module")
def quantizers(planted):
    from quantlab.selective import OnnxInt8, TFLiteInt8
    from quantlab.variants import _onnx_float, with_softmax

    model, splits = planted
    names = [layer.name for layer in model.layers]
    onnx_float = _onnx_float(with_softmax(model), _Shape(splits))
    return {"int8": TFLiteInt8.shared(model, splits.calibration),
            "onnx_int8": OnnxInt8(onnx_float, splits.calibration, names)}


def test_a_quantizer_is_shared_by_the_same_weights_and_images_only(quantizers, planted):
    """The study's stages share one quantizer (making it converts the model): the same
    weights loaded again find it; other images or weights, or per-tensor, do not."""
    from quantlab._tf import keras
    from quantlab.selective import TFLiteInt8

    model, splits = planted
    again = keras().models.clone_model(model)
    again.set_weights(model.get_weights())
    assert TFLiteInt8.shared(again, splits.calibration) is quantizers["int8"]
    assert TFLiteInt8.shared(model, splits.calibration[:100]) is not quantizers["int8"]
    per_tensor = TFLiteInt8.shared(model, splits.calibration, per_channel=False)
    assert per_tensor is not quantizers["int8"]
    assert per_tensor._debugger.converter._experimental_disable_per_channel
    weights = [w + 1e-3 for w in model.get_weights()]
    again.set_weights(weights)
    assert TFLiteInt8.shared(again, splits.calibration) is not quantizers["int8"]


class _Shape:
    def __init__(self, splits):
        self.input_shape = splits.calibration.shape[1:]


@pytest.mark.parametrize("name", ["int8", "onnx_int8"])
def test_the_planted_layer_ranks_first_and_the_search_keeps_it_float(quantizers, planted, name):
    _, splits = planted
    quantizer = quantizers[name]
    ranking = sensitivity.rank(quantizer, splits, top_k=3, name=name)
    assert ranking["drop_points"] > 5, ranking  # the plant hurts int8 ...
    first = ranking["layers"][0]
    assert first["layer"] == PLANTED, ranking
    # ... by the cheap statistic too, not only by the accuracy measured for the top 3
    statistic = ranking["statistic"]
    assert first[statistic] == max(row[statistic] or 0 for row in ranking["layers"])
    assert first["points_regained"] > 5
    needed, why = sensitivity.fallback_needed(ranking, max_drop=1.0)
    assert needed and "more than 1" in why

    found = mixed_precision.search(quantizer, splits, ranking, max_drop=1.0)
    assert found["met"] and found["drop_points"] <= 1.0
    assert found["kept_float"] == [PLANTED]  # met at once: nothing else given up
    assert [step["tried"] for step in found["steps"]] == [None, PLANTED]
    assert set(found["models"]) == {(), (PLANTED,)}
    assert found["content"] == found["models"][(PLANTED,)]


def test_the_search_stops_once_within_budget_and_keeps_no_useless_revert(quantizers, planted):
    """Harmless layers ranked first on purpose: each is tried, none stays (none helps), the
    planted one stays, and nothing is tried after the budget holds."""
    _, splits = planted
    quantizer = quantizers["int8"]
    layers = {row["layer"]: row for row in quantizer.layers(splits.validation_x)}
    groups = [(name, layers[name]["nodes"]) for name in ("flat", "hidden", PLANTED, "logits")]
    float_accuracy = sensitivity.validation_accuracy(quantizer, quantizer.float_content(), splits)
    tried = []

    def accuracy_of(nodes):
        tried.append(list(nodes))
        return sensitivity.validation_accuracy(quantizer, quantizer.quantize(nodes), splits)

    found = mixed_precision.greedy(groups, accuracy_of, float_accuracy, max_drop=1.0)
    steps = found["steps"]
    assert [step["tried"] for step in steps] == [None, "flat", "hidden", PLANTED]  # no "logits"
    for before, step in zip(steps, steps[1:]):
        best = max(s["accuracy"] for s in steps[:step["step"]] if s["kept"])
        assert step["kept"] == (step["accuracy"] > best)
    assert found["kept_float"] == [s["tried"] for s in steps[1:] if s["kept"]]
    assert PLANTED in found["kept_float"] and found["met"]
    assert found["nodes"] == [n for name in found["kept_float"] for n in layers[name]["nodes"]]
    assert tried[-1] == found["nodes"] or not steps[-1]["kept"]


def test_openvino_accuracy_control_reverts_the_planted_layer(planted, quantizers, tmp_path,
                                                             capfd):
    """NNCF's own search, on the ONNX float file (OpenVINO's TFLite reader renames the
    operations, "MatMul_19"; tf2onnx keeps the Keras layer in each name). Its log is read,
    not printed: NNCF's own handler would write it on stdout, quantlab's machine-readable
    channel."""
    _, splits = planted
    path = tmp_path / "float.onnx"
    path.write_bytes(quantizers["onnx_int8"].float_content())
    capfd.readouterr()
    found = mixed_precision.openvino_accuracy_control(path, splits, max_drop=1.0)
    printed = capfd.readouterr()
    assert "nncf" not in (printed.out + printed.err).lower(), printed
    assert found["met"], found["log"]
    assert any(PLANTED in name for name in found["reverted"]), found["log"]



def test_nncfs_own_quantizer_prints_nothing_and_leaves_its_log_as_it_found_it(planted, quantizers,
                                                                              capfd):
    """The openvino_int8 export says nothing of its own, and NNCF's handlers get their levels
    back: a later NNCF call in the same process (the accuracy control) is read as before."""
    import logging

    import nncf  # noqa: F401  (its handlers exist once it is imported)
    from quantlab import nncf_int8

    _, splits = planted
    handlers = logging.getLogger("nncf").handlers
    levels = [handler.level for handler in handlers]
    capfd.readouterr()
    content = nncf_int8.quantize(quantizers["onnx_int8"].float_content(), splits.calibration)
    printed = capfd.readouterr()
    assert content and "nncf" not in (printed.out + printed.err).lower(), printed
    assert [handler.level for handler in logging.getLogger("nncf").handlers] == levels

def _option(variant, runtime, delta, ms, megabytes, precision="int8"):
    return {"variant": variant, "runtime": runtime, "delta_points": delta, "latency": ms / 1e3,
            "bytes": megabytes * 1e6, "precision": precision}


OPTIONS = [_option("float32", "litert", 0.0, 4.0, 4, "float32"),
           _option("float32", "openvino", 0.0, 3.0, 4, "float32"),
           _option("int8", "litert", -2.5, 1.0, 1),
           _option("int8_mixed", "litert", -0.4, 1.5, 1.2),
           _option("onnx_int8", "onnxruntime", -0.6, 2.0, 1)]  # slower and worse than mixed


def test_the_front_keeps_what_nothing_beats_and_ships_the_fastest_within_budget(tmp_path):
    from quantlab import pareto

    assert [row["variant"] for row in pareto.front(OPTIONS)] == ["int8", "int8_mixed", "float32"]
    assert pareto.front(OPTIONS)[2]["runtime"] == "openvino"
    best, sentence = pareto.what_to_ship(OPTIONS, 1.0, {"int8_mixed": [PLANTED]})
    assert best["variant"] == "int8_mixed"
    assert f"kept in float: {PLANTED}" in sentence and "1.50x the time of the fastest" in sentence
    best, sentence = pareto.what_to_ship(OPTIONS, 0.1)
    assert best["runtime"] == "openvino" and sentence.startswith("no quantized option")
    assert "int8 on litert (1 ms, -2.50 points)" in pareto.describe_front(OPTIONS)
    name = pareto.plot(OPTIONS, tmp_path / "pareto.png", "tiny, batch 1")
    assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_drop_equal_to_the_budget_meets_it():
    assert sensitivity.within(100 * (0.834 - 0.832), 0.2)  # 0.2000000000000002
    assert not sensitivity.within(0.201, 0.2)


def test_the_search_tries_helping_layers_then_each_kind_at_once_then_the_rest():
    """A kind (layers of the same operations, e.g. every LayerNorm) is tried at once, the
    noisiest kind first, after the layers measured to help and before the lone layers, and
    the layers kept are named one by one."""
    def row(layer, ops, statistic, regained=None):
        return {"layer": layer, "nodes": [f"{layer}/out"], "ops": ops,
                "rmse_over_scale": statistic, "points_regained": regained}

    norm = ["MEAN", "SQUARED_DIFFERENCE", "RSQRT", "MUL"]
    ranking = {"statistic": "rmse_over_scale", "layers": [
        row("head", ["FULLY_CONNECTED"], 0.3, regained=0.4),
        row("scores1", ["BATCH_MATMUL"], 9.0), row("norm2", norm, 30.0),
        row("norm1", norm, 2.0), row("scores2", ["BATCH_MATMUL"], 5.0),
        row("stem", ["CONV_2D"], 50.0)]}
    order = mixed_precision.search_order(ranking)
    assert [name for name, _ in order] == [
        "head", "norm2 + norm1", "scores1 + scores2", "scores1", "norm2", "norm1", "scores2",
        "stem"]
    assert order[1][1] == ["norm2/out", "norm1/out"]
    assert mixed_precision.float_layers(["head", "norm2 + norm1", "norm1"]) == [
        "head", "norm2", "norm1"]
