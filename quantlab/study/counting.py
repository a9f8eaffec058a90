"""Counting: which timed cases are counted (and why the others are not), how the chosen ones
are grouped into workers, and the counts put into their records."""

import dataclasses
import os
from dataclasses import dataclass

from quantlab import defaults
from quantlab._tf import versions
from quantlab.errors import QuantlabError
from quantlab.study.stages import read_state, state_path, well_formed, write_state
from quantlab.variant_table import counted_quick, natural_reader, p17_pair

# What is counted: P17's standard and quantized net (float32 and int8) at every batch size on
# LiteRT, the reference, and at the first batch size every variant on the runtime that reads
# its file natively, and float32 and int8 of either format on the others. Valgrind simulates
# at a few million instructions a second, and a study has over a hundred cases: there the
# full study leaves out the pair's batches of valgrind.LARGE_BATCH and more after the first
# (float32 medium at batch 64 took 114 s of a core, int8 10 s: as much as the rest of the
# net's counting), the pair on the other runtimes (OpenVINO: 11-18 s of a core each) and
# TensorFlow's frozen graph (50 s of a core, most of it TensorFlow's start); the next net's
# timing waited for all of it. The quick study counts float32 and
# int8 on LiteRT at the first batch size. bf16 is never simulated: valgrind's virtual CPU has
# no bfloat16 arithmetic. Which variants are which: quantlab.variant_table.


def count_reason(config, backend, record):
    """Why this timed case is not counted, or None when it is (see above)."""
    variant, name, batch = record["variant"], record["runtime"], record["batch_size"]
    first, reference = config.batch_sizes_of(record.get("net"))[0], defaults.REFERENCE_RUNTIME
    if backend is None:
        return "counters are off"
    if (record.get("threads") or 1) != config.threads[0]:
        return f"counted at {config.threads[0]} thread(s) only"
    if backend == "valgrind" and variant == "bf16":
        return "bf16 is not simulated: valgrind's virtual CPU has no bfloat16 arithmetic"
    if config.quick:
        if counted_quick(variant) and name == reference and batch == first:
            return None
        return f"the quick study counts float32 and int8 on {reference} at batch {first} only"
    natural = name == natural_reader(variant)
    pair = p17_pair(variant)
    if backend == "valgrind":
        from quantlab.counters.valgrind import LARGE_BATCH

        if name == "tensorflow":
            return ("not counted under valgrind in the full study: TensorFlow's start is most "
                    "of the 50 s of a core its simulation takes")
        if (pair and name == reference and (batch < LARGE_BATCH or batch == first)
                or batch == first and natural):
            return None
        return (f"counted under valgrind: float32 and int8 on {reference} at batch {first} and "
                f"every batch below {LARGE_BATCH}; at batch {first}, every variant on its own "
                f"runtime but TensorFlow")
    if (pair and name == reference) or (batch == first and (natural or pair)):
        return None
    return (f"counted: float32 and int8 at every batch size on {reference}; at batch {first}, "
            f"every variant on its own runtime and float32 and int8 on the others")


def count_model(config, artifact, runtime_name, batch_sizes, backend, lead=None):
    """{batch size: counters} of one model on one runtime, all batch sizes in one worker
    (valgrind's start and the imports are paid once), after ``lead``, a batch size counted
    first and dropped (see plan_workers); {"failed": why} for each if it fails (said in the
    report, not fatal)."""
    from quantlab import counters

    try:
        counted = counters.measure_many(artifact.path, ([lead] if lead else []) + list(batch_sizes),
                                        backend=backend, threads=config.threads[0],
                                        cache=config.cache_geometry, runtime=runtime_name,
                                        precision=artifact.precision)
    except QuantlabError as error:
        return {batch: {"failed": str(error)} for batch in batch_sizes}
    return {batch: counted[batch] for batch in batch_sizes}


def counting_said(net, variant, runtime_name, batch_sizes, backend):
    return (f"{net}: counting {variant} on {runtime_name}, batch "
            f"{','.join(map(str, batch_sizes))}, with {backend}")


def counter_key(config, artifact, record, backend):
    return {"sha": artifact.sha256, "runtime": record["runtime"], "batch": record["batch_size"],
            "backend": backend, "threads": config.threads[0], "geometry": config.cache_geometry,
            "versions": versions()}


def plan_counts(config, backend, records):
    """Mark each timed record with why it is not counted; return the ones to count."""
    chosen = []
    for record in records:
        if not record.get("not_run"):
            record["counters"], record["not_counted"] = None, count_reason(config, backend, record)
            if record["not_counted"] is None:
                chosen.append(record)
    return chosen


