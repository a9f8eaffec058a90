"""`quantlab run --scheduler`: one study on a real Dask cluster of two named machines on this host.

Each machine's workers get a cache of their own (no shared file system), so the artifacts
reach them only through Dask. Every process a test starts is stopped when it ends, failed
or not.
"""

import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import distributed
import pytest

from conftest import FEW_ROUNDS, one_line_error, quantlab

# One thread and one runtime: the thread counts and the runtimes are the study's (test_study,
# test_threads, test_runtimes); the fleet's own part is where each task runs, and a second
# count or runtime would add to every timing task.
STUDY = ["run", "--dataset", "digits", "--quick", "--nets", "conv,medium", "--runtimes", "litert",
         "--variants", "float32,int8", "--batch-sizes", "1,8", "--threads", "1", "--counters", "off", *FEW_ROUNDS]
ONE_NET = [*STUDY, "--nets", "medium"]  # the last --nets counts
# A user's tiny model, for every study on a cluster: the fleet's part does not depend on the
# net, and no worker trains it or measures its per-layer error.
MINE = "[k.layers.Input((8, 8, 1)), k.layers.Flatten(), k.layers.Dense(10, activation='softmax')]"
TIMING = ("machine", "latency")
# Where a second batch size is not what is checked: each one is seconds of rounds (rounds.py).
ONE_BATCH = ("--batch-sizes", "1")
STUDY_TIMEOUT = 600  # seconds; a study that takes longer has hung


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    """A Dask scheduler and workers started by this test, each in a session of its own, so
    that stopping one stops everything it started."""

    def __init__(self, folder, caches):
        self.folder, self.caches, self.processes = folder, caches, []
        port = _free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        self._start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", str(port),
                                  "--no-dashboard"], {})

    def _start(self, name, args, env):
        with open(self.folder / f"{name}-{len(self.processes)}.log", "w") as log:
            process = subprocess.Popen([sys.executable, "-m", "dask", *args], stdout=log,
                                       stderr=subprocess.STDOUT, env={**os.environ, **env},
                                       start_new_session=True)
        self.processes.append(process)
        return process

    def worker(self, machine, nanny=True):
        """A worker of ``machine``; the workers of one machine share its cache, as on one disk."""
        return self._start(f"worker-{machine}", [
            "worker", self.address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
            "--host", "127.0.0.1", *([] if nanny else ["--no-nanny"])],
            {"QUANTLAB_MACHINE": machine, "QUANTLAB_CACHE": str(self.caches / machine)})

    def wait_for(self, count):
        """{worker address: process id} once ``count`` workers are in the cluster."""
        with distributed.Client(self.address, timeout=60) as client:
            client.wait_for_workers(count, timeout=180)
            return client.run(os.getpid)

    def stop(self):
        """Killed outright: the test is over, and a worker asked to stop (SIGTERM) tries to say
        goodbye to its scheduler, dying beside it; under load that took the 15 s this waited."""
        for process in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError):  # the whole session, even if its
                os.killpg(process.pid, signal.SIGKILL)    # first process already ended
        for process in self.processes:
            process.wait()


@contextlib.contextmanager
def cluster(folder, caches, machines=(), nanny=True):
    started = Cluster(folder, caches)
    try:
        for machine in machines:
            started.worker(machine, nanny)
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """One cache per machine name, shared by the clusters of this module."""
    return tmp_path_factory.mktemp("caches")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A user's own saved model, mine.keras, briefly trained on digits."""
    from test_study import save_models

    [path] = save_models(tmp_path_factory.mktemp("model"), {"mine.keras": MINE}).values()
    return path


def own(model):
    """The study of ``model`` (``STUDY`` but for the net), without the scheduler and --out."""
    return [*STUDY[:STUDY.index("--nets")], "--model", str(model), *STUDY[STUDY.index("--runtimes"):]]


