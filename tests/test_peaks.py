import platform
import re
import shutil
import subprocess

import pytest

from quantlab import ceilings, machine, peaks

LOOPS = {loop.unit: loop for loop in peaks.LOOPS}
NATIVE = ceilings.unsupported_reason() is None
binutils = pytest.mark.skipif(any(shutil.which(tool) is None for tool in ("as", "objcopy", "objdump")),
                              reason="GNU binutils (as, objcopy, objdump) not installed")


def _assemble(snippet, folder):
    source = folder / "loop.s"
    source.write_text(".intel_syntax noprefix\n.text\n" + snippet.assembly + "\n")
    subprocess.run(["as", "--64", "-o", folder / "loop.o", source], check=True)
    return folder / "loop.o"


# --- the machine code is the assembly beside it, and the loop its name says -------------------

@binutils
@pytest.mark.parametrize("unit", sorted(LOOPS))
def test_each_loops_bytes_are_what_gnu_as_makes_of_its_assembly(unit, tmp_path):
    objects = _assemble(LOOPS[unit].snippet, tmp_path)
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", objects, tmp_path / "loop.bin"], check=True)
    assert (tmp_path / "loop.bin").read_bytes() == LOOPS[unit].snippet.code


# MACs one instruction does, by mnemonic and register width: fp32 lanes for an FMA, four
# byte products per 32-bit lane for vpdpbusd, two bf16 products per fp32 lane for vdpbf16ps;
# in the AVX2 int8 group, vpmaddubsw is the one that multiplies (32 byte pairs in a ymm).
MACS_PER_INSTRUCTION = {("vfmadd231ps", "ymm"): 8, ("vfmadd231ps", "zmm"): 16,
                        ("vpdpbusd", "ymm"): 32, ("vpdpbusd", "zmm"): 64,
                        ("vdpbf16ps", "zmm"): 32, ("vpmaddubsw", "ymm"): 32}


def _loop_body(objects):
    """(mnemonic, [operands]) of each instruction between the loop label and its counter."""
    listing = subprocess.run(["objdump", "-d", "-M", "intel", "--no-show-raw-insn", objects],
                             capture_output=True, text=True, check=True).stdout
    instructions = []
    for line in listing.splitlines():
        match = re.match(r"\s+[0-9a-f]+:\s+(?:\{vex\}\s+)?(\S+)\s*(.*)", line)
        if match:
            instructions.append((match.group(1), [op.strip() for op in match.group(2).split(",") if op]))
    names = [name for name, _ in instructions]
    return instructions[names.index("vzeroall") + 1:names.index("dec")]


@binutils
@pytest.mark.parametrize("unit", sorted(LOOPS))
def test_each_loop_runs_independent_chains_of_its_instruction_and_counts_their_macs(unit, tmp_path):
    loop = LOOPS[unit]
    body = _loop_body(_assemble(loop.snippet, tmp_path))
    mnemonic = loop.instruction.split()[0]
    width = next(word for word in loop.instruction.split() if word in ("ymm", "zmm"))
    multiplies = [operands for name, operands in body if name == mnemonic]
    assert multiplies and all(op.startswith(width) for operands in multiplies for op in operands)
    assert len(multiplies) * MACS_PER_INSTRUCTION[mnemonic, width] == loop.macs_per_iteration
    # every chain adds into a register of its own, which no other instruction reads: the
    # chains never wait for each other
    accumulators = [operands[0] for name, operands in body
                    if name in ("vfmadd231ps", "vpdpbusd", "vdpbf16ps", "vpaddd")]
    assert len(accumulators) == len(set(accumulators)) >= 6
    for _, (written, *read) in body:
        assert not set(read) & (set(accumulators) - {written})


# --- fixed inputs ---------------------------------------------------------------------------------

