"""The valgrind backend: run the worker under callgrind's cache simulator and read its dumps.

callgrind starts with instrumentation off; for each batch size the worker switches it on
around its runs and dumps after 1 run ("short") and after K+1 runs ("long") (see
``worker.py``). One worker counts all the batch sizes of one model, so that valgrind's
start and the imports (TensorFlow's take a minute under valgrind) are paid once. This
module builds the command, runs it, parses callgrind's output files and maps the simulated
events to quantlab's counter names:

=================  ====================  ============================================
quantlab key       callgrind events      why
=================  ====================  ============================================
instructions       Ir                    instructions executed
l1d_loads          Dr                    data reads, all of which look up L1d
l1d_load_misses    D1mr                  data reads that missed L1d
cache_references   I1mr + D1mr + D1mw    accesses reaching the last level: what perf's
                                         generic ``cache-references`` counts on Intel
cache_misses       ILmr + DLmr + DLmw    last-level misses (perf's ``cache-misses``)
llc_loads          D1mr                  data reads reaching the last level
llc_load_misses    DLmr                  data reads that missed it too
cycles, ipc        (none)                callgrind has no timing model
=================  ====================  ============================================
"""

import re
import shutil
from collections import Counter
from pathlib import Path

from quantlab import defaults
from quantlab.errors import QuantlabError
from quantlab.counters import _process, geometry
from quantlab.counters.protocol import LONG, SHORT, dump_name

