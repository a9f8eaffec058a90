"""The perf backend: ``perf stat`` around the worker's window, and parsers for what perf prints.

perf starts with its counters disabled (``-D -1``) and the worker enables them around its
runs through ``--control fd:CTL,ACK`` (see ``worker.py``). Two output formats are parsed:
the JSON lines of ``perf stat -j`` that this backend asks for, and the human-readable table
kept only for old result files, including the European number format of the P17
recordings (``76.076.451.357``, ``(24,95%)``). Either way
the parser returns per-event values (already scaled by perf when it multiplexed), the
fraction of the window each event was counted, and which events were not supported or not
counted.
"""

import functools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from quantlab import defaults
from quantlab.errors import QuantlabError
from quantlab.counters import _process

WARMUP, ITERATIONS = defaults.COUNT_WARMUP, defaults.PERF_ITERATIONS

# perf event -> quantlab key. On Intel the generic cache-references / cache-misses count
# last-level-cache references and misses.
KEYS = {
    "instructions": "instructions",
    "cycles": "cycles",
    "cache-references": "cache_references",
    "cache-misses": "cache_misses",
    "L1-dcache-loads": "l1d_loads",
    "L1-dcache-load-misses": "l1d_load_misses",
    "LLC-loads": "llc_loads",
    "LLC-load-misses": "llc_load_misses",
}
HARDWARE_EVENTS = tuple(KEYS)
NOT_SUPPORTED, NOT_COUNTED = "<not supported>", "<not counted>"

PERMISSION_CLUES = (
    "perf_event_paranoid",
    "Permission denied",
    "Access to performance monitoring and observability operations is limited",
    "No permission to enable",
)


class PerfStat:
    """Parsed ``perf stat`` output.

    ``values``: event -> number (scaled by perf if multiplexed) or None when not available;
    ``fractions``: event -> fraction of the run the event was counted (1.0 = always);
    ``unsupported`` / ``not_counted``: event names perf reported so; ``elapsed``: seconds.
    """

    def __init__(self):
        self.values, self.units, self.fractions = {}, {}, {}
        self.unsupported, self.not_counted = [], []
        self.elapsed = None

    def add(self, event, value, unit="", percent=None):
        event = canonical_event(event)
        self.units[event] = unit
        if value == NOT_SUPPORTED:
            self.values[event] = None
            self.unsupported.append(event)
        elif value == NOT_COUNTED:
            self.values[event] = None
            self.not_counted.append(event)
        else:
            self.values[event] = value
            self.fractions[event] = None if percent is None else percent / 100.0


def canonical_event(name):
    """``cpu_core/instructions/u`` or ``instructions:u`` -> ``instructions``."""
    name = name.strip()
    match = re.fullmatch(r"[\w-]+/([^/]+)/\w*", name)
    if match:
        name = match.group(1)
    return name.split(":")[0]


# --- machine-readable output (perf stat -j) -------------------------------------------------

def parse_json(text):
    """``perf stat -j``: one JSON object per event, e.g. ``{"counter-value" : "123.000000",
    "unit" : "", "event" : "instructions", "event-runtime" : 1000, "pcnt-running" : 62.50}``."""
    stat = PerfStat()
    for line in text.splitlines():
        if not line.lstrip().startswith("{"):
            continue  # the "# started on" header, perf's own messages ("Events enabled")
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        event, value = entry.get("event"), entry.get("counter-value")
        if not isinstance(event, str) or not isinstance(value, str):
            continue
        if value not in (NOT_SUPPORTED, NOT_COUNTED):
            value = _float(value)
            if value is None:
                continue
        percent = entry.get("pcnt-running")
        stat.add(event, value, entry.get("unit") or "",
                 percent if isinstance(percent, (int, float)) else None)
    return stat


def _float(text):
    try:
        return float(text)
    except ValueError:
        return None


# --- human-readable output ----------------------------------------------------------------

