import math
import platform
import shutil
import subprocess

import pytest

from quantlab import ceilings, machine
from quantlab.counters import worker

SNIPPETS = {**{name: getattr(ceilings, name) for name in
               ("ADD_CHAIN", "IMUL_CHAIN", "READ_AVX512", "READ_AVX2", "READ_SSE2")},
            "CLIENT_REQUEST": worker.CLIENT_REQUEST}  # valgrind's, made by the counting worker
NATIVE = ceilings.unsupported_reason() is None


# --- the machine code is the assembly beside it ------------------------------------------------

@pytest.mark.skipif(shutil.which("as") is None or shutil.which("objcopy") is None,
                    reason="GNU binutils (as, objcopy) not installed")
@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_each_snippets_bytes_are_what_gnu_as_makes_of_its_assembly(name, tmp_path):
    source = tmp_path / "snippet.s"
    source.write_text(".intel_syntax noprefix\n.text\n" + SNIPPETS[name].assembly + "\n")
    subprocess.run(["as", "--64", "-o", tmp_path / "snippet.o", source], check=True)
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", tmp_path / "snippet.o",
                    tmp_path / "snippet.bin"], check=True)
    assert (tmp_path / "snippet.bin").read_bytes() == SNIPPETS[name].code


# --- arithmetic, with fixed inputs ----------------------------------------------------------------

def test_rates_take_the_shortest_run_as_best_and_report_the_median():
    assert ceilings.rates(100.0, [2.0, 1.0, 4.0]) == {
        "seconds_min": 1.0, "seconds_median": 2.0, "best": 100.0, "median": 50.0, "repeats": 3}


def _runs_of(seconds_per_count):
    """A run whose seconds are ``seconds_per_count`` x its count, and the counts it ran."""
    counts = []

    def run(count):
        counts.append(count)
        return seconds_per_count * count
    return run, counts


def test_the_count_is_scaled_to_the_target_and_a_run_that_already_meets_it_is_not_run_again():
    run, counts = _runs_of(0.001)  # 1 ms a pass: 2 passes make the 2 ms target
    assert ceilings.count_for(run, 10, 0.002) == 2 and counts == [10, 2]
    run, counts = _runs_of(0.1)  # a DRAM-sized pass: one pass is already far past the target
    assert ceilings.count_for(run, 1, 0.002) == 1 and counts == [1]


def test_short_runs_are_repeated_in_full_and_long_ones_three_times():
    run, counts = _runs_of(0.002)
    assert len(ceilings.repeated(run, 1, 9)) == 9
    run, counts = _runs_of(0.05)  # three runs of 0.05 s are past the 0.1 s budget
    assert ceilings.repeated(run, 1, 9) == [0.05, 0.05, 0.05]
    run, counts = _runs_of(0.03)  # four runs of 0.03 s reach it
    assert len(ceilings.repeated(run, 1, 9)) == 4


def test_working_sets_for_this_kind_of_server_sit_inside_each_level():
    sets = ceilings.working_sets({"l1d": 48 * 1024, "l2": 1024 * 1024, "l3": 32 * 1024 * 1024})
    assert sets == {
        "l1d": 24 * 1024,                  # half of L1d
        "l2": 512 * 1024,                  # half of L2
        "llc": 11585 * 512,                # sqrt(1 MiB x 32 MiB) = 5.66 MiB, floored to 512 bytes
        "dram": 256 * 1024 * 1024,         # 8 x 32 MiB
    }


def test_working_sets_for_p17s_laptop_cap_the_llc_set_at_a_quarter_of_the_llc():
    sets = ceilings.working_sets({"l1d": 32 * 1024, "l2": 256 * 1024, "l3": 4 * 1024 * 1024})
    # sqrt(256 KiB x 4 MiB) = 1 MiB = a quarter of 4 MiB; DRAM: at least 256 MiB
    assert sets == {"l1d": 16384, "l2": 131072, "llc": 1048576, "dram": 268435456}


def test_no_llc_set_when_the_llc_is_barely_larger_than_l2_and_dram_is_capped():
    assert "llc" not in ceilings.working_sets({"l1d": 32768, "l2": 1 << 20, "l3": 2 << 20})
    assert ceilings.working_sets({"l3": 480 << 20})["dram"] == 512 << 20  # 8 x 480 MiB, capped
    assert ceilings.working_sets({}) == {"dram": 256 << 20}


