"""The measured process: load a model, warm it up, and open counting windows around its runs.

Run as ``python -m quantlab.counters.worker ARTIFACT --batch-size N [N ...] --warmup W
--iterations K --mode valgrind|perf`` under callgrind or ``perf stat`` (see ``valgrind.py``
and ``perf.py``, which build those command lines). Everything outside the windows (imports,
interpreter creation, file reads, input conversion, resizing, warm-up) is left uncounted:

- perf mode (one batch size): perf starts with its counters disabled (``-D -1``); the worker
  writes ``enable`` / ``disable`` to perf's control fd around exactly K runs and waits for
  perf's ``ack`` each time, so no run is counted half.
- valgrind mode (one or several batch sizes, so that valgrind's start and the imports are
  paid once per model): callgrind starts with instrumentation off
  (``--instr-atstart=no``). For each batch size in turn the worker resizes the input and
  warms up uninstrumented, then asks callgrind (client requests, ``CallgrindRequests``) to
  switch instrumentation on, and dumps the counters after a warm run, after 1 run
  ("short") and after K+1 runs ("long"), then switches it off again. Per inference =
  (long - short) / K: the Python around each control call and the
  first-run-after-a-control-call misses are equal in both windows and cancel. Measured on
  a 33k-instruction model (when the requests were ``callgrind_control`` processes):
  zeroing and then counting K runs also counted ~370k instructions of control-call
  overhead; subtracting an empty window
  still left ~4k instructions and ~600 D1 misses; the difference of two lengths gave the
  same per-inference count for K = 5 and K = 50 within 0.2%. Switching instrumentation on
  empties the simulated caches, so every batch size starts from the same cold caches as in
  a process of its own.

On an error the worker prints one line starting with ``protocol.ERROR_MARK`` to stderr and
exits with status 2 (any exception: the tool it runs under adds lines of its own after it);
on success it prints one JSON line describing what it ran to stdout.
"""

import argparse
import contextlib
import ctypes
import gc
import json
import os
import sys
import time

from quantlab import defaults
from quantlab.ceilings import Snippet, native, repeated, unsupported_reason
from quantlab.errors import QuantlabError
from quantlab.counters._process import add_worker_options
from quantlab.counters.protocol import ERROR_MARK, ERROR_STATUS, LONG, SHORT, WARM, dump_name

REHEARSALS = 10  # requests rehearsed before the first window

# uint64 client_request(uint64 arguments[6], uint64 answer_without_valgrind): valgrind.h's
# request for amd64. Four rotations of rdi by 128 bits in all, then xchg rbx, rbx: a
# sequence no compiler emits, which valgrind recognizes; it reads the request from rax and
# answers in rdx (left as it was on a real CPU).
CLIENT_REQUEST = Snippet("""
    mov rax, rdi
    mov rdx, rsi
    rol rdi, 3
    rol rdi, 13
    rol rdi, 61
    rol rdi, 51
    xchg rbx, rbx
    mov rax, rdx
    ret
""", bytes.fromhex("4889f8" "4889f2" "48c1c703" "48c1c70d" "48c1c73d" "48c1c733" "4887db" "4889d0" "c3"))


