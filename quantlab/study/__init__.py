"""The whole study as one resumable function: train, export, evaluate, time, count, report.

Every stage keeps its result: trained nets and variants in the quantlab cache (keyed by
configuration and code), evaluations, timings and counts in ``OUT/.state`` (keyed by the
artifacts' sha256 and the settings), so a run that is interrupted and started again
continues where it stopped. Latency is measured by the same pytest-benchmark suite as
``benchmarks/``, in a child process, one net at a time.
"""

from quantlab import cache, datasets
from quantlab._tf import versions
from quantlab.output import prepare_output
from quantlab.progress import Progress
from quantlab.study.config import StudyConfig, threads_to_time  # noqa: F401 (the study's API)
from quantlab.study.counting import Counting, counter_key, start_counting  # noqa: F401
from quantlab.study.results import finish, machine_info, measure_ceilings_again, net_entry, new_results
from quantlab.study.stages import _cached_stage, artifact_key, state_path, well_formed  # noqa: F401
from quantlab.study.timing import rounds_budget, time_net
from quantlab.study.work import (deployment_repeats, evaluate_net, export_net, layer_errors,
                                 measure_deployment, pairs)


def run(config, progress=None):
    """Run the study described by ``config`` on this machine; write the report; return the
    results dict."""
    from quantlab import counters, machine, runtime

    progress = progress or Progress()
    prepare_output(config.out, config.force)
    cache.check_writable(cache.cache_root(), "cache folder",
                         "set QUANTLAB_CACHE to a folder you can write")
    data = datasets.load(config.dataset, config.data_dir)
    runtimes, skipped = runtime.usable(config.runtimes)
    for name, why in skipped.items():
        progress(f"runtime {name} left out: {why}")
    backend = None if config.counters == "off" else counters.resolve_backend(config.counters)
    cpu = machine.cpu_info()
    results = new_results(config, data, machine_info(config, backend, skipped), runtimes)
    background = []  # each net's counting, going on while the next net is prepared
    try:
        return _study_nets(config, data, results, runtimes, backend, cpu, background, progress)
    finally:
        for counting in background:
            counting.cancel()


def _study_nets(config, data, results, runtimes, backend, cpu, background, progress):
    from quantlab import machine

    counting = Counting()
    for net in study_order(config, data):
        progress(f"== {net} ==")
        artifacts = export_net(config, net, data, progress)
        studied = pairs(artifacts, runtimes, cpu)
        keys = {"net": net, "artifacts": artifact_key(artifacts)}
        # What is scored on the test images depends on them, not only on the files scored.
        scored = {**keys, "data": data.sha256}
        layers = _cached_stage(config, "layers", scored, lambda: layer_errors(
            config, net, artifacts, data, progress), progress, f"{net}: per-layer error")
        results["nets"][net] = net_entry(artifacts, layers)
        results["accuracy"] += _cached_stage(
            config, "eval", {**scored, "pairs": studied, "versions": versions()},
            lambda: evaluate_net(net, artifacts, studied, data, progress), progress, f"{net}: accuracy")
        timed_runtimes = [r for r in runtimes if any(r == name for _, name in studied)]
        counting.wait()  # nothing else runs while a net is timed
        records = _cached_stage(
            config, "latency", {**keys, "batch": config.batch_sizes, "runtimes": timed_runtimes,
                                "threads": config.threads, "quick": config.quick,
                                "rounds": rounds_budget(config),
                                "host": machine.identity(cpu)["host"], "versions": versions()},
            lambda: time_net(config, net, artifacts, timed_runtimes, progress), progress,
            f"{net}: latency")
        results["deployment"] += _cached_stage(
            config, "deployment", {**keys, "pairs": studied, "threads": config.threads[0],
                                   "repeats": deployment_repeats(config),
                                   "host": machine.identity(cpu)["host"], "versions": versions()},
            lambda: measure_deployment(config, net, artifacts, studied, progress), progress,
            f"{net}: deployment costs")
        counting = start_counting(config, net, artifacts, records, backend, progress)
        background.append(counting)
        results["cases"] += records
    counting.wait()
    measure_ceilings_again(results)  # with nothing else running: the last net's counts are in
    in_order = [net for net in config.nets if net in results["nets"]] or list(results["nets"])
    results["nets"] = {net: results["nets"][net] for net in in_order}
    for rows in (results["accuracy"], results["cases"], results["deployment"]):
        rows.sort(key=lambda row: in_order.index(row["net"]))
    return finish(results, config.out, progress)


def study_order(config, data):
    """The nets in the order they are studied: the costliest to count first, so that the
    counting left after the last net is timed is the cheapest; the report keeps the order
    the user gave."""
    if config.model is not None:
        return [config.model.stem]
    from quantlab import macs

    return sorted(config.nets, key=lambda net: -macs.macs_per_image(net, data.input_shape,
                                                                    data.num_classes))
