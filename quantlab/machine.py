"""What this CPU is and how many multiply-accumulates per second it could do at best.

``cpu_info`` reads /proc/cpuinfo and sysfs (no TensorFlow, no py-cpuinfo) for the facts that
explain int8 and float speed: model, cores, clock, the SIMD/matrix ISA extensions the
kernels can use and the cache sizes. ``peak_macs_per_second`` turns them into a nominal
peak, or takes the one ``quantlab.peaks`` measured: the yardstick for the achieved MAC/s
reported next to each benchmark.

    >>> peak = peak_macs_per_second("int8", threads=1)
    >>> print(f"{peak.macs_per_second / 1e9:.0f} GMAC/s: {peak.description}")  # doctest: +SKIP
"""

import os
import re
from pathlib import Path
from typing import NamedTuple

# ISA extensions that decide which XNNPACK kernels run (flag names as in /proc/cpuinfo).
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16", "avx512_fp16",
         "avx512_bf16")
DTYPES = ("float32", "float16", "int8", "bf16")
# Precisions a runtime computes without any vector unit this module models: LiteRT runs 16x8
# files (int16 activations) on its reference kernels, which XNNPACK does not replace, so a
# "share of the peak" would compare them with units they never use.
UNMODELLED = {"int16x8": "LiteRT's reference kernels (no vector-unit peak is modelled)"}

_CPUINFO = Path("/proc/cpuinfo")
_SYSFS_CPU = Path("/sys/devices/system/cpu")
_SIZE = re.compile(r"^(\d+)([KMG]?)$")
_UNITS = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}


