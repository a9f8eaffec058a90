"""The whole study as one resumable function: train, export, evaluate, time, count, report.

Every stage keeps its result: trained nets and variants in the quantlab cache (keyed by
configuration and code), evaluations, timings and counts in ``OUT/.state`` (keyed by the
artifacts' sha256 and the settings), so a run that is interrupted and started again
continues where it stopped. Latency is measured by the same pytest-benchmark suite as
``benchmarks/``, in one child process for all the nets, once every net is trained, exported,
scored and counted (several nets are made ready two at a time, each net's counting runs
beside the others' preparing, and nothing runs beside timing).

Here: ``run`` and the ``Study`` (the order of the nets and the work of each). Its parts:
``config`` (what was asked), ``stages`` (the stored-state rule), ``parallel`` (nets made
ready in worker processes), ``timing``, ``counting`` (which cases are counted, in which
workers), ``results`` (results.json and the report) and ``user_model`` (a user's model and
images: format, data, reference, what results.json says).
The fleet (``quantlab.fleet``) runs the same work and rule as Dask tasks.
"""

from dataclasses import dataclass, field

from quantlab import cache, safe_text, variants
from quantlab._tf import versions
from quantlab.output import prepare_output, writing
from quantlab.progress import Progress
# What ``quantlab run``, the fleet and the tests reach through ``quantlab.study``, beside
# what the Study uses itself.
from quantlab.study import mixed, user_model
from quantlab.study.config import StudyConfig, test_images, train_config
from quantlab.study.counting import (Counting, counter_key, counts_into,  # noqa: F401
                                     planned_cases, start_counting)
from quantlab.study.results import (finish, machine_info, measure_ceilings_again, net_entry,
                                    new_results)
from quantlab.study.stages import (_cached_stage, artifact_key, recall,  # noqa: F401
                                   remembered, state_path, well_formed, write_state)
from quantlab.study.timing import pairs, rounds_budget, time_net, time_nets  # noqa: F401


def run(config, progress=None):
    """Run the study described by ``config`` on this machine; write the report; return the
    results dict."""
    from quantlab import counters, machine, runtime

    progress = progress or Progress()
    # The user's files, the runtimes and the counters are checked before anything is
    # written: a refused model or image folder, or a runtime or counter backend that cannot
    # work here, leaves no report folder behind.
    onnx_model, keras_file = user_model.open_model(config)
    data = user_model.load_data(config, onnx_model, keras_file)
    runtimes, skipped = runtime.usable(config.runtimes)
    backend = None if config.counters == "off" else counters.resolve_backend(config.counters)
    cache.check_writable(cache.cache_root(), "cache folder",
                         "set QUANTLAB_CACHE to a folder you can write")
    prepare_output(config.out, config.force)
    for name, why in skipped.items():
        progress(f"runtime {name} left out: {why}")
    study = Study(config, data, progress, runtimes, backend, machine.cpu_info(),
                  onnx_model=onnx_model, keras_file=keras_file)
    study.results = user_model.describe(
        new_results(config, data, machine_info(config, backend, skipped), runtimes), config,
        data, onnx_model, keras_file)
    # Seconds, before the minutes of export and timing that a wrong --scale would spoil.
    early = user_model.first_batch_doubt(config, data, onnx_model, keras_file)
    if early:
        progress(f"warning: {early}")
    with writing(config.out):
        try:
            return study.run()
        finally:
            for counting in study.background:
                counting.cancel()


@dataclass
class Ready:
    """One net made ready for timing: its files, the (variant, runtime) pairs studied, the
    keys of its stored stages, and the cases planned for timing and counting."""
    artifacts: dict
    studied: list
    keys: dict
    planned: list