def plan_workers(chosen, backend):
    """The chosen records as the workers that count them, the costliest first (the most
    images per run), so that no long one starts last, alone: [(variant, runtime, records,
    lead)]. The batch sizes of one model and runtime are counted together, in one worker
    (valgrind's start, the imports and the warm-up are paid once), the large ones apart;
    ``lead`` is a batch size counted first and dropped, or None."""
    from quantlab.counters.valgrind import LARGE_BATCH

    groups = {}
    for record in chosen:
        groups.setdefault((record["variant"], record["runtime"]), []).append(record)
    models = []
    for (variant, runtime_name), group in groups.items():
        small = [r for r in group if r["batch_size"] < LARGE_BATCH]
        large = [r for r in group if r["batch_size"] >= LARGE_BATCH]
        if small and large and backend == "valgrind":
            # A simulated large batch costs as much as all the small ones together: it gets a
            # worker of its own, beside them rather than after them, where one small batch
            # runs first (the warm-up it needs: see valgrind.plan) and its count is dropped.
            models += [(variant, runtime_name, small, None),
                       (variant, runtime_name, large, small[0]["batch_size"])]
        else:
            models.append((variant, runtime_name, group, None))
    return sorted(models, key=lambda model: -sum(r["batch_size"] for r in model[2]))


def planned_cases(config, net, studied):
    """The cases of one net as the timing run will make them ({net, variant, runtime,
    batch_size, threads}): counting chooses among them before the net is timed, so that it
    runs beside the next net's training rather than after all the timing."""
    return [{"net": net, "variant": variant, "runtime": runtime_name, "batch_size": batch,
             "threads": threads}
            for variant, runtime_name in studied for batch in config.batch_sizes_of(net)
            for threads in config.threads]


def counts_into(records, planned):
    """Each timed record's counts, or why it has none, from its planned case (a case that
    did not run keeps only its reason)."""
    def key(case):
        return (case["variant"], case["runtime"], case["batch_size"], case.get("threads") or 1)

    counted = {key(case): case for case in planned}
    for record in records:
        if not record.get("not_run"):
            case = counted.get(key(record), {"counters": None, "not_counted": "not planned"})
            record["counters"], record["not_counted"] = case["counters"], case["not_counted"]


def apply_count(record, result):
    """Put one count, or why there is none, into its timed record."""
    if "failed" in result:
        record["not_counted"] = f"counting failed: {result['failed']}"
    else:
        record["counters"], record["not_counted"] = result, None



def start_counting(config, net, artifacts, records, backend, progress):
    """Count the chosen cases of one net on this machine (its timed records, or its
    planned_cases), each kept in OUT/.state, in the workers plan_workers makes. Returns the
    ``Counting``, whose ``wait`` puts the counts into ``records``.

    Valgrind simulates each worker's caches on its own, so its counts depend neither on what
    else runs nor on how fast: its workers use every core and go on in the background while
    the next net trains, exports and is evaluated (never while it is timed: the caller waits
    first). Hardware counters would feel a neighbour: they count alone, one case at a time.
    """
    from concurrent.futures import ThreadPoolExecutor

    chosen = plan_counts(config, backend, records)
    stored = {id(record): state_path(config, "counters", counter_key(
        config, artifacts[record["variant"]], record, backend)) for record in chosen}

    def count(model):
        variant, runtime_name, group, lead = model
        results, missing = {}, []
        for record in group:
            try:
                result = read_state(stored[id(record)])
            except (OSError, ValueError):  # not counted yet, or a damaged file: count again
                result = None
            if well_formed("counters", result):
                results[record["batch_size"]] = result
            else:
                missing.append(record["batch_size"])
        if missing:
            progress(counting_said(net, variant, runtime_name, missing, backend))
            counted = count_model(config, artifacts[variant], runtime_name, missing, backend, lead)
            for record in group:
                if record["batch_size"] in missing:
                    results[record["batch_size"]] = counted[record["batch_size"]]
                    write_state(stored[id(record)], results[record["batch_size"]])
        return group, results

    pool = ThreadPoolExecutor((os.cpu_count() or 1) if backend == "valgrind" else 1)
    futures = [pool.submit(count, model) for model in plan_workers(chosen, backend)]
    counting = Counting(pool, futures,
                        lambda: progress(f"{net}: {len(chosen)} cases counted"))
    if backend != "valgrind":
        counting.wait()
    return counting


@dataclass
class Counting:
    """The counts of one net, coming in from a pool of workers."""
    pool: object = None
    futures: list = dataclasses.field(default_factory=list)
    finished: object = None  # called once every count is in

    def wait(self):
        """Wait for every count and put it into its timed record."""
        from concurrent.futures import as_completed

        for future in as_completed(self.futures):
            group, results = future.result()
            for record in group:
                apply_count(record, results[record["batch_size"]])
        if self.futures:
            self.futures = []
            self.pool.shutdown()
            self.finished()

    def cancel(self):
        """Drop the counts not started yet (the run stops): only the running ones finish."""
        if self.pool:
            self.pool.shutdown(wait=False, cancel_futures=True)
