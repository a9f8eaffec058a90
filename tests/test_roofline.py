import json
import struct

import numpy as np
import pytest

from quantlab import machine, macs, nets, roofline
from quantlab.errors import QuantlabError

FASHION = ((28, 28, 1), 10)

# --- bytes moved, counted by hand from the P17 layer lists (28x28x1 input, 10 classes) ---------
# weights, biases, activation elements per image (input, each conv/pool/fc output, logits, softmax)

DENSE = dict(
    weights=5 * 5 * 1 * 32 + 14 * 14 * 32 * 512 + 512 * 1024 + 1024 * 10,
    biases=32 + 512 + 1024 + 10,
    activations=28 * 28 + 28 * 28 * 32 + 14 * 14 * 32 + 512 + 1024 + 10 + 10,
)
MEDIUM = dict(
    weights=5 * 5 * 1 * 32 + 5 * 5 * 32 * 64 + 7 * 7 * 64 * 1024 + 1024 * 10,
    biases=32 + 64 + 1024 + 10,
    activations=(28 * 28 + 28 * 28 * 32 + 14 * 14 * 32 + 14 * 14 * 64 + 7 * 7 * 64 + 1024
                 + 10 + 10),
)
CONV = dict(
    weights=2 * 2 * 1 * 32 + 2 * 2 * 32 * 128 + 2 * 2 * 128 * 256 + 3 * 3 * 256 * 256 + 256 * 10,
    biases=32 + 128 + 256 + 256 + 10,
    activations=(28 * 28 + 28 * 28 * 32 + 14 * 14 * 32 + 14 * 14 * 128 + 7 * 7 * 128
                 + 7 * 7 * 256 + 3 * 3 * 256 + 256 + 10 + 10),
)
BY_HAND = {"dense": DENSE, "medium": MEDIUM, "conv": CONV}


def test_hand_counts_are_the_p17_layer_sizes():
    assert DENSE == {"weights": 3_746_592, "biases": 1578, "activations": 33_700}
    assert MEDIUM == {"weights": 3_273_504, "biases": 1130, "activations": 48_868}
    assert CONV == {"weights": 739_968, "biases": 682, "activations": 78_628}


@pytest.mark.parametrize("net", ["dense", "medium", "conv"])
@pytest.mark.parametrize("variant, weight, activation", [
    ("float32", 4, 4), ("float32_tf", 4, 4),
    ("float16", 4, 4),        # unpacked to float32 by XNNPACK before the first inference
    ("dynamic_int8", 1, 4), ("int8", 1, 1), ("qat_int8", 1, 1),
])
def test_each_net_moves_its_hand_counted_bytes_in_each_variant(net, variant, weight, activation):
    hand = BY_HAND[net]
    moved = roofline.traffic(net, variant, *FASHION, batch_size=1)
    assert moved["weight_bytes"] == hand["weights"] * weight + hand["biases"] * 4
    assert moved["activation_bytes"] == hand["activations"] * activation
    assert moved["bytes"] == moved["weight_bytes"] + moved["activation_bytes"]


def test_bf16_moves_two_bytes_per_weight_bias_and_activation():
    moved = roofline.traffic("medium", "float32", *FASHION, batch_size=1, arithmetic="bf16")
    assert moved["bytes"] == 2 * (MEDIUM["weights"] + MEDIUM["biases"] + MEDIUM["activations"])
    assert moved["weight_type"] == "bf16"


def test_the_dense_net_streams_about_15_mb_of_float32_and_3_8_mb_of_int8_weights_per_image():
    assert roofline.traffic("dense", "float32", *FASHION)["weight_bytes"] == pytest.approx(15.0e6, rel=0.01)
    assert roofline.traffic("dense", "int8", *FASHION)["weight_bytes"] == pytest.approx(3.75e6, rel=0.01)


def test_weights_move_once_per_batch_and_activations_once_per_image():
    one = roofline.traffic("dense", "int8", *FASHION, batch_size=1)
    many = roofline.traffic("dense", "int8", *FASHION, batch_size=64)
    assert many["bytes"] == one["weight_bytes"] + 64 * one["activation_bytes"]
    assert many["bytes_per_image"] == many["bytes"] / 64
    macs = 28 * 28 * 25 * 32 + DENSE["weights"] - 800  # conv MACs + FC MACs (= FC weights)
    assert many["macs_per_image"] == macs
    assert many["intensity"] == pytest.approx(64 * macs / many["bytes"])
    assert one["intensity"] == pytest.approx(macs / (DENSE["weights"] + 4 * DENSE["biases"]
                                                     + DENSE["activations"]))


