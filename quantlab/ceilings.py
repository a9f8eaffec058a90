"""What one core of this CPU really does: its running clock and its read bandwidth per cache level.

The nominal clock in /proc/cpuinfo is often not the one the core runs at (turbo, or a
virtual machine that reports its base clock), and cache and DRAM bandwidths are nowhere in
the kernel's tables. Both are measured here with a few microseconds of native code, as the
ceilings of the roofline model (``quantlab.roofline``) and the clock of "% of peak".

- ``measure_clock()`` times a chain of dependent ``add`` instructions (1 cycle each) and a
  chain of dependent ``imul`` (3 cycles each): cycles / seconds is the clock.
- ``measure_bandwidth()`` times a streaming read (8 independent vector loads per step,
  the widest the CPU has) over working sets sized to sit in L1d, L2, the last-level cache
  and DRAM.

The machine code is held below as bytes next to the assembly it came from (GNU ``as``,
Intel syntax; the tests reassemble it and compare), placed in an executable mapping and
called through ctypes: no compiler is needed at run time. It exists for x86-64 Linux only;
elsewhere the results say "not measured" and why. ``quantlab.peaks`` times the compute peaks
the same way, with the helpers here (``native``, ``cpu_seconds``, ``count_for``, ``rates``).

    >>> clock = measure_clock()                                       # doctest: +SKIP
    >>> print(clock["ghz"], clock["method"])                          # doctest: +SKIP
    >>> print(measure_bandwidth()["levels"]["l1d"]["bytes_per_second"])   # doctest: +SKIP
"""

import contextlib
import ctypes
import functools
import mmap
import platform
import statistics
import sys
import time
from typing import NamedTuple

from quantlab import machine


class Snippet(NamedTuple):
    assembly: str  # System V x86-64 calling convention: arguments in rdi, rsi, rdx
    code: bytes


# uint64 add_chain(uint64 iterations >= 1): 16 dependent one-cycle adds per iteration; the
# loop counter is a separate, shorter chain that runs alongside.
ADD_CHAIN = Snippet("""
    xor eax, eax
    mov edx, 1
1:
    .rept 16
    add rax, rdx
    .endr
    dec rdi
    jnz 1b
    ret
""", bytes.fromhex(
    "31c0ba01000000" + "4801d0" * 16 + "48ffcf75cbc3"))

# uint64 imul_chain(uint64 iterations >= 1): 8 dependent 64-bit multiplies (3 cycles each on
# every x86-64 core since Nehalem and Zen) per iteration; a cross-check of the add chain.
IMUL_CHAIN = Snippet("""
    mov eax, 1
    mov edx, 3
1:
    .rept 8
    imul rax, rdx
    .endr
    dec rdi
    jnz 1b
    ret
""", bytes.fromhex(
    "b801000000ba03000000" + "480fafc2" * 8 + "48ffcf75dbc3"))

# void read_*(const void *buffer, uint64 bytes, uint64 passes >= 1): read ``bytes`` (a
# multiple of 512, 16-byte aligned) ``passes`` times, 8 vector loads per step into 8
# independent accumulators so that only the loads limit the speed.
READ_AVX512 = Snippet("""
    vpxord zmm0, zmm0, zmm0
    vpxord zmm1, zmm1, zmm1
    vpxord zmm2, zmm2, zmm2
    vpxord zmm3, zmm3, zmm3
    vpxord zmm4, zmm4, zmm4
    vpxord zmm5, zmm5, zmm5
    vpxord zmm6, zmm6, zmm6
    vpxord zmm7, zmm7, zmm7
2:
    mov rax, rdi
    lea rcx, [rdi+rsi]
1:
    vpaddq zmm0, zmm0, [rax]
    vpaddq zmm1, zmm1, [rax+64]
    vpaddq zmm2, zmm2, [rax+128]
    vpaddq zmm3, zmm3, [rax+192]
    vpaddq zmm4, zmm4, [rax+256]
    vpaddq zmm5, zmm5, [rax+320]
    vpaddq zmm6, zmm6, [rax+384]
    vpaddq zmm7, zmm7, [rax+448]
    add rax, 512
    cmp rax, rcx
    jb 1b
    dec rdx
    jnz 2b
    vzeroupper
    ret
""", bytes.fromhex(
    "62f17d48efc062f17548efc962f16d48efd262f16548efdb62f15d48efe462f15548efed62f14d48eff6"
    "62f14548efff4889f8488d0c3762f1fd48d40062f1f548d4480162f1ed48d4500262f1e548d4580362f1"
    "dd48d4600462f1d548d4680562f1cd48d4700662f1c548d478074805000200004839c872be48ffca75b2"
    "c5f877c3"))

