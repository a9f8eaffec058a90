from pathlib import Path

import pytest

from quantlab import machine, macs, nets

# --- cpu_info ------------------------------------------------------------------------------

def test_cpu_info_reads_this_machines_model_cores_clock_and_flags_from_proc_cpuinfo():
    info = machine.cpu_info()
    listed = next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith(("flags", "Features"))).split(":", 1)[1].split()
    assert info["model"] and info["model"] != "unknown"
    assert 1 <= info["available_cores"] <= info["logical_cores"]
    assert info["mhz"] > 0
    assert set(info["flags"]) == set(machine.FLAGS)
    for flag, present in info["flags"].items():
        assert present is (flag in listed)


def test_cpu_info_finds_avx2_on_this_machine():
    # The CI and development machines are AVX-512 Xeons; XNNPACK's x86 kernels need AVX2.
    assert machine.cpu_info()["flags"]["avx2"] is True


def test_cpu_info_parses_the_first_processor_and_sysfs_cache_sizes(tmp_path):
    block = ("processor\t: {n}\nmodel name\t: Intel(R) Core(TM) i7-6500U CPU @ 2.50GHz\n"
             "cpu MHz\t\t: 2592.000\nflags\t\t: fpu sse2 avx fma avx2\n\n")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(block.format(n=0) + block.format(n=1))
    for index, (level, kind, size) in enumerate([(1, "Data", "32K"), (1, "Instruction", "32K"),
                                                 (2, "Unified", "256K"), (3, "Unified", "4096K")]):
        folder = tmp_path / "cpu" / "cpu0" / "cache" / f"index{index}"
        folder.mkdir(parents=True)
        for name, value in (("level", level), ("type", kind), ("size", size)):
            (folder / name).write_text(f"{value}\n")
    info = machine.cpu_info(cpuinfo, tmp_path / "cpu")
    assert info["model"] == "Intel(R) Core(TM) i7-6500U CPU @ 2.50GHz"
    assert info["mhz"] == 2592.0
    assert info["flags"]["avx2"] and info["flags"]["fma"]
    assert not info["flags"]["avx512f"] and not info["flags"]["amx_int8"]
    assert info["caches"] == {"l1d": 32 * 1024, "l2": 256 * 1024, "l3": 4 * 1024 * 1024}


# --- nominal peaks ---------------------------------------------------------------------------

def _cpu(*flags, mhz=2000.0, cores=4):
    return {"model": "test", "logical_cores": cores, "available_cores": cores, "mhz": mhz,
            "flags": {f: f in flags for f in machine.FLAGS}, "caches": {}}


def test_peaks_follow_the_widest_multiply_accumulate_of_each_isa():
    per_cycle = {
        ("avx2", "fma"): (16, 32),
        ("avx2", "fma", "avx512f"): (32, 32),
        ("avx2", "fma", "avx512f", "avx512_vnni"): (32, 128),
        ("avx2", "fma", "avx512f", "avx512_vnni", "amx_int8"): (32, 1024),
    }
    for flags, (fp32, int8) in per_cycle.items():
        cpu = _cpu(*flags)
        assert machine.peak_macs_per_second("float32", 1, cpu).macs_per_cycle_per_core == fp32
        assert machine.peak_macs_per_second("int8", 1, cpu).macs_per_cycle_per_core == int8


def test_a_vnni_machine_has_four_times_the_float32_peak_in_int8():
    cpu = _cpu("avx2", "fma", "avx512f", "avx512_vnni")
    int8 = machine.peak_macs_per_second("int8", 1, cpu)
    fp32 = machine.peak_macs_per_second("float32", 1, cpu)
    assert int8.macs_per_second == 4 * fp32.macs_per_second == 4 * 32 * 2e9


def test_peak_scales_with_threads_up_to_the_available_cores_and_names_its_assumptions():
    cpu = _cpu("avx2", "fma", cores=4)
    one, two, many = (machine.peak_macs_per_second("float32", t, cpu) for t in (1, 2, 64))
    assert two.macs_per_second == 2 * one.macs_per_second
    assert many.cores == 4
    assert "nominal" in one.description and "2.00 GHz" in one.description


def test_float16_is_computed_as_float32_unless_the_cpu_has_avx512_fp16():
    plain = _cpu("avx2", "fma", "avx512f")
    assert (machine.peak_macs_per_second("float16", 1, plain).macs_per_second
            == machine.peak_macs_per_second("float32", 1, plain).macs_per_second)
    native = _cpu("avx2", "fma", "avx512f", "avx512_fp16")
    assert machine.peak_macs_per_second("float16", 1, native).macs_per_cycle_per_core == 64


def test_this_machines_int8_peak_exceeds_its_float32_peak():
    assert (machine.peak_macs_per_second("int8").macs_per_second
            > machine.peak_macs_per_second("float32").macs_per_second)


def test_an_unknown_clock_gives_no_peak_rather_than_a_wrong_one():
    assert machine.peak_macs_per_second("int8", 1, _cpu("avx2", mhz=None)).macs_per_second is None


def test_a_measured_clock_replaces_the_nominal_one_and_the_description_says_so():
    cpu = _cpu("avx2", "fma", "avx512f", "avx512_vnni", mhz=2100.0)
    peak = machine.peak_macs_per_second("int8", 1, cpu, ghz=4.0)
    assert peak.macs_per_second == 128 * 4.0e9 and peak.ghz == 4.0
    assert "4.00 GHz (measured)" in peak.description
    assert "2.10 GHz (nominal)" in machine.peak_macs_per_second("int8", 1, cpu).description