class CallgrindRequests:
    """Callgrind's client requests, made by this very process, synchronously: the
    instruction sequence that valgrind.h's macros emit (a no-op on a real CPU; under
    valgrind, a call into the tool), run as a native snippet (x86-64).

    Whatever Python runs around a request is counted while instrumentation is on, and is
    the same in both windows: a ctypes call with its arguments written into a prepared
    array, the dump names prepared before the windows. (Asking ``callgrind_control``, a Perl
    script that reaches valgrind's gdbserver through vgdb, took 0.24 s a request and counted
    ~370 000 instructions of spawning in each window.)
    """

    RUNNING_ON_VALGRIND = 0x1001
    _CALLGRIND = 0x43540000  # VG_USERREQ_TOOL_BASE('C', 'T') in callgrind.h
    DUMP_STATS_AT, START_INSTRUMENTATION, STOP_INSTRUMENTATION = (
        _CALLGRIND + 3, _CALLGRIND + 4, _CALLGRIND + 5)

    def __init__(self, native):
        self.native = native  # CLIENT_REQUEST mapped: (arguments' address, default) -> answer
        self.arguments = (ctypes.c_uint64 * 6)()
        self.address = ctypes.addressof(self.arguments)
        self.names = {}  # dump name -> its C string, made before the windows
        if self(self.RUNNING_ON_VALGRIND) == 0:
            raise QuantlabError(
                "valgrind did not answer the worker's client request: is this process running "
                "under valgrind --tool=callgrind, started from a real python binary (not a "
                "wrapper script)?")

    @classmethod
    @contextlib.contextmanager
    def mapped(cls):
        reason = unsupported_reason()
        if reason:
            raise QuantlabError(f"valgrind counting makes callgrind's requests in native code: {reason}")
        with native(CLIENT_REQUEST, ctypes.c_void_p, ctypes.c_uint64) as request:
            yield cls(request)

    def prepare(self, *names):
        for name in names:
            self.names[name] = ctypes.create_string_buffer(name.encode())

    def __call__(self, request, name=None):
        self.arguments[0] = request
        self.arguments[1] = 0 if name is None else ctypes.addressof(self.names[name])
        return self.native(self.address, 0)

    def rehearse(self, times):
        """Go through a request ``times`` times (one valgrind answers and ignores).

        Python 3.11 quickens a function after ~8 calls and specializes its instructions as
        they run; whatever of that is left to do inside a window is counted there once, and
        lands in one window but not the other (thousands of instructions, dozens of misses).
        """
        self.prepare("rehearsal")
        for _ in range(times):
            self(self.RUNNING_ON_VALGRIND, "rehearsal")


class PerfControl:
    """``perf stat --control fd:CTL,ACK``: write a command, block until perf answers ``ack``."""

    def __init__(self, ctl_fd, ack_fd):
        self.ctl_fd, self.ack_fd = ctl_fd, ack_fd

    def __call__(self, command):
        os.write(self.ctl_fd, command.encode() + b"\n")
        answer = b""
        while b"ack\n" not in answer:  # perf answers "ack\n\0"
            chunk = os.read(self.ack_fd, 64)
            if not chunk:
                raise QuantlabError(f"perf closed its control channel before acknowledging {command!r}")
            answer += chunk


def _loop(run, prepared, count):
    """``count`` runs; returns their wall time.

    Every window is timed the same way, so that the timer's own cost (and its first call's
    lazy symbol binding, which once showed up as ~20 LL misses) cancels in long - short.
    """
    start = time.perf_counter()
    for _ in range(count):
        run(prepared)
    return time.perf_counter() - start


def warm_up(run, prepared, runs, budget_seconds=defaults.COUNT_WARMUP_SECONDS):
    """Up to ``runs`` uncounted runs, one call of _loop each (Python 3.11 quickens a function
    after ~8 calls and then specializes its instructions: better done before the first
    window); fewer, at least two, once they took ``budget_seconds`` (see defaults). Returns
    (runs, seconds)."""
    seconds = repeated(lambda count: _loop(run, prepared, count), 1, runs, budget_seconds, at_least=2)
    return len(seconds), sum(seconds)


def count_valgrind(run, prepared, iterations, control, batch_size, short_runs=1):
    warm, short, long = (dump_name(window, batch_size) for window in (WARM, SHORT, LONG))
    control.prepare(warm, short, long)
    control(control.START_INSTRUMENTATION)  # the simulated caches start cold here
    _loop(run, prepared, 1)  # pays the compulsory misses; its dump is discarded
    control(control.DUMP_STATS_AT, warm)  # a dump also zeroes the counters
    _loop(run, prepared, short_runs)
    control(control.DUMP_STATS_AT, short)
    seconds = _loop(run, prepared, iterations + short_runs)
    control(control.DUMP_STATS_AT, long)
    # resizing, the next warm-up and shutdown are not worth simulating
    control(control.STOP_INSTRUMENTATION)
    return {SHORT: short_runs, LONG: iterations + short_runs}, seconds