def _run(model, scheduler, out, caches):
    """The study of your own model, counted with valgrind: the quick study counts float32 and
    int8 on LiteRT at batch 1, 2 cases per machine."""
    return quantlab(*own(model), "--counters", "valgrind", "--scheduler", scheduler, "--out", str(out),
                    env={"QUANTLAB_CACHE": str(caches / "study")})


def _json(path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def two_machines(tmp_path_factory, caches):
    """A cluster of machines alpha and beta, one worker each, without a nanny (the worker test
    kills beta's once the module's study is over)."""
    with cluster(tmp_path_factory.mktemp("cluster"), caches, ["alpha", "beta"], nanny=False) as started:
        started.wait_for(2)
        yield started


def _received(caches):
    """{machine: {file under its cache's received/: its sha256}}."""
    return {name: {f"{path.parent.name}/{path.name}": hashlib.sha256(path.read_bytes()).hexdigest()
                   for path in (caches / name / "received").glob("*/*")} for name in ("alpha", "beta")}


@pytest.fixture(scope="module")
def fleet_study(tmp_path_factory, caches, two_machines, model):
    """The study of your own model on alpha and beta, then once more with the same --out; the
    files the machines received, as they were before any other study of this module ran."""
    out = tmp_path_factory.mktemp("fleet") / "report"
    first = _run(model, two_machines.address, out, caches)
    assert first.returncode == 0, first.stderr[-3000:]
    fleet = _json(out / "fleet.json")
    results = {name: _json(out / "machines" / name / "results.json") for name in ("alpha", "beta")}
    received = _received(caches)
    again = _run(model, two_machines.address, out, caches)
    return {"out": out, "first": first, "fleet": fleet, "results": results, "again": again,
            "received": received}


def _cases(results):
    return {(c["net"], c["variant"], c["runtime"], c["batch_size"]) for c in results["cases"]}


def test_each_machine_gets_its_own_report_of_every_case_measured_on_itself(fleet_study):
    alpha, beta = fleet_study["results"]["alpha"], fleet_study["results"]["beta"]
    assert _cases(alpha) == _cases(beta)
    assert {("mine", "int8", "litert", 8), ("mine", "float32", "litert", 1)} <= _cases(alpha)
    for name, results in fleet_study["results"].items():
        assert results["machine"]["name"] == name and results["fleet"]["missing"] == []
        assert results["machine"]["clock"] and results["machine"]["bandwidth"]
        assert all(case["median"] > 0 for case in results["cases"])
        assert {row["variant"] for row in results["accuracy"]} == {"float32", "int8"}
        # The machine's own measurement, timing and counting ran on its own worker.
        tasks = results["fleet"]["tasks"]
        assert len([t for t in tasks if t["stage"] in TIMING]) == 2
        assert len([t for t in tasks if t["stage"] == "counters"]) == 2  # one per model and runtime
        assert all(t["machine"] == name for t in tasks if t["stage"] in (*TIMING, "counters"))
        counted = [c for c in results["cases"] if c["counters"]]
        assert {(c["net"], c["variant"], c["runtime"], c["batch_size"]) for c in counted} == {
            ("mine", variant, "litert", 1) for variant in ("float32", "int8")}
        assert all(c["counters"]["per_inference"]["instructions"] > 0 for c in counted)
        assert all(c["not_counted"] == "the quick study counts float32 and int8 on litert at batch 1 only"
                   for c in results["cases"] if not c["counters"])
        folder = fleet_study["out"] / "machines" / name
        report, details = ((folder / page).read_text() for page in ("report.md", "details.md"))
        assert results["machine"]["cpu"]["model"] in report and "(details.md)" in report
        assert "## Latency" in details


def test_the_cross_machine_report_puts_both_machines_side_by_side_on_the_same_bytes(fleet_study):
    out, fleet = fleet_study["out"], fleet_study["fleet"]
    assert set(fleet["machines"]) == {"alpha", "beta"}
    for machine in fleet["machines"].values():
        assert (out / machine["report"]).is_file() and machine["missing"] == []
        assert machine["workers"] and len(machine["hosts"]) == 1
    printed = fleet_study["first"].stdout.splitlines()
    assert printed == [str(out / "machines" / "alpha" / "report.md"),
                       str(out / "machines" / "beta" / "report.md"), str(out / "compare.md")]
    comparison = _json(out / "compare.json")
    assert [m["name"] for m in comparison["machines"]] == ["alpha", "beta"]
    assert comparison["artifacts"] and all(entry["same"] for entry in comparison["artifacts"])
    assert any("**One CPU**: alpha and beta" in line for line in comparison["warnings"])
    assert "alpha" in (out / "compare.md").read_text()


def test_timing_never_overlaps_anything_else_of_the_study_on_the_one_host(fleet_study):
    tasks = fleet_study["fleet"]["tasks"]
    assert len({t["host"] for t in tasks}) == 1  # two named machines, one physical host
    assert {t["stage"] for t in tasks} == {"export", "evaluate", "machine", "latency", "counters"}
    timing = [t for t in tasks if t["stage"] in TIMING]
    assert {t["machine"] for t in timing} == {"alpha", "beta"}
    for timed in timing:
        for other in tasks:
            if other is not timed:
                assert other["end"] <= timed["start"] or timed["end"] <= other["start"], (timed, other)


def test_the_artifacts_reach_every_machine_as_checked_files_of_its_own_cache(fleet_study):
    exports = [t["label"] for t in fleet_study["fleet"]["tasks"] if t["stage"] == "export"]
    assert exports == ["mine: export"]  # once, on any worker
    for name in ("alpha", "beta"):
        for net, artifacts in fleet_study["fleet"]["artifacts"].items():
            for variant, sha in artifacts.items():
                [received] = [p for p in fleet_study["received"][name] if p.startswith(f"{sha[:16]}/")]
                assert fleet_study["received"][name][received] == sha, (name, net, variant)


def test_a_rerun_with_the_same_out_redoes_nothing(fleet_study):
    again, out = fleet_study["again"], fleet_study["out"]
    assert again.returncode == 0, again.stderr[-3000:]
    assert _json(out / "fleet.json")["tasks"] == []
    assert not re.search(r"\[(alpha|beta) tcp://", again.stderr)  # no task said anything
    # export and accuracy of the net; per machine its measurement, its latency and 2 counts
    assert again.stderr.count("done earlier") == 2 + 2 * (1 + 1 + 2)
    for name in ("alpha", "beta"):
        assert _json(out / "machines" / name / "results.json")["cases"] == fleet_study["results"][name]["cases"]


class Study:
    """``quantlab run --scheduler`` in the background, its progress read line by line."""

    def __init__(self, command, scheduler, out, caches, *options):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "quantlab.cli", *command, "--scheduler", scheduler, "--out", str(out),
             *options],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "QUANTLAB_CACHE": str(caches / "study")})
        self.watchdog = threading.Timer(STUDY_TIMEOUT, self.process.kill)
        self.watchdog.start()
        self.lines = []

    def __iter__(self):
        for line in self.process.stderr:
            self.lines.append(line)
            yield line

    def finish(self):
        for _ in self:
            pass
        self.process.wait()
        self.watchdog.cancel()
        return self.process.returncode, "".join(self.lines)