def test_without_a_snippet_for_the_architecture_no_peak_is_measured_and_the_result_says_why(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    found = peaks.measure_peaks({flag: True for flag in machine.FLAGS})
    assert found["measured"] is False and found["units"] == {} and found["dtypes"] == {}
    assert "aarch64" in found["reason"]
    assert peaks.format_peaks(found).startswith("compute peaks: not measured (no native snippet for aarch64")


def test_flags_decide_which_instructions_are_timed_and_amx_is_named_as_not_measured():
    # no loop runs for a CPU whose flags allow none of them; AMX is listed, with why
    found = peaks.measure_peaks({"amx_int8": True, "amx_bf16": True})
    assert found["measured"] is False and found["units"] == {}
    assert set(found["not_measured"]) == {"amx_int8", "amx_bf16"}
    assert "tile" in found["not_measured"]["amx_int8"] and "derived" in found["not_measured"]["amx_int8"]
    assert peaks.measure_peaks({})["not_measured"] == {}


def test_the_peak_of_a_dtype_is_its_fastest_measured_unit():
    units = {"avx512f": {"dtype": "float32", "macs_per_second": 58e9},
             "avx2_fma": {"dtype": "float32", "macs_per_second": 59e9},
             "avx512_vnni": {"dtype": "int8", "macs_per_second": 235e9}}
    assert peaks.by_dtype(units) == {"float32": {"unit": "avx2_fma", "macs_per_second": 59e9},
                                     "int8": {"unit": "avx512_vnni", "macs_per_second": 235e9}}


def test_the_peaks_line_gives_gmacs_and_macs_per_cycle_from_fixed_results():
    found = {"measured": True, "units": {
        "avx512f": {"dtype": "float32", "instruction": "vfmadd231ps zmm", "macs_per_second": 57.6e9},
        "avx512_vnni": {"dtype": "int8", "instruction": "vpdpbusd zmm", "macs_per_second": 230.4e9}}}
    assert peaks.format_peaks(found, ghz=3.6) == (
        "compute peaks, one core: float32 vfmadd231ps zmm 57.6 GMAC/s, 16.0 MAC/cycle; "
        "int8 vpdpbusd zmm 230.4 GMAC/s, 64.0 MAC/cycle")
    assert "MAC/cycle" not in peaks.format_peaks(found)


# --- measured on this machine: properties every x86-64 host has -----------------------------------

needs_x86 = pytest.mark.skipif(not NATIVE, reason=ceilings.unsupported_reason() or "")


@pytest.fixture(scope="module")
def measured():
    flags = machine.cpu_info()["flags"]
    return flags, ceilings.measure_clock(), peaks.measure_peaks(flags)


@needs_x86
def test_every_instruction_the_flags_allow_is_timed_and_no_other(measured):
    flags, _, found = measured
    assert found["measured"] is True
    assert set(found["units"]) == {loop.unit for loop in peaks.LOOPS
                                   if all(flags.get(flag) for flag in loop.flags)}
    for entry in found["units"].values():
        assert 0 < entry["macs_per_second_median"] <= entry["macs_per_second"]
        assert entry["repeats"] == 9


# What a core can retire per cycle, from one port at half width (halved again when a
# neighbour's thread shares the core's ports) to two full-width ports with room to spare:
# wide enough for every x86-64 host, narrow enough to catch a loop limited by latency
# instead of throughput (one zmm FMA chain: 16 lanes every 4 cycles = 4 MACs a cycle).
PER_CYCLE = {"avx512f": (6, 64), "avx2_fma": (6, 64), "avx512_vnni": (16, 256),
             "avx_vnni": (8, 256), "avx2": (8, 128), "avx512_bf16": (8, 128)}


@needs_x86
def test_each_measured_peak_per_cycle_lies_within_what_the_isa_permits(measured):
    _, clock, found = measured
    for unit, entry in found["units"].items():
        low, high = PER_CYCLE[unit]
        assert low <= entry["macs_per_second"] / (clock["ghz"] * 1e9) <= high, unit


@needs_x86
def test_where_the_cpu_has_vnni_its_int8_peak_is_above_its_float32_peak(measured):
    flags, _, found = measured
    if flags["avx512_vnni"] or flags["avx_vnni"]:
        assert found["dtypes"]["int8"]["macs_per_second"] > found["dtypes"]["float32"]["macs_per_second"]
        assert found["dtypes"]["int8"]["unit"] in ("avx512_vnni", "avx_vnni")
    else:  # without VNNI, int8 is the AVX2 multiply-add group, and no VNNI loop was timed
        assert found["dtypes"]["int8"]["unit"] == "avx2"
        assert not {"avx512_vnni", "avx_vnni"} & set(found["units"])


@needs_x86
def test_the_measured_peak_is_what_machine_reports_as_the_peak_when_given(measured):
    flags, clock, found = measured
    info = machine.cpu_info()
    peak = machine.peak_macs_per_second("float32", 1, info, ghz=clock["ghz"], measured=found)
    widest = machine.compute_units("float32", flags)[0].name
    assert peak.macs_per_second == found["units"][widest]["macs_per_second"]
    assert "measured peak" in peak.description