def test_the_reader_is_the_widest_the_flags_allow():
    assert ceilings.reader_for({"avx512f": True, "avx2": True})[0::2] == ("avx512", 64)
    assert ceilings.reader_for({"avx512f": False, "avx2": True})[0::2] == ("avx2", 32)
    assert ceilings.reader_for({})[0::2] == ("sse2", 16)


def test_without_a_snippet_for_the_architecture_nothing_is_measured_and_the_result_says_why(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    clock, bandwidth = ceilings.measure_clock(), ceilings.measure_bandwidth()
    for result in (clock, bandwidth):
        assert result["measured"] is False
        assert "aarch64" in result["reason"] and "x86-64" in result["reason"]
    assert clock["ghz"] is None and bandwidth["levels"] == {}
    assert "not measured (no native snippet for aarch64" in ceilings.format_ceilings(clock, bandwidth)


def test_the_ceilings_summary_names_clock_and_levels_from_fixed_results():
    clock = {"measured": True, "ghz": 4.0, "nominal_ghz": 2.1, "imul": {"ghz_best": 3.9}}
    bandwidth = {"measured": True, "levels": {
        "l1d": {"bytes_per_second": 500e9, "working_set": 24576},
        "dram": {"bytes_per_second": 40e9, "working_set": 256 << 20}}}
    assert ceilings.format_ceilings(clock, bandwidth) == (
        "clock: 4.00 GHz measured (imul cross-check 3.90 GHz), 2.10 GHz nominal\n"
        "read bandwidth, one core: l1d 500 GB/s (24 KiB), dram 40 GB/s (262,144 KiB)")


# --- measured on this machine --------------------------------------------------------------------

needs_x86 = pytest.mark.skipif(not NATIVE, reason=ceilings.unsupported_reason() or "")


@pytest.fixture(scope="module")
def clock():
    return ceilings.measure_clock()


@pytest.fixture(scope="module")
def bandwidth():
    return ceilings.measure_bandwidth()


@needs_x86
def test_the_measured_clock_is_finite_positive_and_within_a_sane_range_of_the_nominal_one(clock):
    assert clock["measured"] is True
    nominal = machine.cpu_info()["mhz"] / 1000
    assert clock["nominal_ghz"] == pytest.approx(nominal)
    assert math.isfinite(clock["ghz"]) and clock["ghz"] > 0
    # turbo runs above the nominal clock, and VMs report their base clock: within 0.5-3x
    assert 0.5 * nominal < clock["ghz"] < 3 * nominal
    assert clock["add"]["ghz_median"] <= clock["add"]["ghz_best"] == clock["ghz"]
    assert clock["add"]["seconds_min"] > 0 and clock["add"]["repeats"] == 15


@needs_x86
def test_the_add_and_the_imul_chain_agree_on_the_clock(clock):
    # a one-cycle add and a three-cycle multiply: if either latency were wrong, they would
    # differ by a factor of 3 or more
    assert clock["imul"]["ghz_best"] == pytest.approx(clock["add"]["ghz_best"], rel=0.1)


@needs_x86
def test_read_bandwidth_is_finite_positive_fastest_from_l1d_and_slowest_from_dram(bandwidth):
    assert bandwidth["measured"] is True
    levels = bandwidth["levels"]
    assert list(levels) == ["l1d", "l2", "llc", "dram"]
    speeds = [levels[level]["bytes_per_second"] for level in levels]
    assert all(math.isfinite(s) and s > 0 for s in speeds)
    # L2 and the LLC can be close (118 and 99 GB/s on a Zen 4), close enough for a busy
    # neighbour to swap them; L1d and DRAM are apart by several times on every host
    assert speeds[0] == max(speeds) and speeds[-1] == min(speeds)
    for level in levels.values():
        assert 0 < level["bytes_per_second_median"] <= level["bytes_per_second"]
    caches = machine.cpu_info()["caches"]
    assert levels["l1d"]["working_set"] < caches["l1d"] and levels["dram"]["working_set"] > caches["l3"]


@needs_x86
def test_the_reader_used_here_is_the_widest_this_cpu_has(bandwidth):
    flags = machine.cpu_info()["flags"]
    assert bandwidth["reader"] == ("avx512" if flags["avx512f"] else "avx2" if flags["avx2"] else "sse2")
    assert bandwidth["reader"] in bandwidth["method"]
