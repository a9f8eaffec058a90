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
import logging

from quantlab import datasets
# What the tests and ``quantlab run`` reach through ``quantlab.fleet``.
from quantlab.fleet.cluster import Machine, folder_name, host_groups  # noqa: F401
from quantlab.fleet.cluster import MachineResource, connect, survey
from quantlab.fleet.engine import lost_scheduler
from quantlab.fleet.phases import Fleet
from quantlab.fleet.tasks import _received, file_place  # noqa: F401
from quantlab.output import prepare_output
from quantlab.progress import Progress


def run(config, progress=None):
    """Run the study described by ``config`` on the workers of ``config.scheduler``; write a
    report per machine and the cross-machine report; return the reports' paths."""
    progress = progress or Progress()
    _one_line_logs()
    client = connect(config.scheduler)
    try:
        client.register_plugin(MachineResource())
        machines = survey(client, config.scheduler)  # refuses a bad worker before any work
        prepare_output(config.out, config.force)
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
