"""The study on a Dask distributed cluster: one study, and every machine of the fleet measured.

``quantlab run --scheduler ADDRESS`` runs the stages of ``quantlab.study`` as Dask tasks, in
three phases:

1. Anywhere, one task per net: train and export it (in that worker's own cache) and measure
   its per-layer error; then evaluate it. The exported bytes come back to this process, are
   kept in OUT/.state/artifacts and travel to the workers as the result of a Dask task: no
   shared file system is assumed. A worker writes the bytes it receives into its own cache
   and checks their sha256 before it uses them.
2. Per physical host, one task at a time: each machine on the host measures itself
   (``study.machine_info``), then times every net. Nothing else of the study runs on the
   host meanwhile: this phase starts when phase 1 is over everywhere, and a host's counting
   starts when its timing is over. Machines that share a host take turns.
3. Per machine, on its workers: counting of every chosen case.

Then each machine's report goes to OUT/machines/NAME/ and the cross-machine report
(``quantlab compare``) to OUT/compare.md.

A worker belongs to the machine its ``QUANTLAB_MACHINE`` names (by default its host and CPU,
see ``quantlab.machine.identity``). A worker plugin gives every worker, restarted ones too,
one unit of the resource ``quantlab-machine:NAME``: a machine's task asks for it, so it runs
on any worker of that machine, one task per worker process at a time, and Dask moves it to
another worker of the machine when its worker dies. Every result is kept in OUT/.state as
it arrives, so a rerun with the same --out does only what is missing; a task whose machine
has had no worker for ``--grace`` seconds is given up and said missing in that machine's
report.
Every task records its window on its host's monotonic clock (``fleet.json``, ``tasks``).
"""

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import re
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import dask
import distributed
from distributed.client import FuturesCancelledError
from distributed.diagnostics.plugin import WorkerPlugin

import quantlab
from quantlab import cache, datasets, study
from quantlab.errors import QuantlabError
from quantlab.progress import Progress

CONNECT_TIMEOUT = 5  # seconds to reach the scheduler, and again to find a worker there
POLL = 1.0  # seconds between looks at the cluster's members
ANY = "quantlab-worker"  # offered once by every worker: one study task per worker at a time
TIMING = ("machine", "latency")  # the stages that measure speed: alone on their host


def machine_resource(name):
    return f"quantlab-machine:{name}"


# --- on the workers -------------------------------------------------------------------------

class MachineResource(WorkerPlugin):
    """Gives every worker, present and future, one unit of ``ANY`` and of its machine's
    resource."""

    name = "quantlab-machine"

    async def setup(self, worker):
        from quantlab import machine

        try:
            name = machine.identity()["name"]
        except QuantlabError:  # not a plain name: this worker takes no task (``survey`` says why)
            return
        await worker.set_resources(**{ANY: 1, machine_resource(name): 1})


def whoami():
    from quantlab import machine

    try:
        return {**machine.identity(), "quantlab": quantlab.__version__}
    except QuantlabError as error:
        return {"refused": str(error)}


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
    data = _dataset(config, expected)
    if model is not None:  # the user's own model file, sent as (name, sha256, bytes)
        config = dataclasses.replace(config, model=_received(model[1], model[0], model[2]))
    artifacts = study.export_net(config, net, data, progress)
    layers = study.layer_errors(config, net, artifacts, data, progress)
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
    return study.evaluate_net(shipment.net, artifacts, studied, data, progress)


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


def _count(config, shipment, variant, runtime_name, batch_sizes, backend, progress):
    """{batch size: counters} of one model on one runtime; the sizes as text, as in JSON."""
    progress(f"{shipment.net}: counting {variant} on {runtime_name}, batch "
             f"{','.join(map(str, batch_sizes))}, with {backend}")
    counted = study.count_model(config, _unpack(shipment)[variant], runtime_name, batch_sizes,
                                backend)
    return {str(batch): result for batch, result in counted.items()}


