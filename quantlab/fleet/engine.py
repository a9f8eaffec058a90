"""The Dask engine: jobs submitted to the workers of a machine (or any worker), their
outcomes kept in OUT/.state as they arrive, and the cluster watched for machines that lost
their workers."""

import time
import uuid
from dataclasses import dataclass

import distributed
from distributed.client import FuturesCancelledError

from quantlab.errors import QuantlabError
from quantlab.fleet.cluster import ANY, machine_resource
from quantlab.fleet.tasks import _task
from quantlab.study.stages import recall, state_path, write_state

POLL = 1.0  # seconds between looks at the cluster's members


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


class Engine:
    """The tasks of one study in flight on one cluster, and the windows of those that ran."""

    def __init__(self, config, client, progress):
        self.config, self.client, self.progress = config, client, progress
        self.pending = {}  # {future key: Job}
        self.gone = {}  # {resource: monotonic time since which no worker offers it}
        self.tasks = []  # the windows of the tasks that ran
        self.topic = f"quantlab-progress-{uuid.uuid4().hex}"  # this study's task progress
        client.subscribe_topic(self.topic, lambda event: progress(event[1]))

    # -- stored outcomes

    def state(self, stage, key):
        return state_path(self.config, f"fleet-{stage}", key)

    def stored(self, stage, key, label):
        """The stored value of a task, by the study's own rule (stages.recall), or None."""
        stored = recall(self.state(stage, key), f"fleet-{stage}", label, self.progress)
        return None if stored is None else stored["value"]

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
                write_state(self.state(job.stage, job.key),
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


def lost_scheduler(config):
    return QuantlabError(f"lost the Dask scheduler at {config.scheduler} (it stopped, or the "
                         f"network to it failed); what finished is kept in "
                         f"{config.out / '.state'}: start the scheduler again and run the same "
                         f"command again to resume")