def _first_processor(text):
    """The key: value pairs of the first processor block (all cores report the same ISA)."""
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def _caches(cpu_dir):
    """{"l1d": bytes, "l2": bytes, "l3": bytes} for cpu0, from sysfs where it exists."""
    found = {}
    for index in sorted(Path(cpu_dir, "cpu0", "cache").glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = _SIZE.match((index / "size").read_text().strip())
        except OSError:
            continue
        if size is None or kind == "Instruction":
            continue
        name = "l1d" if level == "1" else f"l{level}"
        found[name] = int(size.group(1)) * _UNITS[size.group(2)]
    return found


def _max_mhz(cpu_dir, fields):
    """The highest clock the kernel reports (cpufreq), else /proc/cpuinfo's current MHz.

    cpufreq's maximum is stable from run to run, while "cpu MHz" moves with frequency
    scaling on real hardware; virtual machines often have only the latter, and it is fixed.
    """
    try:
        return int(Path(cpu_dir, "cpu0", "cpufreq", "cpuinfo_max_freq").read_text()) / 1000
    except (OSError, ValueError):
        pass
    try:
        return float(fields["cpu MHz"])
    except (KeyError, ValueError):
        return None


def cpu_info(cpuinfo_path=_CPUINFO, cpu_dir=_SYSFS_CPU):
    """Model, core counts, clock (MHz), ISA flags (booleans) and cache sizes (bytes)."""
    try:
        fields = _first_processor(Path(cpuinfo_path).read_text())
    except OSError:
        fields = {}
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        available = os.cpu_count()
    return {
        "model": fields.get("model name") or fields.get("Processor") or "unknown",
        "logical_cores": os.cpu_count(),
        "available_cores": available,
        "mhz": _max_mhz(cpu_dir, fields),
        "flags": {flag: flag in flags for flag in FLAGS},
        "caches": _caches(cpu_dir),
    }


def has_bf16(info=None):
    """Whether the CPU multiplies bfloat16 natively (what OpenVINO needs for bf16 execution)."""
    flags = (info or cpu_info())["flags"]
    return compute_units("bf16", flags)[0].name in ("amx_bf16", "avx512_bf16")


def given_name():
    """``QUANTLAB_MACHINE``, checked to be a plain name (it becomes a folder and a report's
    heading: else a QuantlabError), or None."""
    from quantlab import safe_text

    given = os.environ.get("QUANTLAB_MACHINE")
    if given:
        safe_text.plain_name(given, "QUANTLAB_MACHINE", "name the machine like laptop or c7i.large")
    return given or None


def identity(info=None):
    """Which machine this is: the name a user gave it, and the physical host it runs on.

    ``QUANTLAB_MACHINE`` names the machine (``laptop``, ``c7i``); without it the machine is
    its host name and CPU. ``host`` tells physical hosts apart whatever the names: processes
    on one host share its kernel's boot id, so two named workers on one host are seen as
    one host, whose CPU they share. A ``QUANTLAB_MACHINE`` that is not a plain name (it
    becomes a folder and a report's heading) is a QuantlabError.
    """
    given = given_name()
    info = info or cpu_info()
    hostname = os.uname().nodename
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return {"name": given or f"{hostname} ({info['model']})",
            "host": f"{hostname}/{boot}" if boot else hostname}


class Peak(NamedTuple):
    macs_per_second: float | None
    macs_per_cycle_per_core: float | None  # an ISA count, or a measured rate over the clock
    cores: int
    ghz: float | None
    description: str


# The multiply-accumulate units XNNPACK / oneDNN use per data type, widest first:
# (dtype, unit, cpuinfo flags needed, MACs per cycle per core, why).
UNITS = (
    # XNNPACK asks Linux for AMX tile state and picks its *_avx512amx int8 GEMMs
    # (seen with perf record on a Sapphire Rapids VM: qs8_qc8w igemm 16x64c4 avx512amx).
    # One TDPBSSD tile op: 16x64 by 64x16 int8 = 16384 MACs every 16 cycles.
    ("int8", "amx_int8", ("amx_int8",), 1024, "AMX-INT8 tile multiply: 1024 int8 MAC/cycle"),
    ("int8", "avx512_vnni", ("avx512_vnni",), 128, "AVX-512 VNNI vpdpbusd: 2 ports x 64 int8 MAC"),
    ("int8", "avx_vnni", ("avx_vnni",), 64, "AVX-VNNI vpdpbusd: 2 ports x 32 int8 MAC"),
    # no dot-product instruction: vpmaddubsw + vpmaddwd take two ops per 32 MACs
    ("int8", "avx2", ("avx2",), 32, "AVX2 vpmaddubsw+vpmaddwd: 2 ports x 32 int8 MAC / 2 ops"),
    ("int8", "sse", (), 8, "SSE: 8 int8 MAC (no AVX2)"),
    ("float16", "avx512_fp16", ("avx512_fp16",), 64, "AVX-512 FP16 FMA: 2 ports x 32 fp16 lanes"),
    # One TDPBF16PS tile op: 16x32 by 32x16 bf16 = 8192 MACs every 16 cycles.
    ("bf16", "amx_bf16", ("amx_bf16",), 512, "AMX-BF16 tile multiply: 512 bf16 MAC/cycle"),
    ("bf16", "avx512_bf16", ("avx512_bf16",), 64, "AVX-512 BF16 vdpbf16ps: 2 ports x 32 bf16 MAC"),
    ("float32", "avx512f", ("avx512f",), 32, "AVX-512 FMA: 2 ports x 16 fp32 lanes"),
    ("float32", "avx2_fma", ("avx2", "fma"), 16, "AVX2 FMA: 2 ports x 8 fp32 lanes"),
    ("float32", "sse", (), 4, "SSE: 4 fp32 lanes, separate multiply and add"),
)


class Unit(NamedTuple):
    name: str
    macs_per_cycle_per_core: int
    description: str


def compute_units(dtype, flags):
    """The units that can multiply-accumulate ``dtype`` on a CPU with ``flags``, widest first.

    float16 without native fp16 arithmetic, and bf16 without AVX-512 BF16 or AMX, are
    computed in float32, so their list continues with the float32 units.
    """
    found = [Unit(unit, per_cycle, why) for kind, unit, needs, per_cycle, why in UNITS
             if kind == dtype and all(flags.get(flag) for flag in needs)]
    return found + (compute_units("float32", flags) if dtype in ("float16", "bf16") else [])


def _per_cycle(dtype, flags):
    """(MACs per cycle per core, why) for the widest unit that multiplies ``dtype``."""
    widest = compute_units(dtype, flags)[0]
    return widest.macs_per_cycle_per_core, widest.description


def peak_macs_per_second(dtype, threads=1, info=None, ghz=None, measured=None):
    """Peak of ``dtype`` multiply-accumulates per second on ``threads`` cores: measured
    where ``measured`` has it, else derived from the ISA flags.

    ``measured`` is what ``quantlab.peaks.measure_peaks`` returned (or the ``used`` peaks of
    ``quantlab.ceiling_spread.record``): where it timed the widest unit for ``dtype``, the
    peak is that rate of one core times ``threads`` cores, and ``macs_per_cycle_per_core``
    is that rate over the clock (``ghz``, else the nominal one). Prefer it: the derived peak
    is too high wherever the assumptions below fail (a Zen 4 core retires half of it).

    The derived peak assumes: every core retires the widest multiply-accumulate the ISA
    offers on both of its (assumed) two vector FMA ports every cycle, at the highest clock
    the kernel reports (or at ``ghz``, a measured clock: see ``quantlab.ceilings``), with no
    memory stalls; one thread per physical core. Real kernels reach a fraction of it.
    For int8 it counts AMX tiles where the CPU has ``amx_int8``, because XNNPACK (the LiteRT
    kernels measured here) requests AMX from Linux and uses it for int8 GEMMs and
    convolutions; otherwise AVX-512 VNNI, AVX-VNNI or AVX2. ``float16`` is the native fp16
    rate only with ``avx512_fp16``; without it fp16 data is computed as float32. Note that
    XNNPACK, by default, also computes fp16-weight models in float32 on x86, so quantlab
    rates the float16 *variant* against the float32 peak (see ``quantlab.macs``).
    """
    if dtype in UNMODELLED:
        return Peak(None, None, max(1, int(threads or 1)), ghz, f"{dtype}: {UNMODELLED[dtype]}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    info = info or cpu_info()
    widest = compute_units(dtype, info["flags"])[0]
    cores = max(1, min(int(threads or info["available_cores"] or 1), info["available_cores"] or 1))
    source = "measured" if ghz else "nominal"
    ghz = ghz or (info["mhz"] / 1000 if info["mhz"] else None)
    clock = f"{ghz:.2f} GHz" if ghz else "unknown clock"
    plural = "s" if cores > 1 else ""
    timed = ((measured or {}).get("units") or {}).get(widest.name)
    if timed:
        per_core = timed["macs_per_second"]
        return Peak(per_core * cores, per_core / (ghz * 1e9) if ghz else None, cores, ghz,
                    f"{dtype}: {timed['instruction']} measured on one core, "
                    f"{per_core / 1e9:.1f} GMAC/s x {cores} core{plural} (measured peak)")
    per_cycle, why = _per_cycle(dtype, info["flags"])
    peak = per_cycle * cores * ghz * 1e9 if ghz else None
    return Peak(peak, per_cycle, cores, ghz,
                f"{dtype}: {why} x {cores} core{plural} x {clock} ({source})")