# --- in the study's own process -----------------------------------------------------------------

def connect(address):
    """A Dask client of the scheduler at ``address``, or a one-line error within seconds."""
    try:
        return distributed.Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError, TypeError) as error:
        why = " ".join(str(error).split()) or type(error).__name__
        raise QuantlabError(f"cannot reach the Dask scheduler at {address} ({why}); start one "
                            f"with `dask scheduler`, or check the address") from None


@dataclass
class Machine:
    """One machine of the fleet: its workers and hosts, and what it measured."""

    name: str
    workers: list = field(default_factory=list)
    hosts: list = field(default_factory=list)
    found: dict | None = None  # what _measure returned
    timed: dict = field(default_factory=dict)  # {net: timed records}
    missing: list = field(default_factory=list)  # {"stage", "net", "reason"}


def survey(client, address):
    """{name: Machine} of the workers now in the cluster."""
    try:
        client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
    except TimeoutError:
        raise QuantlabError(f"the Dask scheduler at {address} has no workers; start one with "
                            f"`QUANTLAB_MACHINE=NAME dask worker {address}`") from None
    machines = {}
    for worker, me in sorted(client.run(whoami).items()):
        if "refused" in me:
            raise QuantlabError(f"worker {worker}: {me['refused']}, in that worker's environment")
        if me["quantlab"] != quantlab.__version__:
            raise QuantlabError(f"worker {worker} runs quantlab {me['quantlab']} and this machine "
                                f"{quantlab.__version__}; install the same quantlab everywhere")
        found = machines.setdefault(me["name"], Machine(me["name"]))
        found.workers.append(worker)
        if me["host"] not in found.hosts:
            found.hosts.append(me["host"])
    return machines


def host_groups(machines):
    """Names of the machines that share a host, directly or through a machine with workers
    on several hosts: each group times one task at a time."""
    groups = []  # [(hosts, names)]
    for found in machines.values():
        hosts, names = set(found.hosts), [found.name]
        for group in [g for g in groups if g[0] & hosts]:
            groups.remove(group)
            hosts, names = hosts | group[0], group[1] + names
        groups.append((hosts, names))
    return [sorted(names) for _, names in groups]