EVENTS = ("Ir", "Dr", "Dw", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw")
WARMUP, ITERATIONS = defaults.COUNT_WARMUP, defaults.VALGRIND_ITERATIONS  # why: see defaults
# From this batch size on, a run costs most (float32 dense at batch 64: ~20 s, mostly valgrind
# emulating FMA instructions) and its per-inference counts hardly depend on the history:
# one measured run, and no uncounted warm-up once the model has run in this worker. Measured
# on the three nets at batch 64: instructions within 0.01 %, misses within 0.3 % of the
# two-run, warmed-up figures.
LARGE_BATCH = 64
TOP = 5

MISSING = "valgrind not found: install it (apt-get install valgrind) or use --counters perf/off"

AVX512_CAVEAT = (
    "simulated by valgrind, whose virtual CPU has no AVX-512 and no AMX: the runtimes ran "
    "their AVX2/FMA3 kernels (XNNPACK, oneDNN's jit_avx2, MLAS) rather than the AVX-512, "
    "VNNI or AMX ones they pick natively where the CPU has them, so instruction and miss "
    "counts describe those AVX2 kernels"
)
# Runtimes whose kernels valgrind can only name by address.
UNNAMED = {
    "openvino": "OpenVINO compiles its kernels at run time (oneDNN JIT), so valgrind names "
                "them only by address; its own per-layer counts name the primitives",
    "onnxruntime": "ONNX Runtime's library carries no symbols for its kernels, so valgrind "
                   "names them only by address; its own node profile names the operators",
}
MODEL_CAVEAT = (
    "valgrind's cache model has no hardware prefetcher and no timing: misses are those of "
    "a plain LRU cache, and there are no cycles, hence no IPC"
)


def available():
    return shutil.which("valgrind") is not None


def require():
    if not available():
        raise QuantlabError(MISSING)


# --- the command ------------------------------------------------------------------------

def command(worker_argv, out_file, log_file, cache="host"):
    # --vgdb=no: the worker makes its requests itself (worker.CallgrindRequests), no gdbserver
    return ["valgrind", "--tool=callgrind", "--cache-sim=yes", "--instr-atstart=no", "--vgdb=no",
            f"--callgrind-out-file={out_file}", f"--log-file={log_file}",
            *geometry.valgrind_options(cache), *worker_argv]


# --- callgrind's output format ----------------------------------------------------------

class Profile:
    """One callgrind dump: event names, totals, self cost per function, geometry, trigger."""

    def __init__(self, events, totals, functions, caches, trigger):
        self.events, self.totals, self.functions = events, totals, functions
        self.caches, self.trigger = caches, trigger


_NAMED = re.compile(r"\((\d+)\)(?: (.*))?$")
# callgrind writes "8-way associative", "direct-mapped" or (cachegrind) "fully associative"
_CACHE = re.compile(r"desc: (I1|D1|LL) cache:\s+(\d+) B, (\d+) B, "
                    r"(?:(\d+)-way|(direct-mapped)|(fully associative))")
_COST_START = tuple("0123456789+-*")


def _vector(fields, width):
    values = [int(v) for v in fields]
    return values + [0] * (width - len(values))


def parse_profile(text):
    """Parse a callgrind output file (compressed names ``fn=(12) name`` / ``fn=(12)``).

    A cost line after ``calls=`` is the inclusive cost of that call, already counted as self
    cost inside the callee, so it is skipped rather than added to the caller.
    """
    events, summary, totals, trigger = [], None, None, None
    names, caches = {}, {}
    functions = {}
    current, positions, after_calls = None, 1, False
    for line in text.splitlines():
        if line.startswith(_COST_START):
            if after_calls:
                after_calls = False
            elif current is not None:
                cost = _vector(line.split()[positions:], len(events))
                own = functions.setdefault(current, [0] * len(events))
                for i, value in enumerate(cost):
                    own[i] += value
            continue
        key, _, value = line.partition("=")
        if key in ("fn", "cfn"):  # fn and cfn share one table of compressed names
            match = _NAMED.match(value)
            if match:
                if match.group(2) is not None:
                    names[match.group(1)] = match.group(2)
                name = names.get(match.group(1), f"({match.group(1)})")
            else:
                name = value
            if key == "fn":
                current = re.sub(r"'\d+$", "", name)  # fold recursion levels: f'2 -> f
            continue
        if key in ("ob", "cob", "fl", "fi", "fe", "cfi", "cfl", "jump", "jcnd"):
            continue
        if key == "calls":
            after_calls = True
            continue
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith("positions:"):
            positions = len(line.split()) - 1
        elif line.startswith("summary:"):
            summary = line.split()[1:]
        elif line.startswith("totals:"):
            totals = line.split()[1:]
        elif line.startswith("desc: Trigger:"):
            trigger = line.split(":", 2)[2].strip()
        elif _CACHE.match(line):
            level, size, line_size, ways, direct, _ = _CACHE.match(line).groups()
            size, line_size = int(size), int(line_size)
            assoc = int(ways) if ways else 1 if direct else size // line_size
            caches[level] = (size, assoc, line_size)
    if not events:
        raise QuantlabError("not a callgrind output file (no 'events:' line)")
    if totals is None and summary is None:
        own = [sum(c[i] for c in functions.values()) for i in range(len(events))]
    else:  # "totals" is the sum of the file's cost lines; "summary" can lag behind it
        own = _vector(totals if totals is not None else summary, len(events))
    return Profile(events, dict(zip(events, own)), functions, caches, trigger)


# --- from two dumps to per-inference figures -------------------------------------------

def difference(long, short, iterations):
    """Per-inference event counts and per-function self Ir from the two windows.

    A count that falls from the short to the long window (seen: a few LL misses in all,
    from Python's adaptive interpreter specializing some call in one window and not the
    other) is noise around a true value of zero, so it is reported as zero.
    """
    per = {e: max(0, long.totals.get(e, 0) - short.totals.get(e, 0)) / iterations
           for e in long.events}
    index = long.events.index("Ir")
    own = Counter()
    for name, cost in long.functions.items():
        own[name] += cost[index]
    for name, cost in short.functions.items():
        own[name] -= cost[index]
    return per, own


def to_counts(per):
    """Map callgrind events to quantlab's keys (see the table in the module docstring)."""
    return {
        "instructions": per["Ir"],
        "cache_references": per["I1mr"] + per["D1mr"] + per["D1mw"],
        "cache_misses": per["ILmr"] + per["DLmr"] + per["DLmw"],
        "l1d_loads": per["Dr"],
        "l1d_load_misses": per["D1mr"],
        "llc_loads": per["D1mr"],
        "llc_load_misses": per["DLmr"],
        "cycles": None,
        "ipc": None,
    }


def top_kernels(own, instructions, iterations, top=TOP):
    if instructions <= 0:
        return []
    total = instructions * iterations
    best = [(name, ir) for name, ir in own.most_common(top) if ir > 0]
    return [{"function": name, "instructions": ir / iterations, "share": ir / total}
            for name, ir in best]


# --- cache geometry actually simulated -------------------------------------------------

_ADJUST = re.compile(r"warning: (specified|simulated) (\w+) cache: line_size (\d+)\s+"
                     r"assoc (\d+)\s+total_size ([\d,]+)")


def geometry_result(cache, caches):
    canonical = geometry.parse_cache_geometry(cache)
    name = canonical if canonical in geometry.CACHE_GEOMETRIES else "custom"
    found = {level: {"size": s, "assoc": a, "line": l} for level, (s, a, l) in caches.items()}
    return {"name": name, **found, "spec": geometry.spec_text(caches)}


def adjustment_caveats(log_text, caches):
    """valgrind rounds host caches it cannot simulate (e.g. a 300 MiB 20-way L3): say so."""
    seen = {}
    for kind, level, line, assoc, size in _ADJUST.findall(log_text):
        seen[(kind, level)] = (int(size.replace(",", "")), int(assoc), int(line))
    caveats = []
    for (kind, level), simulated in seen.items():
        specified = seen.get(("specified", level))
        if kind == "simulated" and specified and caches.get(level) == simulated:
            caveats.append(
                f"valgrind cannot simulate this CPU's {level} cache as it is "
                f"({geometry.describe_level(level, *specified)}: its set count is not a power "
                f"of two) and simulated {geometry.describe_level(level, *simulated)} instead"
            )
    return caveats


# --- running it ---------------------------------------------------------------------------

def trigger_name(text):
    """The name a dump was asked for under, from its ``desc: Trigger:`` line (else None)."""
    for line in text.splitlines():
        if line.startswith("desc: Trigger:"):
            words = line.split(":", 2)[2].split()
            return words[-1] if words else None
        if line[:1].isdigit() or line.startswith(("fn=", "fl=", "ob=")):
            return None  # past the header
    return None


def _dumps(out_file, names):
    """{name: Profile} of the dumps named ``names``; only those files are parsed in full."""
    found = {}
    for path in sorted(Path(out_file).parent.glob(Path(out_file).name + "*")):
        with open(path, errors="replace") as f:
            name = trigger_name(f.read(4096))
        if name in names and name not in found:
            found[name] = parse_profile(path.read_text(errors="replace"))
    missing = [name for name in names if name not in found]
    if missing:
        raise QuantlabError(f"callgrind wrote no '{missing[0]}' dump; did the worker reach its windows?")
    return found


def plan(batch_sizes, iterations=None, warmup=WARMUP):
    """(warm-up runs, measured runs, runs in the short window) for each batch size, counted
    in the order given.

    ``iterations`` None picks ITERATIONS, or 1 from LARGE_BATCH on; a number applies to all.
    A large batch gets one warm-up run (none after another batch size), where a run costs
    seconds and Python's quickening is a rounding error, and an empty short window: what it
    subtracts (the control requests, some 4 000 instructions and 600 misses) is a rounding
    error there too, and a run of float32 dense at batch 64 costs a minute under valgrind.
    """
    steps = []
    for position, batch_size in enumerate(batch_sizes):
        large = batch_size >= LARGE_BATCH
        steps.append((0 if large and position > 0 else 1 if large else warmup,
                      iterations if iterations is not None else 1 if large else ITERATIONS,
                      0 if large else 1))
    return steps


def count_many(artifact, batch_sizes, iterations=None, warmup=WARMUP, threads=1,
               kernels="xnnpack", cache="host", runtime=None, precision=None):
    """Count every batch size in one worker under callgrind; {batch size: backend's part}.

    Each part holds the ``warmup`` and ``iterations`` its batch size was counted with (see
    ``plan``).
    """
    require()
    cache = geometry.parse_cache_geometry(cache)
    batch_sizes = [int(b) for b in batch_sizes]
    steps = plan(batch_sizes, None if iterations is None else int(iterations), warmup)
    names = [dump_name(window, b) for b in batch_sizes for window in (SHORT, LONG)]
    with _process.scratch_dir() as scratch:
        out_file, log_file = Path(scratch, "callgrind.out"), Path(scratch, "valgrind.log")
        warmups, measured, shorts = zip(*steps)
        worker = _process.worker_argv(artifact, batch_size=batch_sizes, warmup=warmups,
                                      iterations=measured, mode="valgrind", threads=threads,
                                      kernels=kernels, short_runs=shorts, runtime=runtime,
                                      precision=precision)
        argv = command(worker, out_file, log_file, cache)
        status, stdout, stderr = _process.run(argv, scratch)
        log = log_file.read_text(errors="replace") if log_file.exists() else ""
        if status != 0:
            raise _process.failure("valgrind", status, stderr, log)
        dumps = _dumps(out_file, names)
    report = _process.report(stdout)
    # the warm-up runs each batch size had: fewer than planned where they were slow (worker.warm_up)
    return {b: {"warmup": report["warmup_runs"][str(b)], "iterations": k, "short_runs": short,
                **_part(dumps[dump_name(SHORT, b)], dumps[dump_name(LONG, b)], k, threads,
                        cache, log, report)}
            for b, (_, k, short) in zip(batch_sizes, steps)}


def _part(short, long, iterations, threads, cache, log, report):
    per, own = difference(long, short, iterations)
    caveats = [AVX512_CAVEAT]
    used = geometry_result(cache, long.caches)
    levels = ", ".join(geometry.describe_level(level, *long.caches[level])
                       for level in geometry.LEVELS if level in long.caches)
    caveats.append(f"simulated caches ({used['name']} geometry): {levels}")
    if used["name"] == "host":
        caveats += geometry.host_levels()[1]
    caveats += adjustment_caveats(log, long.caches)
    caveats.append(MODEL_CAVEAT)
    if threads and threads > 1:
        caveats.append("valgrind runs one thread at a time: counts are summed over all "
                       "threads, including any spinning of idle workers")
    if report.get("runtime") in UNNAMED:
        caveats.append(UNNAMED[report["runtime"]])
    return {
        "events": list(long.events),
        "per_inference": to_counts(per),
        "scaling": None,
        "caveats": caveats,
        "top_kernels": top_kernels(own, per["Ir"], iterations),
        "cache_geometry": used,
        "worker": report,
    }
