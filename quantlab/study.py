"""The whole study as one resumable function: train, export, evaluate, time, count, report.

Every stage keeps its result: trained nets and variants in the quantlab cache (keyed by
configuration and code), evaluations, timings and counts in ``OUT/.state`` (keyed by the
artifacts' sha256 and the settings), so a run that is interrupted and started again
continues where it stopped. Latency is measured by the same pytest-benchmark suite as
``benchmarks/``, in a child process, one net at a time.
"""

import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import quantlab
from quantlab import arguments, cache, datasets, defaults, nets, variants
from quantlab._tf import versions
from quantlab.errors import QuantlabError
from quantlab.orphans import dying_with_parent
from quantlab.progress import Progress

SCHEMA = defaults.SCHEMA
MARKER = ".quantlab-report"  # in every folder a study wrote: it may be written again
QUICK_TIMING = ["--benchmark-max-time=0.05", "--benchmark-min-rounds=5",
                "--benchmark-warmup-iterations=10"]
# A quarter of a second per case is still 40 rounds of the slowest one (float32 medium at
# batch 64, ~7 ms) and thousands of the fast ones.
FULL_TIMING = ["--benchmark-max-time=0.25", "--benchmark-min-rounds=10"]
# Then every net and batch size again in interleaved rounds (quantlab.rounds), until every
# speed-up is known within +-5 % or this many seconds per group are spent.
QUICK_ROUNDS, FULL_ROUNDS = 3, 15
# What is counted under valgrind, where one run of float32 dense at batch 64 takes a minute
# and a study has over a hundred cases: P17's standard and quantized net (float32 and int8)
# at every batch size on LiteRT, the reference; at the first batch size every variant on the
# runtime that reads its file natively, and float32 and int8 (of either format) on the
# others. The quick study counts float32 and int8 on LiteRT at the first batch size. bf16 is
# never simulated: valgrind's virtual CPU has no bfloat16 arithmetic.
PAIR = ("float32", "int8", "onnx_float32", "onnx_int8")
QUICK_COUNTED = ("float32", "int8")


@dataclass
class StudyConfig:
    dataset: str = datasets.DEFAULT
    nets: tuple = nets.NAMES
    variants: tuple = defaults.VARIANTS
    runtimes: tuple | None = None  # None: every runtime that loads here
    batch_sizes: tuple = defaults.BATCH_SIZES
    # Inference thread counts: every case is timed at each; the first is the one counted,
    # measured for deployment and drawn on the roofline. None: 1 and every usable core.
    threads: tuple | None = None
    counters: str = "auto"
    cache_geometry: str = "host"
    quick: bool = False
    out: Path = Path("quantlab-report")
    model: Path | None = None
    data_dir: str | None = None
    seed: int = defaults.SEED
    force: bool = False
    scheduler: str | None = None  # a Dask scheduler's address: the study runs on its workers
    # Seconds a machine of the fleet may be without a worker before its tasks are given up: a
    # nanny restarts a killed worker within a few.
    grace: int = 15

    def __post_init__(self):
        for net in self.nets:
            nets.check_name(net)
        variants.check_variants(self.variants)
        if defaults.REFERENCE not in self.variants:
            self.variants = (defaults.REFERENCE, *self.variants)
        self.threads = threads_to_time(self.threads)
        if not 0 <= self.seed <= arguments.MAX_SEED:
            raise QuantlabError(f"seed {self.seed} is out of range: give 0 to {arguments.MAX_SEED}")
        self.out = Path(self.out)
        # Counting under valgrind costs seconds per case: the quick study counts float32
        # against int8 at its first batch size; the full one counts every case.


def threads_to_time(threads):
    """The thread counts a study times, each once, in the order given; a single count may be
    given as a number. None: one thread and every core this process may use."""
    if threads is None:
        threads = arguments.thread_counts("1,all")
    elif isinstance(threads, int):
        threads = (threads,)
    counts = tuple(dict.fromkeys(int(t) for t in threads))
    if not counts or min(counts) < 1:
        raise QuantlabError(f"thread counts must be at least 1, got {threads}")
    return counts