def _timing(line, machine):
    """(worker address, net) when ``line`` says that a worker of ``machine`` starts timing a
    net; (worker address, "machine") when it starts measuring itself."""
    found = re.search(rf"\[{machine} (\S+)\] (?:(\w+): timing|measuring (this machine))", line)
    return found and (found[1], found[2] or "machine")


def _nothing_but_timing_after_timing_began(fleet):
    """Whether every export and evaluation ended before the first timing task began, on the
    host's monotonic clock (fleet.json): an order of events, where the order of progress
    lines on stderr is only the order in which Dask delivered them."""
    tasks = fleet["tasks"]
    began = min((t["start"] for t in tasks if t["stage"] in TIMING), default=float("inf"))
    return all(t["end"] <= began for t in tasks if t["stage"] not in (*TIMING, "counters"))


def _ran_before_or_moved(task, killed, kills):
    """A task of a worker killed at ``kills[i]`` (time.monotonic) either had ended by then (the
    kill came late: the progress line that triggers it travels through Dask) or ran again,
    elsewhere."""
    if task["worker"] in killed:
        return task["end"] <= kills[killed.index(task["worker"])]
    return True


def test_a_worker_killed_mid_study_neither_hangs_it_nor_loses_finished_work(tmp_path, caches, model,
                                                                            two_machines, fleet_study):
    """On the module's cluster once its study is over (its workers are not needed again)."""
    out = tmp_path / "report"
    started = two_machines
    started.worker("beta", nanny=False)  # beta's second worker
    pids = started.wait_for(3)
    # beta's tasks are given up 3 s after its last worker is gone (15 s by default).
    study, killed, kills = Study(own(model), started.address, out, caches, *ONE_BATCH, "--grace", "3"), [], []
    try:
        for line in study:
            timing = _timing(line, "beta")
            # Kill the worker that measures beta; the measurement moves to beta's other
            # worker. Kill that one when it times the net: beta has no worker left.
            if timing and (timing[1], len(killed)) in (("machine", 0), ("mine", 1)):
                os.kill(pids[timing[0]], signal.SIGKILL)
                killed.append(timing[0])
                kills.append(time.monotonic())
    finally:
        status, stderr = study.finish()
    assert status == 0 and len(killed) == 2, stderr[-3000:]
    beta, fleet = _json(out / "machines" / "beta" / "results.json"), _json(out / "fleet.json")
    # Nothing that the dead workers held was made again while the host was timing.
    assert _nothing_but_timing_after_timing_began(fleet), fleet["tasks"]
    mine = [c for c in beta["cases"] if c["net"] == "mine"]
    assert beta["machine"]["name"] == "beta" and beta["machine"]["clock"] and beta["machine"]["bandwidth"]
    [moved] = [t for t in fleet["tasks"] if t["label"] == "beta: machine"]
    assert moved["worker"] in killed and _ran_before_or_moved(moved, killed[:1], kills[:1])
    timed = [t for t in fleet["tasks"] if t["label"] == "beta: mine: latency"]
    if timed:  # the second kill came after the net's timing had ended: nothing was lost
        assert _ran_before_or_moved(timed[0], killed, kills) and all(c["median"] > 0 for c in mine)
    else:  # it came while beta timed the net, on its last worker
        assert mine and all("not timed on beta: no worker of machine beta was left for 3 s"
                            in c["not_run"] for c in mine)
        assert fleet["machines"]["beta"]["missing"] == [
            {"stage": "latency", "net": "mine", "reason": mine[0]["not_run"].split(": ", 1)[1]}]
        assert "no worker of machine beta" in (out / "machines" / "beta" / "report.md").read_text()
    alpha = _json(out / "machines" / "alpha" / "results.json")
    assert all(c["median"] > 0 for c in alpha["cases"])

    # A new worker of beta, with a nanny; killed while it times the net, it is restarted,
    # and the rerun does what is missing and nothing else.
    started.worker("beta")
    pids = started.wait_for(2)
    study, killed, kills = Study(own(model), started.address, out, caches, *ONE_BATCH), [], []
    try:
        for line in study:
            timing = _timing(line, "beta")
            if timing and not killed:
                os.kill(pids[timing[0]], signal.SIGKILL)
                killed.append(timing[0])
                kills.append(time.monotonic())
    finally:
        status, stderr = study.finish()
    assert status == 0 and (killed or timed), stderr[-3000:]
    fleet = _json(out / "fleet.json")
    assert _nothing_but_timing_after_timing_began(fleet), fleet["tasks"]
    # only what was missing; on the restarted worker, unless the kill came after it ended
    assert [t["label"] for t in fleet["tasks"]] == ([] if timed else ["beta: mine: latency"])
    assert all(_ran_before_or_moved(task, killed, kills) for task in fleet["tasks"])
    assert fleet["machines"]["beta"]["missing"] == []
    beta = _json(out / "machines" / "beta" / "results.json")
    assert all(c["median"] > 0 for c in beta["cases"])
    assert "beta: machine: done earlier" in stderr


