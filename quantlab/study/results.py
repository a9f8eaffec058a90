"""results.json: its skeleton, the machine it was measured on, each net's entry, and the
findings and report files made from it once every number is in."""

import dataclasses
import json
import sys
from pathlib import Path

import quantlab
from quantlab import defaults
from quantlab._tf import versions
from quantlab.records import SCHEMA  # the newest layout, the one quantlab writes


def machine_info(config, backend, skipped):
    """This machine: who it is, its CPU, and what it measurably does: the clock its cores
    run at and the bandwidth one core reads each cache level with (quantlab.ceilings)."""
    from quantlab import ceiling_spread, machine, runtime

    cpu = machine.cpu_info()
    before = ceiling_spread.measure("before timing", cpu)
    return {
        **machine.identity(cpu),
        "cpu": cpu,
        "clock": before["clock"],
        "bandwidth": before["bandwidth"],
        "peaks": before["peaks"],
        "ceilings": ceiling_spread.record([before]),
        "threads": config.threads[0],  # counted, measured for deployment, on the roofline
        "thread_counts": list(config.threads),  # timed
        "versions": {"quantlab": quantlab.__version__, "python": sys.version.split()[0],
                     **versions(), **{name: runtime.runtime_version(name)
                                      for name in ("openvino", "onnxruntime")}},
        "runtimes_skipped": skipped,
        "counter_backend": backend,
        "cache_geometry": config.cache_geometry if backend == "valgrind" else None,
    }


def _training_summary(artifacts):
    """What training reported, read from the cached model folders."""
    summary = {}
    for stage, variant in (("float", defaults.REFERENCE), ("qat", "qat_int8")):
        if variant in artifacts:
            info = _training_record(artifacts[variant].meta.get("trained_model"))
            if info is not None:  # a user's own model has no training record
                summary[stage] = {k: info.get(k) for k in ("test_accuracy", "epochs_run",
                                                           "train_images", "seconds")}
    return summary


def _training_record(folder):
    """The info.json of the trained model in ``folder``, if it is whole: a regular file, in the
    cache, written for that folder's key and naming the weights there (as training checks
    before it loads them); else None."""
    from quantlab import cache

    try:
        folder = Path(folder)
        info = folder / "info.json"
        if not (info.is_file() and folder.resolve().is_relative_to(cache.cache_root().resolve())):
            return None
        record = json.loads(info.read_text())
        whole = (cache.is_folder_of(folder, record["key"])
                 and record["weights_sha256"] == cache.sha256_of(folder / "weights.h5"))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, RecursionError):
        return None
    return record if whole else None


def new_results(config, data, machine_info, runtimes):
    """The skeleton of results.json, filled net by net."""
    return {
        "schema": SCHEMA,
        "quantlab": quantlab.__version__,
        "config": {k: (str(v) if isinstance(v, Path) else v)
                   for k, v in dataclasses.asdict(config).items()},
        "dataset": {"name": data.name, "source": data.source, "train": len(data.x_train),
                    "test": len(data.x_test), "input_shape": list(data.input_shape)},
        "machine": machine_info,
        "runtimes": list(runtimes),
        "nets": {}, "accuracy": [], "cases": [], "deployment": [],
    }


def net_entry(artifacts, layers):
    return {
        "artifacts": {v: {"file": a.path.name, "path": str(a.path), "format": a.meta["format"],
                          "bytes": a.bytes, "sha256": a.sha256, "execute_in": a.precision}
                      for v, a in artifacts.items()},
        "training": _training_summary(artifacts),
        "layers": layers,
        # Variants asked for that cannot be made of this net, and why
        # (variant_table.not_applicable: the vit has no qat_int8).
        "variants_skipped": dict(getattr(artifacts, "skipped", {})),
    }


def measure_ceilings_again(results, label="after timing"):
    """The clock, bandwidths and peaks measured once more (the first time was before any
    timing): each is then used at its highest value, and the report names any that moved."""
    from quantlab import ceiling_spread

    info = results["machine"]
    kept = ceiling_spread.record([*info["ceilings"]["measurements"],
                                  ceiling_spread.measure(label, info["cpu"])])
    used = kept["used"]
    info.update(ceilings=kept, clock=used["clock"], bandwidth=used["bandwidth"], peaks=used["peaks"])


def add_measured_peaks(results):
    """Each timed case's share of the measured peak at the measured clock, beside the
    share of the nominal one."""
    from quantlab import machine

    info = results["machine"]
    ghz = info["clock"].get("ghz") if info["clock"].get("measured") else None
    for case in results["cases"]:
        if ghz and case.get("macs_per_second"):
            peak = machine.peak_macs_per_second(case["arithmetic"], case["threads"], info["cpu"],
                                                ghz=ghz, measured=info.get("peaks"))
            if peak.macs_per_second:  # None where no peak is modelled (machine.UNMODELLED)
                case["peak_fraction_measured"] = case["macs_per_second"] / peak.macs_per_second
            case["peak_measured"] = peak.description


def finish(results, out, progress):
    """Findings and recommendations from the numbers, then the report files."""
    from quantlab import report, roofline

    add_measured_peaks(results)
    info = results["machine"]
    at_counted_threads = [c for c in results["cases"] if (c.get("threads") or 1) == info["threads"]]
    results["roofline"] = roofline.summarize(at_counted_threads, info["clock"], info["bandwidth"],
                                             out, info["cpu"], info["threads"],
                                             peaks=info.get("peaks"))
    results["findings"] = report.findings(results)
    results["recommendations"] = report.recommendations(results)
    report.write(results, out)
    progress(f"report: {out / 'report.md'}")
    return results
