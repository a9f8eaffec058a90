import json
import shutil

import numpy as np
import pytest

from conftest import QAT_NETS, quick_config
from quantlab import cache, evaluate, nets, runtime, variants
from quantlab.errors import QuantlabError

pytestmark = pytest.mark.fashion_mnist


SCORED = 2000  # test images, as the quick study scores: the paired changes hold on a fifth
SCORED_VARIANTS = ("float32", "float32_tf", "dynamic_int8", "float16", "int8", "qat_int8",
                   "onnx_float32", "onnx_int8")


@pytest.fixture(scope="module")
def comparisons(quick_variants, fashion):
    """{net: {variant: row}} on the first SCORED Fashion-MNIST test images, of the variants
    whose accuracy is checked here."""
    # Not int16x8: LiteRT runs it on reference kernels, minutes for 3 x 2000 images;
    # test_quantizers scores it and the other new quantizers (int16x8 on fewer).
    return {net: {row["variant"]: row for row in evaluate.accuracies(
                {v: a for v, a in artifacts.items() if v in SCORED_VARIANTS}, fashion, images=SCORED)}
            for net, artifacts in quick_variants.items()}


@pytest.mark.parametrize("net, least", [("dense", 3.9), ("medium", 3.9), ("conv", 3.7)])
def test_full_integer_variants_are_about_four_times_smaller(quick_variants, comparisons, net, least):
    rows = comparisons[net]
    for variant in ("int8", "dynamic_int8", *(("qat_int8",) if net in QAT_NETS else ())):
        assert rows[variant]["size_ratio"] >= least, variant
    assert all(row["size_ratio"] < 4.05 for row in rows.values())
    float32 = quick_variants[net]["float32"].bytes  # and the variants not scored here
    assert all(float32 / a.bytes < 4.05 for a in quick_variants[net].values()), net


@pytest.mark.parametrize("net", nets.NAMES)
def test_float16_is_half_the_size_and_the_float_exports_are_as_large_as_tflite_float32(comparisons, net):
    rows = comparisons[net]
    assert 1.9 <= rows["float16"]["size_ratio"] <= 2.02
    assert rows["float32_tf"]["size_ratio"] == pytest.approx(1.0, abs=0.03)
    assert rows["onnx_float32"]["size_ratio"] == pytest.approx(1.0, abs=0.03)
    assert 3.7 <= rows["onnx_int8"]["size_ratio"] < 4.05


@pytest.mark.parametrize("net", nets.NAMES)
def test_full_integer_variants_keep_accuracy_and_agree_with_float32(comparisons, net):
    for variant in ("int8", *(("qat_int8",) if net in QAT_NETS else ())):
        row = comparisons[net][variant]
        assert abs(row["delta_points"]) <= 1.5, row
        assert row["agreement"] >= 0.97, row
        assert row["test_images"] == SCORED
        assert row["max_abs_diff"] > 1e-3, row  # really quantized, not the float32 file again


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
            meta = json.loads((artifact.path.parent / f"{variant}.json").read_text())
            assert meta == artifact.meta
            assert (meta["net"], meta["variant"], meta["dataset"]) == (net, variant, "fashion_mnist")
            assert meta["sha256"] == cache.sha256_of(artifact.path)
            assert meta["bytes"] == artifact.path.stat().st_size
            assert meta["versions"]["tensorflow"].startswith("2.21")
            assert meta["versions"]["ai-edge-litert"]
            full_integer = variant in ("int8", "qat_int8", "int8_per_tensor")
            calibrated = full_integer or variant in ("onnx_int8", "onnx_int8_per_tensor",
                                                     "openvino_int8", "int16x8")
            assert (meta["calibration_size"] == variants.CALIBRATION_SIZE) == calibrated
            assert meta["format"] == {".pb": "graphdef", ".onnx": "onnx", ".tflite": "tflite",
                                    ".ovir": "openvino"}[artifact.path.suffix]
            assert meta["execute_in"] == ("bf16" if variant == "bf16" else None)
            assert (meta["input_quantization"] is not None) == full_integer
            assert (meta["output_quantization"] is not None) == full_integer
            if full_integer:
                assert meta["output_quantization"] == [pytest.approx(1 / 256), -128]


def test_a_second_export_reuses_the_cached_artifacts(quick_variants, fashion):
    before = {v: a.path.stat().st_mtime_ns for v, a in quick_variants["conv"].items()}
    again = variants.export(quick_config("conv"), variants=tuple(quick_variants["conv"]), data=fashion)
    assert {v: a.path.stat().st_mtime_ns for v, a in again.items()} == before
    leftovers = [p for p in again["int8"].path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


@pytest.fixture(scope="module")
def digits_int8_cache(digits, tmp_path_factory):
    """A cache folder that holds a digits conv net and its int8 file, made once: each test
    below damages a copy of it."""
    folder = tmp_path_factory.mktemp("int8-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QUANTLAB_CACHE", str(folder))
        variants.export(quick_config("conv", dataset="digits", limit=None, epochs=1), variants=("int8",),
                        data=digits)
    return folder


@pytest.mark.parametrize("damage", ["truncated", "same size, other bytes", "sidecar truncated",
                                    "sidecar's size edited", "sidecar nested 100000 deep"])
def test_an_artifact_whose_bytes_changed_is_exported_again_with_a_notice(digits, digits_int8_cache, tmp_path,
                                                                          monkeypatch, damage):
    shutil.copytree(digits_int8_cache, tmp_path / "cache")
    monkeypatch.setenv("QUANTLAB_CACHE", str(tmp_path / "cache"))
    config = quick_config("conv", dataset="digits", limit=None, epochs=1)
    first = variants.export(config, variants=("int8",), data=digits)["int8"]
    assert str(first.path).startswith(str(tmp_path / "cache"))  # the copy's file, not the original
    content = first.path.read_bytes()
    if damage == "truncated":
        first.path.write_bytes(content[:100])
    elif damage == "same size, other bytes":
        first.path.write_bytes(content[:-64] + bytes(64))
    else:
        sidecar = first.path.with_suffix(".json")
        meta = json.loads(sidecar.read_text())
        sidecar.write_text(sidecar.read_text()[:40] if damage == "sidecar truncated" else
                           json.dumps({**meta, "bytes": 12345}) if "size" in damage else
                           "[" * 100_000 + "]" * 100_000)
    damaged = first.path.read_bytes()
    said = []
    again = variants.export(config, variants=("int8",), data=digits, progress=said.append)["int8"]
    assert again.path.read_bytes() == content != damaged or damage.startswith("sidecar")
    assert again.bytes == len(content)  # the size the report gives is the file's
    assert again.meta["sha256"] == cache.sha256_of(again.path)
    assert [line for line in said if "damaged or changed; exporting it again" in line]
    assert runtime.load(again.path).predict(digits.x_test[:3]).shape == (3, 10)


def test_a_change_to_the_code_that_makes_artifacts_changes_their_cache_key(digits, monkeypatch):
    config = quick_config("conv", dataset="digits")
    before = variants.export_dir(config, digits, variants.CALIBRATION_SIZE)

    def tflite_converter(model, variant, calibration):  # the same function, other settings
        return None

    monkeypatch.setattr(variants, "RECIPE", (*variants.RECIPE[:-1], tflite_converter))
    assert variants.export_dir(config, digits, variants.CALIBRATION_SIZE) != before


def test_an_unknown_variant_lists_the_valid_ones():
    with pytest.raises(QuantlabError, match="unknown variant 'int4'.*float32_tf, float32"):
        variants.check_variants(["int4"])