def test_an_unknown_variant_or_batch_is_refused_in_one_line():
    with pytest.raises(QuantlabError, match="no storage types known for variant 'int4'"):
        roofline.traffic("dense", "int4", *FASHION)
    with pytest.raises(QuantlabError, match="batch size must be at least 1"):
        roofline.traffic("dense", "int8", *FASHION, batch_size=0)


# --- ceilings and bounds, from fixed measurements ------------------------------------------------

def _cpu(*flags, mhz=2100.0, caches=None):
    return {"model": "test", "logical_cores": 2, "available_cores": 2, "mhz": mhz,
            "flags": {f: f in flags for f in machine.FLAGS},
            "caches": caches or {"l1d": 48 * 1024, "l2": 1 << 20, "l3": 32 << 20}}


ZEN = _cpu("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16")
SAPPHIRE = _cpu("avx2", "fma", "avx512f", "avx512_vnni", "amx_int8", "amx_bf16", "avx512_bf16",
                caches={"l1d": 48 * 1024, "l2": 2 << 20, "l3": 105 << 20})
LAPTOP = _cpu("avx2", "fma", caches={"l1d": 32 * 1024, "l2": 256 * 1024, "l3": 4 << 20})
CLOCK = {"measured": True, "ghz": 4.0}
BANDWIDTH = {"measured": True, "levels": {
    "l1d": {"bytes_per_second": 500e9}, "l2": {"bytes_per_second": 250e9},
    "llc": {"bytes_per_second": 120e9}, "dram": {"bytes_per_second": 40e9}}}


def test_ceilings_are_the_units_peaks_at_the_measured_clock_and_the_measured_bandwidths():
    found = roofline.ceilings(CLOCK, BANDWIDTH, SAPPHIRE)
    assert found["ghz"] == 4.0 and found["clock"] == "measured" and found["peaks"] == "derived"
    assert all(c["source"] == "derived" and c["description"].startswith("derived from the ISA")
               for c in found["compute"])
    assert {c["name"]: c["macs_per_second"] for c in found["compute"]} == {
        "fp32 FMA AVX-512": 32 * 4e9,
        "int8 AMX": 1024 * 4e9, "int8 AVX-512 VNNI": 128 * 4e9,   # matrix unit, then vector
        "bf16 AMX": 512 * 4e9, "bf16 AVX-512": 64 * 4e9,
    }
    assert [(m["level"], m["capacity"]) for m in found["memory"]] == [
        ("l1d", 48 * 1024), ("l2", 2 << 20), ("llc", 105 << 20), ("dram", None)]


def test_without_a_measured_clock_the_peaks_use_the_nominal_one_and_say_so():
    found = roofline.ceilings({"measured": False, "ghz": None, "reason": "no snippet"}, BANDWIDTH, LAPTOP)
    assert (found["clock"], found["ghz"]) == ("nominal", 2.1)
    # no VNNI, no bf16 on P17's laptop: AVX2 lines only
    assert [c["name"] for c in found["compute"]] == ["fp32 FMA AVX2", "int8 AVX2"]


# What quantlab.peaks measured on one core of a Zen 4 (16 fp32, 64 int8, 32 bf16 MACs a
# cycle at 3.6 GHz) and of a Sapphire Rapids (no AMX loop: its tiles stay derived)
ZEN4_PEAKS = {"measured": True, "units": {
    "avx512f": {"dtype": "float32", "instruction": "vfmadd231ps zmm", "macs_per_second": 57.6e9},
    "avx512_vnni": {"dtype": "int8", "instruction": "vpdpbusd zmm", "macs_per_second": 230.4e9},
    "avx512_bf16": {"dtype": "bf16", "instruction": "vdpbf16ps zmm", "macs_per_second": 115.2e9}}}
ZEN4 = _cpu("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", mhz=2600.0)
CLOCK_36 = {"measured": True, "ghz": 3.6}