def test_your_own_model_file_reaches_the_workers_and_is_studied_on_every_machine(fleet_study, model):
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    exported = [t for t in fleet_study["fleet"]["tasks"] if t["stage"] == "export"]
    assert len(exported) == 1 and fleet_study["received"][exported[0]["machine"]][f"{sha[:16]}/mine.keras"] == sha
    for name, results in fleet_study["results"].items():
        assert list(results["nets"]) == ["mine"] and all(c["median"] > 0 for c in results["cases"])


def test_an_unreachable_scheduler_is_one_line_and_exit_status_2(tmp_path):
    result = quantlab(*STUDY, "--scheduler", f"tcp://127.0.0.1:{_free_port()}", "--out",
                      str(tmp_path / "report"), env={"QUANTLAB_CACHE": str(tmp_path / "cache")})
    # refused, not timed out: a port that refuses is not tried again for Dask's 5 s
    one_line_error(result, "cannot reach the Dask scheduler at tcp://127.0.0.1:", "refused",
                   "dask scheduler")
    assert not (tmp_path / "report").exists()
    port = _free_port()  # without a scheme, as Dask reads it too: tcp
    result = quantlab(*STUDY, "--scheduler", f"127.0.0.1:{port}", "--out", str(tmp_path / "report"))
    one_line_error(result, f"cannot reach the Dask scheduler at 127.0.0.1:{port}", "refused")
    result = quantlab(*STUDY, "--scheduler", "tcp://127.0.0.1:99999", "--out", str(tmp_path / "report"))
    one_line_error(result, "cannot reach the Dask scheduler at tcp://127.0.0.1:99999",
                   "port 99999 is not a TCP port")


