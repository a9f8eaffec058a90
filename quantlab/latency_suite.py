"""The latency benchmark: one pytest-benchmark case per net x variant x runtime x batch size
(x threads).

The plugin ``quantlab.pytest_plugin`` parametrizes ``test_latency`` from its
``--quantlab-*`` options and supplies the fixtures. Run it as ``pytest benchmarks/`` (which
imports the test from here) or name this module, as ``quantlab run`` does:

    python -m pytest --pyargs quantlab.latency_suite --quantlab-artifacts=manifest.json \
        --benchmark-json=latency.json

Only the bare inference call is timed, on a batch prepared before timing: model loading,
compilation, input quantization and output dequantization stay outside. Each runtime is
called through its fastest honest path (see its module in ``quantlab.runtime``).
"""

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import pytest

from quantlab import busy_threads, intervals, machine, macs, nets, runtime
from quantlab.defaults import QUICK_TRAINING, REFERENCE, REFERENCE_RUNTIME, VARIANTS
from quantlab.errors import QuantlabError
from quantlab.variant_table import readers_on

TRAININGS = {"quick": QUICK_TRAINING, "full": {}}


@dataclass(frozen=True)
class Case:
    net: str
    variant: str
    runtime: str
    batch_size: int
    threads: int = 1

    @property
    def id(self):
        """``medium-int8-openvino-b16``; a ``-tN`` suffix only off the default of one thread."""
        return f"{self.net}-{self.variant}-{self.runtime}-b{self.batch_size}" + self._threads

    @property
    def group(self):
        """One table per net, batch size and runtime: the variants of one runtime side by side."""
        return f"{self.net}-b{self.batch_size}-{self.runtime}" + self._threads

    @property
    def _threads(self):
        return "" if self.threads == 1 else f"-t{self.threads}"

    @property
    def round_group(self):
        """The cases timed together in rounds: every variant on every runtime at every
        thread count of one net and batch size (the references among them), so that every
        ratio between them, across thread counts too, is paired by round."""
        return f"{self.net}-b{self.batch_size}"

    @property
    def is_reference(self):
        return (self.variant, self.runtime) == (REFERENCE, REFERENCE_RUNTIME)


def cases(nets, variants, runtimes, batch_sizes, threads, cpu):
    return [Case(net, variant, name, batch, count) for net in nets for batch in batch_sizes
            for count in threads for name in runtimes for variant in variants
            if name in readers_on(variant, cpu)]


@dataclass(frozen=True)
class Model:
    """One artifact as the suite runs it: its file, the bytes it must hold, how to execute it."""

    path: Path
    sha256: str | None = None
    precision: str | None = None
    batch_sizes: tuple | None = None  # the batch sizes to time it at; None: every one chosen


def read_manifest(path):
    """{(net, variant): Model} and the dataset name from a ``quantlab run`` manifest.

    Format: ``{"dataset": "fashion_mnist", "artifacts": [{"net", "variant", "path",
    "sha256", "precision", "batch_sizes"}, ...]}`` (sha256, precision and batch_sizes
    optional); relative paths are taken from the manifest's folder. Raises ValueError with
    one line.
    """
    path = Path(path)
    try:
        content = json.loads(path.read_text())
        entries = content["artifacts"]
        found = {}
        for entry in entries:
            model = Path(path.parent, entry["path"])
            if not model.is_file():
                raise ValueError(f"{path}: no model file at {model}")
            found[(entry["net"], entry["variant"])] = Model(
                model, entry.get("sha256"), entry.get("precision"),
                _batch_sizes(path, entry.get("batch_sizes")))
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not JSON: {error}") from None
    except (KeyError, TypeError):
        raise ValueError(f'{path}: expected {{"dataset": ..., "artifacts": '
                         f'[{{"net": ..., "variant": ..., "path": ...}}, ...]}}') from None
    if not found:
        raise ValueError(f"{path} lists no artifacts")
    return content.get("dataset"), found


class Artifacts:
    """The model of each (net, variant): from a manifest, or exported on first use."""

    def __init__(self, manifest=None, dataset=None, training="quick", variants=VARIANTS):
        self.manifest, self.dataset, self.training = manifest, dataset, training
        self.variants = variants
        self._exported = {}

    def model(self, net, variant):
        if self.manifest is not None:
            return self.manifest[(net, variant)]
        if net not in self._exported:
            # All selected variants of a net at once: they share one training run.
            from quantlab import variants
            from quantlab.training import TrainConfig

            config = TrainConfig(net, self.dataset, **TRAININGS[self.training])
            self._exported[net] = variants.export(config, variants=self.variants)
        artifact = self._exported[net][variant]
        return Model(artifact.path, artifact.sha256, artifact.precision)


