"""pytest plugin of quantlab: options, fixtures and hooks of the latency suite and its counters.

Registered through the ``pytest11`` entry point, so it loads in every pytest run: importing
it costs nothing beyond pytest itself (numpy, LiteRT, TensorFlow and the counters are
imported only when a benchmark case needs them). Its state lives in ``QuantlabSession``,
registered as the plugin ``quantlab_session``; the hooks that only pytest-benchmark knows
are registered only when pytest-benchmark is loaded.

    pytest benchmarks/ --quantlab-nets=medium --quantlab-batch-sizes=1,16 \
        --quantlab-counters=valgrind --quantlab-cache=i7-6500u
"""

import contextlib
import os
import shlex
import time

import pytest

from quantlab import defaults, nets, options

PROFILE_RUNS = 10  # inferences under a runtime's own per-layer profiler
WARMUP_ITERATIONS = 100  # per case, unless --benchmark-warmup-iterations says otherwise
# Cases whose rounds wait for the ones after them, so that many groups take their rounds in
# turn: each holds its model, loaded (a quick study's 152 cases of five nets: about 3 GB).
MAX_LIVE_CASES = 300


def pytest_addoption(parser):
    group = parser.getgroup("quantlab", "quantlab latency benchmarks and hardware counters")
    options.add_study_options(group.addoption, options.PLUGIN)  # as `quantlab run` has them
    options.add_options(group.addoption, options.BENCHMARK, options.PLUGIN)


# --- state ------------------------------------------------------------------------------------

