"""The whole study as one resumable function: train, export, evaluate, time, count, report.

Every stage keeps its result: trained nets and variants in the quantlab cache (keyed by
configuration), evaluations, timings and counts in ``OUT/.state`` (keyed by the artifacts'
sha256 and the settings), so a run that is interrupted and started again continues where
it stopped. Latency is measured by the same pytest-benchmark suite as ``benchmarks/``.
"""

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import quantlab
from quantlab import cache, datasets, nets, variants
from quantlab._tf import versions
from quantlab.errors import QuantlabError

QUICK_TRAINING = dict(limit=3000, epochs=1, qat_epochs=1)
QUICK_TIMING = ["--benchmark-max-time=0.2", "--benchmark-min-rounds=5"]
FULL_TIMING = ["--benchmark-max-time=1.0", "--benchmark-min-rounds=10"]


@dataclass
class StudyConfig:
    dataset: str = datasets.DEFAULT
    nets: tuple = nets.NAMES
    variants: tuple = variants.VARIANTS
    batch_sizes: tuple = (1, 16, 64)
    threads: int = 1
    counters: str = "auto"
    cache_geometry: str = "host"
    quick: bool = False
    out: Path = Path("quantlab-report")
    model: Path | None = None
    data_dir: str | None = None
    seed: int = 0
    count_batch_sizes: tuple = field(default=None)
    count_variants: tuple = field(default=None)

    def __post_init__(self):
        for net in self.nets:
            nets.check_name(net)
        variants.check_variants(self.variants)
        if variants.REFERENCE not in self.variants:
            self.variants = (variants.REFERENCE, *self.variants)
        self.out = Path(self.out)
        # Counting under valgrind costs seconds per case, and a minute for TensorFlow (its
        # import runs under valgrind too): the quick study counts LiteRT at one batch size.
        if self.count_batch_sizes is None:
            self.count_batch_sizes = self.batch_sizes[:1] if self.quick else self.batch_sizes
        if self.count_variants is None:
            self.count_variants = tuple(v for v in self.variants
                                        if not (self.quick and v == "float32_tf"))


def _state_path(config, stage, key):
    return config.out / ".state" / f"{stage}-{cache.config_hash(key)}.json"


def _cached_stage(config, stage, key, compute, progress, label):
    """Return the stored result of a stage, or compute and store it."""
    path = _state_path(config, stage, key)
    if path.is_file():
        progress(f"{label}: done earlier, reusing {path.name}")
        return json.loads(path.read_text())
    result = compute()
    cache.write_json(path, result)
    return result


def _check_output_folder(out):
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise QuantlabError(f"cannot write to output folder {out}: {error.strerror}; "
                            f"choose another with --out") from None


def train_config(config, net):
    from quantlab.training import TrainConfig

    extra = QUICK_TRAINING if config.quick else {}
    return TrainConfig(net=net, dataset=config.dataset, seed=config.seed, **extra)


# --- stages ----------------------------------------------------------------------------------

def _export(config, net, data, progress):
    if config.model is not None:
        from quantlab import byo

        return byo.export(config.model, data, train_config(config, net), config.variants,
                          progress=progress)
    return variants.export(train_config(config, net), variants=config.variants, data=data,
                           progress=progress)


def _artifact_key(artifacts):
    return {v: a.meta["sha256"] for v, a in sorted(artifacts.items())}


def _evaluate(config, net, artifacts, data, progress):
    from quantlab import evaluate

    def compute():
        rows = evaluate.compare(artifacts, data, threads=config.threads,
                                progress=lambda message: progress(f"{net}: {message}"))
        return {row["variant"]: row for row in rows}

    return _cached_stage(config, "eval", {"net": net, "artifacts": _artifact_key(artifacts)},
                         compute, progress, f"{net}: accuracy")


def _layer_errors(config, net, artifacts, data, progress):
    if "int8" not in artifacts or config.model is not None:
        return []
    from quantlab import layer_error, training

    def compute():
        progress(f"{net}: per-layer quantization error of int8 (TFLite quantization debugger)")
        trained = training.train(train_config(config, net), data)
        return layer_error.int8_layer_errors(trained.model, data, artifacts["int8"].meta)

    return _cached_stage(config, "layers", {"net": net, "int8": artifacts["int8"].meta["sha256"]},
                         compute, progress, f"{net}: per-layer error")


def _manifest(config, net, artifacts, folder):
    path = folder / f"manifest-{net}.json"
    path.write_text(json.dumps({
        "dataset": config.dataset,
        "artifacts": [{"net": net, "variant": v, "path": str(a.path)} for v, a in artifacts.items()],
    }))
    return path