_UNITS = "msec|usec|nsec|ns|us|ms|Joules|MiB|KiB"
_HUMAN = re.compile(
    rf"^\s*(?P<value>{NOT_SUPPORTED}|{NOT_COUNTED}|\d[\d.,]*)\s+"
    rf"(?:(?P<unit>{_UNITS})\s+)?(?P<event>[^\s#(]+)(?P<rest>.*)$"
)
_PERCENT = re.compile(r"\(\s*(\d[\d.,]*)\s*%\s*\)\s*$")


def decimal_mark(text):
    """',' for the European format of the P17 files (76.076.451.357, 45,225 %), else '.'."""
    european = (re.search(r"\d,\d+\s*%", text) or re.search(r"\d\.\d{3}\.\d{3}", text)
                or re.search(r"^\s*\d+,\d+\s+seconds", text, re.MULTILINE))
    return "," if european else "."


def _number(text, mark):
    grouping = "." if mark == "," else ","
    return float(text.replace(grouping, "").replace(mark, "."))


def parse_human(text):
    stat, mark = PerfStat(), decimal_mark(text)
    for line in text.splitlines():
        match = _HUMAN.match(line)
        if not match:
            continue
        value, event, rest = match.group("value"), match.group("event"), match.group("rest")
        if event == "seconds":  # "369,08 seconds time elapsed", "... seconds user"
            if "elapsed" in rest:
                stat.elapsed = _number(value, mark)
            continue
        if value not in (NOT_SUPPORTED, NOT_COUNTED):
            value = _number(value, mark)
        percent = _PERCENT.search(rest)
        # No percentage in human output means the event was counted all the time.
        stat.add(event, value, match.group("unit") or "",
                 _number(percent.group(1), mark) if percent else 100.0)
    return stat


def parse(text):
    """Parse either format: perf stat -j's JSON lines, or the human-readable table."""
    machine = any(line.lstrip().startswith("{") for line in text.splitlines())
    return parse_json(text) if machine else parse_human(text)


# --- what the counts mean -----------------------------------------------------------------

def to_counts(stat, iterations=1):
    """quantlab keys -> value per iteration (None where perf gave nothing); plus IPC."""
    counts = {}
    for event, key in KEYS.items():
        value = stat.values.get(event)
        counts[key] = None if value is None or iterations < 1 else value / iterations
    cycles, instructions = counts["cycles"], counts["instructions"]
    counts["ipc"] = instructions / cycles if cycles and instructions is not None else None
    return counts


def permission_refusal(text):
    return any(clue.lower() in text.lower() for clue in PERMISSION_CLUES)