class QuantlabSession:
    """The selection of cases, the artifacts, and what every case measured, for one run."""

    def __init__(self, config):
        option = config.getoption
        manifest = option("quantlab_artifacts")
        self.manifest = manifest and manifest["artifacts"]
        self.nets, self.variants = option("quantlab_nets"), option("quantlab_variants")
        if self.manifest:
            listed = {"net": [n for n, _ in self.manifest], "variant": [v for _, v in self.manifest]}
            for what, chosen in (("net", self.nets), ("variant", self.variants)):
                missing = [c for c in chosen or () if c not in listed[what]]
                if missing:
                    raise pytest.UsageError(
                        f"--quantlab-artifacts lists no {what} {missing[0]!r} "
                        f"(it has {', '.join(dict.fromkeys(listed[what]))})")
            self.nets = self.nets or tuple(dict.fromkeys(listed["net"]))
            self.variants = self.variants or tuple(dict.fromkeys(listed["variant"]))
        self._named_runtimes, self._runtimes = option("quantlab_runtimes"), None
        chosen = _dataset(option)  # checked with a manifest too
        self.dataset = (manifest and manifest["dataset"]) or chosen
        self.batch_sizes = option("quantlab_batch_sizes") or defaults.BATCH_SIZES
        self.threads = option("quantlab_threads")
        self.kernels = option("quantlab_kernels")
        self.training = option("quantlab_training")
        self.cache = option("quantlab_cache")
        self.backend = option("quantlab_counters")
        if self.backend != "off":  # fail now, not after the first timed case
            from quantlab import counters
            from quantlab.errors import QuantlabError

            try:
                self.backend = counters.resolve_backend(self.backend)
            except QuantlabError as error:
                raise pytest.UsageError(f"--quantlab-counters: {error}") from None
        self.profile = option("quantlab_profile")
        self.rounds_budget = option("quantlab_rounds")
        self.live = {}  # round group -> {case: (model, predictor, prepared, extra_info)} awaiting rounds
        self.loaded_anew = set()  # cases of the live groups whose rounds went on with a second load
        self.said = []  # lines to print once pytest no longer captures the output
        self.config = config
        self.sampler, self.no_sampling = None, None  # started at the first timed case
        self.records = []  # every case's extra_info, in run order
        self.skipped = []  # cases a runtime could not run, with the reason
        self.windows = {}  # case id -> (start, end) of its timing, monotonic nanoseconds
        self.by_id = {}  # case id -> its extra_info
        self._cpu = None
        self.upcoming = []  # the cases of this run, in the order they run
        self._compiled = {}  # OpenVINO case not run yet -> its predictor, or its load's error

    @property
    def runtimes(self):
        """Checked when cases are made, not at start-up: importing the runtimes takes seconds."""
        if self._runtimes is None:
            self._runtimes = _usable_runtimes(self._named_runtimes)
        return self._runtimes

    @property
    def cpu(self):
        if self._cpu is None:
            from quantlab import machine

            self._cpu = machine.cpu_info()
        return self._cpu

    def cases(self):
        from quantlab import latency_suite

        found = latency_suite.cases(self.nets or nets.NAMES, self.variants or defaults.STUDY_VARIANTS,
                                    self.runtimes, self.batch_sizes, self.threads, self.cpu)
        if self.manifest:  # a manifest may hold fewer variants, or batch sizes, for some nets
            found = [c for c in found if self._listed(c)]
        return found

    def _listed(self, case):
        model = self.manifest.get((case.net, case.variant))
        return model is not None and (model.batch_sizes is None
                                      or case.batch_size in model.batch_sizes)

    def artifacts(self):
        from quantlab import latency_suite

        return latency_suite.Artifacts(self.manifest, self.dataset, self.training,
                                       self.variants or defaults.STUDY_VARIANTS)

    def _sampling(self):
        """The perf record sampler of this process, started once; None where perf cannot."""
        if self.profile == "native" and self.sampler is None and self.no_sampling is None:
            from quantlab.counters import sampling

            self.sampler, self.no_sampling = sampling.try_start()
        return self.sampler

    @contextlib.contextmanager
    def timing(self, case):
        """Around exactly the timed part of one case: its window on the monotonic clock
        (the clock the samples of perf record carry)."""
        self._sampling()
        start = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        try:
            yield
        finally:
            self.windows[case.id] = (start, time.clock_gettime_ns(time.CLOCK_MONOTONIC))

    @pytest.hookimpl(trylast=True)  # after deselection (-k, -m)
    def pytest_collection_modifyitems(self, items):
        self.upcoming = [case for case in map(_case_of, items) if case is not None]

    def predictor(self, case, model_of):
        """The loaded predictor of ``case`` (``model_of(case)``: its Model). The first OpenVINO
        case of a round group compiles those of the whole group, one per core: OpenVINO
        compiles each model for its batch size and thread count (seconds for the vit at batch
        64: most of the time of a case outside its window), and nothing is timed meanwhile."""
        if case.runtime == "openvino" and case not in self._compiled:
            group = [c for c in self.upcoming if c.runtime == "openvino"
                     and c.round_group == case.round_group and c not in self._compiled]
            models = {c: model_of(c) for c in group}  # here: a case without a manifest exports
            self._compiled.update(_on_every_core(lambda c: self._load(c, models[c]), group))
        if case in self._compiled:
            loaded = self._compiled.pop(case)
        else:
            loaded = self._load(case, model_of(case))
        if isinstance(loaded, Exception):
            raise loaded
        return loaded

    def _load(self, case, model):
        """The predictor of ``case``, or the exception loading it raised (that case's alone)."""
        try:
            return self._loaded(case, model)
        except Exception as error:
            return error

    def _loaded(self, case, model):
        from quantlab import runtime

        return runtime.load(model.path, runtime=case.runtime, threads=case.threads,
                            kernels=self.kernels, precision=model.precision,
                            sha256=model.sha256, batch=case.batch_size)

    def not_run(self, case, reason):
        self.skipped.append({"net": case.net, "variant": case.variant, "runtime": case.runtime,
                             "batch_size": case.batch_size, "threads": case.threads,
                             "not_run": reason})

    def finish_case(self, case, model, predictor, prepared, extra_info):
        """Profile and count the case (after its timing) if asked, into ``extra_info``."""
        profile = getattr(predictor, "layer_profile", None)
        if self.profile == "native" and profile:  # the runtime's own per-layer times
            extra_info["layers"] = profile(prepared, runs=PROFILE_RUNS)
        if self.backend != "off":
            from quantlab import counters

            extra_info["counters"] = counters.measure(
                model.path, case.batch_size, backend=self.backend, threads=case.threads,
                kernels=self.kernels, cache=self.cache, runtime=case.runtime,
                precision=model.precision)
        self.records.append(extra_info)
        self.by_id[case.id] = extra_info
        if self.rounds_budget and extra_info.get("median"):
            self.live.setdefault(case.round_group, {})[case] = (model, predictor, prepared, extra_info)

    def pytest_runtest_teardown(self, item, nextitem):
        """After the last case of a round group, once enough cases wait or none follow: time
        the waiting groups in rounds, taken in turn (quantlab.rounds.run_groups)."""
        case, following = _case_of(item), _case_of(nextitem)
        if case is None or not self.live or (
                following is not None and (following.round_group == case.round_group
                                           or sum(map(len, self.live.values())) < MAX_LIVE_CASES)):
            return
        self.time_in_rounds()

    def time_in_rounds(self):
        from quantlab import latency_suite, rounds

        groups, references = {}, {}
        for group, members in self.live.items():
            groups[group] = [rounds.Timed(case, _call(predictor, prepared), info["median"])
                             for case, (_, predictor, prepared, info) in members.items()]
            references[group] = {c.threads: c for c in members if c.is_reference}
        fallback = {group: next(iter(refs.values()), next(iter(self.live[group])))
                    for group, refs in references.items()}
        # Rounds go on until the speed-ups the report gives, each against the reference at
        # its own thread count, are narrow enough.
        timed = rounds.run_groups(
            groups, lambda case: references[case.round_group].get(case.threads,
                                                                   fallback[case.round_group]),
            self.rounds_budget, said=lambda line: self._say_now(f"quantlab: rounds: {line}"),
            renew=self.load_anew)
        for group, members in self.live.items():
            seconds, summary = timed[group]
            summary = {**summary, "group": group}  # ratios pair cases of one group only
            for case, (*_, info) in members.items():
                reference = references[group].get(case.threads)
                latency_suite.apply_rounds(info, seconds[case], summary,
                                           seconds[reference] if reference else None,
                                           [0, rounds.RENEW_AT] if case in self.loaded_anew else [0])
            self.said.append(f"quantlab: rounds of {group}: {summary['rounds']} rounds of "
                             f"{len(members)} cases, {summary['stopped']} (widest speed-up "
                             f"interval +-{100 * summary['widest']:.1f} %)")
        self.live, self.loaded_anew = {}, set()

    def load_anew(self, group, cases):
        """{case: its call} with each case of ``group`` loaded again, its first load freed
        (the rounds' ``renew``): where a load's weights land in memory moves a case's speed
        by as much as a second process does. A case that fails to load again keeps its
        first load."""
        from quantlab import runtime

        members = self.live[group]

        def again(case):
            model, predictor, _, info = members[case]
            try:  # OpenVINO's: its compiled model imported anew, cheaper than compiling again
                predictor = predictor.anew() if hasattr(predictor, "anew") else self._loaded(case, model)
                batch = runtime.sample_batch(predictor.input_shape, case.batch_size)
                return model, predictor, predictor.prepare(batch), info
            except Exception:  # out of memory, say: its rounds go on with its first load
                return None

        for case, member in _on_every_core(again, cases).items():
            if member is not None:
                members[case] = member
                self.loaded_anew.add(case)
        return {case: _call(*members[case][1:3]) for case in cases}

    def _say_now(self, line):
        """A line on the terminal now, past pytest's capture of the test's teardown (the
        rounds run there)."""
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.write_line(line)

    def pytest_runtest_logfinish(self):
        """Say what the rounds did: here, not in the teardown that ran them, where pytest
        captures the output."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        for line in self.said:
            if reporter:
                reporter.write_line(line)
        self.said.clear()

    # A wrapper, first: pytest-benchmark writes its JSON before the plain hooks run.
    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_sessionfinish(self, session):
        self.attribute_samples()
        yield

    def attribute_samples(self):
        """Stop the sampler; give each timed case the native kernels of its window."""
        if self.sampler is None:
            for info in self.records:  # say why, rather than show nothing
                if self.no_sampling:
                    info["native_missing"] = self.no_sampling
            return
        self.sampler.stop()
        ids = [case_id for case_id in self.windows if case_id in self.by_id]
        for case_id, entry in zip(ids, self.sampler.attribute([self.windows[i] for i in ids])):
            info = self.by_id[case_id]
            info["native"] = entry
            known = [k["isa"] for k in entry["kernels"] if k["isa"] != "unknown"]
            info["kernel_isa"] = known[0] if known else None

    # Runs before pytest-benchmark's summary, which raises when --benchmark-compare-fail trips.
    def pytest_terminal_summary(self, terminalreporter):
        from quantlab import tables

        reporter, counted = terminalreporter, tables.counted(self.records)
        if counted:
            backends = ", ".join(sorted({r["counters"]["backend"] for r in counted}))
            reporter.write_sep("-", f"quantlab: cache miss rates per inference, total/L1d/LLC % ({backends})")
            reporter.write_line(tables.miss_rate_table(counted))
            reporter.write_sep("-", "quantlab: instructions per inference")
            reporter.write_line(tables.instructions_table(counted))
            for caveat in dict.fromkeys(c for r in counted for c in r["counters"].get("caveats", [])):
                reporter.write_line(f"note: {caveat}")
        if any(r.get("median") for r in self.records):
            reporter.write_sep("-", "quantlab: latency (median), MAC/s and share of the nominal peak")
            reporter.write_line(tables.latency_table(self.records))
        if any(r.get("native") for r in self.records):
            reporter.write_sep("-", "quantlab: native kernels of each timed case (perf record, cpu-clock)")
            reporter.write_line(tables.native_table(self.records))
        elif self.no_sampling:
            reporter.write_line(f"quantlab: no native kernel attribution: {self.no_sampling}")


def _on_every_core(function, items):
    """{item: function(item)}, one thread per core (loading releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return dict(zip(items, pool.map(function, items)))


def _call(predictor, prepared):
    return lambda: predictor.run(prepared)


def _case_of(item):
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("quantlab_case") if callspec else None


def _dataset(option):
    """The built-in dataset the suite trains its nets on: --quantlab-data NAME or
    --quantlab-dataset. A user's images and their preprocessing are what `quantlab run` scores
    a model on; the suite times models on random inputs of their shape, whatever the pixels."""
    data = option("quantlab_data")
    given = [n for n in ("scale", "mean", "std", "layout") if option(f"quantlab_{n}") is not None]
    if (data is not None and not isinstance(data, str)) or given:
        flag = f"--quantlab-{given[0]}" if given else f"--quantlab-data {data}"
        raise pytest.UsageError(
            f"{flag}: the latency suite times model files on random inputs of their shape; your "
            "own images are scored by `quantlab run --model M --data PATH`; here give a built-in "
            "dataset's name, or your model files with --quantlab-artifacts")
    return data or option("quantlab_dataset")


def _usable_runtimes(named):
    """The runtimes named (each must load here), or by default every one that loads here."""
    from quantlab import runtime
    from quantlab.errors import QuantlabError

    try:
        return runtime.usable(named)[0]
    except QuantlabError as error:
        raise pytest.UsageError(f"--quantlab-runtimes: {error}") from None


# --- hooks ------------------------------------------------------------------------------------

def pytest_configure(config):
    session = QuantlabSession(config)
    config.pluginmanager.register(session, "quantlab_session")
    if config.pluginmanager.hasplugin("benchmark"):
        from quantlab.benchmark_hooks import BenchmarkHooks

        config.pluginmanager.register(BenchmarkHooks(session), "quantlab_benchmark")


def pytest_generate_tests(metafunc):
    if "quantlab_case" in metafunc.fixturenames:
        session = metafunc.config.pluginmanager.get_plugin("quantlab_session")
        metafunc.parametrize("quantlab_case", session.cases(), ids=lambda case: case.id)


def _given(config, flag):
    """Whether the user set ``flag`` anywhere (command line, PYTEST_ADDOPTS, ini addopts)."""
    args = [*config.invocation_params.args, *shlex.split(os.environ.get("PYTEST_ADDOPTS", "")),
            *config.getini("addopts")]
    return any(str(a) == flag or str(a).startswith(flag + "=") for a in args)


def pytest_collection_modifyitems(config, items):
    """Warm-up on for the latency cases, unless the user chose pytest-benchmark's own setting.

    pytest-benchmark warms up only on PyPy by default; a LiteRT model's first runs pay for
    cold caches and lazily packed weights, which would land in the timings.
    """
    if not config.pluginmanager.hasplugin("benchmark"):
        return
    cases = [item for item in items if "quantlab_case" in getattr(item, "fixturenames", ())]
    if cases:
        from quantlab import machine
        from quantlab.errors import QuantlabError

        try:  # the name of the runs pytest-benchmark saves: said now, not after the timing
            machine.given_name()
        except QuantlabError as error:
            raise pytest.UsageError(str(error)) from None
    warmup = {}
    if not _given(config, "--benchmark-warmup"):
        warmup["warmup"] = True
    if not _given(config, "--benchmark-warmup-iterations"):
        warmup["warmup_iterations"] = WARMUP_ITERATIONS
    for item in cases if warmup else ():
        item.add_marker(pytest.mark.benchmark(**warmup))


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def quantlab_session(pytestconfig):
    """The run's QuantlabSession: options, CPU facts, and the records of measured cases."""
    return pytestconfig.pluginmanager.get_plugin("quantlab_session")


@pytest.fixture(scope="session")
def quantlab_artifacts(quantlab_session):
    """Model file of each (net, variant): from --quantlab-artifacts, or exported on first use."""
    return quantlab_session.artifacts()