@dataclass
class Study:
    """One study on this machine: what it was asked, on which data, runtimes and counter
    backend, and the results as they come in."""

    config: StudyConfig
    data: object
    progress: object
    # What a study on this machine found here; a task of the fleet works without them.
    runtimes: list = ()
    backend: str | None = None
    cpu: dict | None = None
    results: dict | None = None
    background: list = field(default_factory=list)  # each net's counting, beside the next net
    onnx_model: object = None  # a user's ONNX model, checked (byo_onnx.CheckedOnnx)
    keras_file: object = None  # a user's Keras model file, as read once (byo.KerasFile)

    @property
    def reference(self):
        """(variant, runtime) every ratio is against: LiteRT float32, or the float32 of a
        user's ONNX model on ONNX Runtime."""
        return user_model.reference(self.onnx_model)

    def stage(self, stage, key, compute, label):
        return _cached_stage(self.config, stage, key, compute, self.progress, label)

    def run(self):
        """Every net made ready (trained, exported, scored; counted beside the next), then all
        of them timed together, their deployment costs, the ceilings again and the report;
        the results dict."""
        counting, ready = Counting(), {}
        for net, made in self.prepared():
            ready[net] = made
            counting.wait()  # one net's counting at a time: its workers take every core
            counting = start_counting(self.config, net, made.artifacts, made.planned,
                                      self.backend, self.progress)
            self.background.append(counting)
        counting.wait()  # nothing else runs while the nets are timed
        ready = {net: ready[net] for net in self.order()}
        timed = self.time_all(ready)
        for net, this in ready.items():
            self.finish_net(net, this, timed[net])
        results, chosen = self.results, self.config.nets
        measure_ceilings_again(results)
        in_order = [net for net in chosen if net in results["nets"]] or list(results["nets"])
        for key in ("nets", "sensitivity"):
            if key in results:
                results[key] = {net: results[key][net] for net in in_order if net in results[key]}
        for rows in (results["accuracy"], results["cases"], results["deployment"]):
            rows.sort(key=lambda row: in_order.index(row["net"]))
        return finish(results, self.config.out, self.progress)

    def prepared(self):
        """(net, Ready) of each net as it is made ready: several of quantlab's own nets two
        at a time in worker processes (quantlab.study.parallel), else one after the other."""
        from quantlab.study import parallel

        nets = self.order()
        alone = self.config.model is not None or self.onnx_model is not None
        if alone or parallel.workers(nets) < 2:
            for net in nets:
                ready = self.prepare(net)
                self.warn_of_preprocessing(net)
                yield net, ready
            return
        for net, ready, part in parallel.prepare(self, parallel.longest_first(nets)):
            self.gather(net, part)
            self.warn_of_preprocessing(net)
            yield net, ready

    def gather(self, net, part):
        """A worker's part of the results of one net (Study.prepare's) into the results."""
        self.results["nets"][net] = part["nets"][net]
        self.results["accuracy"] += part["accuracy"]
        if net in part.get("sensitivity", {}):
            self.results.setdefault("sensitivity", {})[net] = part["sensitivity"][net]

    def prepare(self, net):
        """Every stage of one net but its counting, timing and deployment costs; returns
        what the rest needs (``Ready``)."""
        data, progress, results = self.data, self.progress, self.results
        progress(f"== {net} ==")
        artifacts = self.export(net)
        artifacts.update(self.mixed_variants(net, artifacts))
        studied = pairs(artifacts, self.runtimes, self.cpu)
        keys = {"net": net, "artifacts": artifact_key(artifacts)}
        # What is scored on the test images depends on them, not only on the files scored.
        scored = {**keys, "data": data.sha256}
        layers = self.stage("layers", scored, lambda: self.layer_errors(net, artifacts),
                            f"{net}: per-layer error")
        results["nets"][net] = net_entry(artifacts, layers)
        results["accuracy"] += self.stage(
            "eval", {**scored, "pairs": studied, "images": test_images(self.config),
                     "versions": versions()},
            lambda: self.evaluate(net, artifacts, studied), f"{net}: accuracy")
        return Ready(artifacts, studied, keys, planned_cases(self.config, net, studied))

    def time_all(self, ready):
        """{net: timed records}: each net's stored timing, and the nets without one timed
        together in one run, so that their rounds are taken in turn (quantlab.study.timing)."""
        from quantlab import machine

        config, host = self.config, machine.identity(self.cpu)["host"]
        runtimes = {net: [r for r in self.runtimes if any(r == name for _, name in this.studied)]
                    for net, this in ready.items()}
        keys = {net: {**this.keys, "batch": config.batch_sizes_of(net), "runtimes": runtimes[net],
                      "threads": config.threads, "quick": config.quick,
                      "rounds": rounds_budget(config), "host": host, "versions": versions()}
                for net, this in ready.items()}
        paths = {net: state_path(config, "latency", key) for net, key in keys.items()}
        timed = {net: recall(paths[net], "latency", f"{net}: latency", self.progress, keys[net])
                 for net in ready}
        missing = [net for net, records in timed.items() if records is None]
        if missing:
            union = [r for r in self.runtimes if any(r in runtimes[net] for net in missing)]
            for net, records in time_nets(config, {net: ready[net].artifacts for net in missing},
                                          union, self.progress).items():
                write_state(paths[net], records)
                timed[net] = records
        return timed

    def finish_net(self, net, ready, records):
        """A timed net's deployment costs (alone on the machine), and its cases with their
        counts into the results."""
        from quantlab import machine

        host = machine.identity(self.cpu)["host"]
        self.results["deployment"] += self.stage(
            "deployment", {**ready.keys, "pairs": ready.studied, "threads": self.config.threads[0],
                           "repeats": self.deployment_repeats(), "host": host,
                           "versions": versions()},
            lambda: self.deployment(net, ready.artifacts, ready.studied),
            f"{net}: deployment costs")
        counts_into(records, ready.planned)
        self.results["cases"] += mixed.off_the_roofline(records)

    # -- the stages of one net: each computes one result; study_net keeps them

    def export(self, net):
        """{variant: Artifact} of one net (or of the user's own model): trained and exported,
        cached. A user's ONNX model: the file as given and every int8 variant quantlab makes
        from ONNX (ONNX Runtime's per-channel and per-tensor, OpenVINO's NNCF), calibrated on
        the calibration images."""
        config, train = self.config, train_config(self.config, net)
        if self.onnx_model is not None:
            from quantlab import onnx_variants

            return onnx_variants.export(self.onnx_model.content,
                                        user_model.calibration(config, self.data), name=net,
                                        variants=onnx_variants.VARIANTS, progress=self.progress)
        if config.model is not None:
            from quantlab import byo

            return byo.export(self.keras_file, self.data, train, config.variants,
                              progress=self.progress)
        return variants.export(train, variants=config.variants, data=self.data,
                               progress=self.progress)

    def mixed_variants(self, net, artifacts):
        """The sensitivity stage (results.json's ``sensitivity[net]``) and {variant: Artifact}
        of the mixed models it made. Quantlab's nets and a user's Keras model: a user's ONNX
        model has no Keras layers to name and keep in float."""
        from quantlab import mixed_precision, selective, sensitivity

        config = self.config
        if self.onnx_model is not None or not mixed.studied_quantizers(artifacts):
            return {}
        key = {"net": net, "artifacts": artifact_key(artifacts), "data": self.data.sha256,
               "max_drop": config.max_drop, "quick": config.quick, "seed": config.seed,
               "calibration": config.calibration_size, "images": test_images(config),
               "code": cache.code_digest(selective, sensitivity, mixed_precision, mixed),
               "versions": versions()}
        out = mixed.folder(net, key)

        def compute():
            return mixed.recall_or_analyse(out, lambda: mixed.analyse(
                config, self.data, net, self.keras_model(net), artifacts, out, self.progress))

        rows = self.stage("sensitivity", key, compute, f"{net}: sensitivity")
        found = mixed.artifacts_of(rows, out)
        if found is None:  # a mixed file gone from the cache, or changed: made again
            self.progress(f"{net}: a mixed-precision file is missing or changed; searching again")
            rows = compute()
            write_state(state_path(config, "sensitivity", key), rows)
            found = mixed.artifacts_of(rows, out)
        self.results.setdefault("sensitivity", {})[net] = mixed.by_quantizer(rows)
        return found

    def keras_model(self, net):
        """The float Keras model the variants were made of: trained (cached), or the user's."""
        if self.config.model is not None:
            from quantlab import byo

            return byo.load(self.keras_file, self.data).model
        from quantlab import training

        return training.train(train_config(self.config, net), self.data).model

    def layer_errors(self, net, artifacts):
        """Per-layer error of the int8 variant (quantlab's own nets only: it runs TFLite's
        quantization debugger on the Keras model they were trained as)."""
        if "int8" not in artifacts or self.config.model is not None:
            return []
        from quantlab import layer_error, selective, training

        def compute():
            self.progress(f"{net}: per-layer quantization error of int8 (TFLite quantization "
                          f"debugger)")
            trained = training.train(train_config(self.config, net), self.data)
            return layer_error.int8_layer_errors(trained.model, self.data, artifacts["int8"].meta)

        # Kept in the cache too: computing it imports TensorFlow, 4-5 s of a study whose nets
        # and variants are all cached, and 10-15 s a net for mobilenet and the vit.
        return remembered("layers", {
            "net": net, "artifacts": artifact_key(artifacts), "data": self.data.sha256,
            "images": layer_error.DEBUG_IMAGES, "code": cache.code_digest(layer_error, selective),
            "versions": versions()}, compute)

    def evaluate(self, net, artifacts, studied):
        """Accuracy rows of every studied (variant, runtime) pair on the test images."""
        from quantlab import evaluate

        rows = evaluate.accuracies(artifacts, self.data, studied, progress=self.progress,
                                   label=f"{net}: evaluating", images=test_images(self.config),
                                   reference=self.reference)
        return [{"net": net, **row} for row in rows]

    def warn_of_preprocessing(self, net):
        """Say now, not only in the report, when the float model's answers look like the
        images were not preprocessed as it expects (one class for all, or near chance)."""
        from quantlab.report.sentences import read_first

        for doubt in read_first(self.results):
            if doubt.startswith(f"{net}: "):
                self.progress(f"warning: {doubt}")

    def deployment_repeats(self):
        """Fresh processes per (variant, runtime) for load time, first inference and memory:
        three for the median and spread, one in the quick study (a TensorFlow process alone
        costs seconds)."""
        from quantlab import deployment

        return 1 if self.config.quick else deployment.REPEATS

    def deployment(self, net, artifacts, studied):
        """What each (variant, runtime) costs a deployment beyond its steady call (load, first
        inference, memory), each measured in fresh processes, alone on the machine."""
        from quantlab import deployment

        return deployment.measure_net(net, artifacts, studied, self.config.threads[0],
                                      self.progress, repeats=self.deployment_repeats())

    def order(self):
        """The nets in the order they are studied: the costliest to count first, so that the
        counting left after the last net is timed is the cheapest; the report keeps the order
        the user gave."""
        if self.config.model is not None:
            return [safe_text.net_name(self.config.model)]
        from quantlab import macs

        data = self.data
        return sorted(self.config.nets, key=lambda net: -macs.macs_per_image(
            net, data.input_shape, data.num_classes))
