"""How many multiply-accumulates one core of this CPU really retires per second: its compute peaks.

The ISA flags say which multiply-accumulate instructions exist, not how many of them a core
retires per cycle: a Zen 4 core executes a 512-bit FMA as two 256-bit halves, so it does
half the fp32 work per cycle of a Zen 5 core with the very same flags, and Xeons come with
one or two 512-bit FMA ports. So each instruction the kernels use is timed here, as
``quantlab.ceilings`` times the clock: a loop of 12 independent chains of it (more than
latency x ports of any x86-64 core, so that throughput alone limits the loop), on zeroed
registers (no denormal slow paths). The flags decide only *whether* an instruction is
measured, never its value.

Not measured: AMX tile multiplies. They need Linux's permission for tile state
(``arch_prctl(ARCH_REQ_XCOMP_PERM)``) and a tile configuration before the first tile
instruction, or the process dies of SIGILL; their ceiling stays the one derived from the
ISA (``machine.peak_macs_per_second``), and the result says so.

    >>> found = measure_peaks()                                              # doctest: +SKIP
    >>> print(found["dtypes"]["int8"]["macs_per_second"] / 1e9, "GMAC/s")    # doctest: +SKIP
"""

import ctypes
import time
from typing import NamedTuple

from quantlab import machine
from quantlab.ceilings import Snippet, count_for, cpu_seconds, native, rates, unsupported_reason

CHAINS = 12  # independent accumulators per loop iteration


def _loop(*body, chains=CHAINS):
    """void loop(uint64 iterations >= 1): ``body`` unrolled once per chain, ``{acc}`` its
    accumulator register number and ``{tmp}`` a scratch register of its own."""
    unrolled = "".join(f"    {line.format(acc=chain, tmp=chain + chains)}\n"
                       for chain in range(chains) for line in body)
    # vzeroall zeroes every source and accumulator (registers 0-15, their zmm too)
    return f"\n    vzeroall\n1:\n{unrolled}    dec rdi\n    jnz 1b\n    vzeroupper\n    ret\n"


FMA_ZMM = Snippet(_loop("vfmadd231ps zmm{acc}, zmm14, zmm15"), bytes.fromhex(
    "c5fc7762d20d48b8c762d20d48b8cf62d20d48b8d762d20d48b8df62d20d48b8e762d20d48b8ef62d20d48"
    "b8f762d20d48b8ff62520d48b8c762520d48b8cf62520d48b8d762520d48b8df48ffcf75b3c5f877c3"))

FMA_YMM = Snippet(_loop("vfmadd231ps ymm{acc}, ymm14, ymm15"), bytes.fromhex(
    "c5fc77c4c20db8c7c4c20db8cfc4c20db8d7c4c20db8dfc4c20db8e7c4c20db8efc4c20db8f7c4c20db8ff"
    "c4420db8c7c4420db8cfc4420db8d7c4420db8df48ffcf75bfc5f877c3"))

# vpdpbusd: per 32-bit lane, four unsigned x signed byte products summed into the lane
VNNI_ZMM = Snippet(_loop("vpdpbusd zmm{acc}, zmm14, zmm15"), bytes.fromhex(
    "c5fc7762d20d4850c762d20d4850cf62d20d4850d762d20d4850df62d20d4850e762d20d4850ef62d20d48"
    "50f762d20d4850ff62520d4850c762520d4850cf62520d4850d762520d4850df48ffcf75b3c5f877c3"))

# AVX-VNNI: the same instruction VEX-encoded, 256 bits, on CPUs that may lack AVX-512
AVX_VNNI_YMM = Snippet(_loop("{{vex}} vpdpbusd ymm{acc}, ymm14, ymm15"), bytes.fromhex(
    "c5fc77c4c20d50c7c4c20d50cfc4c20d50d7c4c20d50dfc4c20d50e7c4c20d50efc4c20d50f7c4c20d50ff"
    "c4420d50c7c4420d50cfc4420d50d7c4420d50df48ffcf75bfc5f877c3"))

# Without VNNI, int8 kernels multiply bytes into 16-bit pairs, widen them into 32-bit sums
# against ones, and add: three instructions per 32 MACs (6 chains: each needs a scratch register)
INT8_AVX2 = Snippet(_loop("vpmaddubsw ymm{tmp}, ymm12, ymm13", "vpmaddwd ymm{tmp}, ymm{tmp}, ymm14",
                          "vpaddd ymm{acc}, ymm{acc}, ymm{tmp}", chains=6), bytes.fromhex(
    "c5fc77c4c21d04f5c4c14df5f6c5fdfec6c4c21d04fdc4c145f5fec5f5fecfc4421d04c5c4413df5c6c4c1"
    "6dfed0c4421d04cdc44135f5cec4c165fed9c4421d04d5c4412df5d6c4c15dfee2c4421d04ddc44125f5de"
    "c4c155feeb48ffcf75a3c5f877c3"))

# vdpbf16ps: per fp32 lane, two bfloat16 products summed into the lane
BF16_ZMM = Snippet(_loop("vdpbf16ps zmm{acc}, zmm14, zmm15"), bytes.fromhex(
    "c5fc7762d20e4852c762d20e4852cf62d20e4852d762d20e4852df62d20e4852e762d20e4852ef62d20e48"
    "52f762d20e4852ff62520e4852c762520e4852cf62520e4852d762520e4852df48ffcf75b3c5f877c3"))


