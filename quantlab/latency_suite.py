"""The latency benchmark: one pytest-benchmark case per net x variant x batch size (x threads).

The plugin ``quantlab.pytest_plugin`` parametrizes ``test_latency`` from its
``--quantlab-*`` options and supplies the fixtures. Run it as ``pytest benchmarks/`` (which
imports the test from here) or name this module, as ``quantlab run`` does:

    python -m pytest --pyargs quantlab.latency_suite --quantlab-artifacts=manifest.json \
        --benchmark-json=latency.json

Only the bare inference call is timed, on a batch prepared before timing: model loading,
interpreter creation, input quantization and output dequantization stay outside. The input
is a seeded batch of uniform [0, 1) images: dense kernels do the same work for any values.
"""

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quantlab import macs, machine, nets, runtime
from quantlab._tf import versions

# Latency does not depend on how well the weights were trained, so by default the suite
# builds its own artifacts with the quick training of the test suite (same cache keys).
QUICK_TRAINING = dict(limit=6000, epochs=2, qat_epochs=1, seed=0)
TRAININGS = {"quick": QUICK_TRAINING, "full": {}}
SEED = 0
_PACKAGES = {"litert": "ai-edge-litert", "tensorflow": "tensorflow"}


@dataclass(frozen=True)
class Case:
    net: str
    variant: str
    batch_size: int
    threads: int = 1

    @property
    def id(self):
        """``medium-int8-b16``; a ``-tN`` suffix only off the default of one thread."""
        return f"{self.net}-{self.variant}-b{self.batch_size}" + self._threads

    @property
    def group(self):
        """One table per net and batch size, so that the variants sit side by side."""
        return f"{self.net}-b{self.batch_size}" + self._threads

    @property
    def _threads(self):
        return "" if self.threads == 1 else f"-t{self.threads}"


def cases(nets, variants, batch_sizes, threads):
    return [Case(net, variant, batch, count) for net in nets for batch in batch_sizes
            for count in threads for variant in variants]


def read_manifest(path):
    """{(net, variant): Path} and the dataset name from a ``quantlab run`` manifest.

    Format: ``{"dataset": "fashion_mnist", "artifacts": [{"net", "variant", "path"}, ...]}``;
    relative paths are taken from the manifest's folder. Raises ValueError with one line.
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
            found[(entry["net"], entry["variant"])] = model
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
    """The model file of each (net, variant): from a manifest, or exported on first use."""

    def __init__(self, manifest=None, dataset=None, training="quick", variants=None):
        self.manifest, self.dataset, self.training = manifest, dataset, training
        self.variants = variants
        self._exported = {}

    def path(self, net, variant):
        if self.manifest is not None:
            return self.manifest[(net, variant)]
        if net not in self._exported:
            # All selected variants of a net at once: they share one training run.
            from quantlab import variants
            from quantlab.training import TrainConfig

            config = TrainConfig(net, self.dataset, **TRAININGS[self.training])
            self._exported[net] = variants.export(config, variants=self.variants)
        return self._exported[net][variant].path


def sample_batch(input_shape, batch_size, seed=SEED):
    return np.random.default_rng(seed).random((batch_size, *input_shape), dtype=np.float32)


def percentiles(data):
    """p50, p90, p99 of per-iteration seconds (pytest-benchmark's ``stats.data``)."""
    if len(data) == 1:
        return {"p50": data[0], "p90": data[0], "p99": data[0]}
    cuts = statistics.quantiles(data, n=100, method="inclusive")
    return {"p50": cuts[49], "p90": cuts[89], "p99": cuts[98]}


def describe(case, path, predictor, num_classes, cpu, dataset, stats=None):
    """The ``extra_info`` of one case: what ran where, its size, arithmetic and latency."""
    described = predictor.describe()
    arithmetic = macs.arithmetic(case.variant)
    peak = machine.peak_macs_per_second(arithmetic, case.threads, cpu)
    info = {
        "net": case.net,
        "variant": case.variant,
        "batch_size": case.batch_size,
        "threads": case.threads,
        "dataset": dataset,
        "runtime": described["runtime"],
        "runtime_version": versions().get(_PACKAGES.get(described["runtime"])),
        "kernels": described["kernels"],
        "cpu_model": cpu["model"],
        "isa": cpu["flags"],
        "model_path": str(path),
        "model_bytes": Path(path).stat().st_size,
        # Known for quantlab's own nets; a user's model has no layer plan to count from.
        "macs_per_image": (macs.macs_per_image(case.net, predictor.input_shape, num_classes)
                           if case.net in nets.NAMES else None),
        "arithmetic": arithmetic,
        "arithmetic_note": macs.NOTES.get(case.variant),
        "peak_macs_per_second": peak.macs_per_second,
        "peak": peak.description,
    }
    if stats:  # absent with --benchmark-disable: nothing was timed
        median = stats.stats.median  # seconds per inference call: per round / iterations
        achieved = (info["macs_per_image"] * case.batch_size / median
                    if info["macs_per_image"] else None)
        info.update(median=median, per_image=median / case.batch_size,
                    **percentiles(stats.stats.data), macs_per_second=achieved,
                    peak_fraction=(achieved / peak.macs_per_second
                                   if achieved and peak.macs_per_second else None))
    return info


def test_latency(benchmark, quantlab_case, quantlab_artifacts, quantlab_session):
    """Time one inference call of one (net, variant, batch size); describe it in extra_info."""
    case = quantlab_case
    path = quantlab_artifacts.path(case.net, case.variant)
    predictor = runtime.load(path, threads=case.threads, kernels=quantlab_session.kernels)
    prepared = predictor.prepare(sample_batch(predictor.input_shape, case.batch_size))
    benchmark.group = case.group
    output = benchmark(predictor.run, prepared)  # the only timed code
    assert tuple(output.shape)[0] == case.batch_size
    benchmark.extra_info.update(describe(case, path, predictor, int(output.shape[-1]),
                                         quantlab_session.cpu, quantlab_artifacts.dataset,
                                         benchmark.stats))
    quantlab_session.finish_case(case, path, benchmark.extra_info)