READ_AVX2 = Snippet("""
    vpxor ymm0, ymm0, ymm0
    vpxor ymm1, ymm1, ymm1
    vpxor ymm2, ymm2, ymm2
    vpxor ymm3, ymm3, ymm3
    vpxor ymm4, ymm4, ymm4
    vpxor ymm5, ymm5, ymm5
    vpxor ymm6, ymm6, ymm6
    vpxor ymm7, ymm7, ymm7
2:
    mov rax, rdi
    lea rcx, [rdi+rsi]
1:
    vpaddq ymm0, ymm0, [rax]
    vpaddq ymm1, ymm1, [rax+32]
    vpaddq ymm2, ymm2, [rax+64]
    vpaddq ymm3, ymm3, [rax+96]
    vpaddq ymm4, ymm4, [rax+128]
    vpaddq ymm5, ymm5, [rax+160]
    vpaddq ymm6, ymm6, [rax+192]
    vpaddq ymm7, ymm7, [rax+224]
    add rax, 256
    cmp rax, rcx
    jb 1b
    dec rdx
    jnz 2b
    vzeroupper
    ret
""", bytes.fromhex(
    "c5fdefc0c5f5efc9c5edefd2c5e5efdbc5ddefe4c5d5efedc5cdeff6c5c5efff4889f8488d0c37c5fdd400"
    "c5f5d44820c5edd45040c5e5d45860c5ddd4a080000000c5d5d4a8a0000000c5cdd4b0c0000000c5c5d4b8"
    "e00000004805000100004839c872c248ffca75b6c5f877c3"))

READ_SSE2 = Snippet("""
    pxor xmm0, xmm0
    pxor xmm1, xmm1
    pxor xmm2, xmm2
    pxor xmm3, xmm3
    pxor xmm4, xmm4
    pxor xmm5, xmm5
    pxor xmm6, xmm6
    pxor xmm7, xmm7
2:
    mov rax, rdi
    lea rcx, [rdi+rsi]
1:
    paddq xmm0, [rax]
    paddq xmm1, [rax+16]
    paddq xmm2, [rax+32]
    paddq xmm3, [rax+48]
    paddq xmm4, [rax+64]
    paddq xmm5, [rax+80]
    paddq xmm6, [rax+96]
    paddq xmm7, [rax+112]
    add rax, 128
    cmp rax, rcx
    jb 1b
    dec rdx
    jnz 2b
    ret
""", bytes.fromhex(
    "660fefc0660fefc9660fefd2660fefdb660fefe4660fefed660feff6660fefff4889f8488d0c37660fd400"
    "660fd44810660fd45020660fd45830660fd46040660fd46850660fd47060660fd478704805800000004839"
    "c872ce48ffca75c2c3"))

# (name, cpuinfo flag that allows it, snippet, bytes per load), widest first; every x86-64
# has SSE2.
READERS = (("avx512", "avx512f", READ_AVX512, 64), ("avx2", "avx2", READ_AVX2, 32),
           ("sse2", None, READ_SSE2, 16))
BLOCK = 512  # bytes per step of the widest reader; every working set is a multiple of it

CHAINS = {"add": (ADD_CHAIN, 16, 1), "imul": (IMUL_CHAIN, 8, 3)}  # snippet, ops, cycles per op


# --- running native code ------------------------------------------------------------------

