"""Which native kernels run in each timed window: ``perf record`` cpu-clock samples, attributed.

valgrind names the kernels of a simulated CPU without AVX-512 or AMX; this module names the
ones that really run. One ``Sampler`` attaches ``perf record -e cpu-clock`` to a running
process (by default this one) for a whole session, with sample timestamps on
CLOCK_MONOTONIC. The caller notes ``now()`` before and after each timed case and, once the
sampler is stopped, ``attribute`` returns per window the kernels that took its samples,
their share, and the instruction set each one uses, read from its name.

cpu-clock is a software event (a timer on each thread's CPU time), so it samples on
virtual machines that expose no hardware counters.

    >>> sampler, why_not = try_start()          # doctest: +SKIP
    >>> begin = now(); run_the_case(); end = now()                   # doctest: +SKIP
    >>> sampler.stop()                                              # doctest: +SKIP
    >>> sampler.attribute([(begin, end)])[0]["kernels"][0]          # doctest: +SKIP
    {'symbol': 'xnn_qs8_qc8w_igemm_minmax_fp32_ukernel_7x16c8__avx512vnni_prfm', 'dso':
     '.../ai_edge_litert/libpywrap_litert_common.so', 'samples': 107, 'share': 0.70,
     'isa': 'AVX-512 VNNI'}
"""

import bisect
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from quantlab.errors import QuantlabError
from quantlab.counters.perf import PERMISSION_CLUES

# One sample per millisecond of a thread's CPU time (1 kHz): a quick study's 0.2 s case gets
# a few hundred samples, enough to rank its kernels. Each sample costs the sampled thread
# about 12 us on a KVM guest (timer interrupts are dear there), i.e. about 1.2 % at 1 kHz;
# benchmarks/test_measurement_costs.py measures it.
PERIOD_NS = 1_000_000
START_TIMEOUT, STOP_TIMEOUT = 30.0, 120.0
TOP = 5


