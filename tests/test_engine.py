"""Study and fleet are one engine: the fleet reads its stored outcomes by the study's rule and
counts in the workers the study's counting policy plans (a large batch apart, after a warm-up
batch whose count is dropped). Checked on a Fleet of an in-process Dask cluster without
workers: what it submits waits, and nothing runs."""

import distributed
import pytest

from quantlab import fleet
from quantlab.study import StudyConfig, counting, stages
from quantlab.variants import Artifact

BATCHES = (1, 16, 64)


@pytest.fixture
def study_fleet(tmp_path, digits):
    config = StudyConfig(dataset="digits", nets=("conv",), variants=("float32",), runtimes=("litert",),
                         batch_sizes=BATCHES, threads=(1,), out=tmp_path / "out")
    said = []
    with distributed.Client(processes=False, n_workers=0, dashboard_address=":0") as client:
        yield fleet.Fleet(config, client, digits, {}, said.append), said


def _timed(batches):
    return [{"net": "conv", "variant": "float32", "runtime": "litert", "batch_size": b,
             "threads": 1} for b in batches]


def test_the_counting_policy_puts_a_large_batch_in_a_worker_of_its_own_after_a_warm_up():
    planned = counting.plan_workers(_timed(BATCHES), "valgrind")
    assert [([r["batch_size"] for r in group], lead) for _, _, group, lead in planned] == [
        ([64], 1), ([1, 16], None)]  # the costliest first
    # Hardware counters need no warm-up batch: one worker for every batch size.
    assert [len(group) for _, _, group, _ in counting.plan_workers(_timed(BATCHES), "perf")] == [3]


def test_the_fleet_counts_in_the_workers_the_study_plans(study_fleet):
    study_fleet, _ = study_fleet
    sha = "ab" * 32
    study_fleet.machines = {"alpha": fleet.Machine("alpha", hosts=["here"], found={
        "backend": "valgrind", "uncounted": None})}
    study_fleet.nets["conv"] = {"artifacts": {"float32": Artifact("float32", None, {"sha256": sha})},
                                "shipment": None}
    # Batch 64 first: under valgrind the full study counts the first batch size whatever it
    # is (a larger one only with perf), so that the large-batch split reaches the fleet.
    study_fleet.config.batch_sizes = (64, 1, 16)
    study_fleet.machines["alpha"].timed["conv"] = _timed(BATCHES)
    study_fleet.count("alpha")
    jobs = [job for job in study_fleet.pending.values()]
    assert [job.call[5:] for job in jobs] == [([64], "valgrind", 1), ([1, 16], "valgrind", None)]
    assert all(job.stage == "counters" and job.machine == "alpha" for job in jobs)


@pytest.mark.parametrize("content, said", [
    ("{", "is unreadable; measuring again"),
    ('{"task": {}}', "is not what this stage stores; measuring again"),
    ("[]", "is not what this stage stores; measuring again"),
])
def test_a_stored_outcome_of_the_fleet_is_read_by_the_studys_rule(study_fleet, content, said):
    study_fleet, lines = study_fleet
    key = {"net": "conv"}
    path = study_fleet.state("latency", key)
    assert path == stages.state_path(study_fleet.config, "fleet-latency", key)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    assert study_fleet.stored("latency", key, "conv: latency") is None
    assert lines == [f"conv: latency: stored result {path.name} {said}"]
    stages.write_state(path, {"value": [{"net": "conv"}], "task": {}})  # as the fleet stores it
    assert study_fleet.stored("latency", key, "conv: latency") == [{"net": "conv"}]
    assert lines[-1] == f"conv: latency: done earlier, reusing {path.name}"
