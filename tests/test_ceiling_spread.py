import json
import platform

import pytest

from quantlab import ceiling_spread, ceilings, machine, roofline


def _measurement(label, ghz, l1d, llc, fma, vnni):
    """One measurement as ceiling_spread.measure returns it, with the values given (GHz,
    GB/s, GMAC/s)."""
    return {
        "label": label, "at": 0.0,
        "clock": {"measured": True, "ghz": ghz, "nominal_ghz": 2.6, "method": "add chain"},
        "bandwidth": {"measured": True, "reader": "avx512", "levels": {
            "l1d": {"bytes_per_second": l1d * 1e9, "working_set": 16384},
            "llc": {"bytes_per_second": llc * 1e9, "working_set": 5 << 20}}},
        "peaks": {"measured": True, "not_measured": {}, "units": {
            "avx512f": {"dtype": "float32", "instruction": "vfmadd231ps zmm",
                        "macs_per_second": fma * 1e9},
            "avx512_vnni": {"dtype": "int8", "instruction": "vpdpbusd zmm",
                            "macs_per_second": vnni * 1e9}}},
    }


BEFORE = _measurement("before timing", 3.60, 220, 99, 57.6, 230)
AFTER = _measurement("after timing", 3.00, 210, 70, 57.0, 232)  # clock -17 %, LLC -29 %
MIDDLE = _measurement("between nets", 3.50, 230, 90, 57.3, 231)


def test_the_spread_of_each_ceiling_is_its_min_median_and_max_in_the_order_measured():
    found = ceiling_spread.spread([BEFORE, MIDDLE, AFTER])
    assert list(found) == ["clock", "bandwidth l1d", "bandwidth llc", "peak avx512f", "peak avx512_vnni"]
    clock = found["clock"]
    assert (clock["name"], clock["unit"], clock["values"]) == ("clock", "GHz", [3.60, 3.50, 3.00])
    assert (clock["min"], clock["median"], clock["max"]) == (3.00, 3.50, 3.60)
    assert clock["labels"] == ["before timing", "between nets", "after timing"]
    llc = found["bandwidth llc"]
    assert (llc["name"], llc["min"], llc["median"], llc["max"]) == ("LLC read bandwidth", 70e9, 90e9, 99e9)
    assert found["peak avx512_vnni"]["name"] == "int8 vpdpbusd zmm peak"
    for entry in found.values():
        assert entry["min"] <= entry["median"] <= entry["max"]


def test_a_ceiling_that_moved_more_than_10_percent_is_named_with_its_values():
    assert ceiling_spread.moved([BEFORE, AFTER]) == (
        "Moved more than 10% between the measurements (before timing, after timing): "
        "clock 3.60 -> 3.00 GHz (20% apart); LLC read bandwidth 99 -> 70 GB/s (41% apart).")


def test_nothing_is_named_when_every_ceiling_stayed_within_10_percent_or_was_measured_once():
    steady = _measurement("after timing", 3.55, 215, 92, 57.0, 229)  # clock -1 %, LLC -7 %
    assert ceiling_spread.moved([BEFORE, steady]) is None
    assert ceiling_spread.moved([BEFORE]) is None
    # 9 % apart stays unnamed, 11 % is named
    assert ceiling_spread.moved([BEFORE, _measurement("b", 3.60 / 1.09, 220, 99, 57.6, 230)]) is None
    assert "clock" in ceiling_spread.moved([BEFORE, _measurement("b", 3.60 / 1.11, 220, 99, 57.6, 230)])


def test_the_record_uses_the_highest_value_of_each_ceiling_and_says_so():
    kept = ceiling_spread.record([BEFORE, AFTER])
    used = kept["used"]
    assert used["rule"] == "the highest of 2 measurements (before timing, after timing) of each ceiling"
    assert used["clock"]["ghz"] == 3.60 and used["clock"]["measured"] is True
    assert {level: entry["bytes_per_second"] for level, entry in used["bandwidth"]["levels"].items()} == {
        "l1d": 220e9, "llc": 99e9}
    assert {unit: entry["macs_per_second"] for unit, entry in used["peaks"]["units"].items()} == {
        "avx512f": 57.6e9, "avx512_vnni": 232e9}
    assert used["peaks"]["dtypes"]["int8"] == {"unit": "avx512_vnni", "macs_per_second": 232e9}
    assert kept["moved"].startswith("Moved more than 10%")
    assert json.loads(json.dumps(kept)) == kept
    # the measurements themselves are kept as they were
    assert kept["measurements"][1]["clock"]["ghz"] == 3.00