# --- can this machine count? ------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def hardware_status():
    """Probe once whether perf counts hardware events: (status, detail).

    status is one of ok, missing, permission, unsupported, not-counted, failed.
    """
    if shutil.which("perf") is None:
        return "missing", ""
    try:
        done = subprocess.run(["perf", "stat", "-j", "-e", "instructions,cycles", "true"],
                              capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as error:
        return "failed", str(error)
    text = done.stderr
    if permission_refusal(text):
        return "permission", _paranoid()
    stat = parse_json(text)
    if stat.unsupported or not {"instructions", "cycles"} <= set(stat.values):
        return "unsupported", ""
    if stat.not_counted:
        return "not-counted", ""
    if done.returncode != 0:
        return "failed", _last_line(text)
    return "ok", ""


def _paranoid():
    try:
        return Path("/proc/sys/kernel/perf_event_paranoid").read_text().strip()
    except OSError:
        return "?"


def _last_line(text):
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def refusal_message(status, detail=""):
    """One line saying why perf cannot count hardware events here and what to do."""
    if status == "missing":
        return "perf not found: install it (apt-get install linux-perf) or use --counters valgrind/off"
    if status == "permission":
        return (f"perf may not read hardware counters (kernel.perf_event_paranoid={detail}): run "
                f"'sysctl kernel.perf_event_paranoid=1' or run as root, or use --counters valgrind")
    if status == "unsupported":
        return ("perf reports the hardware counters as <not supported>: this CPU/VM does not "
                "expose hardware counters; use --counters valgrind")
    if status == "not-counted":
        return ("perf opened the hardware counters but they stayed <not counted> (busy or only "
                "partly virtualized); stop other profilers or the NMI watchdog "
                "('sysctl kernel.nmi_watchdog=0'), or use --counters valgrind")
    return f"perf stat failed ({detail}); use --counters valgrind"


def require():
    status, detail = hardware_status()
    if status != "ok":
        raise QuantlabError(refusal_message(status, detail))


# --- running it ---------------------------------------------------------------------------

def command(events, out_file, ctl_fd, ack_fd, worker_argv):
    return ["perf", "stat", "-j", "--control", f"fd:{ctl_fd},{ack_fd}", "-D", "-1",
            "-e", ",".join(events), "-o", str(out_file), "--", *worker_argv]


def count(artifact, batch_size, iterations=ITERATIONS, warmup=WARMUP, threads=1,
          kernels="xnnpack", events=HARDWARE_EVENTS, runtime=None, precision=None):
    """Run the worker under perf stat; return the backend's part of the result.

    ``events`` other than the hardware ones (e.g. task-clock) are for checking the window on
    machines without hardware counters; their totals are in ``totals``.
    """
    if shutil.which("perf") is None:
        raise QuantlabError(refusal_message("missing"))
    ctl_read, ctl_write = os.pipe()  # worker -> perf: enable / disable
    ack_read, ack_write = os.pipe()  # perf -> worker: ack
    fds = (ctl_read, ctl_write, ack_read, ack_write)

    closed = []

    def close_ours():  # once started, only perf and the worker hold them: EOF means gone
        for fd in fds:
            os.close(fd)
        closed.append(True)

    with _process.scratch_dir() as scratch:
        out_file = Path(scratch, "perf.json")
        worker = _process.worker_argv(artifact, batch_size=batch_size, warmup=warmup,
                                      iterations=iterations, mode="perf", threads=threads,
                                      kernels=kernels, ctl_fd=ctl_write, ack_fd=ack_read,
                                      runtime=runtime, precision=precision)
        argv = command(events, out_file, ctl_read, ack_write, worker)
        try:
            status, stdout, stderr = _process.run(argv, scratch, pass_fds=fds, after_start=close_ours)
        except BaseException:
            if not closed:
                for fd in fds:
                    os.close(fd)
            raise
        text = out_file.read_text(errors="replace") if out_file.exists() else ""
    if permission_refusal(stderr):
        raise QuantlabError(refusal_message("permission", _paranoid()))
    if status != 0:
        raise _process.failure("perf", status, stderr)
    stat = parse_json(text)
    return {
        "events": [canonical_event(e) for e in events],
        "per_inference": to_counts(stat, iterations),
        "totals": dict(stat.values),
        "units": dict(stat.units),
        "scaling": {e: f for e, f in stat.fractions.items() if f is not None} or None,
        "unsupported": stat.unsupported,
        "not_counted": stat.not_counted,
        "caveats": caveats(stat),
        "top_kernels": [],
        "cache_geometry": None,
        "worker": _process.report(stdout),
    }


def caveats(stat):
    notes = []
    partial = {e: f for e, f in stat.fractions.items() if f is not None and f < 0.999}
    if partial:
        low, high = min(partial.values()), max(partial.values())
        notes.append(f"perf multiplexed the counters: {len(partial)} events were counted for "
                     f"{low:.0%}-{high:.0%} of the window and scaled up, so they are estimates")
    if stat.unsupported:
        notes.append(f"not supported by this CPU: {', '.join(stat.unsupported)}")
    if stat.not_counted:
        notes.append(f"not counted: {', '.join(stat.not_counted)}")
    return notes