# --- the output folder and the stored stages ---------------------------------------------

def prepare_output(out, force=False):
    """Make ``out`` ready: new, empty, or written by quantlab before (else ``--force``)."""
    if out.exists() and not out.is_dir():
        raise QuantlabError(f"--out {out} is a file, not a folder; choose another with --out")
    if out.is_dir() and not (out / MARKER).is_file() and any(out.iterdir()) and not force:
        raise QuantlabError(f"--out {out} holds files that quantlab did not write; choose a new "
                            f"or empty folder, or add --force to write the report among them")
    cache.check_writable(out, "output folder", "choose another with --out")
    if not (out / MARKER).is_file():
        cache.write_json(out / MARKER, {"quantlab": quantlab.__version__})


def state_path(config, stage, key):
    return config.out / ".state" / f"{stage}-{cache.config_hash(key)}.json"


# What each stage stores, checked when it is read back: its rows, the keys each row has,
# and whether there may be none (a user's own model has no per-layer error; every net has
# its reference's accuracy and at least one timed or refused case). A stage not listed
# here is checked as rows of any keys.
_STORED_ROWS = {"layers": (("op", "tensor", "rmse_over_scale", "max_abs_error"), True),
                "eval": (("net", "variant", "runtime"), False),
                "latency": (("net", "variant", "runtime", "batch_size"), False),
                "deployment": (("net", "variant", "runtime"), True)}


def well_formed(stage, stored):
    """Whether a stored result has the shape ``stage`` makes: valid JSON of another shape
    (``null``, ``{}``, a list of something else) would fail later, far from its cause."""
    if stage == "counters":  # one case's counts, or why there are none
        return isinstance(stored, dict) and ("failed" in stored
                                             or {"rates", "per_inference"} <= stored.keys())
    keys, may_be_empty = _STORED_ROWS.get(stage, ((), True))
    return (isinstance(stored, list) and (may_be_empty or bool(stored))
            and all(isinstance(row, dict) and all(k in row for k in keys) for row in stored))


def _cached_stage(config, stage, key, compute, progress, label):
    """Return the stored result of a stage, or compute and store it.

    A stored file that cannot be read (truncated by a crash, edited by hand) or that does not
    hold what the stage makes is computed again, not trusted and not fatal.
    """
    path = state_path(config, stage, key)
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            progress(f"{label}: stored result {path.name} is unreadable; measuring again")
        else:
            if well_formed(stage, stored):
                progress(f"{label}: done earlier, reusing {path.name}")
                return stored
            progress(f"{label}: stored result {path.name} is not what this stage stores; "
                     f"measuring again")
    result = compute()
    cache.write_json(path, result)
    return result


def train_config(config, net):
    from quantlab.training import TrainConfig

    extra = defaults.QUICK_TRAINING if config.quick else {}
    return TrainConfig(net=net, dataset=config.dataset, seed=config.seed, **extra)


# --- stages: each computes one result from its inputs; the callers keep the results ---------

def export_net(config, net, data, progress):
    """{variant: Artifact} of one net (or of the user's own model): trained and exported, cached."""
    if config.model is not None:
        from quantlab import byo

        return byo.export(config.model, data, train_config(config, net), config.variants,
                          progress=progress)
    return variants.export(train_config(config, net), variants=config.variants, data=data,
                           progress=progress)


def artifact_key(artifacts):
    return {v: a.sha256 for v, a in sorted(artifacts.items())}


def pairs(artifacts, runtimes, cpu):
    """Every (variant, runtime) the study runs: each variant on each chosen runtime that can."""
    from quantlab.latency_suite import runtimes_for

    return [(v, r) for v in artifacts for r in runtimes if r in runtimes_for(v, cpu)]


def evaluate_net(net, artifacts, studied, data, progress):
    """Accuracy rows of every studied (variant, runtime) pair on the whole test split."""
    from quantlab import evaluate

    rows = evaluate.compare(artifacts, data, studied, progress=progress, label=f"{net}: evaluating")
    return [{"net": net, **row} for row in rows]


