import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import quick_config
from quantlab import cache, training
from quantlab.errors import QuantlabError


def _weights(model):
    return [w.copy() for w in model.get_weights()]


@pytest.mark.fashion_mnist
@pytest.mark.parametrize("net", ["dense", "medium", "conv"])
def test_quick_training_on_real_fashion_mnist_beats_chance_by_a_wide_margin(quick_variants, fashion, net):
    trained = training.train(quick_config(net), fashion)
    assert trained.from_cache  # quick_variants trained it earlier in this session
    assert trained.info["test_accuracy"] > 0.75  # chance is 0.10
    assert trained.info["train_images"] == 6000


def test_training_on_digits_is_deterministic_for_a_seed_and_differs_across_seeds(digits):
    config = quick_config("medium", dataset="digits", limit=None, epochs=2)
    first = training.train(config, digits, use_cache=False)
    second = training.train(config, digits, use_cache=False)
    other = training.train(quick_config("medium", dataset="digits", limit=None, epochs=2, seed=1),
                           digits, use_cache=False)
    for a, b in zip(_weights(first.model), _weights(second.model)):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(_weights(first.model), _weights(other.model)))
    assert first.info["test_accuracy"] > 0.8  # chance is 0.10


def test_a_second_request_loads_from_the_cache_without_training(digits, tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTLAB_CACHE", str(tmp_path))
    config = quick_config("conv", dataset="digits", limit=None, epochs=1)
    messages = []
    first = training.train(config, digits, progress=messages.append)
    assert not first.from_cache and any("epoch 1/1" in m for m in messages)
    messages.clear()
    second = training.train(config, digits, progress=messages.append)
    assert second.from_cache and second.path == first.path
    assert not any("epoch" in m for m in messages)
    assert second.info == json.loads((first.path / "info.json").read_text())
    for a, b in zip(_weights(first.model), _weights(second.model)):
        np.testing.assert_array_equal(a, b)
    probe = digits.x_test[:32]
    np.testing.assert_allclose(first.model.predict(probe, verbose=0), second.model.predict(probe, verbose=0))


@pytest.fixture(scope="module")
def digits_conv_cache(digits, tmp_path_factory):
    """A cache folder that holds a digits conv net trained for one epoch, trained once: each
    test below damages a copy of it."""
    folder = tmp_path_factory.mktemp("conv-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QUANTLAB_CACHE", str(folder))
        training.train(quick_config("conv", dataset="digits", limit=None, epochs=1), digits)
    return folder


@pytest.mark.parametrize("damage", ["truncated weights", "same-size other weights", "torn info"])
def test_a_damaged_cached_model_is_trained_again_with_a_notice(digits, digits_conv_cache, tmp_path,
                                                               monkeypatch, damage):
    shutil.copytree(digits_conv_cache, tmp_path / "cache")
    monkeypatch.setenv("QUANTLAB_CACHE", str(tmp_path / "cache"))
    config = quick_config("conv", dataset="digits", limit=None, epochs=1)
    first = training.train(config, digits)
    assert first.from_cache and str(first.path).startswith(str(tmp_path / "cache"))  # the copy
    weights, info = first.path / "weights.h5", first.path / "info.json"
    if damage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "same-size other weights":
        content = bytearray(weights.read_bytes())
        content[len(content) // 2] ^= 0xFF
        weights.write_bytes(bytes(content))
    else:
        info.write_text(info.read_text()[:20])
    messages = []
    again = training.train(config, digits, progress=messages.append)
    assert not again.from_cache and any("epoch 1/1" in m for m in messages)
    assert any("damaged or incomplete: training it again" in m for m in messages)
    assert training.train(config, digits).from_cache  # and the new one is cached whole
    for a, b in zip(_weights(first.model), _weights(again.model)):
        np.testing.assert_array_equal(a, b)


def test_a_change_to_the_training_code_changes_the_cache_key(digits, monkeypatch):
    config = quick_config("medium", dataset="digits")
    before = training.model_dir(config, digits), training.model_dir(config, digits, qat=True)

    def _fit(model, config, data, epochs, learning_rate, progress, label):  # another recipe
        return {}

    monkeypatch.setattr(training, "RECIPE", (*training.RECIPE[:3], _fit, *training.RECIPE[4:]))
    after = training.model_dir(config, digits), training.model_dir(config, digits, qat=True)
    assert before[0] != after[0] and before[1] != after[1]


def test_an_interrupted_save_leaves_nothing_a_later_run_would_trust(tmp_path):
    target = tmp_path / "models" / "m"
    with pytest.raises(KeyboardInterrupt):
        with cache.atomic_dir(target) as tmp:
            (tmp / "weights.h5").write_bytes(b"half")
            raise KeyboardInterrupt
    assert not target.exists()
    assert list((tmp_path / "models").iterdir()) == []


def test_every_setting_that_changes_the_model_changes_its_cache_key(digits):
    base = quick_config("medium", dataset="digits")
    folders = {training.model_dir(base, digits)}
    for change in [dict(seed=1), dict(limit=1000), dict(epochs=3), dict(learning_rate=1e-4),
                   dict(batch_size=64), dict(patience=2), dict(validation_split=0.1)]:
        folders.add(training.model_dir(quick_config("medium", dataset="digits", **change), digits))
    folders.add(training.model_dir(quick_config("conv", dataset="digits"), digits))
    assert len(folders) == 9
    # QAT settings do not touch the float model, only the QAT one
    assert (training.model_dir(quick_config("medium", dataset="digits", qat_epochs=3), digits)
            == training.model_dir(base, digits))
    assert (training.model_dir(quick_config("medium", dataset="digits", qat_epochs=3), digits, qat=True)
            != training.model_dir(base, digits, qat=True))


@pytest.mark.fashion_mnist
def test_the_qat_model_fine_tunes_the_float_weights_with_fake_quantization(quick_variants, fashion):
    config = quick_config("medium")
    qat = training.train_qat(config, fashion)
    kinds = {type(layer).__name__ for layer in qat.model.layers}
    assert {"QuantizeLayer", "QuantizeWrapperV2"} <= kinds
    ranges = {w.name: float(w.numpy()) for w in qat.model.weights
              if w.name.endswith(("_min:0", "_max:0")) and w.shape == ()}
    assert ranges and all(np.isfinite(v) for v in ranges.values())
    # ranges were learned from data, not left at tfmot's initial +-6
    assert any(abs(abs(v) - 6.0) > 0.1 for v in ranges.values())
    assert qat.info["stage"] == "qat" and qat.info["test_accuracy"] > 0.75


@pytest.mark.parametrize("change, message", [
    (dict(epochs=0), "epochs must be at least 1"),
    (dict(limit=3), "too small"),
    (dict(validation_split=1.5), "validation split"),
])
def test_bad_training_settings_are_refused(change, message):
    with pytest.raises(QuantlabError, match=message):
        quick_config("medium", **change)


def test_importing_quantlab_and_its_plugin_does_not_import_tensorflow():
    code = ("import sys, quantlab, quantlab.pytest_plugin, quantlab.cli, quantlab.datasets, "
            "quantlab.nets, quantlab.training, quantlab.variants, quantlab.runtime, "
            "quantlab.counters; print([m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'tf_keras', 'keras', 'ai_edge_litert')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