def test_measured_peaks_are_the_compute_ceilings_and_each_says_where_it_came_from():
    found = roofline.ceilings(CLOCK_36, BANDWIDTH, ZEN4, threads=2, peaks=ZEN4_PEAKS)
    assert found["peaks"] == "measured"
    assert {c["name"]: c["macs_per_second"] for c in found["compute"]} == {
        "fp32 FMA AVX-512": 2 * 57.6e9, "int8 AVX-512 VNNI": 2 * 230.4e9, "bf16 AVX-512": 2 * 115.2e9}
    fp32 = found["compute"][0]
    assert (fp32["source"], fp32["description"]) == (
        "measured", "vfmadd231ps zmm measured on one core, 57.6 GMAC/s x 2 cores")
    # half of what the ISA flags suggest: two full-width FMA ports at 3.6 GHz
    derived = roofline.ceilings(CLOCK_36, BANDWIDTH, ZEN4, threads=2)
    assert derived["compute"][0]["macs_per_second"] == 2 * fp32["macs_per_second"] == 2 * 32 * 3.6e9


def test_amx_is_not_measured_so_its_ceiling_stays_derived_beside_the_measured_vector_one():
    found = roofline.ceilings(CLOCK, BANDWIDTH, SAPPHIRE, peaks=ZEN4_PEAKS)
    assert found["peaks"] == "measured and derived"
    by_unit = {c["unit"]: (c["source"], c["macs_per_second"]) for c in found["compute"]}
    assert by_unit["amx_int8"] == ("derived", 1024 * 4e9)
    assert by_unit["avx512_vnni"] == ("measured", 230.4e9)


def test_a_compute_bound_case_is_rated_against_the_measured_peak_and_the_finding_says_so():
    found = roofline.ceilings(CLOCK, BANDWIDTH, ZEN, peaks=ZEN4_PEAKS)
    # conv int8, batch 64: 64 x 10 326 528 MACs in 4 ms = 165.2 GMAC/s of 230.4 measured
    result = roofline.bound(_point("conv", "int8", 64, 4e-3), found)
    assert result["bound"] == "compute" and result["attainable"] == 230.4e9
    assert result["fraction"] == pytest.approx(165.224448e9 / 230.4e9)
    assert roofline.bound(_point("conv", "int8", 64, 4e-3),
                          roofline.ceilings(CLOCK, BANDWIDTH, ZEN))["fraction"] == pytest.approx(
        165.224448e9 / (128 * 4e9))
    line = roofline.findings([_point("conv", "int8", 64, 4e-3)], found, variants=("int8",))["conv"]
    assert "bound by the int8 AVX-512 VNNI peak (230 GMAC/s, measured)" in line


# What LiteRT reports it executed (runtime.load(...).precision): int8 kernels for these.
EXECUTED = {"int8": "int8", "qat_int8": "int8", "dynamic_int8": "int8", "onnx_int8": "int8"}


def _point(net, variant, batch, median, arithmetic=None, runtime="litert", **extra):
    from quantlab import macs

    return {"net": net, "variant": variant, "runtime": runtime, "batch_size": batch,
            "median": median, "macs_per_image": macs.macs_per_image(net, *FASHION),
            "arithmetic": arithmetic or EXECUTED.get(variant, "float32"), "input_shape": [28, 28, 1],
            "num_classes": 10, **extra}


def test_dense_at_batch_1_is_bound_by_the_bandwidth_of_the_cache_its_weights_fit_in():
    found = roofline.ceilings(CLOCK, BANDWIDTH, ZEN)
    for variant in ("float32", "int8"):
        result = roofline.bound(_point("dense", variant, 1, 0.25e-3), found)
        assert result["bound"] == "llc" and result["ceiling"] == "LLC bandwidth"
        assert result["attainable"] == pytest.approx(result["traffic"]["intensity"] * 120e9)
    result = roofline.bound(_point("dense", "float32", 1, 0.25e-3), found)
    # 4 372 992 MACs in 0.25 ms = 17.5 GMAC/s under 0.289 MAC/B x 120 GB/s = 34.7 GMAC/s
    assert result["achieved"] == pytest.approx(4_372_992 / 0.25e-3)
    assert result["fraction"] == pytest.approx(17.49e9 / 34.69e9, rel=1e-3)