def folder_name(name):
    """A machine's folder: its name where that is a safe file name, else a safe form of it."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "machine"
    return safe if safe == name else f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:6]}"


def _failure(error):
    if isinstance(error, distributed.KilledWorker):
        return "every worker that ran it died"
    return f"{type(error).__name__}: {error}"


@dataclass
class Job:
    """One task of the study and what becomes of its outcome."""

    stage: str
    label: str
    machine: str | None  # None: any worker
    call: tuple  # (function, *arguments)
    key: dict  # what the stored outcome in OUT/.state is keyed by
    apply: object  # (stored value) -> None
    lost: object  # (reason) -> None
    then: object = None  # () -> None, once applied or lost
    keep: object = None  # (value) -> the value to store, where the value is not JSON
    future: object = None

    @property
    def resource(self):
        return machine_resource(self.machine) if self.machine else ANY


class Fleet:
    """One study on one cluster: the phases, the tasks in flight, and what they measured."""

    def __init__(self, config, client, data, machines, progress):
        self.config, self.client, self.data, self.progress = config, client, data, progress
        self.machines = machines
        self.nets = {name: {} for name in ([config.model.stem] if config.model else config.nets)}
        self.fingerprint = data.sha256
        self.model = None
        if config.model is not None:
            content = _read(config.model)
            self.model = (config.model.name, hashlib.sha256(content).hexdigest(), content)
        self.pending = {}  # {future key: Job}
        self.gone = {}  # {resource: monotonic time since which no worker offers it}
        self.tasks = []  # the windows of the tasks that ran
        self.exporting = set(self.nets)  # nets whose phase 1 is not over
        self.topic = f"quantlab-progress-{uuid.uuid4().hex}"  # this study's task progress
        client.subscribe_topic(self.topic, lambda event: progress(event[1]))

    # -- stored outcomes

    def state(self, stage, key):
        return study.state_path(self.config, f"fleet-{stage}", key)

    def stored(self, stage, key, label):
        path = self.state(stage, key)
        try:
            value = json.loads(path.read_text())["value"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            self.progress(f"{label}: stored result {path.name} is unreadable; measuring again")
            return None
        self.progress(f"{label}: done earlier, reusing {path.name}")
        return value

    def start(self, job):
        """Apply the stored outcome of ``job``, or submit its task; True when a task runs."""
        value = self.stored(job.stage, job.key, job.label)
        if value is None:
            self.submit(job)
            return True
        job.apply(value)
        return False

    def submit(self, job):
        function, *arguments = job.call
        job.future = self.client.submit(
            _task, self.topic, job.stage, job.label, function, *arguments,
            resources={job.resource: 1}, pure=False, key=f"quantlab-{job.stage}-{uuid.uuid4().hex}")
        self.pending[job.future.key] = job

    # -- the loop: outcomes as they arrive, and the cluster's members

    def drive(self):
        watched = 0.0
        while self.pending:
            try:
                distributed.wait([job.future for job in self.pending.values()], timeout=POLL,
                                 return_when="FIRST_COMPLETED")
            except (TimeoutError, FuturesCancelledError):  # the latter: settled below
                pass
            for key, job in list(self.pending.items()):
                if job.future.done():
                    del self.pending[key]
                    self.settle(job)
            if time.monotonic() - watched > POLL:
                self.watch()
                watched = time.monotonic()

    def settle(self, job):
        # Let go of the future: Dask would run a task again, anywhere and at any time, to
        # remake a result that a client still holds when the worker holding it dies.
        future, job.future = job.future, None
        if future.status == "finished":
            outcome = future.result()
            self.tasks.append(outcome["task"])
            if "error" in outcome:
                job.lost(f"{outcome['error']} (on {outcome['task']['worker']})")
            else:
                value = job.keep(outcome["value"]) if job.keep else outcome["value"]
                cache.write_json(self.state(job.stage, job.key),
                                 {"value": value, "task": outcome["task"]})
                job.apply(value)
        elif self.client.status != "running":  # its task was cancelled with the connection
            raise lost_scheduler(self.config)
        else:
            job.lost(_failure(future.exception()) if future.status == "error"
                     else f"its task was {future.status}")
        future.release()
        if job.then:
            job.then()

    def watch(self):
        """Send again the tasks that wait for a worker their machine now has; give up those
        whose machine has had none for ``config.grace`` seconds."""
        if not self.pending:
            return
        states = self.client.sync(self.client.scheduler.get_task_status, keys=list(self.pending))
        offered = set()
        for worker in self.client.scheduler_info(n_workers=-1)["workers"].values():
            if worker.get("status", "running") == "running":
                offered.update(worker.get("resources", {}))
        now = time.monotonic()
        self.gone = {r: since for r, since in self.gone.items() if r not in offered}
        for key, job in list(self.pending.items()):
            if states.get(key) != "no-worker":
                continue
            if job.resource in offered:
                # A worker that joined after the task was placed (a restarted one) got its
                # resource after joining, and Dask does not look again at waiting tasks then.
                del self.pending[key]
                self.client.cancel([job.future])
                self.progress(f"{job.label}: sent again, to the worker that joined "
                              f"{job.machine or 'the cluster'}")
                self.submit(job)
            elif now - self.gone.setdefault(job.resource, now) > self.config.grace:
                del self.pending[key]
                self.client.cancel([job.future])
                job.future = None
                where = f"machine {job.machine}" if job.machine else "the cluster"
                job.lost(f"no worker of {where} was left for {self.config.grace} s")
                if job.then:
                    job.then()

    # -- phase 1: export and evaluate each net, anywhere

    def phase1(self):
        for net in self.nets:
            self.export(net)

    def export(self, net):
        from quantlab import defaults, training, variants

        key = {"net": net, "train": dataclasses.asdict(study.train_config(self.config, net)),
               "variants": list(self.config.variants), "model": self.model and self.model[1],
               "data": self.fingerprint, "calibration": defaults.CALIBRATION_SIZE,
               "recipe": cache.code_digest(*training.RECIPE, *variants.RECIPE),
               "quantlab": quantlab.__version__}
        label = f"{net}: export"
        stored = self.stored("export", key, label)
        if stored is not None:
            if self.ship(net, stored):
                return
            self.progress(f"{label}: the kept files are missing or changed; exporting again")

        def failed(why):
            raise QuantlabError(f"{net}: training and export failed: {why}")

        call = (_export, self.config, net, self.fingerprint, self.model)
        self.submit(Job("export", label, None, call, key,
                        lambda value: self.ship(net, value) or failed("its files did not arrive"),
                        failed, keep=self.keep_artifacts))

    def _artifact_path(self, meta):
        return file_place(self.config.out / ".state" / "artifacts", meta["sha256"], meta["file"])

    def keep_artifacts(self, value):
        """Keep an export's files in OUT/.state/artifacts; what is stored of it is JSON."""
        for meta in value["metas"].values():
            cache.write_bytes(self._artifact_path(meta), value["contents"][meta["sha256"]])
        return {"metas": value["metas"], "entry": value["entry"]}

    def ship(self, net, value):
        """Send a net's kept files on their way to the workers and evaluate the net; False
        when a kept file is missing or not the bytes its sidecar names."""
        from quantlab.variants import Artifact

        artifacts, contents = {}, {}
        for variant, meta in value["metas"].items():
            path = self._artifact_path(meta)
            try:
                content = path.read_bytes()
            except OSError:
                return False
            if hashlib.sha256(content).hexdigest() != meta["sha256"]:
                return False
            artifacts[variant], contents[meta["sha256"]] = Artifact(variant, path, meta), content
        # A task that holds the bytes, not scattered data: when the workers that hold its
        # result die, Dask runs it again from the scheduler's copy; scattered data would be
        # lost with them. It is sent once per net, so its size is no cause for a warning.
        with dask.config.set({"distributed.admin.large-graph-warning-threshold": "4GiB"}):
            shipment = self.client.submit(Shipment, net, value["metas"], contents, pure=False,
                                          key=f"quantlab-shipment-{net}-{uuid.uuid4().hex}")
        self.nets[net].update(artifacts=artifacts, shipment=shipment, entry=value["entry"])

        def failed(why):
            raise QuantlabError(f"{net}: evaluation failed: {why}")

        key = {"net": net, "artifacts": study.artifact_key(artifacts),
               "runtimes": self.config.runtimes, "data": self.fingerprint}
        self.start(Job("evaluate", f"{net}: accuracy", None,
                       (_evaluate, self.config, shipment, self.fingerprint), key,
                       lambda rows: self.evaluated(net, rows), failed))
        return True

    def evaluated(self, net, rows):
        self.nets[net]["accuracy"] = rows
        self.exporting.discard(net)
        if not self.exporting:
            self.phase2()

    # -- phase 2: per host, one timing task at a time; then phase 3: counting

    def phase2(self):
        for names in host_groups(self.machines):
            self.progress(f"timing {', '.join(names)}: one task at a time on "
                          f"{'their host' if len(names) > 1 else 'its host'}")
            steps = deque()
            for name in names:
                steps.append(lambda name=name: self.measure(name))
                steps.extend(lambda name=name, net=net: self.time(name, net) for net in self.nets)
            self.advance(steps, names)

    def advance(self, steps, names):
        """Start the next timing task of one host group; when none is left, its counting."""
        while steps:
            job = steps.popleft()()
            if job is not None:
                job.then = lambda: self.advance(steps, names)
                if self.start(job):
                    return
        for name in names:
            self.count(name)

    def missing(self, machine, stage, net, why):
        machine.missing.append({"stage": stage, "net": net, "reason": why})
        what = {"machine": "not measured", "latency": "not timed", "counters": "not counted"}[stage]
        self.progress(f"{machine.name}: {net + ': ' if net else ''}{what}: {why}")

    def measure(self, name):
        machine = self.machines[name]
        key = {"machine": name, "hosts": machine.hosts, "threads": self.config.threads,
               "counters": self.config.counters, "geometry": self.config.cache_geometry,
               "runtimes": self.config.runtimes}
        return Job("machine", f"{name}: machine", name, (_measure, self.config), key,
                   lambda found: setattr(machine, "found", found),
                   lambda why: self.missing(machine, "machine", None, why))

    def time(self, name, net):
        machine = self.machines[name]
        if machine.found is None:  # it could not measure itself: it has no report
            return None
        artifacts, cpu = self.nets[net]["artifacts"], machine.found["info"]["cpu"]
        studied = study.pairs(artifacts, machine.found["runtimes"], cpu)
        timed = [r for r in machine.found["runtimes"] if any(r == n for _, n in studied)]
        key = {"net": net, "artifacts": study.artifact_key(artifacts), "runtimes": timed,
               "batch": self.config.batch_sizes, "threads": self.config.threads,
               "quick": self.config.quick, "machine": name, "hosts": machine.hosts,
               "versions": machine.found["info"]["versions"]}

        def lost(why):
            from quantlab import latency_suite

            self.missing(machine, "latency", net, why)
            cases = latency_suite.cases([net], list(artifacts), timed, self.config.batch_sizes,
                                        list(self.config.threads), cpu)
            machine.timed[net] = [{"net": net, "variant": case.variant, "runtime": case.runtime,
                                   "batch_size": case.batch_size, "threads": case.threads,
                                   "not_run": f"not timed on {name}: {why}"} for case in cases]

        return Job("latency", f"{name}: {net}: latency", name,
                   (_time, self.config, self.nets[net]["shipment"], timed), key,
                   lambda records: machine.timed.__setitem__(net, records), lost)

    def count(self, name):
        machine = self.machines[name]
        if machine.found is None:
            return
        backend, uncounted = machine.found["backend"], machine.found["uncounted"]
        for net in self.nets:
            records = machine.timed.get(net, [])
            if uncounted:
                for record in records:
                    if not record.get("not_run"):
                        record.update(counters=None, not_counted=f"not counted: {uncounted}")
                continue
            models = {}  # the batch sizes of one model on one runtime are counted together
            for record in study.plan_counts(self.config, backend, records):
                models.setdefault((record["variant"], record["runtime"]), []).append(record)
            for (variant, runtime_name), group in models.items():
                artifact = self.nets[net]["artifacts"][variant]
                batches = [record["batch_size"] for record in group]
                key = {**study.counter_key(self.config, artifact, group[0], backend),
                       "batch": batches, "machine": name, "hosts": machine.hosts}
                label = (f"{name}: {net}: counting {variant} on {runtime_name}, batch "
                         f"{','.join(map(str, batches))}")

                def counted(results, group=group):
                    for record in group:
                        study.apply_count(record, results[str(record["batch_size"])])

                def lost(why, group=group, net=net):
                    for record in group:
                        record.update(counters=None, not_counted=f"not counted on {name}: {why}")
                    self.missing(machine, "counters", net, why)

                call = (_count, self.config, self.nets[net]["shipment"], variant, runtime_name,
                        batches, backend)
                self.start(Job("counters", label, name, call, key, counted, lost))

    # -- the reports

    def reports(self):
        """Each machine's report in OUT/machines/NAME/, fleet.json, and the cross-machine
        report; the paths of the reports written."""
        written, results_list, summary = [], [], {}
        for name, machine in sorted(self.machines.items()):
            folder = self.config.out / "machines" / folder_name(name)
            summary[name] = {"workers": machine.workers, "hosts": machine.hosts,
                             "missing": machine.missing, "report": None}
            if machine.found is None:
                self.progress(f"{name}: no report, it could not measure itself")
                continue
            results = study.new_results(self.config, self.data, machine.found["info"],
                                        machine.found["runtimes"])
            results["fleet"] = {"scheduler": self.config.scheduler, "machine": name,
                                "workers": machine.workers, "hosts": machine.hosts,
                                "missing": machine.missing,
                                "tasks": [t for t in self.tasks if t["machine"] == name]}
            for net, done in self.nets.items():
                results["nets"][net] = done["entry"]
                results["accuracy"] += [row for row in done["accuracy"]
                                        if row["runtime"] in machine.found["runtimes"]]
                results["cases"] += machine.timed.get(net, [])
            folder.mkdir(parents=True, exist_ok=True)
            results_list.append(study.finish(results, folder, self.progress))
            summary[name]["report"] = str(folder.relative_to(self.config.out) / "report.md")
            written.append(folder / "report.md")
        cache.write_json(self.config.out / "fleet.json", {
            "scheduler": self.config.scheduler, "machines": summary, "tasks": self.tasks,
            "artifacts": {net: study.artifact_key(done["artifacts"])
                          for net, done in self.nets.items()}})
        if not results_list:
            raise QuantlabError("no machine of the cluster could measure itself; see "
                                f"{self.config.out / 'fleet.json'} for why")
        return [*written, cross_machine_report(results_list, self.config.out, self.progress)]