def layer_errors(config, net, artifacts, data, progress):
    """Per-layer error of the int8 variant (quantlab's own nets only)."""
    if "int8" not in artifacts or config.model is not None:
        return []
    from quantlab import layer_error, training

    progress(f"{net}: per-layer quantization error of int8 (TFLite quantization debugger)")
    trained = training.train(train_config(config, net), data)
    return layer_error.int8_layer_errors(trained.model, data, artifacts["int8"].meta)


def _manifest(config, net, artifacts, folder):
    path = folder / f"manifest-{net}.json"
    path.write_text(json.dumps({
        "dataset": config.dataset,
        "artifacts": [{"net": net, "variant": v, "path": str(a.path), "sha256": a.sha256,
                       "precision": a.precision} for v, a in artifacts.items()],
    }))
    return path


def time_net(config, net, artifacts, runtimes, progress):
    """Every case of one net timed by the latency suite (pytest-benchmark) in a child
    process, so that nothing of this process (TensorFlow, its threads) runs beside it."""
    from quantlab import machine

    cases = (len(pairs(artifacts, runtimes, machine.cpu_info())) * len(config.batch_sizes)
             * len(config.threads))
    label = f"{net}: timing {cases} cases on {', '.join(runtimes)} with pytest-benchmark"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        report = tmp / "benchmark.json"
        # A settings file of its own, empty: no project's pytest settings (addopts such as
        # pytest-xdist's -n) reach the timing run from a setup.cfg above quantlab's source.
        (tmp / "pytest.ini").write_text("[pytest]\n")
        command = dying_with_parent([
            # By module name, not file path: the child imports quantlab the way it finds it,
            # which need not be this process's copy (a source checkout in the working
            # directory beside an installed package, under tox).
            sys.executable, "-m", "pytest", "--pyargs", "quantlab.latency_suite", "-v",
            "-c", str(tmp / "pytest.ini"), "-p", "no:cacheprovider", "-p", "no:randomly",
            "-p", "no:xdist",
            f"--benchmark-json={report}",
            f"--quantlab-artifacts={_manifest(config, net, artifacts, tmp)}",
            f"--quantlab-runtimes={','.join(runtimes)}",
            f"--quantlab-batch-sizes={','.join(map(str, config.batch_sizes))}",
            f"--quantlab-threads={','.join(map(str, config.threads))}", "--quantlab-counters=off",
            "--quantlab-profile=native",
            "--benchmark-columns=median,iqr,rounds", "--benchmark-sort=name",
            *(QUICK_TIMING if config.quick else FULL_TIMING),
            f"--quantlab-rounds={rounds_budget(config)}",
        ])
        lines = []
        # Exactly these options: none from PYTEST_ADDOPTS, and no sign of an xdist worker
        # (when the study runs inside one), on which pytest-benchmark would time nothing.
        env = {k: v for k, v in os.environ.items()
               if k != "PYTEST_ADDOPTS" and not k.startswith("PYTEST_XDIST_")}
        with subprocess.Popen(command, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=env) as child:
            def results():  # one line per case in pytest's verbose output
                for line in child.stdout:
                    lines.append(line)
                    rounds = re.search(r"quantlab: (rounds of .*)", line)
                    if rounds:  # may share its line with the result of the group's last case
                        progress(f"{net}: {rounds.group(1).strip()}")
                    if re.search(r"::test_latency\[.*\] (PASSED|SKIPPED|FAILED|ERROR)", line):
                        yield line
            for _ in progress.steps(results(), label, total=cases):
                pass
            for _ in results():  # the summary after the last case
                pass
        if child.returncode != 0 or not report.is_file():
            raise QuantlabError(f"the timing run for {net} failed: {suite_error(lines)}")
        return timed_cases(json.loads(report.read_text()))


def deployment_repeats(config):
    """Fresh processes per (variant, runtime) for load time, first inference and memory:
    three for the median and spread, one in the quick study (a TensorFlow process alone
    costs seconds)."""
    from quantlab import deployment

    return 1 if config.quick else deployment.REPEATS