def test_on_p17s_laptop_the_15_mb_of_dense_float32_weights_come_from_dram():
    found = roofline.ceilings(CLOCK, BANDWIDTH, LAPTOP)
    assert roofline.bound(_point("dense", "float32", 1, 1e-3), found)["bound"] == "dram"


def test_conv_int8_at_batch_64_is_compute_bound_under_the_widest_int8_unit_or_the_one_its_kernel_uses():
    found = roofline.ceilings(CLOCK, BANDWIDTH, SAPPHIRE)
    plain = roofline.bound(_point("conv", "int8", 64, 2e-3), found)
    assert plain["bound"] == "compute" and plain["ceiling"] == "int8 AMX peak"
    vnni = roofline.bound(_point("conv", "int8", 64, 2e-3, kernel_isa="AVX-512 VNNI"), found)
    assert vnni["ceiling"] == "int8 AVX-512 VNNI peak" and vnni["attainable"] == 128 * 4e9


def test_without_measured_bandwidths_only_the_compute_peak_bounds_a_point():
    found = roofline.ceilings(CLOCK, {"measured": False, "reason": "no snippet", "levels": {}}, ZEN)
    assert found["memory"] == []
    result = roofline.bound(_point("dense", "float32", 1, 0.25e-3), found)
    assert (result["bound"], result["memory"], result["attainable"]) == ("compute", None, 32 * 4e9)


def test_the_finding_for_dense_says_what_bounds_it_in_words_and_numbers():
    found = roofline.ceilings(CLOCK, BANDWIDTH, ZEN)
    points = [_point("dense", "float32", 1, 0.25e-3), _point("dense", "int8", 1, 0.06e-3),
              _point("dense", "float32", 64, 8e-3), _point("dense", "int8", 64, 2e-3),
              _point("dense", "float16", 1, 0.25e-3),                   # not in the finding
              _point("dense", "int8", 1, 0.01e-3, runtime="openvino")]  # another runtime
    lines = roofline.findings(points, found)
    assert list(lines) == ["dense"]
    line = lines["dense"]
    assert line.startswith("dense, batch 1: float32 (litert) streams 15.0 MB of float32 weights "
                           "per image (0.29 MAC/B): bound by LLC bandwidth (120 GB/s, ceiling 35 GMAC/s), "
                           "achieved 17 GMAC/s (50%); int8 (litert) streams 3.8 MB of int8 weights")
    assert "| batch 64: float32 (litert) streams 0.2 MB of float32 weights per image (11.85 MAC/B): " \
           "bound by the fp32 FMA AVX-512 peak (128 GMAC/s, derived from the ISA)" in line
    assert "float16" not in line and "openvino" not in line and "\n" not in line
    # ceilings made by hand, which need not say where a peak came from, are named without it
    bare = {**found, "compute": [{k: v for k, v in c.items() if k != "source"} for c in found["compute"]]}
    assert "bound by the fp32 FMA AVX-512 peak (128 GMAC/s), achieved" in roofline.findings(points, bare)["dense"]
    assert "openvino" in roofline.findings(points, found, runtime="openvino")["dense"]


# --- the plot ------------------------------------------------------------------------------------

def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])  # IHDR width, height