def _batch_sizes(path, given):
    """A manifest entry's batch sizes: None, or a list of positive whole numbers."""
    if given is None:
        return None
    if (not isinstance(given, list) or not given
            or not all(type(b) is int and b > 0 for b in given)):
        raise ValueError(f"{path}: batch_sizes must be a list of whole numbers of at least 1, "
                         f"not {json.dumps(given)[:60]}")
    return tuple(given)


def percentiles(data):
    """p50, p90, p99 of per-iteration seconds (pytest-benchmark's ``stats.data``)."""
    if len(data) == 1:
        return {"p50": data[0], "p90": data[0], "p99": data[0]}
    cuts = statistics.quantiles(data, n=100, method="inclusive")
    return {"p50": cuts[49], "p90": cuts[89], "p99": cuts[98]}


def describe(case, model, predictor, num_classes, cpu, dataset, stats=None):
    """The ``extra_info`` of one case: what ran where, in which precision, its size and latency."""
    described = predictor.describe()
    arithmetic = described["precision"]
    peak = machine.peak_macs_per_second(arithmetic, case.threads, cpu)
    info = {
        "net": case.net,
        "variant": case.variant,
        "runtime": case.runtime,
        "batch_size": case.batch_size,
        "threads": case.threads,
        "dataset": dataset,
        "runtime_version": described["runtime_version"],
        "kernels": described["kernels"],
        "precision": arithmetic,
        "primitives": described["primitives"],
        "cpu_model": cpu["model"],
        "isa": cpu["flags"],
        "model_path": str(model.path),
        "model_sha256": described["sha256"],
        "model_format": described["format"],
        "model_bytes": Path(model.path).stat().st_size,
        "input_shape": described["input_shape"],
        "num_classes": num_classes,
        # Known for quantlab's own nets; a user's model has no layer plan to count from.
        "macs_per_image": (macs.macs_per_image(case.net, predictor.input_shape, num_classes)
                           if case.net in nets.ALL else None),
        "arithmetic": arithmetic,
        "peak_macs_per_second": peak.macs_per_second,
        "peak": peak.description,
    }
    if stats:  # absent with --benchmark-disable: nothing was timed
        # seconds per inference call: per round / iterations
        info.update(**percentiles(stats.stats.data), **_speed(info, stats.stats.median))
    return info


def _speed(info, median):
    """The fields that follow from a case's median: per image, MAC/s, share of the peak."""
    achieved = (info["macs_per_image"] * info["batch_size"] / median
                if info["macs_per_image"] else None)
    peak = info["peak_macs_per_second"]
    return {"median": median, "per_image": median / info["batch_size"],
            "macs_per_second": achieved,
            "peak_fraction": achieved / peak if achieved and peak else None}


def apply_rounds(info, seconds, summary, reference_seconds=None, loads_from=(0,)):
    """Put one case's interleaved timing (``quantlab.rounds``) into its record: the median
    over rounds becomes the case's value (pytest-benchmark's own window stays as
    ``window_median``), its fastest round and lower quartile are kept, and its speed-up
    against the reference, the ratio of their lower quartiles (quantlab.intervals), gets its
    interval.
    ``loads_from``: the first round of each load of the model the rounds ran."""
    info["window_median"] = info["median"]
    info["interleaved"] = {"seconds": list(seconds), "loads_from": list(loads_from), **summary}
    info.update(_speed(info, intervals.median_interval(seconds).value))
    info["fastest"] = min(seconds)
    info["lower_quartile"] = intervals.lower_quartile(seconds)
    if reference_seconds is not None:
        info["speedup"] = {**intervals.ratio(reference_seconds, seconds).as_dict(),
                           "method": intervals.RATIO_METHOD}


def test_latency(benchmark, quantlab_case, quantlab_artifacts, quantlab_session):
    """Time one inference call of one (net, variant, runtime, batch size); describe it."""
    case = quantlab_case
    model = quantlab_artifacts.model(case.net, case.variant)
    try:
        predictor = quantlab_session.predictor(
            case, lambda c: quantlab_artifacts.model(c.net, c.variant))
        prepared = predictor.prepare(runtime.sample_batch(predictor.input_shape, case.batch_size))
    except QuantlabError as error:  # e.g. a runtime that cannot compile this model: n/a
        quantlab_session.not_run(case, str(error))
        pytest.skip(str(error))
    benchmark.group = case.group
    with quantlab_session.timing(case), busy_threads.counting() as busy:
        output = benchmark(predictor.run, prepared)  # the only timed code
    output = predictor.finish(output)
    assert tuple(output.shape)[0] == case.batch_size
    benchmark.extra_info.update(describe(case, model, predictor, int(output.shape[-1]),
                                         quantlab_session.cpu, quantlab_artifacts.dataset,
                                         benchmark.stats))
    if benchmark.stats:  # the thread count that ran in the window, checked rather than assumed
        benchmark.extra_info["threads_busy"] = busy.count
    quantlab_session.finish_case(case, model, predictor, prepared, benchmark.extra_info)