def measure_deployment(config, net, artifacts, studied, progress):
    """What each (variant, runtime) costs a deployment beyond its steady call (load, first
    inference, memory), each measured in fresh processes, alone on the machine."""
    from quantlab import deployment

    return deployment.measure_net(net, artifacts, studied, config.threads[0], progress,
                                  repeats=deployment_repeats(config))


def rounds_budget(config):
    return QUICK_ROUNDS if config.quick else FULL_ROUNDS


def suite_error(lines):
    """The latency suite's own error in pytest's output: a usage error's reason (a manifest
    the suite refused), else the exception the first failed case raised, else the last lines."""
    lines = [line.strip() for line in lines if line.strip()]
    for line in lines:
        if re.match(r"\S+( -m pytest)?: error: ", line):  # argparse: "pytest: error: argument ..."
            return line.split(": error: ", 1)[1]
    raised = [line[1:].strip() for line in lines if re.match(r"E +[\w.]*(Error|Exception): ", line)]
    return re.sub(r"^[\w.]*\.", "", raised[0]) if raised else " | ".join(lines[-3:])


def timed_cases(benchmark_json):
    """One record per case from a pytest-benchmark JSON report: its extra_info, and the
    cases a runtime could not run, each with its reason (``not_run``)."""
    records = []
    for bench in benchmark_json["benchmarks"]:
        record = dict(bench["extra_info"])
        record["rounds"] = bench["stats"]["rounds"]
        records.append(record)
    return records + benchmark_json.get("quantlab", {}).get("not_run", [])


def count_reason(config, backend, record):
    """Why this timed case is not counted, or None when it is (see PAIR)."""
    variant, name, batch = record["variant"], record["runtime"], record["batch_size"]
    first, reference = config.batch_sizes[0], defaults.REFERENCE_RUNTIME
    if backend is None:
        return "counters are off"
    if (record.get("threads") or 1) != config.threads[0]:
        return f"counted at {config.threads[0]} thread(s) only"
    if backend == "valgrind" and variant == "bf16":
        return "bf16 is not simulated: valgrind's virtual CPU has no bfloat16 arithmetic"
    if config.quick:
        if variant in QUICK_COUNTED and name == reference and batch == first:
            return None
        return f"the quick study counts float32 and int8 on {reference} at batch {first} only"
    natural = name == variants.runtimes_for(variant)[0]
    if (variant in PAIR and name == reference) or (batch == first and (natural or variant in PAIR)):
        return None
    return (f"counted: float32 and int8 at every batch size on {reference}; at batch {first}, "
            f"every variant on its own runtime and float32 and int8 on the others")


def count_model(config, artifact, runtime_name, batch_sizes, backend):
    """{batch size: counters} of one model on one runtime, all batch sizes in one worker
    (valgrind's start and the imports are paid once); {"failed": why} for each if it fails
    (said in the report, not fatal)."""
    from quantlab import counters

    try:
        return counters.measure_many(artifact.path, batch_sizes, backend=backend,
                                     threads=config.threads[0], cache=config.cache_geometry,
                                     runtime=runtime_name, precision=artifact.precision)
    except QuantlabError as error:
        return {batch: {"failed": str(error)} for batch in batch_sizes}


def counter_key(config, artifact, record, backend):
    return {"sha": artifact.sha256, "runtime": record["runtime"], "batch": record["batch_size"],
            "backend": backend, "threads": config.threads[0], "geometry": config.cache_geometry,
            "versions": versions()}


def plan_counts(config, backend, records):
    """Mark each timed record with why it is not counted; return the ones to count."""
    chosen = []
    for record in records:
        if not record.get("not_run"):
            record["counters"], record["not_counted"] = None, count_reason(config, backend, record)
            if record["not_counted"] is None:
                chosen.append(record)
    return chosen


def apply_count(record, result):
    """Put one count, or why there is none, into its timed record."""
    if "failed" in result:
        record["not_counted"] = f"counting failed: {result['failed']}"
    else:
        record["counters"], record["not_counted"] = result, None