def test_the_roofline_plot_is_a_png_with_one_panel_per_runtime(tmp_path):
    found = roofline.ceilings(CLOCK, BANDWIDTH, SAPPHIRE)
    points = [_point(net, variant, batch, 1e-4 * batch, runtime=runtime)
              for net in ("dense", "medium", "conv") for variant in ("float32", "int8")
              for batch in (1, 16, 64) for runtime in ("litert", "openvino")]
    points.append(_point("medium", "float32", 1, 1e-4, arithmetic="bf16", runtime="openvino"))
    two = roofline.plot(points, found, tmp_path / "two" / "roofline.png")
    one = roofline.plot([p for p in points if p["runtime"] == "litert"], found,
                        tmp_path / "one" / "roofline.png")
    assert _png_size(two)[0] > 1.5 * _png_size(one)[0]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["roofline.png"] * 2
    assert roofline.plot([{**points[0], "median": None}], found, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_a_studys_roofline_summary_is_json_with_its_plot_beside_it(tmp_path):
    flags = {flag: True for flag in machine.FLAGS}  # the latency suite's extra_info["isa"]
    points = [_point("dense", "float32", 1, 0.25e-3, isa=flags), _point("dense", "int8", 64, 2e-3),
              _point("conv", "int8", 1, 0.03e-3, runtime="openvino"),
              {**_point("dense", "int8", 1, 1e-4), "net": "mine", "macs_per_image": None}]
    summary = roofline.summarize(points, CLOCK, BANDWIDTH, tmp_path, info=ZEN)
    assert summary["plot"] == "roofline.png" and (tmp_path / "roofline.png").is_file()
    assert [(c["net"], c["runtime"], c["bound"]) for c in summary["cases"]] == [
        ("dense", "litert", "llc"), ("dense", "litert", "compute"), ("conv", "openvino", "compute")]
    assert set(summary["findings"]) == {"litert", "openvino"}
    assert summary["findings"]["openvino"]["conv"].startswith("conv, batch 1: int8 (openvino)")
    assert json.loads(json.dumps(summary)) == summary
    assert summary["ceilings"]["peaks"] == "derived"
    measured = roofline.summarize(points, CLOCK, BANDWIDTH, tmp_path, info=ZEN, peaks=ZEN4_PEAKS)
    assert measured["ceilings"]["peaks"] == "measured"
    assert measured["cases"][1]["attainable"] == 230.4e9  # dense int8 batch 64: compute-bound


def test_the_newer_int8_files_are_placed_and_16x8_and_mixed_models_are_left_off(tmp_path):
    """Per-tensor, ONNX per-tensor and NNCF files move int8 like int8; a 16x8 file runs on
    LiteRT's reference kernels (no ceiling of theirs is measured) and a mixed model moves
    int8 and float layers at once, so neither gets a bound that would mean nothing."""
    points = [_point("dense", variant, 1, 1e-4) for variant in
              ("int8", "int8_per_tensor", "onnx_int8_per_tensor", "openvino_int8")]
    points += [{**_point("dense", "int8", 1, 1e-3), "variant": "int16x8", "arithmetic": "int16x8"},
               {**_point("dense", "int8", 1, 1e-4), "variant": "int8_mixed"}]
    summary = roofline.summarize(points, CLOCK, BANDWIDTH, tmp_path, info=ZEN)
    placed = [case["variant"] for case in summary["cases"]]
    assert placed == ["int8", "int8_per_tensor", "onnx_int8_per_tensor", "openvino_int8"]
    assert len({case["bytes"] for case in summary["cases"]}) == 1


FUSED_OR_MOVING_NOTHING = ("BatchNormalization", "ReLU", "Reshape", "Concatenate")


@pytest.mark.parametrize("net", nets.MODERN)
@pytest.mark.parametrize("shape", [(28, 28, 1), (8, 8, 1)])
def test_the_modern_nets_sizes_are_the_built_models_with_batch_norm_folded(net, shape):
    """Counted from the built Keras model, not the plan: its parameters less batch norm's
    three folded away per channel (scale, mean and variance go into the kernel and bias),
    and the output of every layer that writes a tensor once batch norm and ReLU6 are fused
    into the convolution before them, plus the softmax the exports append."""
    model = nets.build(net, shape, 10)
    batch_norm = sum(layer.output_shape[-1] for layer in model.layers
                     if type(layer).__name__ == "BatchNormalization")
    written = sum(np.prod(_shape(layer)[1:]) for layer in model.layers
                  if type(layer).__name__ not in FUSED_OR_MOVING_NOTHING)
    weights, biases, activations = roofline.layer_sizes(net, shape, 10)
    assert weights + biases == model.count_params() - 3 * batch_norm
    assert activations == written + 10


def _shape(layer):
    shape = layer.output_shape
    return shape[0] if isinstance(shape, list) else shape


def test_the_roofline_places_the_modern_nets_beside_p17s():
    """Their MACs and bytes give an intensity (the roofline used to skip them)."""
    for net in nets.MODERN:
        moved = roofline.traffic(net, "int8", (28, 28, 1), 10)
        assert moved["macs_per_image"] == macs.macs_per_image(net, (28, 28, 1), 10)
        assert moved["intensity"] == moved["macs_per_image"] / moved["bytes"]