def now():
    """CLOCK_MONOTONIC in nanoseconds: the clock the samples are stamped with."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


# --- the instruction set a kernel uses, from its name ----------------------------------------

# XNNPACK names its microkernels xnn_<types>_<op>_ukernel_<tile>__<arch>[_<variant>], or
# ..._ukernel_<tile>__asm_amd64_<arch> for hand-written assembly; the <arch> token says
# which instructions it was written with.
_XNNPACK_KERNEL = re.compile(r"^xnn_\w*__(\w+)$")
ISA_NAMES = {
    "avx512amx": "AMX",
    "avx512vnnigfni": "AVX-512 VNNI", "avx512vnni": "AVX-512 VNNI",
    "avx512bf16": "AVX-512 BF16", "avx512fp16": "AVX-512 FP16",
    "avx512vbmi": "AVX-512 VBMI", "avx512skx": "AVX-512", "avx512f": "AVX-512",
    "avxvnniint8": "AVX-VNNI-INT8", "avxvnni": "AVX-VNNI",
    "avx2": "AVX2", "fma3": "FMA3", "f16c": "F16C", "avx": "AVX",
    "sse41": "SSE4.1", "ssse3": "SSSE3", "sse2": "SSE2", "sse": "SSE",
    "scalar": "scalar",
}
UNKNOWN = "unknown"


def isa_token(symbol):
    """The architecture token of an XNNPACK microkernel name (``avx512vnni``), else None."""
    match = _XNNPACK_KERNEL.match(symbol)
    if not match:
        return None
    return next((token for token in match.group(1).split("_") if token in ISA_NAMES), None)


def isa_of(symbol):
    """The instruction set a kernel is written for, from its name; "unknown" unless it says."""
    return ISA_NAMES.get(isa_token(symbol) or "", UNKNOWN)


# --- perf script output -------------------------------------------------------------------------

# "  794.931188923:      7f1be1bec945 xnn_f32_igemm_..._avx512f_broadcast (/path/lib.so)"
# The symbol may hold blanks and parentheses (demangled C++), so the shared object is the
# last parenthesized group of the line.
_SAMPLE = re.compile(r"^\s*(?P<sec>\d+)\.(?P<frac>\d{1,9}):\s+[0-9a-f]+\s+(?P<symbol>.*?)\s*"
                     r"\((?P<dso>[^()]*)\)\s*$")


def parse_script(text):
    """Samples of ``perf script -F time,ip,sym,dso --ns`` as (ns, symbol, dso), sorted by time.

    Lines that are not samples (warnings perf mixes in) are skipped. Each distinct name is
    kept once: a long session has hundreds of thousands of samples but few names.
    """
    names, samples = {}, []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            ns = int(match.group("sec")) * 1_000_000_000 + int(match.group("frac").ljust(9, "0"))
            symbol = match.group("symbol") or "[unknown]"
            dso = match.group("dso")
            samples.append((ns, names.setdefault(symbol, symbol), names.setdefault(dso, dso)))
    samples.sort(key=lambda sample: sample[0])
    return samples


def attribute(samples, windows, top=TOP):
    """Per window (begin_ns, end_ns): its samples and its ``top`` kernels by share of them.

    Each entry: ``begin``, ``end``, ``samples`` (in the window), ``kernels`` (``symbol``,
    ``dso``, ``samples``, ``share``, ``isa``, largest share first; equal counts by name),
    ``isa_shares`` (share of the window's samples per instruction set, over all kernels).
    """
    times = [sample[0] for sample in samples]
    found = []
    for begin, end in windows:
        inside = samples[bisect.bisect_left(times, begin):bisect.bisect_right(times, end)]
        counts = Counter((symbol, dso) for _, symbol, dso in inside)
        total = len(inside)
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        kernels = [{"symbol": symbol, "dso": dso, "samples": n, "share": n / total,
                    "isa": isa_of(symbol)} for (symbol, dso), n in ranked[:top]]
        by_isa = Counter()
        for (symbol, _), n in counts.items():
            by_isa[isa_of(symbol)] += n
        found.append({"begin": begin, "end": end, "samples": total, "kernels": kernels,
                      "isa_shares": {isa: n / total for isa, n in by_isa.most_common()}})
    return found


def format_window(entry, label=""):
    """One line: "label: 78% xnn_... (AVX-512 VNNI), 12% ..." or that nothing was sampled."""
    head = f"{label}: " if label else ""
    if not entry["samples"]:
        return f"{head}no samples in this window"
    kernels = ", ".join(f"{k['share']:.0%} {k['symbol']} ({k['isa']})" for k in entry["kernels"])
    return f"{head}{entry['samples']} samples: {kernels}"


# --- the sampler ------------------------------------------------------------------------------

def refusal(text, pid):
    """One line for why perf record could not sample ``pid``, from perf's own words."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if any(clue.lower() in text.lower() for clue in PERMISSION_CLUES):
        try:
            paranoid = Path("/proc/sys/kernel/perf_event_paranoid").read_text().strip()
        except OSError:
            paranoid = "?"
        return (f"perf may not sample process {pid} (kernel.perf_event_paranoid={paranoid}): "
                f"run as root or 'sysctl kernel.perf_event_paranoid=1'; no native kernel attribution")
    # perf says "Error:" on a line of its own and the reason on the next one
    after_error = [following for line, following in zip(lines, lines[1:]) if line == "Error:"]
    detail = (after_error or [line for line in lines if "rror" in line] or lines[-1:]
              or ["no output"])[0]
    return f"perf record could not sample cpu-clock of process {pid} ({detail}); no native kernel attribution"


# Deletes a folder once a process has ended. perf runs in a session of its own and outlives
# a sampler whose process is killed (a killed Dask worker takes its timing run with it):
# nobody else would delete that process's perf.data.
_JANITOR = (
    "import os, select, shutil, sys, time\n"
    "folder, pid = sys.argv[1], int(sys.argv[2])\n"
    "if os.fork():  # the caller waits for this one only; the child goes on alone\n"
    "    os._exit(0)\n"
    "try:\n"
    "    select.select([os.pidfd_open(pid)], [], [])\n"
    "except ProcessLookupError:\n"
    "    pass\n"
    "except (AttributeError, OSError):  # no pidfd: ask every second\n"
    "    while os.path.exists(f'/proc/{pid}'):\n"
    "        time.sleep(1)\n"
    "shutil.rmtree(folder, ignore_errors=True)\n")


def _remove_when_gone(folder, pid):
    """``folder`` deleted once process ``pid`` has ended, however it ends (a stop() deletes
    it before that; this is for a process killed before its stop())."""
    subprocess.run([sys.executable, "-c", _JANITOR, folder, str(pid)], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                   check=False)


class Sampler:
    """``perf record -e cpu-clock`` attached to one process from ``start`` to ``stop``.

    ``start`` returns only once perf has opened and enabled its events (it answers a
    ``ping`` on its control pipe after that), so the first window is not lost. Both ends of
    the control pipes stay open until ``stop``: perf treats a closed one as an error.
    """

    def __init__(self, pid=None, period_ns=PERIOD_NS):
        self.pid = os.getpid() if pid is None else int(pid)
        self.period_ns = int(period_ns)
        self.samples = None
        self.seconds = {}
        self._process = self._folder = None
        self._fds = {}

    def command(self, data_file, ctl_fd, ack_fd):
        # -B -N: no build-id collection at the end (seconds of work perf script does not need)
        return ["perf", "record", "-e", "cpu-clock", "-c", str(self.period_ns),
                "-k", "CLOCK_MONOTONIC", "-B", "-N", "-p", str(self.pid), "-o", str(data_file),
                "--control", f"fd:{ctl_fd},{ack_fd}"]

    @property
    def data_file(self):
        return Path(self._folder, "perf.data")

    @property
    def log_file(self):
        return Path(self._folder, "perf.log")

    def _log(self):
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def start(self):
        """Attach perf; raise QuantlabError (one line) when perf is missing or refused."""
        if shutil.which("perf") is None:
            raise QuantlabError("perf not found: install it (apt-get install linux-perf) for "
                                "native kernel attribution; carrying on without it")
        started = time.perf_counter()
        self._folder = tempfile.mkdtemp(prefix="quantlab-sampling-")
        _remove_when_gone(self._folder, os.getpid())
        ctl_read, self._fds["ctl"] = os.pipe()
        self._fds["ack"], ack_write = os.pipe()
        try:
            # perf's messages go to a file: a pipe nobody reads during a long session could
            # fill up and stall perf. A session of its own keeps a terminal's Ctrl-C, meant
            # for the caller, from stopping perf before the caller stops it.
            with open(self.log_file, "wb") as log:
                self._process = subprocess.Popen(
                    self.command(self.data_file, ctl_read, ack_write), pass_fds=(ctl_read, ack_write),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True)
        except OSError:
            self._cleanup()
            raise
        finally:
            os.close(ctl_read)
            os.close(ack_write)
        if not self._ping():
            raise QuantlabError(refusal(self._abort(), self.pid))
        self.seconds["start"] = time.perf_counter() - started
        return self

    def _ping(self):
        """True once perf acknowledges a ping; False if it exits or stays silent."""
        try:
            os.write(self._fds["ctl"], b"ping\n")
        except BrokenPipeError:
            return False
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self._fds["ack"]], [], [], 0.05)
            if ready:
                return os.read(self._fds["ack"], 64).startswith(b"ack")  # perf sends "ack\n\0"
            if self._process.poll() is not None:
                return False
        return False

    def _abort(self):
        """Stop a perf that did not start; return its log for the message, delete the rest."""
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        log = self._log()
        self._cleanup()
        return log

    def _cleanup(self):
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
        shutil.rmtree(self._folder, ignore_errors=True)
        self._process = None

    def stop(self):
        """Stop perf, read its samples into ``self.samples``, delete its files."""
        if self._process is None:
            raise RuntimeError("the sampler was not started")
        started = time.perf_counter()
        try:
            # SIGINT is how perf record is meant to end: it drains its buffers and finishes
            # the file's header.
            self._process.send_signal(signal.SIGINT)
            self._process.wait(timeout=STOP_TIMEOUT)
            self.seconds["stop"] = time.perf_counter() - started
            if self._process.returncode not in (0, -signal.SIGINT) or not self.data_file.exists():
                raise QuantlabError(f"perf record failed ({_last(self._log())}); "
                                    "no native kernel attribution")
            started = time.perf_counter()
            script = subprocess.run(
                ["perf", "script", "-i", str(self.data_file), "-F", "time,ip,sym,dso", "--ns"],
                capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL)
            if script.returncode != 0:
                raise QuantlabError(f"perf script failed ({_last(script.stderr)}); "
                                    "no native kernel attribution")
            self.samples = parse_script(script.stdout)
            self.seconds["script"] = time.perf_counter() - started
        finally:
            if self._process.poll() is None:
                self._process.kill()
                self._process.wait()
            self._cleanup()
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._process is not None:  # left without stop(): do not leave perf attached
            self.stop()

    def attribute(self, windows, top=TOP):
        if self.samples is None:
            raise RuntimeError("stop the sampler before attributing windows")
        return attribute(self.samples, windows, top)


def _last(text):
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def try_start(pid=None, period_ns=PERIOD_NS):
    """(a started Sampler, None), or (None, one line saying why there is no attribution)."""
    try:
        return Sampler(pid, period_ns).start(), None
    except (QuantlabError, OSError) as error:
        return None, str(error)
