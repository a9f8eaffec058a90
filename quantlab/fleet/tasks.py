"""What runs on the workers: each task runs one stage of the study with the study's own
functions, on artifacts that arrive as bytes and are checked before use."""

import dataclasses
import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import distributed

from quantlab import cache, datasets, study
from quantlab.errors import QuantlabError
from quantlab.progress import Progress
from quantlab.study.counting import count_model, counting_said


class TaskProgress(Progress):
    """A task's progress lines, as Dask events of the study's topic: the study's own process
    shows them among its own."""

    def __init__(self, topic, prefix):
        super().__init__(bars=False)
        self.topic, self.prefix = topic, prefix

    def __call__(self, message):
        distributed.get_worker().log_event(self.topic, f"{self.prefix}{message}")


def _task(topic, stage, label, function, *args):
    """Run one stage on this worker: its value (or the one-line error that stopped it) and
    its window on this host's monotonic clock, which every process on the host shares."""
    from quantlab import machine

    worker, me = distributed.get_worker(), machine.identity()
    progress = TaskProgress(topic, f"[{me['name']} {worker.address}] ")
    window = {"stage": stage, "label": label, "machine": me["name"], "host": me["host"],
              "worker": worker.address, "pid": os.getpid(), "start": time.monotonic()}
    try:
        outcome = {"value": function(*args, progress)}
    except QuantlabError as error:
        outcome = {"error": str(error)}
    window["end"] = time.monotonic()
    return {**outcome, "task": window}


@dataclass(frozen=True)
class Shipment:
    """One net's artifacts as they travel: each variant's sidecar, each file's bytes by sha256."""

    net: str
    metas: dict
    contents: dict


def file_place(folder, sha, name):
    """Where a file of this sha256 and name goes under ``folder``: never outside it."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha) or Path(name).name != name or name in ("", ".", ".."):
        raise QuantlabError(f"refused a file named {name!r} with sha256 {sha!r}: not a plain "
                            f"file name and a sha256")
    return Path(folder) / sha[:16] / name


def _received(sha, name, content):
    """``content``, whose sha256 must be ``sha``, as a checked file in this worker's cache."""
    path = file_place(cache.cache_root() / "received", sha, name)
    if not path.is_file() or cache.sha256_of(path) != sha:
        cache.write_bytes(path, content)
        if cache.sha256_of(path) != sha:
            raise QuantlabError(f"{path} does not hold the bytes it was sent (sha256 {sha[:12]}); "
                                f"check this worker's disk and run the study again")
    return path


def _unpack(shipment):
    """{variant: Artifact} of a shipment, as checked files of this worker's own cache."""
    from quantlab import variants

    return {variant: variants.Artifact(variant, _received(meta["sha256"], meta["file"],
                                                          shipment.contents[meta["sha256"]]), meta)
            for variant, meta in shipment.metas.items()}


_DATA = {}  # this worker's datasets, loaded once: {(name, folder): Dataset}


def _dataset(config, expected):
    key = (config.dataset, config.data_dir)
    if key not in _DATA or _DATA[key].sha256 != expected:  # or its files changed since
        _DATA[key] = datasets.load(*key)
    data = _DATA[key]
    if data.sha256 != expected:  # every worker must train and score on the same data
        raise QuantlabError(f"this worker's {config.dataset} ({data.source}) holds other images or "
                            f"labels than the study's; give every machine the same dataset files")
    return data


def _export(config, net, expected, model, progress):
    from quantlab import byo

    data = _dataset(config, expected)
    keras_file = None
    if model is not None:  # the user's own model file, sent as (name, sha256, bytes)
        name, sha, content = model
        config = dataclasses.replace(config, model=_received(sha, name, content))
        keras_file = byo.KerasFile(config.model, content, sha)  # the bytes checked as received
    here = study.Study(config, data, progress, keras_file=keras_file)
    artifacts = here.export(net)
    layers = here.layer_errors(net, artifacts)
    contents = {}
    for artifact in artifacts.values():
        content = artifact.path.read_bytes()
        if hashlib.sha256(content).hexdigest() != artifact.sha256:
            raise QuantlabError(f"{artifact.path} changed while it was read; run the study again")
        contents[artifact.sha256] = content
    return {"metas": {v: a.meta for v, a in artifacts.items()}, "contents": contents,
            "entry": study.net_entry(artifacts, layers)}


def _evaluate(config, shipment, expected, progress):
    from quantlab import machine, runtime

    data = _dataset(config, expected)
    artifacts = _unpack(shipment)
    studied = study.pairs(artifacts, runtime.usable(config.runtimes)[0], machine.cpu_info())
    return study.Study(config, data, progress).evaluate(shipment.net, artifacts, studied)


def _measure(config, progress):
    from quantlab import counters, runtime

    runtimes, skipped = runtime.usable(config.runtimes)
    backend, uncounted = None, None
    try:
        backend = None if config.counters == "off" else counters.resolve_backend(config.counters)
    except QuantlabError as error:  # e.g. no valgrind here: this machine still times
        uncounted = str(error)
    progress("measuring this machine: CPU, clock, cache bandwidth")
    return {"info": study.machine_info(config, backend, skipped), "runtimes": list(runtimes),
            "backend": backend, "uncounted": uncounted}


def _time(config, shipment, runtimes, progress):
    return study.time_net(config, shipment.net, _unpack(shipment), runtimes, progress)


def _count(config, shipment, variant, runtime_name, batch_sizes, backend, lead, progress):
    """{batch size: counters} of one model on one runtime; the sizes as text, as in JSON."""
    progress(counting_said(shipment.net, variant, runtime_name, batch_sizes, backend))
    counted = count_model(config, _unpack(shipment)[variant], runtime_name, batch_sizes,
                          backend, lead)
    return {str(batch): result for batch, result in counted.items()}

