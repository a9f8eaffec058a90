"""What a deployment pays beyond the steady inference call: loading, the first inference and
the memory the process holds, per (variant, runtime), each measured in a fresh process.

A fresh process is what a deployment starts from: nothing of the runtime is warm, no plugin
is loaded, no weights are packed. Each measuring process (``python -m quantlab.deployment``)
imports the runtime (timed on its own: a deployment pays it once, whatever it loads), then
times ``runtime.load`` (read, compile or interpreter creation, tensor allocation), then the
first ``run`` on a prepared batch (the call the latency suite times), then the steady call
for comparison. Memory is the peak resident set (``VmHWM`` of ``/proc/self/status``), reset
to the current resident set just before loading (``/proc/self/clear_refs``), so it shows
what loading and the first inference hold at most; the figures are that peak minus the same
reading in an empty process that imported the same runtime (the baseline, one per runtime
and file format: taken in the first measuring process of that runtime and format just before
it loads, where it is still exactly such an empty process, so no process is started for it
alone). Where the reset is not permitted, both readings are peaks
since the process started (``peak_reset`` says which).

    >>> records = measure_net("dense", artifacts, [("int8", "litert")], threads=1)  # doctest: +SKIP
    >>> deployment_note(records[0])                                                 # doctest: +SKIP
    'loads in 30 ms, first inference 270 µs, 14 MB resident'
"""

import argparse
import gc
import importlib
import json
import re
import statistics
import sys
import time
from pathlib import Path

from quantlab.errors import QuantlabError

REPEATS = 3  # fresh processes per (variant, runtime): the median and the spread of three
STEADY_CALLS = 20  # timed calls after the first, for the steady latency beside it
TIMEOUT = 600  # s per process: TensorFlow's import alone takes seconds on a busy machine
ERROR_MARK = "quantlab-deployment-error: "  # the child's one-line user error, on stderr
FIGURES = ("import_seconds", "load_seconds", "first_inference_seconds", "steady_seconds",
           "rss_after_load_bytes", "rss_after_first_bytes")

_baselines = {}  # (runtime, format) -> the empty process's reading, measured once


# --- in the measuring process ----------------------------------------------------------------

def _memory():
    """(resident, peak resident) bytes of this process, from ``/proc/self/status``."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        raise QuantlabError("resident memory is read from /proc/self/status, which this system "
                            "does not have; deployment costs are measured on Linux only") from None
    resident, peak = (re.search(rf"^{key}:\s+(\d+) kB", status, re.M) for key in ("VmRSS", "VmHWM"))
    return int(resident.group(1)) * 1024, int(peak.group(1)) * 1024


def _reset_peak():
    """Set the peak resident set back to the current one; False where that is not permitted
    (writing 5 to clear_refs: Linux 4.0 and later)."""
    gc.collect()  # garbage of the imports is freed alike in the empty and the measured process
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _start_runtime(name, fmt):
    """Seconds to import what loading a ``fmt`` model on runtime ``name`` imports, and to start
    OpenVINO's Core with its CPU plugin: paid once per process whatever is loaded, so loading
    is timed (and its memory counted) without it."""
    from quantlab import runtime

    started = time.perf_counter()
    runtime.require(name)
    module = importlib.import_module(f"quantlab.runtime.{name}")
    if name == "tensorflow":
        from quantlab._tf import tf

        tf()
    if name == "openvino":
        module.core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")  # loads the CPU plugin
        if fmt == "tflite":  # reads an int8 file's quantization parameters
            importlib.import_module("ai_edge_litert.interpreter")
    return time.perf_counter() - started


def empty_process(name, fmt):
    """The baseline: this process after importing the runtime, read where loading would start."""
    imported = _start_runtime(name, fmt)
    reset = _reset_peak()
    resident, peak = _memory()
    return {"runtime": name, "format": fmt, "import_seconds": imported, "peak_reset": reset,
            "resident_bytes": resident, "peak_bytes": peak}


def measured_process(path, name, fmt, threads=1, precision=None, sha256=None, batch_size=1):
    """One model loaded and run once in this (fresh) process: seconds and peak bytes, and
    (``empty``) the baseline's reading, taken where loading starts."""
    from quantlab import runtime

    empty = empty_process(name, fmt)
    imported, reset = empty["import_seconds"], empty["peak_reset"]
    started = time.perf_counter()
    predictor = runtime.load(path, runtime=name, threads=threads, precision=precision,
                             sha256=sha256)
    loaded = time.perf_counter() - started
    peak_after_load = _memory()[1]
    prepared = predictor.prepare(runtime.sample_batch(predictor.input_shape, batch_size))
    started = time.perf_counter()
    raw = predictor.run(prepared)
    first = time.perf_counter() - started
    peak_after_first = _memory()[1]
    predictor.finish(raw)
    steady = []
    for _ in range(3 + STEADY_CALLS):  # three warm-up calls, then the timed ones
        started = time.perf_counter()
        predictor.run(prepared)
        steady.append(time.perf_counter() - started)
    return {"runtime": predictor.runtime, "format": predictor.format,
            "precision": predictor.precision, "threads": threads, "batch_size": batch_size,
            "import_seconds": imported, "load_seconds": loaded, "first_inference_seconds": first,
            "steady_seconds": statistics.median(steady[3:]), "peak_reset": reset,
            "peak_after_load_bytes": peak_after_load, "peak_after_first_bytes": peak_after_first,
            "empty": empty}


