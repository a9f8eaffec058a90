"""Several nets made ready at once, each in a worker process of its own.

Making one net ready (train, export, sensitivity and mixed-precision search, per-layer
error, accuracy) is a chain of mostly single-threaded steps: on 2 cores a five-net quick
study kept 1.0-1.6 of them busy while it prepared its nets one after the other (the second
core mostly while the previous net was counted beside it). Two nets at a time fill both.
Each worker imports TensorFlow once and keeps the dataset it was handed (the very arrays the
study checked, not read again), writes the stages' stored state and the cache as the
study's own process would, and sends back the net's ``Ready`` and its part of the results.
Its temporary files go to a folder the study's process owns and removes, so that a worker
killed mid-step (Ctrl-C stops them with SIGKILL) leaves none behind. Timing, deployment
costs and counting stay in the study's process, which alone decides what runs beside them.
"""

import dataclasses
import multiprocessing
import os
import signal
import tempfile

from quantlab.errors import QuantlabError
from quantlab.orphans import die_with_parent

# Two at a time: measured on 2 cores, where a worker's own TensorFlow training and runtimes
# already use every core when they can; each worker holds up to ~3-5 GB (the vit).
WORKERS = 2

_study = None  # in a worker: the Study it makes nets ready for


def workers(nets):
    return min(WORKERS, len(nets), len(os.sched_getaffinity(0)))


# The nets that take longest to make ready, longest first: in a five-net quick study on 2
# cores, two at a time, the vit took 117 s and the mobilenet 70 s, P17's nets 25-32 s each.
LONGEST = ("vit", "mobilenet")


def longest_first(nets):
    """``nets`` in the order to hand them out: the last to finish is then a short one."""
    return sorted(nets, key=lambda net: LONGEST.index(net) if net in LONGEST else len(LONGEST))


def prepare(study, nets):
    """Yield (net, Ready, its part of the results) for each of ``nets`` as it is made ready,
    in worker processes started for this and stopped when the generator is closed."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    # The study as it goes to each worker: what making a net ready reads (its progress, its
    # results and its counting stay here).
    handed = dataclasses.replace(study, progress=None, results=None, background=[])
    scratch = tempfile.TemporaryDirectory(prefix="quantlab-workers-")
    pool = ProcessPoolExecutor(  # spawned: TensorFlow's threads do not survive a fork
        workers(nets), mp_context=multiprocessing.get_context("spawn"), initializer=_start,
        initargs=(handed, getattr(study.progress, "started", None), scratch.name))
    finished = False
    try:
        futures = [pool.submit(_prepare, net) for net in nets]  # taken in this order
        for future in as_completed(futures):
            try:
                yield future.result()
            except BrokenProcessPool:  # a worker killed (by the kernel for memory, say)
                raise QuantlabError("a process preparing the nets died (killed, or out of "
                                    "memory: each may hold 3-5 GB); what it finished is "
                                    "cached, run again to resume") from None
        finished = True
    finally:
        if not finished:  # an error, Ctrl-C or an abandoned study: the work stops now
            for process in list((pool._processes or {}).values()):  # 3.14: terminate_workers
                process.kill()
        pool.shutdown(wait=True, cancel_futures=True)
        scratch.cleanup()


def _start(study, started, scratch):
    """A worker: dies with the study's process, leaves Ctrl-C to it, keeps the study, makes
    its temporary files in ``scratch`` (TensorFlow's and the runtimes' too)."""
    global _study
    from quantlab.progress import Progress

    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["TMPDIR"] = tempfile.tempdir = scratch
    study.progress = Progress(bars=False)
    if started is not None:  # the study's clock: monotonic time is the same in every process
        study.progress.started = started
    _study = study


def _prepare(net):
    _study.results = {"nets": {}, "accuracy": []}  # what Study.prepare fills
    ready = _study.prepare(net)
    return net, ready, _study.results
