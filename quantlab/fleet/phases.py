"""The study's three phases on the cluster (export and evaluate anywhere; measure and time
per host, one task at a time; count per machine), and the reports made of what came back."""

import hashlib
import uuid
from collections import deque
from pathlib import Path

import dask

import quantlab
from quantlab import cache, safe_text, stamps, study
from quantlab.errors import QuantlabError
from quantlab.fleet.cluster import folder_name, host_groups
from quantlab.fleet.engine import Engine, Job
from quantlab.fleet.tasks import Shipment, _count, _evaluate, _export, _measure, _time, file_place
from quantlab.study.counting import apply_count, counter_key, plan_counts, plan_workers


class Fleet(Engine):
    """One study on one cluster: the phases, and what their tasks measured."""

    def __init__(self, config, client, data, machines, progress):
        super().__init__(config, client, progress)
        self.data, self.machines = data, machines
        self.nets = {name: {} for name in ([safe_text.net_name(config.model)] if config.model else config.nets)}
        self.fingerprint = data.sha256
        self.model = None
        if config.model is not None:
            content = _read(config.model)
            self.model = (config.model.name, hashlib.sha256(content).hexdigest(), content)
        self.exporting = set(self.nets)  # nets whose phase 1 is not over

    # -- phase 1: export and evaluate each net, anywhere

    def phase1(self):
        for net in self.nets:
            self.export(net)

    def export(self, net):
        from quantlab import defaults, variants

        # What the exported files depend on, as the cache of exports keys them (the training,
        # the dataset's fingerprint, the calibration, the code); the user's model by its bytes.
        train = study.train_config(self.config, net)
        key = {"net": net, "variants": list(self.config.variants),
               "model": self.model and self.model[1],
               "export": variants.export_key(train, self.data, defaults.CALIBRATION_SIZE),
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
               "runtimes": self.config.runtimes, "data": self.fingerprint,
               "images": study.test_images(self.config)}
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
               "batch": self.config.batch_sizes_of(net), "threads": self.config.threads,
               "quick": self.config.quick, "machine": name, "hosts": machine.hosts,
               "versions": machine.found["info"]["versions"]}

        def lost(why):
            from quantlab import latency_suite

            self.missing(machine, "latency", net, why)
            cases = latency_suite.cases([net], list(artifacts), timed,
                                        self.config.batch_sizes_of(net),
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
            chosen = plan_counts(self.config, backend, records)
            for variant, runtime_name, group, lead in plan_workers(chosen, backend):
                artifact = self.nets[net]["artifacts"][variant]
                batches = [record["batch_size"] for record in group]
                # A count after a warm-up batch (lead) is another count than one without.
                key = {**counter_key(self.config, artifact, group[0], backend),
                       "batch": batches, **({"lead": lead} if lead else {}),
                       "machine": name, "hosts": machine.hosts}
                label = (f"{name}: {net}: counting {variant} on {runtime_name}, batch "
                         f"{','.join(map(str, batches))}")

                def counted(results, group=group):
                    for record in group:
                        apply_count(record, results[str(record["batch_size"])])

                def lost(why, group=group, net=net):
                    for record in group:
                        record.update(counters=None, not_counted=f"not counted on {name}: {why}")
                    self.missing(machine, "counters", net, why)

                call = (_count, self.config, self.nets[net]["shipment"], variant, runtime_name,
                        batches, backend, lead)
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
        cache.write_json(self.config.out / "fleet.json", stamps.stamp("fleet", {
            "scheduler": self.config.scheduler, "machines": summary, "tasks": self.tasks,
            "artifacts": {net: study.artifact_key(done["artifacts"])
                          for net, done in self.nets.items()}}))
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