def _arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m quantlab.deployment",
                                     description="Deployment costs of one model in this process "
                                                 "(or, without MODEL, of an empty one).")
    parser.add_argument("model", nargs="?")
    parser.add_argument("--runtime", required=True)
    # The file's format decides what the runtime imports; None for a file of no known format,
    # which loading then refuses with its own one-line reason.
    parser.add_argument("--format", choices=("tflite", "onnx", "graphdef", "openvino"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision")
    parser.add_argument("--sha256")
    parser.add_argument("--batch-size", type=int, default=1)
    # The process that started this one checked the bytes of digest --sha256 (measure): none
    # of quantlab's checks is timed as loading.
    parser.add_argument("--checked", action="store_true")
    args = parser.parse_args(argv)
    if args.checked and not args.sha256:
        parser.error("--checked needs --sha256: the digest of the bytes that were checked")
    return args


def main(argv=None):
    """One JSON line on stdout; a user error is one ``ERROR_MARK`` line on stderr, status 2."""
    args = _arguments(argv)
    if args.checked:
        from quantlab import runtime

        runtime.vouch_for(args.sha256)
    try:
        if args.model is None:  # the baseline: the format names what to import
            report = empty_process(args.runtime, args.format)
        else:
            report = measured_process(args.model, args.runtime, args.format, args.threads,
                                      args.precision, args.sha256, args.batch_size)
    except QuantlabError as error:
        print(ERROR_MARK + " ".join(str(error).split()), file=sys.stderr, flush=True)
        return 2
    print(json.dumps(report), flush=True)
    return 0


# --- in the process that asks ------------------------------------------------------------------

def _fresh_process(arguments, what):
    """The JSON line of ``python -m quantlab.deployment ARGUMENTS``, or a one-line error."""
    # Imported here: the measuring process never needs them (7 ms of its start, not measured).
    import subprocess
    import tempfile

    from quantlab.counters._process import worker_env  # this very quantlab, no pytest options
    from quantlab.orphans import dying_with_parent

    command = dying_with_parent([sys.executable, "-m", "quantlab.deployment", *arguments])
    # Its own empty folder: a folder named quantlab in the caller's one is not imported.
    with tempfile.TemporaryDirectory(prefix="quantlab-deployment-") as scratch:
        try:
            done = subprocess.run(command, cwd=scratch, env=worker_env(), stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, errors="replace", timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            raise QuantlabError(f"{what} did not finish within {TIMEOUT} s") from None
    lines = [line for line in done.stderr.splitlines() if line.startswith(ERROR_MARK)]
    if lines:
        raise QuantlabError(lines[-1][len(ERROR_MARK):])
    reports = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not reports:
        clue = ([line.strip() for line in done.stderr.splitlines() if line.strip()]
                or [f"exit status {done.returncode}"])[-1][:300]
        raise QuantlabError(f"{what} failed in a fresh process ({clue})")
    return json.loads(reports[-1])


def baseline(name, fmt, reading=None):
    """The empty process of runtime ``name`` for ``fmt`` files, measured once per process:
    ``reading`` (a measuring process's ``empty``) where given, else a fresh process of its own."""
    if (name, fmt) not in _baselines and reading is not None:
        _baselines[(name, fmt)] = reading
    if (name, fmt) not in _baselines:
        _baselines[(name, fmt)] = _fresh_process(
            ["--runtime", name, "--format", fmt], f"an empty process importing {name}")
    return _baselines[(name, fmt)]


def summarize(samples, empty):
    """Median and spread ([min, max]) of each figure over the fresh processes; memory as peak
    bytes above the empty process's ``empty["peak_bytes"]``."""
    values = {figure: [sample[figure] for sample in samples] for figure in FIGURES[:4]}
    for after in ("load", "first"):
        values[f"rss_after_{after}_bytes"] = [
            sample[f"peak_after_{after}_bytes"] - empty["peak_bytes"] for sample in samples]
    record = {figure: statistics.median(values[figure]) for figure in FIGURES}
    record["spread"] = {figure: [min(values[figure]), max(values[figure])] for figure in FIGURES}
    first = samples[0]
    record.update(baseline_rss_bytes=empty["peak_bytes"], repeats=len(samples),
                  peak_reset=all(s["peak_reset"] for s in samples) and empty["peak_reset"],
                  **{key: first[key] for key in ("format", "precision", "threads", "batch_size")})
    return record


def measure(path, runtime_name, threads=1, precision=None, sha256=None, repeats=REPEATS,
            batch_size=1):
    """Deployment costs of the model file at ``path`` on ``runtime_name``: ``repeats`` fresh
    processes (median and spread) and one empty one; a file that cannot be loaded is a
    one-line QuantlabError."""
    from quantlab import runtime

    runtime.check_runtime(runtime_name)
    repeats = runtime.whole_number(repeats, "repeats")
    path = Path(path).resolve()  # the child runs in a folder of its own
    # Read as every model file is (a folder, a FIFO or a device is refused in one line): its
    # format decides what the runtime imports. None for no known format: loading it then
    # fails with its own one-line reason. A known format is checked here, once, and the
    # fresh processes load only these bytes, unchecked, as a deployment loads its own file.
    content, digest = runtime.read_expected(path, sha256)
    fmt, file_bytes = runtime.format_of(content), len(content)
    if fmt:
        runtime.check_model(path, content, digest, fmt)
    del content
    arguments = [str(path), "--runtime", runtime_name, *(["--format", fmt] if fmt else []),
                 "--threads", str(runtime.whole_number(threads, "threads")),
                 "--batch-size", str(runtime.whole_number(batch_size, "batch size")),
                 "--sha256", digest, *(["--checked"] if fmt else [])]
    arguments += ["--precision", precision] if precision else []
    samples = [_fresh_process(arguments, f"loading {path.name} on {runtime_name}")
               for _ in range(repeats)]
    record = summarize(samples, baseline(runtime_name, samples[0]["format"],
                                         samples[0].get("empty")))
    record["file_bytes"] = file_bytes
    return record


def measure_net(net, artifacts, pairs, threads=1, progress=None, repeats=REPEATS):
    """One record per (variant, runtime) of ``pairs`` for the artifacts ({variant: Artifact})
    of ``net``: ``net``, ``variant``, ``runtime`` and the figures of ``measure`` (``FIGURES``:
    medians; ``spread``: [min, max] of each; memory in bytes above ``baseline_rss_bytes``;
    ``file_bytes``, ``repeats``, ``peak_reset``, ``format``, ``precision`` as executed,
    ``threads``, ``batch_size``), or ``not_run`` with the one-line reason."""
    from quantlab.progress import Progress

    progress = progress or Progress()
    records = []
    label = (f"{net}: deployment costs, {repeats} fresh process{'es' if repeats > 1 else ''} "
             f"per (variant, runtime)")
    for variant, runtime_name in progress.steps(pairs, label):
        artifact = artifacts[variant]
        try:
            record = measure(artifact.path, runtime_name, threads, artifact.precision,
                             artifact.sha256, repeats)
        except QuantlabError as error:
            record = {"not_run": str(error)}
        records.append({"net": net, "variant": variant, "runtime": runtime_name, **record})
    return records


# --- the report's part ----------------------------------------------------------------------

def _prose_seconds(s):
    """Two significant digits (the spread of a fresh-process figure allows no more), in
    seconds from a tenth of one: "0.81 s", "17 ms", "270 µs"."""
    value, unit = ((s, "s") if s >= 0.1 else (s * 1e3, "ms") if s >= 1e-3 else (s * 1e6, "µs"))
    return f"{value:.2g} {unit}" if value < 10 else f"{value:.0f} {unit}"


def _prose_megabytes(n):
    return f"{max(n, 0) / 1e6:.0f} MB"


def deployment_note(record):
    """``loads in 0.81 s, first inference 1.2 ms, 120 MB resident`` for "What to ship"
    (resident: the peak after the first inference, above an empty process); None for a pair
    that could not be measured."""
    if record.get("not_run"):
        return None
    return (f"loads in {_prose_seconds(record['load_seconds'])}, first inference "
            f"{_prose_seconds(record['first_inference_seconds'])}, "
            f"{_prose_megabytes(record['rss_after_first_bytes'])} resident")


def _with_spread(record, figure, show):
    """The median, and the spread of the fresh processes as ± half their range in %."""
    low, high = record["spread"][figure]
    median = record[figure]
    if record["repeats"] < 2 or not median:
        return show(median)
    return f"{show(median)} ±{50 * (high - low) / abs(median):.0f} %"


def deployment_table(results, net=None):
    """Markdown: per (net, variant, runtime) of ``results["deployment"]`` (of ``net`` only, if
    given), the file size, the runtime's import, the load, the first and the steady
    inference, and the resident memory after load and after the first inference; then how it
    was measured."""
    from quantlab.tables import markdown_table, megabytes, seconds

    records = [r for r in results.get("deployment") or [] if net in (None, r["net"])]
    rows = []
    for record in records:
        where = [record["net"], record["variant"], record["runtime"]]
        if record.get("not_run"):
            rows.append(where + ["failed"] * 7)
            continue
        rows.append(where + [megabytes(record["file_bytes"])] + [
            _with_spread(record, figure, megabytes if figure.endswith("bytes") else seconds)
            for figure in FIGURES])
    table = markdown_table(["network", "variant", "runtime", "file", "runtime import", "load",
                            "first inference", "steady inference", "resident after load",
                            "after first inference"], rows)
    measured = [r for r in records if not r.get("not_run")]
    if not measured:
        return table
    # One empty process per runtime and file format (what the runtime imports differs).
    empty = {}
    for record in measured:
        empty.setdefault(record["runtime"], {})[record["format"]] = record["baseline_rss_bytes"]
    named = [f"{name} {_prose_megabytes(n)}" + (f" ({fmt})" if len(formats) > 1 else "")
             for name, formats in empty.items() for fmt, n in formats.items()]
    repeats = sorted({r["repeats"] for r in measured})
    how = ("the peak since just before loading" if all(r["peak_reset"] for r in measured)
           else "the peak since the process started (resetting it was not permitted)")
    processes = ("One fresh process each." if repeats == [1] else
                 f"Median of {'/'.join(map(str, repeats))} fresh processes each, ± half their range.")
    return (f"{table}\n\n{processes} Resident memory is {how} (VmHWM), above an empty process "
            f"that imported the same runtime: {', '.join(named)}.")


if __name__ == "__main__":
    sys.exit(main())