class PeakLoop(NamedTuple):
    unit: str                 # the machine.UNITS entry whose peak it measures
    dtype: str
    flags: tuple              # cpuinfo flags the instruction needs
    instruction: str
    snippet: Snippet
    macs_per_iteration: int


LOOPS = (
    PeakLoop("avx512f", "float32", ("avx512f",), "vfmadd231ps zmm", FMA_ZMM, CHAINS * 16),
    PeakLoop("avx2_fma", "float32", ("avx2", "fma"), "vfmadd231ps ymm", FMA_YMM, CHAINS * 8),
    PeakLoop("avx512_vnni", "int8", ("avx512_vnni",), "vpdpbusd zmm", VNNI_ZMM, CHAINS * 64),
    PeakLoop("avx_vnni", "int8", ("avx_vnni",), "vpdpbusd ymm (VEX)", AVX_VNNI_YMM, CHAINS * 32),
    PeakLoop("avx2", "int8", ("avx2",), "vpmaddubsw + vpmaddwd + vpaddd ymm", INT8_AVX2, 6 * 32),
    PeakLoop("avx512_bf16", "bf16", ("avx512_bf16",), "vdpbf16ps zmm", BF16_ZMM, CHAINS * 32),
)
AMX_NOT_MEASURED = ("not measured (AMX needs Linux's tile-state permission and a tile "
                    "configuration first): the ceiling stays derived from the ISA")


def measure_peaks(flags=None, repeats=9, target_seconds=0.002):
    """Multiply-accumulates per second one core retires with each instruction the CPU has.

    ``flags`` is ``machine.cpu_info()["flags"]`` by default. Returns ``measured`` (False
    with ``reason`` where no native code runs), ``method``, ``seconds`` (wall time of the
    measurement), ``units`` ({machine unit name: ``dtype``, ``instruction``,
    ``macs_per_second`` from the shortest run, ``macs_per_second_median``, the timings}),
    ``dtypes`` ({dtype: the ``unit`` with the highest rate and that ``macs_per_second``})
    and ``not_measured`` ({unit: why}, for the units this CPU has but no loop times).
    """
    start = time.perf_counter()
    flags = machine.cpu_info()["flags"] if flags is None else flags
    result = {"measured": False, "units": {}, "dtypes": {},
              "not_measured": {unit: AMX_NOT_MEASURED for unit in ("amx_int8", "amx_bf16")
                               if flags.get(unit)},
              "method": (f"{CHAINS} independent chains of each multiply-accumulate instruction "
                         f"on one core; best of {repeats} runs of about "
                         f"{target_seconds * 1e3:.0f} ms of thread CPU time")}
    reason = unsupported_reason()
    if reason:
        return {**result, "reason": reason, "seconds": time.perf_counter() - start}
    try:
        for loop in LOOPS:
            if not all(flags.get(flag) for flag in loop.flags):
                continue
            with native(loop.snippet, ctypes.c_uint64) as run_loop:
                def run(iterations):
                    return cpu_seconds(run_loop, iterations)

                iterations = count_for(run, 100_000, target_seconds)
                seconds = [run(iterations) for _ in range(repeats)]
            timed = rates(iterations * loop.macs_per_iteration, seconds)
            result["units"][loop.unit] = {
                "dtype": loop.dtype, "instruction": loop.instruction,
                "macs_per_second": timed.pop("best"), "macs_per_second_median": timed.pop("median"),
                "macs_per_iteration": loop.macs_per_iteration, "iterations": iterations, **timed}
    except OSError as error:
        return {**result, "units": {}, "reason": f"could not run native code: {error}",
                "seconds": time.perf_counter() - start}
    result.update(measured=bool(result["units"]), dtypes=by_dtype(result["units"]),
                  seconds=time.perf_counter() - start)
    if not result["units"]:
        result["reason"] = "this CPU has none of the instructions timed here"
    return result


def by_dtype(units):
    """{dtype: the ``unit`` with the highest ``macs_per_second`` among ``units`` of that dtype}."""
    found = {}
    for unit, entry in units.items():
        best = found.get(entry["dtype"])
        if best is None or entry["macs_per_second"] > best["macs_per_second"]:
            found[entry["dtype"]] = {"unit": unit, "macs_per_second": entry["macs_per_second"]}
    return found


def format_peaks(peaks, ghz=None):
    """One line: each measured instruction's GMAC/s on one core (and MACs per cycle at ``ghz``)."""
    if not peaks["measured"]:
        return f"compute peaks: not measured ({peaks['reason']})"
    parts = []
    for entry in peaks["units"].values():
        per_cycle = f", {entry['macs_per_second'] / (ghz * 1e9):.1f} MAC/cycle" if ghz else ""
        parts.append(f"{entry['dtype']} {entry['instruction']} "
                     f"{entry['macs_per_second'] / 1e9:.1f} GMAC/s{per_cycle}")
    return "compute peaks, one core: " + "; ".join(parts)