def test_a_malformed_scheduler_address_is_one_line_and_exit_status_2(tmp_path):
    result = quantlab(*STUDY, "--scheduler", "scheduler.example", "--out", str(tmp_path / "report"))
    one_line_error(result, "cannot reach the Dask scheduler at scheduler.example", "port")


def test_a_run_without_scheduler_never_imports_dask(tmp_path):
    # In the suite's cache, where the digits study (conftest) keeps this quick net: without
    # training and export, which are not what is checked, the run costs a third as much.
    arguments = [*STUDY, "--nets", "medium", "--variants", "float32", "--batch-sizes", "1",
                 "--out", str(tmp_path / "report")]
    code = ("import sys\nfrom quantlab import cli\nstatus = cli.main(sys.argv[1:])\n"
            "print(status, sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    result = subprocess.run([sys.executable, "-c", code, *arguments], capture_output=True, text=True,
                            timeout=STUDY_TIMEOUT)
    assert result.stdout.splitlines()[-1] == "0 []", result.stderr[-3000:]


def test_machines_that_share_a_host_directly_or_through_another_machine_time_in_turn():
    from quantlab import fleet

    machines = {name: fleet.Machine(name, hosts=hosts) for name, hosts in [
        ("a", ["h1"]), ("c", ["h2"]), ("b", ["h1"]), ("e", ["h3"]), ("d", ["h2", "h3"]), ("f", ["h4"])]}
    assert sorted(fleet.host_groups(machines)) == [["a", "b"], ["c", "d", "e"], ["f"]]