def machine_info(config, backend, skipped):
    """This machine: who it is, its CPU, and what it measurably does: the clock its cores
    run at and the bandwidth one core reads each cache level with (quantlab.ceilings)."""
    from quantlab import ceiling_spread, machine, runtime

    cpu = machine.cpu_info()
    before = ceiling_spread.measure("before timing", cpu)
    return {
        **machine.identity(cpu),
        "cpu": cpu,
        "clock": before["clock"],
        "bandwidth": before["bandwidth"],
        "peaks": before["peaks"],
        "ceilings": ceiling_spread.record([before]),
        "threads": config.threads[0],  # counted, measured for deployment, on the roofline
        "thread_counts": list(config.threads),  # timed
        "versions": {"quantlab": quantlab.__version__, "python": sys.version.split()[0],
                     **versions(), **{name: runtime.runtime_version(name)
                                      for name in ("openvino", "onnxruntime")}},
        "runtimes_skipped": skipped,
        "counter_backend": backend,
        "cache_geometry": config.cache_geometry if backend == "valgrind" else None,
    }


def _training_summary(artifacts):
    """What training reported, read from the cached model folders."""
    summary = {}
    for stage, variant in (("float", defaults.REFERENCE), ("qat", "qat_int8")):
        if variant not in artifacts:
            continue
        try:
            info = json.loads((Path(artifacts[variant].meta["trained_model"]) / "info.json").read_text())
        except (OSError, ValueError):
            continue  # a user's own model has no training record
        summary[stage] = {k: info.get(k) for k in ("test_accuracy", "epochs_run", "train_images",
                                                   "seconds")}
    return summary


def start_counting(config, net, artifacts, records, backend, progress):
    """Count the chosen cases of one net on this machine, each kept in OUT/.state; the
    batch sizes of one model and runtime are counted together, in one worker (valgrind's
    start, the imports and the warm-up are paid once), the large ones apart. Returns the
    ``Counting``, whose ``wait`` puts the counts into ``records``.

    Valgrind simulates each worker's caches on its own, so its counts depend neither on what
    else runs nor on how fast: its workers use every core and go on in the background while
    the next net trains, exports and is evaluated (never while it is timed: the caller waits
    first). Hardware counters would feel a neighbour: they count alone, one case at a time.
    """
    from concurrent.futures import ThreadPoolExecutor

    from quantlab.counters.valgrind import LARGE_BATCH

    chosen = plan_counts(config, backend, records)
    stored = {id(record): state_path(config, "counters", counter_key(
        config, artifacts[record["variant"]], record, backend)) for record in chosen}
    groups = {}
    for record in chosen:
        groups.setdefault((record["variant"], record["runtime"]), []).append(record)
    models = []  # (variant, runtime, records, a batch size counted first and dropped)
    for (variant, runtime_name), group in groups.items():
        small = [r for r in group if r["batch_size"] < LARGE_BATCH]
        large = [r for r in group if r["batch_size"] >= LARGE_BATCH]
        if small and large and backend == "valgrind":
            # A simulated large batch costs as much as all the small ones together: it gets a
            # worker of its own, beside them rather than after them, where one small batch
            # runs first (the warm-up it needs: see valgrind.plan) and its count is dropped.
            models += [(variant, runtime_name, small, None),
                       (variant, runtime_name, large, small[0]["batch_size"])]
        else:
            models.append((variant, runtime_name, group, None))

    def count(model):
        variant, runtime_name, group, lead = model
        results, missing = {}, []
        for record in group:
            try:
                result = json.loads(stored[id(record)].read_text())
            except (OSError, ValueError):  # not counted yet, or a damaged file: count again
                result = None
            if well_formed("counters", result):
                results[record["batch_size"]] = result
            else:
                missing.append(record["batch_size"])
        if missing:
            progress(f"{net}: counting {variant} on {runtime_name}, batch "
                     f"{','.join(map(str, missing))}, with {backend}")
            counted = count_model(config, artifacts[variant], runtime_name,
                                  ([lead] if lead else []) + missing, backend)
            for record in group:
                if record["batch_size"] in missing:
                    results[record["batch_size"]] = counted[record["batch_size"]]
                    cache.write_json(stored[id(record)], results[record["batch_size"]])
        return group, results

    # The costliest first (the most images per run), so that no long one starts last, alone.
    ordered = sorted(models, key=lambda model: -sum(r["batch_size"] for r in model[2]))
    pool = ThreadPoolExecutor((os.cpu_count() or 1) if backend == "valgrind" else 1)
    counting = Counting(pool, [pool.submit(count, model) for model in ordered],
                        lambda: progress(f"{net}: {len(chosen)} cases counted"))
    if backend != "valgrind":
        counting.wait()
    return counting