# What quantlab.peaks measured on one core of a Zen 4 at 3.6 GHz: 16 fp32 and 64 int8 MACs a
# cycle, half of what two full-width ports would retire
ZEN4_PEAKS = {"measured": True, "units": {
    "avx512f": {"dtype": "float32", "instruction": "vfmadd231ps zmm", "macs_per_second": 57.6e9},
    "avx512_vnni": {"dtype": "int8", "instruction": "vpdpbusd zmm", "macs_per_second": 230.4e9}}}


def test_a_measured_peak_replaces_the_derived_one_and_the_description_says_so():
    cpu = _cpu("avx2", "fma", "avx512f", "avx512_vnni", mhz=2600.0, cores=2)
    derived = machine.peak_macs_per_second("float32", 2, cpu, ghz=3.6)
    measured = machine.peak_macs_per_second("float32", 2, cpu, ghz=3.6, measured=ZEN4_PEAKS)
    assert derived.macs_per_second == 32 * 2 * 3.6e9
    assert measured.macs_per_second == 2 * 57.6e9 == derived.macs_per_second / 2
    assert measured.macs_per_cycle_per_core == pytest.approx(16)
    assert measured.description == ("float32: vfmadd231ps zmm measured on one core, 57.6 GMAC/s "
                                    "x 2 cores (measured peak)")
    int8 = machine.peak_macs_per_second("int8", 1, cpu, ghz=3.6, measured=ZEN4_PEAKS)
    assert int8.macs_per_second == 230.4e9 and int8.macs_per_cycle_per_core == pytest.approx(64)
    # without a clock there is no per-cycle figure, but the measured rate stands
    assert machine.peak_macs_per_second("int8", 1, _cpu("avx512_vnni", mhz=None),
                                        measured=ZEN4_PEAKS)[:2] == (230.4e9, None)


def test_a_unit_that_was_not_measured_keeps_its_derived_peak():
    amx = _cpu("avx2", "fma", "avx512f", "avx512_vnni", "amx_int8", mhz=2000.0)
    peak = machine.peak_macs_per_second("int8", 1, amx, ghz=4.0, measured=ZEN4_PEAKS)
    assert peak.macs_per_second == 1024 * 4e9 and "AMX" in peak.description
    assert "measured peak" not in peak.description
    # bf16 data on a CPU without bf16 arithmetic is multiplied, and measured, as float32
    plain = _cpu("avx2", "fma", "avx512f")
    assert machine.peak_macs_per_second("bf16", 1, plain, measured=ZEN4_PEAKS).macs_per_second == 57.6e9


def test_compute_units_list_every_unit_for_a_type_widest_first():
    cpu = _cpu("avx2", "fma", "avx512f", "avx512_vnni", "amx_int8", "amx_bf16", "avx512_bf16")
    assert [u.name for u in machine.compute_units("int8", cpu["flags"])] == [
        "amx_int8", "avx512_vnni", "avx2", "sse"]
    assert [u.name for u in machine.compute_units("bf16", cpu["flags"])][:3] == [
        "amx_bf16", "avx512_bf16", "avx512f"]
    # without native bf16 arithmetic, bf16 data is multiplied as float32
    plain = _cpu("avx2", "fma")
    assert machine.peak_macs_per_second("bf16", 1, plain).macs_per_cycle_per_core == 16


def test_an_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="float32, float16, int8"):
        machine.peak_macs_per_second("bfloat16")


# --- MAC counts ---------------------------------------------------------------------------------

def test_medium_on_fashion_mnist_costs_the_hand_counted_macs():
    conv1 = 28 * 28 * (5 * 5 * 1) * 32      # same padding: output 28x28
    conv2 = 14 * 14 * (5 * 5 * 32) * 64     # after 2x2 pool
    fc = 7 * 7 * 64 * 1024                  # flatten after the second pool
    logits = 1024 * 10
    assert macs.macs_per_image("medium", (28, 28, 1), 10) == conv1 + conv2 + fc + logits == 13_883_904


def test_dense_and_conv_on_cifar_shapes_cost_the_hand_counted_macs():
    dense = 32 * 32 * 25 * 3 * 32 + 16 * 16 * 32 * 512 + 512 * 1024 + 1024 * 10
    conv = (32 * 32 * 4 * 3 * 32 + 16 * 16 * 4 * 32 * 128 + 8 * 8 * 4 * 128 * 256
            + 4 * 4 * 256 * 256 + 256 * 10)
    assert macs.macs_per_image("dense", (32, 32, 3), 10) == dense
    assert macs.macs_per_image("conv", (32, 32, 3), 10) == conv


def test_odd_sizes_are_floored_by_each_pool_like_keras():
    # conv's third pool takes 7x7 to 3x3, as Keras' 2x2 max pool with valid padding does
    assert macs.macs_per_image("conv", (28, 28, 1), 10) == (
        28 * 28 * 4 * 32 + 14 * 14 * 4 * 32 * 128 + 7 * 7 * 4 * 128 * 256 + 3 * 3 * 256 * 256 + 2560)


def test_every_net_costs_multiply_accumulates():
    for net in nets.NAMES:
        assert macs.macs_per_image(net, (28, 28, 1), 10) > 0
