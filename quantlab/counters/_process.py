"""Starting the counting worker under a tool, and turning its failures into one-line errors.

Both backends run ``python -m quantlab.counters.worker`` under another program (callgrind or
perf stat). Its output goes to files in a scratch directory, never to pipes that could fill
up, and a failure comes back as the worker's own one-line message when it gave one.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from quantlab import defaults
from quantlab.errors import QuantlabError
from quantlab.orphans import dying_with_parent
from quantlab.counters.protocol import ERROR_MARK

TIMEOUT = 1800  # s; a frozen-graph model under callgrind may take minutes, not hours
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def scratch_dir():
    return tempfile.TemporaryDirectory(prefix="quantlab-counters-")


# The worker's options, as worker_argv writes them and the worker parses them (argparse).
# A list per batch size takes one number for all of them, or one for each.
WORKER_OPTIONS = {
    "batch_size": dict(type=int, nargs="+", required=True, metavar="N",
                       help="one or more (valgrind mode), counted in this order"),
    "warmup": dict(type=int, nargs="+", default=[defaults.COUNT_WARMUP], metavar="W",
                   help="uncounted runs, per batch size"),
    "iterations": dict(type=int, nargs="+", required=True, metavar="K",
                       help="measured runs, per batch size"),
    "mode": dict(choices=("valgrind", "perf"), required=True),
    "threads": dict(type=int, metavar="T"),
    "kernels": dict(choices=defaults.KERNELS, default=defaults.KERNELS[0]),
    "short_runs": dict(type=int, nargs="+", default=[1], metavar="S",
                       help="valgrind mode: runs in the short window, per batch size"),
    "runtime": dict(metavar="NAME", help="as quantlab.runtime.load takes it"),
    "precision": dict(metavar="P", help="bf16: a float model in bfloat16"),
    "ctl_fd": dict(type=int, metavar="FD", help="perf mode: perf's control fd"),
    "ack_fd": dict(type=int, metavar="FD", help="perf mode: perf's ack fd"),
}


def add_worker_options(parser):
    parser.add_argument("artifact")
    for dest, declared in WORKER_OPTIONS.items():
        parser.add_argument("--" + dest.replace("_", "-"), dest=dest, **declared)


def worker_argv(artifact, **values):
    """The worker's command line: ``values`` by WORKER_OPTIONS' names; None leaves one out."""
    # An absolute path: the worker runs elsewhere, and one model has one name whatever the cwd.
    argv = [sys.executable, "-m", "quantlab.counters.worker", str(Path(artifact).resolve())]
    for dest, value in values.items():
        if dest not in WORKER_OPTIONS:
            raise ValueError(f"the counting worker has no option {dest!r}")
        if value is not None:
            listed = value if isinstance(value, (list, tuple)) else [value]
            argv += ["--" + dest.replace("_", "-"), *map(str, listed)]
    return argv


# The worker's environment and working directory land on its stack and heap, so their sizes
# shift the alignment of its buffers: a variable that changes from call to call (PWD,
# PYTEST_CURRENT_TEST, ...) changed the counts by up to 0.15%. Only variables that can
# change what the worker does are passed on, and it runs in its scratch directory.
_KEPT = ("PATH", "HOME", "LANG", "TMPDIR", "VIRTUAL_ENV")
_KEPT_PREFIXES = ("PYTHON", "LC_", "LD_", "TF_", "OMP_", "KMP_", "QUANTLAB_")


def worker_env():
    env = {k: v for k, v in os.environ.items() if k in _KEPT or k.startswith(_KEPT_PREFIXES)}
    # A fixed hash seed keeps dict layouts, and so instruction counts, equal from run to run.
    env["PYTHONHASHSEED"] = "0"
    # As quantlab._tf sets them, whether or not this process has imported TensorFlow yet.
    env.setdefault("TF_USE_LEGACY_KERAS", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # The worker must import this very quantlab, whether installed or run from a checkout.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    return env


def run(argv, scratch, timeout=TIMEOUT, pass_fds=(), after_start=None):
    """Run ``argv`` with stdout/stderr in ``scratch``; return (status, stdout, stderr)."""
    out_path, err_path = Path(scratch, "stdout.txt"), Path(scratch, "stderr.txt")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        try:
            process = subprocess.Popen(dying_with_parent(argv), stdin=subprocess.DEVNULL,
                                       stdout=out, stderr=err,
                                       env=worker_env(), cwd=scratch, pass_fds=pass_fds,
                                       start_new_session=True)  # so a timeout kills it all
        except OSError as error:
            raise QuantlabError(f"cannot start {argv[0]}: {error.strerror}") from None
        if after_start:
            after_start()
        try:
            status = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(process)
            raise QuantlabError(f"counting did not finish within {timeout} s; "
                                f"try fewer iterations or a smaller batch") from None
        except BaseException:  # e.g. Ctrl-C: its own session would not get the signal
            _kill(process)
            raise
    return (status, out_path.read_text(errors="replace"), err_path.read_text(errors="replace"))


def _kill(process):
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


KILLED_FROM_OUTSIDE = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def failure(tool, status, *texts):
    """A one-line QuantlabError for a failed run: the worker's message, else the last line of
    the first of ``texts`` that has one (the worker's stderr before the tool's log: a
    worker that died before it could mark its error still wrote its last words there)."""
    texts = [[line.strip() for line in text.splitlines() if line.strip()] for text in texts]
    for line in (line for lines in texts for line in lines):
        if ERROR_MARK in line:
            return QuantlabError(line.split(ERROR_MARK, 1)[1])
    ended = f"exit status {status}" if status >= 0 else f"signal {signal.Signals(-status).name}"
    if -status in KILLED_FROM_OUTSIDE:  # whatever the logs end with is not why
        return QuantlabError(f"counting under {tool} failed: it was killed ({ended}); run it again")
    clue = _last_words([lines for lines in texts if lines])  # a crash: its last words
    return QuantlabError(f"counting under {tool} failed ({ended}): {clue}")


# Valgrind ends some failures with a line that says only that it gave up; the line before
# it, or the last of its log, says why (a temporary file it could not make, a bad option).
_GAVE_UP = ("Unable to start up properly", "Use --help for more information")


def _last_words(said):
    """The last line of the first of ``said`` (texts as lines), with its cause if it has none."""
    if not said:
        return "no output"
    last = said[0][-1]
    if any(words in last for words in _GAVE_UP):
        cause = said[0][-2] if len(said[0]) > 1 else said[1][-1] if len(said) > 1 else None
        return f"{cause} {last}" if cause else last
    return last


def report(stdout):
    """The worker's JSON line (what it ran), or {} if it printed none."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}