@dataclass
class Counting:
    """The counts of one net, coming in from a pool of workers."""
    pool: object = None
    futures: list = dataclasses.field(default_factory=list)
    finished: object = None  # called once every count is in

    def wait(self):
        """Wait for every count and put it into its timed record."""
        from concurrent.futures import as_completed

        for future in as_completed(self.futures):
            group, results = future.result()
            for record in group:
                apply_count(record, results[record["batch_size"]])
        if self.futures:
            self.futures = []
            self.pool.shutdown()
            self.finished()

    def cancel(self):
        """Drop the counts not started yet (the run stops): only the running ones finish."""
        if self.pool:
            self.pool.shutdown(wait=False, cancel_futures=True)


def new_results(config, data, machine_info, runtimes):
    """The skeleton of results.json, filled net by net."""
    return {
        "schema": SCHEMA,
        "quantlab": quantlab.__version__,
        "config": {k: (str(v) if isinstance(v, Path) else v)
                   for k, v in dataclasses.asdict(config).items()},
        "dataset": {"name": data.name, "source": data.source, "train": len(data.x_train),
                    "test": len(data.x_test), "input_shape": list(data.input_shape)},
        "machine": machine_info,
        "runtimes": list(runtimes),
        "nets": {}, "accuracy": [], "cases": [], "deployment": [],
    }


def net_entry(artifacts, layers):
    return {
        "artifacts": {v: {"file": a.path.name, "path": str(a.path), "format": a.meta["format"],
                          "bytes": a.bytes, "sha256": a.sha256, "execute_in": a.precision}
                      for v, a in artifacts.items()},
        "training": _training_summary(artifacts),
        "layers": layers,
    }


def measure_ceilings_again(results, label="after timing"):
    """The clock, bandwidths and peaks measured once more (the first time was before any
    timing): each is then used at its highest value, and the report names any that moved."""
    from quantlab import ceiling_spread

    info = results["machine"]
    kept = ceiling_spread.record([*info["ceilings"]["measurements"],
                                  ceiling_spread.measure(label, info["cpu"])])
    used = kept["used"]
    info.update(ceilings=kept, clock=used["clock"], bandwidth=used["bandwidth"], peaks=used["peaks"])


def add_measured_peaks(results):
    """Each timed case's share of the measured peak at the measured clock, beside the
    share of the nominal one."""
    from quantlab import machine

    info = results["machine"]
    ghz = info["clock"].get("ghz") if info["clock"].get("measured") else None
    for case in results["cases"]:
        if ghz and case.get("macs_per_second"):
            peak = machine.peak_macs_per_second(case["arithmetic"], case["threads"], info["cpu"],
                                                ghz=ghz, measured=info.get("peaks"))
            case["peak_fraction_measured"] = case["macs_per_second"] / peak.macs_per_second
            case["peak_measured"] = peak.description


def finish(results, out, progress):
    """Findings and recommendations from the numbers, then the report files."""
    from quantlab import report, roofline

    add_measured_peaks(results)
    info = results["machine"]
    at_counted_threads = [c for c in results["cases"] if (c.get("threads") or 1) == info["threads"]]
    results["roofline"] = roofline.summarize(at_counted_threads, info["clock"], info["bandwidth"],
                                             out, info["cpu"], info["threads"],
                                             peaks=info.get("peaks"))
    results["findings"] = report.findings(results)
    results["recommendations"] = report.recommendations(results)
    report.write(results, out)
    progress(f"report: {out / 'report.md'}")
    return results