def count_perf(run, prepared, iterations, control, batch_size, short_runs=None):
    control("enable")
    seconds = _loop(run, prepared, iterations)
    control("disable")
    return {"window": iterations}, seconds


def _arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m quantlab.counters.worker",
                                     description="run one model inside a counting window")
    add_worker_options(parser)  # as quantlab.counters._process writes them
    return parser.parse_args(argv)


def _per_batch_size(values, sizes, option):
    if len(values) == 1:
        return values * len(sizes)
    if len(values) != len(sizes):
        raise QuantlabError(f"{option} takes one number, or one for each of the "
                            f"{len(sizes)} batch sizes; got {len(values)}")
    return values


def work(args):
    with contextlib.ExitStack() as stack:  # valgrind mode: its requests' native code, mapped
        return _count(args, stack)


def _count(args, stack):
    from quantlab import runtime  # imported here so that errors come out as one line

    sizes = args.batch_size
    warmups, iterations, shorts = (_per_batch_size(args.warmup, sizes, "--warmup"),
                                   _per_batch_size(args.iterations, sizes, "--iterations"),
                                   _per_batch_size(args.short_runs, sizes, "--short-runs"))
    if min(sizes) < 1 or min(iterations) < 0 or min(warmups) < 0 or min(shorts) < 0:
        raise QuantlabError("batch size must be at least 1, iterations and warm-up at least 0")
    if len(set(sizes)) != len(sizes):
        raise QuantlabError(f"batch sizes repeat: {sizes}")
    if args.mode == "perf":
        if args.ctl_fd is None or args.ack_fd is None:
            raise QuantlabError("perf mode needs --ctl-fd and --ack-fd (run it under perf stat --control)")
        if len(args.batch_size) > 1:  # perf stat reports one total for the whole process
            raise QuantlabError("perf mode counts one batch size per process")
        control, count = PerfControl(args.ctl_fd, args.ack_fd), count_perf
    else:
        control, count = stack.enter_context(CallgrindRequests.mapped()), count_valgrind
    predictor = runtime.load(args.artifact, runtime=args.runtime, threads=args.threads,
                             kernels=args.kernels, precision=args.precision)
    run = predictor.run
    if args.mode == "valgrind":
        control.rehearse(REHEARSALS)
    gc.collect()  # a collection inside a window would be counted there, once
    gc.disable()
    windows, seconds, warmup_runs, warmup_seconds = {}, {}, {}, {}
    for batch_size, warmup, measured, short in zip(sizes, warmups, iterations, shorts):
        prepared = predictor.prepare(runtime.sample_batch(predictor.input_shape, batch_size))
        warmup_runs[str(batch_size)], warmup_seconds[str(batch_size)] = warm_up(run, prepared, warmup)
        windows[str(batch_size)], seconds[str(batch_size)] = count(
            run, prepared, measured, control, batch_size, short)
    return {
        "pid": os.getpid(),
        "input_shape": list(predictor.input_shape),
        "runtime": predictor.runtime,
        "kernels": predictor.kernels,
        "windows": windows,
        "window_seconds": seconds,
        "warmup_runs": warmup_runs,
        "warmup_seconds": warmup_seconds,
    }


def main(argv=None):
    args = _arguments(argv)
    try:
        report = work(args)
    except QuantlabError as error:
        print(ERROR_MARK + " ".join(str(error).split()), file=sys.stderr, flush=True)
        return ERROR_STATUS
    except Exception as error:  # e.g. numpy's MemoryError: still the line the user must see,
        # not the last line of the tool that ran this process (valgrind's summary, perf's)
        text = (str(error).strip().splitlines() or [""])[0][:300]
        print(f"{ERROR_MARK}counting {args.artifact} failed in the worker: "
              f"{type(error).__name__}: {text}", file=sys.stderr, flush=True)
        return ERROR_STATUS
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