def test_the_roofline_takes_the_records_used_values():
    zen4 = {"model": "test", "logical_cores": 2, "available_cores": 2, "mhz": 2600.0,
            "flags": {f: f in ("avx2", "fma", "avx512f", "avx512_vnni") for f in machine.FLAGS},
            "caches": {"l1d": 32 << 10, "l2": 1 << 20, "l3": 32 << 20}}
    used = ceiling_spread.record([BEFORE, AFTER])["used"]
    found = roofline.ceilings(used["clock"], used["bandwidth"], zen4, peaks=used["peaks"])
    assert found["ghz"] == 3.60 and found["peaks"] == "measured"
    assert {c["name"]: c["macs_per_second"] for c in found["compute"]} == {
        "fp32 FMA AVX-512": 57.6e9, "int8 AVX-512 VNNI": 232e9}
    assert [m["bytes_per_second"] for m in found["memory"]] == [220e9, 99e9]


def test_each_ceiling_is_one_line_with_its_spread():
    assert ceiling_spread.format_spread(ceiling_spread.record([BEFORE, MIDDLE, AFTER])) == [
        "clock: 3.60 GHz (min 3.00, median 3.50, max 3.60 over 3)",
        "L1d read bandwidth: 230 GB/s (min 210, median 220, max 230 over 3)",
        "LLC read bandwidth: 99 GB/s (min 70, median 90, max 99 over 3)",
        "float32 vfmadd231ps zmm peak: 58 GMAC/s (min 57, median 57, max 58 over 3)",
        "int8 vpdpbusd zmm peak: 232 GMAC/s (min 230, median 231, max 232 over 3)",
    ]


@pytest.mark.skipif(ceilings.unsupported_reason() is not None, reason=ceilings.unsupported_reason() or "")
def test_two_measurements_on_this_machine_give_every_ceiling_twice_with_its_spread():
    info = machine.cpu_info()
    kept = ceiling_spread.record([ceiling_spread.measure("before timing", info),
                                  ceiling_spread.measure("after timing", info)])
    found = kept["spread"]
    assert "clock" in found and "bandwidth l1d" in found and "bandwidth dram" in found
    assert {key for key in found if key.startswith("peak ")} == {
        f"peak {unit}" for unit in kept["measurements"][0]["peaks"]["units"]} != set()
    for entry in found.values():
        assert len(entry["values"]) == 2 and entry["min"] <= entry["median"] <= entry["max"]
    assert kept["used"]["clock"]["ghz"] == found["clock"]["max"]
    assert kept["moved"] is None or kept["moved"].startswith("Moved more than 10%")
    print("\n".join(ceiling_spread.format_spread(kept)), kept["moved"], sep="\n")


def test_where_nothing_can_be_measured_the_record_is_empty_and_the_roofline_falls_back(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    cpu = {"model": "test", "logical_cores": 2, "available_cores": 2, "mhz": 2000.0,
           "flags": {f: f in ("avx2", "fma") for f in machine.FLAGS}, "caches": {"l1d": 32 << 10}}
    kept = ceiling_spread.record([ceiling_spread.measure("before timing", cpu),
                                  ceiling_spread.measure("after timing", cpu)])
    assert kept["spread"] == {} and kept["moved"] is None and ceiling_spread.format_spread(kept) == []
    used = kept["used"]
    found = roofline.ceilings(used["clock"], used["bandwidth"], cpu, peaks=used["peaks"])
    assert (found["clock"], found["peaks"], found["memory"]) == ("nominal", "derived", [])
    assert found["compute"][0]["macs_per_second"] == 16 * 2e9