def run(config, progress=None):
    """Run the study described by ``config`` on this machine; write the report; return the
    results dict."""
    from quantlab import counters, machine, runtime

    progress = progress or Progress()
    prepare_output(config.out, config.force)
    cache.check_writable(cache.cache_root(), "cache folder",
                         "set QUANTLAB_CACHE to a folder you can write")
    data = datasets.load(config.dataset, config.data_dir)
    runtimes, skipped = runtime.usable(config.runtimes)
    for name, why in skipped.items():
        progress(f"runtime {name} left out: {why}")
    backend = None if config.counters == "off" else counters.resolve_backend(config.counters)
    cpu = machine.cpu_info()
    results = new_results(config, data, machine_info(config, backend, skipped), runtimes)
    background = []  # each net's counting, going on while the next net is prepared
    try:
        return _study_nets(config, data, results, runtimes, backend, cpu, background, progress)
    finally:
        for counting in background:
            counting.cancel()


def _study_nets(config, data, results, runtimes, backend, cpu, background, progress):
    from quantlab import machine

    counting = Counting()
    for net in study_order(config, data):
        progress(f"== {net} ==")
        artifacts = export_net(config, net, data, progress)
        studied = pairs(artifacts, runtimes, cpu)
        keys = {"net": net, "artifacts": artifact_key(artifacts)}
        # What is scored on the test images depends on them, not only on the files scored.
        scored = {**keys, "data": data.sha256}
        layers = _cached_stage(config, "layers", scored, lambda: layer_errors(
            config, net, artifacts, data, progress), progress, f"{net}: per-layer error")
        results["nets"][net] = net_entry(artifacts, layers)
        results["accuracy"] += _cached_stage(
            config, "eval", {**scored, "pairs": studied, "versions": versions()},
            lambda: evaluate_net(net, artifacts, studied, data, progress), progress, f"{net}: accuracy")
        timed_runtimes = [r for r in runtimes if any(r == name for _, name in studied)]
        counting.wait()  # nothing else runs while a net is timed
        records = _cached_stage(
            config, "latency", {**keys, "batch": config.batch_sizes, "runtimes": timed_runtimes,
                                "threads": config.threads, "quick": config.quick,
                                "rounds": rounds_budget(config),
                                "host": machine.identity(cpu)["host"], "versions": versions()},
            lambda: time_net(config, net, artifacts, timed_runtimes, progress), progress,
            f"{net}: latency")
        results["deployment"] += _cached_stage(
            config, "deployment", {**keys, "pairs": studied, "threads": config.threads[0],
                                   "repeats": deployment_repeats(config),
                                   "host": machine.identity(cpu)["host"], "versions": versions()},
            lambda: measure_deployment(config, net, artifacts, studied, progress), progress,
            f"{net}: deployment costs")
        counting = start_counting(config, net, artifacts, records, backend, progress)
        background.append(counting)
        results["cases"] += records
    counting.wait()
    measure_ceilings_again(results)  # with nothing else running: the last net's counts are in
    in_order = [net for net in config.nets if net in results["nets"]] or list(results["nets"])
    results["nets"] = {net: results["nets"][net] for net in in_order}
    for rows in (results["accuracy"], results["cases"], results["deployment"]):
        rows.sort(key=lambda row: in_order.index(row["net"]))
    return finish(results, config.out, progress)


def study_order(config, data):
    """The nets in the order they are studied: the costliest to count first, so that the
    counting left after the last net is timed is the cheapest; the report keeps the order
    the user gave."""
    if config.model is not None:
        return [config.model.stem]
    from quantlab import macs

    return sorted(config.nets, key=lambda net: -macs.macs_per_image(net, data.input_shape,
                                                                    data.num_classes))