def cross_machine_report(results_list, out, progress):
    """The machines side by side (``quantlab compare``) in ``out``; the path of its report."""
    from quantlab import compare

    compare.compare(results_list, out, progress)
    return out / "compare.md"


def _read(path):
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise QuantlabError(f"cannot read {path}: {error.strerror}; check the --model path") \
            from None


def run(config, progress=None):
    """Run the study described by ``config`` on the workers of ``config.scheduler``; write a
    report per machine and the cross-machine report; return the reports' paths."""
    progress = progress or Progress()
    _one_line_logs()
    client = connect(config.scheduler)
    try:
        client.register_plugin(MachineResource())
        machines = survey(client, config.scheduler)  # refuses a bad worker before any work
        study.prepare_output(config.out, config.force)
        for machine in machines.values():
            progress(f"machine {machine.name}: {len(machine.workers)} worker(s) on "
                     f"{', '.join(h.split('/')[0] for h in machine.hosts)}")
        fleet = Fleet(config, client, datasets.load(config.dataset, config.data_dir), machines,
                      progress)
        fleet.phase1()
        fleet.drive()
        return fleet.reports()
    except Exception:
        # Whatever failed once the scheduler was gone (a cancelled task, a closed connection)
        # failed because it was gone: say that.
        if client.status == "running":
            raise
        raise lost_scheduler(config) from None
    finally:
        client.close()


def lost_scheduler(config):
    return QuantlabError(f"lost the Dask scheduler at {config.scheduler} (it stopped, or the "
                         f"network to it failed); what finished is kept in "
                         f"{config.out / '.state'}: start the scheduler again and run the same "
                         f"command again to resume")


class _OneLine(logging.Filter):
    """Dask's own log records on one line each, without tracebacks: the study says in a line
    of its own what went wrong; Dask's cancelled coroutines at shutdown say nothing."""

    def filter(self, record):
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, asyncio.CancelledError):
            return False
        said = record.getMessage() + (f" ({type(error).__name__}: {error})" if error else "")
        record.msg, record.args = " ".join(said.split()), None
        record.exc_info = record.exc_text = record.stack_info = None
        return True


def _one_line_logs():
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.split(".")[0] == "distributed" and isinstance(logger, logging.Logger):
            for handler in logger.handlers:
                if not any(isinstance(f, _OneLine) for f in handler.filters):
                    handler.addFilter(_OneLine())
