"""Shared fixtures: real data and quick-trained nets, built once per session.

Trained models and exported variants are cached on disk keyed by their configuration
(``QUANTLAB_CACHE``), so only the first session on a machine pays for training. The test
cache lives apart from the user's own cache unless ``QUANTLAB_CACHE`` is set.
"""

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("QUANTLAB_CACHE", str(Path(tempfile.gettempdir()) / "quantlab-test-cache"))

# Quick training, shared with the benchmark suite so that both use the same cached nets.
from quantlab.defaults import QUICK_TRAINING as QUICK  # noqa: E402


def pytest_collection_modifyitems(items):
    """Every test that needs the real Fashion-MNIST says so (``-m "not fashion_mnist"``
    deselects them on a machine without the Debian package): any test that uses the
    ``fashion`` fixture, directly or through the nets trained on it, gets the marker."""
    for item in items:
        if "fashion" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.fashion_mnist)


@pytest.fixture(scope="session")
def fashion():
    """Real Fashion-MNIST from Debian's dataset-fashion-mnist package (fails with the hint)."""
    from quantlab import datasets

    return datasets.load("fashion_mnist")


@pytest.fixture(scope="session")
def digits():
    from quantlab import datasets

    return datasets.load("digits")


def quick_config(net, dataset="fashion_mnist", **overrides):
    from quantlab.training import TrainConfig

    return TrainConfig(net=net, dataset=dataset, **{**QUICK, **overrides})


@pytest.fixture(scope="session")
def quick_variants(fashion):
    """{net: {variant: Artifact}} for all three nets, quick-trained on Fashion-MNIST."""
    from quantlab import nets, variants

    return {net: variants.export(quick_config(net), data=fashion) for net in nets.NAMES}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """A float32 and a full-int8 .tflite of one tiny net (8x8x1 -> conv 4 -> dense 10)."""
    import numpy as np

    from quantlab import variants
    from quantlab._tf import keras

    keras = keras()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.layers.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    samples = np.random.default_rng(1).random((32, 8, 8, 1), dtype=np.float32)
    folder = tmp_path_factory.mktemp("tiny_models")
    paths = {}
    for variant in ("float32", "int8"):
        paths[variant] = folder / f"tiny_{variant}.tflite"
        paths[variant].write_bytes(variants.tflite_converter(model, variant, samples).convert())
    return paths