def unsupported_reason():
    """None where the snippets can run, else why not (one sentence)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"no native snippet for {platform.machine() or 'this architecture'} (x86-64 only)"
    if not sys.platform.startswith("linux"):
        return f"native snippets use the System V calling convention of Linux, not {sys.platform}"
    return None


@functools.lru_cache(maxsize=None)
def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long)
    libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    return libc


@contextlib.contextmanager
def _mapping(size):
    """An anonymous, page-aligned read-write mapping of ``size`` bytes: its address."""
    libc = _libc()
    address = libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE,
                        mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    if address in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), f"mmap of {size} bytes failed")
    try:
        yield address
    finally:
        libc.munmap(address, size)


@contextlib.contextmanager
def native(snippet, *argtypes):
    """``snippet`` as a callable: copied into a mapping that is then made executable.

    Written first and made executable after (never both at once), which systems that
    refuse writable-and-executable memory allow.
    """
    with _mapping(mmap.PAGESIZE) as address:
        ctypes.memmove(address, snippet.code, len(snippet.code))
        if _libc().mprotect(address, mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
            raise OSError(ctypes.get_errno(), "could not make the snippet executable")
        yield ctypes.CFUNCTYPE(ctypes.c_uint64, *argtypes)(address)


def cpu_seconds(call, *args):
    """Seconds of this thread's CPU time one call takes.

    The thread's CPU clock stops while other processes hold the core, so a busy shared
    machine lengthens fewer runs than it would on the wall clock; runs are kept short
    (milliseconds) so that many of them see no interruption at all.
    """
    start = time.thread_time_ns()
    call(*args)
    return (time.thread_time_ns() - start) / 1e9


# A DRAM working set's pass takes tens of milliseconds where a cache level's takes two: its
# runs stop at three once they took this long (2 x 3 runs a study), and the set is at most
# DRAM_CAP. Both matter, twice a study: every page of the set must be touched first (0.45 s
# for 1 GiB here, mostly page faults) and every run reads all of it. Measured on the Intel
# host with AMX, whose VM reports a 480 MiB L3 (so 8 x LLC was 1 GiB): reads from 32-64 MiB
# ran at LLC speed (28 GB/s), 128 MiB at 17-18, 256 MiB 13.6-14.5, 512 MiB 12.9-13.5 and
# 1 GiB 13.9-14.2 GB/s: the knee of the real LLC, not the 480 MiB the VM reports, and DRAM
# speed from 256 MiB on. A measurement took 1.15 s, 0.84 of it the 1 GiB set.
DRAM_CAP = 512 << 20
LONG_RUNS_SECONDS = 0.1


def count_for(run, first, target_seconds):
    """The count (iterations or passes) that makes ``run(count)`` last about ``target_seconds``.

    Runs it with ``first``, then with the count scaled from that; the second run also
    serves as warm-up (turbo ramp, page faults, caches).
    """
    count = first
    for _ in range(2):
        scaled = max(1, round(count * target_seconds / max(run(count), 1e-6)))
        if scaled == count:  # that run already took about target_seconds (or one pass more)
            break
        count = scaled
    return count


def repeated(run, count, repeats, budget_seconds=LONG_RUNS_SECONDS, at_least=3):
    """Seconds of ``repeats`` runs of ``run(count)``, or of fewer, ``at_least`` of them, once
    they took ``budget_seconds``: where a single pass lasts far longer than the target (a DRAM
    working set of 512 MiB: 40 ms a pass) each run is already many short ones in a row."""
    seconds = []
    while len(seconds) < repeats and (len(seconds) < at_least or sum(seconds) < budget_seconds):
        seconds.append(run(count))
    return seconds


def rates(work, seconds):
    """Work per second from repeated timings: the best (shortest run) and the median.

    Interruptions only ever lengthen a run, so the shortest run is the closest to what the
    core does when it runs; the median shows how much a shared machine moved it.
    """
    return {
        "seconds_min": min(seconds),
        "seconds_median": statistics.median(seconds),
        "best": work / min(seconds),
        "median": work / statistics.median(seconds),
        "repeats": len(seconds),
    }


# --- the clock ------------------------------------------------------------------------------

def _nominal_ghz():
    mhz = machine.cpu_info()["mhz"]
    return mhz / 1000 if mhz else None


def measure_clock(repeats=15, target_seconds=0.002):
    """The frequency this core runs at, from dependent-instruction chains of known latency.

    Returns ``measured`` (bool), ``ghz`` (from the add chain's shortest run) or None with
    ``reason``, ``nominal_ghz``, ``method``, ``seconds`` (wall time of the measurement) and
    per chain (``add``, ``imul``) its ``ops`` (dependent instructions timed), its
    ``cycles_per_op``, and ``ghz_best`` / ``ghz_median`` with the timings they came from.
    """
    start = time.perf_counter()
    result = {"measured": False, "ghz": None, "nominal_ghz": _nominal_ghz(),
              "method": ("dependent add chain (1 cycle each), cross-checked by a dependent "
                         f"imul chain (3 cycles each); best of {repeats} runs of about "
                         f"{target_seconds * 1e3:.0f} ms of thread CPU time")}
    reason = unsupported_reason()
    if reason:
        return {**result, "reason": reason, "seconds": time.perf_counter() - start}
    try:
        for name, (snippet, ops, cycles_per_op) in CHAINS.items():
            with native(snippet, ctypes.c_uint64) as chain:
                def run(iterations):
                    return cpu_seconds(chain, iterations)

                iterations = count_for(run, 100_000, target_seconds)
                seconds = [run(iterations) for _ in range(repeats)]
            timed = rates(iterations * ops * cycles_per_op / 1e9, seconds)
            result[name] = {"ops": iterations * ops, "cycles_per_op": cycles_per_op,
                            "ghz_best": timed.pop("best"), "ghz_median": timed.pop("median"),
                            **timed}
    except OSError as error:
        return {**result, "reason": f"could not run native code: {error}",
                "seconds": time.perf_counter() - start}
    result.update(measured=True, ghz=result["add"]["ghz_best"],
                  seconds=time.perf_counter() - start)
    return result


# --- bandwidth ----------------------------------------------------------------------------------

def _round_block(size):
    return max(BLOCK, int(size) // BLOCK * BLOCK)


def working_sets(caches, dram_cap=DRAM_CAP):
    """Bytes to stream for each level: {"l1d", "l2", "llc", "dram"} (levels the CPU lacks left out).

    Half of L1d and half of L2 (room for the rest of the process); for the last level a
    size well clear of L2 and well under the LLC, the geometric mean of the two capped at a
    quarter of the LLC (it is shared, and big on servers); for DRAM eight times the LLC, at
    least 256 MiB (virtual machines may report a smaller LLC than the host has: 64-128 MiB
    still read faster than DRAM on a 32 MiB-LLC guest), at most ``dram_cap``.
    """
    sets = {}
    l1d, l2, llc = caches.get("l1d"), caches.get("l2"), caches.get("l3")
    if l1d:
        sets["l1d"] = _round_block(l1d // 2)
    if l2:
        sets["l2"] = _round_block(l2 // 2)
    if llc and l2 and llc >= 4 * l2:
        sets["llc"] = _round_block(min((l2 * llc) ** 0.5, llc / 4))
    largest = max([size for size in (l1d, l2, llc) if size] or [0])
    sets["dram"] = _round_block(min(max(8 * largest, 256 << 20), dram_cap))
    return sets


def reader_for(flags):
    """(name, snippet, bytes per load) of the widest streaming reader these ISA flags allow."""
    return next((name, snippet, width) for name, flag, snippet, width in READERS
                if flag is None or flags.get(flag))


def measure_bandwidth(caches=None, repeats=9, target_seconds=0.002, flags=None):
    """Bytes per second one core reads from working sets sized for each cache level and DRAM.

    ``caches`` is ``machine.cpu_info()["caches"]`` by default ({"l1d", "l2", "l3"} in
    bytes), ``flags`` its ``flags`` (which vector width to read with). Returns ``measured``,
    ``reader`` (avx512, avx2 or sse2), ``method``, ``seconds``, and ``levels``: per level
    ``working_set`` (bytes), ``bytes_per_second`` (best run), ``bytes_per_second_median``
    and the timings; or ``measured`` False with ``reason``.
    """
    start = time.perf_counter()
    if caches is None or flags is None:
        info = machine.cpu_info()
        caches = info["caches"] if caches is None else caches
        flags = info["flags"] if flags is None else flags
    name, snippet, width = reader_for(flags)
    sets = working_sets(caches)
    result = {"measured": False, "reader": name, "levels": {},
              "method": (f"streaming read with {width * 8}-bit loads ({name}), 8 independent "
                         f"accumulators; best of {repeats} runs of about "
                         f"{target_seconds * 1e3:.0f} ms of thread CPU time per working set "
                         f"(of 3 where one pass over it takes much longer)")}
    reason = unsupported_reason()
    if reason:
        return {**result, "reason": reason, "seconds": time.perf_counter() - start}
    largest = max(sets.values())
    try:
        with _mapping(largest) as buffer, native(snippet, ctypes.c_void_p, ctypes.c_uint64,
                                                  ctypes.c_uint64) as read:
            ctypes.memset(buffer, 0x5A, largest)  # real pages: untouched ones all map to one zero page
            for level, size in sets.items():
                def run(passes):
                    return cpu_seconds(read, buffer, size, passes)

                passes = count_for(run, max(1, (4 << 20) // size), target_seconds)
                seconds = repeated(run, passes, repeats)
                timed = rates(size * passes, seconds)
                result["levels"][level] = {
                    "working_set": size, "passes": passes,
                    "bytes_per_second": timed.pop("best"),
                    "bytes_per_second_median": timed.pop("median"), **timed}
    except OSError as error:
        return {**result, "reason": f"could not run native code: {error}",
                "seconds": time.perf_counter() - start}
    result.update(measured=True, seconds=time.perf_counter() - start)
    return result


def format_ceilings(clock, bandwidth):
    """Two short lines for a terminal or a report."""
    if clock["measured"]:
        nominal = f"{clock['nominal_ghz']:.2f} GHz" if clock["nominal_ghz"] else "unknown"
        first = (f"clock: {clock['ghz']:.2f} GHz measured (imul cross-check "
                 f"{clock['imul']['ghz_best']:.2f} GHz), {nominal} nominal")
    else:
        first = f"clock: not measured ({clock['reason']})"
    if bandwidth["measured"]:
        second = "read bandwidth, one core: " + ", ".join(
            f"{level} {entry['bytes_per_second'] / 1e9:.0f} GB/s ({entry['working_set'] / 1024:,.0f} KiB)"
            for level, entry in bandwidth["levels"].items())
    else:
        second = f"read bandwidth: not measured ({bandwidth['reason']})"
    return f"{first}\n{second}"
