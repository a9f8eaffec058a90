import json

import numpy as np
import pytest

from conftest import quick_config
from quantlab import cache, evaluate, nets, runtime, variants
from quantlab.errors import QuantlabError

pytestmark = pytest.mark.fashion_mnist


@pytest.fixture(scope="module")
def comparisons(quick_variants, fashion):
    """{net: {variant: row}} on the full Fashion-MNIST test split."""
    return {net: {row["variant"]: row for row in evaluate.compare(artifacts, fashion)}
            for net, artifacts in quick_variants.items()}


@pytest.mark.parametrize("net, least", [("dense", 3.9), ("medium", 3.9), ("conv", 3.7)])
def test_full_integer_variants_are_about_four_times_smaller(comparisons, net, least):
    rows = comparisons[net]
    assert rows["int8"]["size_ratio"] >= least
    assert rows["qat_int8"]["size_ratio"] >= least
    assert rows["dynamic_int8"]["size_ratio"] >= least
    assert all(row["size_ratio"] < 4.05 for row in rows.values())


@pytest.mark.parametrize("net", nets.NAMES)
def test_float16_is_half_the_size_and_the_frozen_graph_matches_tflite_float32(comparisons, net):
    rows = comparisons[net]
    assert 1.9 <= rows["float16"]["size_ratio"] <= 2.02
    assert rows["float32_tf"]["size_ratio"] == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("net", nets.NAMES)
def test_full_integer_variants_keep_accuracy_and_agree_with_float32(comparisons, net):
    for variant in ("int8", "qat_int8"):
        row = comparisons[net][variant]
        assert abs(row["delta_points"]) <= 1.5, row
        assert row["agreement"] >= 0.97, row
        assert row["test_images"] == 10000


@pytest.mark.parametrize("net", nets.NAMES)
def test_float16_and_dynamic_range_stay_within_half_a_point(comparisons, net):
    for variant in ("float16", "dynamic_int8"):
        assert abs(comparisons[net][variant]["delta_points"]) <= 0.5


@pytest.mark.parametrize("net", nets.NAMES)
def test_tflite_float32_and_the_frozen_graph_agree_to_1e_5(quick_variants, fashion, net):
    images = fashion.x_test[:1000]
    lite = runtime.load(quick_variants[net]["float32"].path).predict(images, batch_size=100)
    graph = runtime.load(quick_variants[net]["float32_tf"].path).predict(images, batch_size=100)
    np.testing.assert_allclose(lite, graph, atol=1e-5)


def test_every_artifact_has_a_sidecar_that_describes_it(quick_variants):
    for net, artifacts in quick_variants.items():
        for variant, artifact in artifacts.items():
            meta = json.loads(artifact.path.with_suffix(".json").read_text())
            assert meta == artifact.meta
            assert (meta["net"], meta["variant"], meta["dataset"]) == (net, variant, "fashion_mnist")
            assert meta["sha256"] == cache.sha256_of(artifact.path)
            assert meta["bytes"] == artifact.path.stat().st_size
            assert meta["versions"]["tensorflow"].startswith("2.21")
            assert meta["versions"]["ai-edge-litert"]
            full_integer = variant in ("int8", "qat_int8")
            assert (meta["calibration_size"] == variants.DEFAULT_CALIBRATION_SIZE) == full_integer
            assert (meta["input_quantization"] is not None) == full_integer
            assert (meta["output_quantization"] is not None) == full_integer
            if full_integer:
                assert meta["output_quantization"] == [pytest.approx(1 / 256), -128]


def test_a_second_export_reuses_the_cached_artifacts(quick_variants, fashion):
    before = {v: a.path.stat().st_mtime_ns for v, a in quick_variants["conv"].items()}
    again = variants.export(quick_config("conv"), data=fashion)
    assert {v: a.path.stat().st_mtime_ns for v, a in again.items()} == before
    leftovers = [p for p in again["int8"].path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_an_artifact_whose_file_changed_size_is_exported_again(fashion, digits, tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTLAB_CACHE", str(tmp_path))
    config = quick_config("conv", dataset="digits", limit=None, epochs=1)
    first = variants.export(config, variants=("float32",), data=digits)["float32"]
    first.path.write_bytes(first.path.read_bytes()[:100])  # a damaged file
    again = variants.export(config, variants=("float32",), data=digits)["float32"]
    assert again.path.stat().st_size == again.bytes > 100_000
    assert again.meta["sha256"] == cache.sha256_of(again.path)
    assert runtime.load(again.path).predict(digits.x_test[:3]).shape == (3, 10)


def test_an_unknown_variant_lists_the_valid_ones():
    with pytest.raises(QuantlabError, match="unknown variant 'int4'.*float32_tf, float32"):
        variants.check_variants(["int4"])