def test_a_machine_name_becomes_a_safe_folder_name_that_keeps_names_apart():
    from quantlab import fleet

    assert fleet.folder_name("laptop") == "laptop"
    assert fleet.folder_name("vm (Intel(R) Xeon(R))").startswith("vm-Intel-R-Xeon-R-")
    assert fleet.folder_name("a/b") != fleet.folder_name("a b")
    assert fleet.folder_name("..") not in ("", ".", "..")


@pytest.mark.parametrize("sha, name", [("0" * 64, "../escape.tflite"), ("0" * 64, ".."),
                                       ("0" * 64, "a/b.tflite"), ("../" * 3, "int8.tflite"),
                                       ("A" * 64, "int8.tflite")])
def test_a_file_sent_between_machines_never_lands_outside_its_folder(tmp_path, sha, name):
    from quantlab import fleet
    from quantlab.errors import QuantlabError

    assert fleet.file_place(tmp_path, "ab" * 32, "int8.tflite") == tmp_path / ("ab" * 8) / "int8.tflite"
    with pytest.raises(QuantlabError, match="not a plain file name and a sha256"):
        fleet.file_place(tmp_path, sha, name)


def test_a_scheduler_that_dies_mid_study_is_one_line_and_the_rerun_resumes(tmp_path, model):
    """It printed two Dask tracebacks, then blamed the task the scheduler took with it."""
    # Caches of its own: what its alpha receives is not for the module study's checks to find.
    out, caches = tmp_path / "report", tmp_path / "caches"
    with cluster(tmp_path, caches, ["alpha"], nanny=False) as started:
        started.wait_for(1)
        study = Study(own(model), started.address, out, caches, *ONE_BATCH)
        try:
            for line in study:
                if _timing(line, "alpha"):  # exported and evaluated: kept in OUT/.state
                    os.killpg(started.processes[0].pid, signal.SIGKILL)  # the scheduler
                    break
        finally:
            status, stderr = study.finish()
    assert status == 2, stderr[-3000:]
    assert "Traceback" not in stderr and "CancelledError" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("quantlab")]
    assert errors == [f"quantlab: error: lost the Dask scheduler at {started.address} (it "
                      f"stopped, or the network to it failed); what finished is kept in "
                      f"{out / '.state'}: start the scheduler again and run the same command "
                      f"again to resume"]
    with cluster(tmp_path, caches, ["alpha"], nanny=False) as restarted:
        restarted.wait_for(1)
        again = Study(own(model), restarted.address, out, caches, *ONE_BATCH)
        status, stderr = again.finish()
    assert status == 0, stderr[-3000:]
    assert "mine: export: done earlier" in stderr, stderr[-3000:]
    assert "mine: accuracy: done earlier" in stderr, stderr[-3000:]
    assert (out / "machines" / "alpha" / "report.md").is_file()


@pytest.mark.parametrize("name", ["x" * 500, "alpha\n## Injected heading", ".."])
def test_a_worker_whose_machine_name_is_not_plain_is_refused_before_any_work(tmp_path, name):
    """500 characters ended in 'File name too long', a newline only after all the work."""
    out = tmp_path / "report"
    with cluster(tmp_path, tmp_path / "caches") as started:
        started._start("worker-badly-named", [  # its log is not named after it
            "worker", started.address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
            "--host", "127.0.0.1", "--no-nanny"], {"QUANTLAB_MACHINE": name})
        started.wait_for(1)
        result = quantlab(*ONE_NET, "--scheduler", started.address, "--out", str(out),
                          env={"QUANTLAB_CACHE": str(tmp_path / "caches" / "study")})
    line = one_line_error(result, "quantlab: error: worker tcp://127.0.0.1:", "QUANTLAB_MACHINE",
                          "is not a plain name", "in that worker's environment")
    assert len(line) < 400
    assert not out.exists() and not (tmp_path / "caches" / "study").exists()