def _time(config, net, artifacts, progress):
    """Run the latency suite (pytest-benchmark) on this net's artifacts in a subprocess."""
    key = {"net": net, "artifacts": _artifact_key(artifacts), "batch": config.batch_sizes,
           "threads": config.threads, "quick": config.quick, "machine": os.uname().nodename}

    def compute():
        progress(f"{net}: timing {len(artifacts)} variants x batch sizes "
                 f"{','.join(map(str, config.batch_sizes))} with pytest-benchmark")
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            report = tmp / "benchmark.json"
            command = [
                # By module name, not file path: the child imports quantlab the way it
                # finds it, which need not be this process's copy (a source checkout in
                # the working directory beside an installed package, under tox).
                sys.executable, "-m", "pytest", "--pyargs", "quantlab.latency_suite", "-q",
                "-p", "no:cacheprovider",
                "-p", "no:randomly", f"--rootdir={tmp}", f"--benchmark-json={report}",
                f"--quantlab-artifacts={_manifest(config, net, artifacts, tmp)}",
                f"--quantlab-batch-sizes={','.join(map(str, config.batch_sizes))}",
                f"--quantlab-threads={config.threads}", "--quantlab-counters=off",
                "--benchmark-columns=median,iqr,rounds", "--benchmark-sort=name",
                *(QUICK_TIMING if config.quick else FULL_TIMING),
            ]
            finished = subprocess.run(command, cwd=tmp, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
            for line in finished.stdout.splitlines():
                if "passed" in line or "failed" in line or "error" in line.lower():
                    progress(f"{net}: {line.strip()}")
            if finished.returncode != 0 or not report.is_file():
                tail = " | ".join(finished.stdout.strip().splitlines()[-3:])
                raise QuantlabError(f"the timing run for {net} failed: {tail}")
            return _latency_from(json.loads(report.read_text()))

    return _cached_stage(config, "latency", key, compute, progress, f"{net}: latency")


def _latency_from(benchmark_json):
    """{variant: {batch: figures}} from a pytest-benchmark JSON report."""
    latency = {}
    for bench in benchmark_json["benchmarks"]:
        info = bench["extra_info"]
        figures = {key: info.get(key) for key in
                   ("p50", "p90", "p99", "per_image", "macs_per_second", "peak_fraction",
                    "peak_macs_per_second", "runtime", "kernels", "model_bytes")}
        figures["median"] = bench["stats"]["median"]
        figures["rounds"] = bench["stats"]["rounds"]
        latency.setdefault(info["variant"], {})[str(info["batch_size"])] = figures
    return latency


def _count(config, net, artifacts, backend, progress):
    from concurrent.futures import ThreadPoolExecutor

    from quantlab import counters

    cases = [(v, b) for v in artifacts if v in config.count_variants
             for b in config.count_batch_sizes]

    def count(numbered_case):
        number, (variant, batch) = numbered_case
        key = {"sha": artifacts[variant].meta["sha256"], "batch": batch, "backend": backend,
               "threads": config.threads, "geometry": config.cache_geometry}
        label = f"{net}: counting {variant} batch {batch} with {backend} ({number}/{len(cases)})"

        def compute():
            progress(label)
            return counters.measure(artifacts[variant].path, batch, backend=backend,
                                    threads=config.threads, cache=config.cache_geometry)

        return _cached_stage(config, "counters", key, compute, progress, label)

    # Valgrind simulates each worker's caches on its own, so its counts do not depend on
    # what else runs: use every core. Hardware counters would feel the neighbour: one at a time.
    workers = (os.cpu_count() or 1) if backend == "valgrind" else 1
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(count, enumerate(cases, 1)))
    counts = {}
    for (variant, batch), result in zip(cases, results):
        counts.setdefault(variant, {})[str(batch)] = result
    return counts


def _machine(config, backend):
    from quantlab import machine

    return {
        "cpu": machine.cpu_info(),
        "threads": config.threads,
        "versions": {"quantlab": quantlab.__version__, "python": sys.version.split()[0],
                     **versions()},
        "counter_backend": backend,
        "cache_geometry": config.cache_geometry if backend == "valgrind" else None,
    }


def run(config, progress=print):
    """Run the study described by ``config``; write the report; return the results dict."""
    from quantlab import counters, report

    _check_output_folder(config.out)
    data = datasets.load(config.dataset, config.data_dir)
    backend = None if config.counters == "off" else counters.resolve_backend(config.counters)
    studied = ["model"] if config.model is not None else list(config.nets)
    results = {
        "quantlab": quantlab.__version__,
        "config": {k: (str(v) if isinstance(v, Path) else v)
                   for k, v in dataclasses.asdict(config).items()},
        "dataset": {"name": data.name, "source": data.source, "train": len(data.x_train),
                    "test": len(data.x_test), "input_shape": list(data.input_shape)},
        "machine": _machine(config, backend),
        "nets": {},
    }
    for net in studied:
        progress(f"== {net} ==")
        artifacts = _export(config, net, data, progress)
        entry = {
            "artifacts": {v: {"path": str(a.path), "bytes": a.bytes, "sha256": a.meta["sha256"]}
                          for v, a in artifacts.items()},
            "training": _training_summary(artifacts),
            "accuracy": _evaluate(config, net, artifacts, data, progress),
            "layers": _layer_errors(config, net, artifacts, data, progress),
            "latency": _time(config, net, artifacts, progress),
            "counters": _count(config, net, artifacts, backend, progress) if backend else {},
        }
        # Stored stages come back with sorted keys: list variants in the order studied.
        for stage in ("accuracy", "latency", "counters"):
            entry[stage] = {v: entry[stage][v] for v in artifacts if v in entry[stage]}
        results["nets"][net] = entry
    results["findings"] = report.findings(results)
    report.write(results, config.out)
    progress(f"report: {config.out / 'report.md'}")
    return results


def _training_summary(artifacts):
    """What training reported, read from the cached model folders."""
    summary = {}
    for stage, variant in (("float", variants.REFERENCE), ("qat", "qat_int8")):
        if variant not in artifacts:
            continue
        info_path = Path(artifacts[variant].meta["trained_model"]) / "info.json"
        if info_path.is_file():
            info = json.loads(info_path.read_text())
            summary[stage] = {k: info.get(k) for k in
                              ("test_accuracy", "epochs_run", "train_images", "seconds")}
    return summary
