"""The cross-machine report: several machines' ``results.json`` side by side.

    results = load(["laptop-report", "server/results.json"])   # files copied from anywhere
    comparison = compare(results, Path("fleet"))                # compare.md, compare.json, PNG

It reads results of any schema quantlab wrote as data, checks every field it uses against the
field table of ``records`` (a file may come from anywhere), and measures nothing. A case is
the same case on two machines when its net, variant, runtime, batch size and threads match;
every ratio is taken on one machine (a variant against the float32 of its file format on the
same runtime), so machines are compared by what quantization buys on each, next to their
absolute latencies. Which artifacts are the same bytes on every machine is read from their
sha256. ``compare_report`` turns the comparison into words, tables and a plot.
"""

import json
from dataclasses import dataclass, fields
from pathlib import Path

import quantlab
from quantlab import cache, defaults, records, safe_text, variant_table
from quantlab.defaults import RUNTIMES, VARIANTS
from quantlab.errors import QuantlabError
from quantlab.lookups import worst_change

SCHEMA = 1  # of compare.json
READS = records.SCHEMA  # the newest results.json schema this module reads (and every older one)
MAX_BYTES = 64 * 1024 * 1024  # far above any study's results.json; refuses a huge file unread
PLAUSIBLE = records.PLAUSIBLE
ACCURACY_TOLERANCE = defaults.ACCURACY_TOLERANCE
_FIX = "give the results.json that `quantlab run` wrote, or the report folder that holds it"


# --- reading ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One timed case of a results file: the key fields and what compare reads."""
    net: str
    variant: str
    runtime: str
    batch_size: int
    threads: int
    median: float | None
    per_image: float | None
    precision: str | None
    not_run: str | None

    @classmethod
    def of(cls, row):
        return cls(**{**{f.name: row.get(f.name) for f in fields(cls)},
                      "threads": row.get("threads") or 1})

    @property
    def key(self):
        return (self.net, self.variant, self.runtime, self.batch_size, self.threads)

    @property
    def timed(self):
        return not self.not_run and self.median is not None


def load(paths):
    """Read results.json files or report folders; return their results, checked, in order.

    Each result gets ``source`` (the file it came from). Bad input is a one-line
    QuantlabError: a missing path, a folder without results.json, a file that is not JSON
    or not quantlab results, a schema this version cannot read, or two results of one
    machine name (one column per machine: name machines apart with QUANTLAB_MACHINE).
    """
    loaded = []
    for given in paths:
        path = Path(given)
        try:  # a name too long or a loop of links raises on the first look
            path, content = _read_results(path)
        except OSError as error:
            raise QuantlabError(f"cannot read {path}: {error.strerror}; {_FIX}") from None
        try:
            # Plain JSON only: nothing in the file is run. NaN and Infinity (which Python's
            # json writes for them) become missing numbers, refused where a number is needed.
            results = json.loads(content, parse_constant=lambda name: None)
        except (ValueError, RecursionError) as error:
            raise QuantlabError(f"{path} is not JSON ({str(error).splitlines()[0][:80]}); "
                                f"{_FIX}") from None
        if not isinstance(results, dict):
            raise _not_results(path, "not a JSON object")
        results["source"] = str(path)
        loaded.append(results)
    _machines(loaded)
    return loaded


def _read_results(path):
    """(the results.json at ``path`` or in the folder ``path``, its bytes)."""
    if path.is_dir():
        if not (path / "results.json").is_file():
            raise QuantlabError(f"{path} holds no results.json; {_FIX}")
        path = path / "results.json"
    elif not path.exists():
        raise QuantlabError(f"{path} does not exist; {_FIX}")
    elif not path.is_file():
        raise QuantlabError(f"{path} is not a file; {_FIX}")
    if path.stat().st_size > MAX_BYTES:
        raise QuantlabError(f"{path} is larger than {MAX_BYTES >> 20} MiB, more than any "
                            f"results.json quantlab writes; {_FIX}")
    return path, path.read_bytes()


def _not_results(where, what):
    what = safe_text.one_line(what)[:200]  # field names come from the file: one line, short
    return QuantlabError(f"{where} is not a quantlab results file ({what}); {_FIX}")


def _where(results, number):
    source = results.get("source") if isinstance(results, dict) else None
    return source if isinstance(source, str) else f"results {number}"


def _upgraded(results, where):
    """``results`` of any schema quantlab wrote, checked and as the current schema."""
    if not isinstance(results, dict):
        raise _not_results(where, "not a JSON object")
    if not {"machine", "nets"} <= results.keys():
        raise _not_results(where, "no schema, machine, nets and cases")
    try:
        results = records.upgrade(results)
        records.check(results)
    except records.Newer as newer:
        raise QuantlabError(f"{where} has results.json schema {newer.found}; quantlab "
                            f"{quantlab.__version__} reads schemas 1 to {READS}: compare it "
                            f"with the quantlab that wrote it, or a newer one") from None
    except records.Invalid as error:
        raise _not_results(where, error) from None
    return results


def _machine(results, number):
    """One machine's results, checked and keyed for lookup; raises on anything malformed."""
    where = _where(results, number)
    results = _upgraded(results, where)
    machine = results["machine"]
    cpu, versions = machine.get("cpu") or {}, machine.get("versions") or {}
    dataset, config = results.get("dataset") or {}, results.get("config") or {}
    record = {
        "name": machine.get("name"), "source": results.get("source"), "host": machine.get("host"),
        "cpu": {"model": cpu.get("model") or "unknown",
                **{key: cpu.get(key) for key in ("available_cores", "logical_cores", "mhz")},
                "flags": sorted(k for k, v in (cpu.get("flags") or {}).items() if v is True),
                "caches": dict(cpu.get("caches") or {})},
        "versions": {k: v for k, v in versions.items() if v},
        "threads": machine.get("threads"),
        "counter_backend": machine.get("counter_backend"),
        "runtimes": list(results.get("runtimes") or []),
        "dataset": dataset.get("name") if isinstance(dataset.get("name"), str) else None,
        "test_images": dataset.get("test"),
        "quick": config.get("quick") is True,
        "quantlab": results.get("quantlab"),
        # every ratio of that study is against it (schema 4 records it; upgrade fills older files)
        "reference": "{variant} on {runtime}".format(**results.get("reference") or {
            "variant": defaults.REFERENCE, "runtime": defaults.REFERENCE_RUNTIME}),
        "artifacts": {(net, variant): {"sha256": meta["sha256"], "bytes": meta.get("bytes")}
                      for net, entry in results["nets"].items()
                      for variant, meta in (entry.get("artifacts") or {}).items()},
        "cases": _once(((case.key, case) for case in map(Case.of, results["cases"])), where,
                       "case"),
        "accuracy": _once((((row["net"], row["variant"], row["runtime"]), row)
                           for row in results.get("accuracy") or []), where, "accuracy row"),
    }
    if record["name"] is None:  # written before machines had names: the CPU and the folder
        source = Path(record["source"]) if isinstance(record["source"], str) else None
        label = (source.parent.name if source.name == "results.json" else source.name) if source else ""
        record["name"] = f"{record['cpu']['model']} ({label})" if label else record["cpu"]["model"]
    # As every report shows it (one line, whitespace collapsed, no control characters): two
    # machines whose names look the same are one name.
    record["name"] = safe_text.one_line(record["name"])
    return record


def _once(pairs, where, what):
    """{key: value} of ``pairs``; a key given twice would hide one of its values: refused."""
    found = {}
    for key, value in pairs:
        if found.setdefault(key, value) is not value:
            raise _not_results(where, f"two {what}s for {' '.join(map(str, key))}")
    return found


def _machines(results_list):
    """Checked records of every machine, one per name."""
    if not results_list:
        raise QuantlabError(f"no results to compare; {_FIX}")
    machines = [_machine(results, number) for number, results in enumerate(results_list, 1)]
    seen = {}
    for machine in machines:
        first = seen.setdefault(machine["name"], machine)
        if first is not machine:
            both = (first["source"] or "one result", machine["source"] or "another")
            same = Path(both[0]).resolve() == Path(both[1]).resolve()
            raise QuantlabError(
                f"{both[0]} is given twice; give each machine's results once" if same else
                f"{both[0]} and {both[1]} both come from machine {machine['name']!r}, and each "
                f"machine is one column: compare one of them, or run the other study with "
                f"its own name (QUANTLAB_MACHINE=NAME quantlab run ...)")
    return machines


# --- the comparison ---------------------------------------------------------------------------
#
# Its cost grows linearly with the cases (a file may hold hundreds of thousands): every case
# is found by its key in a dict, every order is a dict of positions, and nothing loops over
# all cases once per net, batch size or case.

def _rank(values, known=()):
    """{name: position}: the ``known`` names in their canonical order, then the others as
    first seen."""
    first = {value: number for number, value in enumerate(dict.fromkeys(values))}
    canonical = {name: number for number, name in enumerate(known)}
    ordered = sorted(first, key=lambda v: (canonical.get(v, len(canonical)), first[v]))
    return {value: number for number, value in enumerate(ordered)}


def _nets(machines):
    return list(dict.fromkeys(net for m in machines for net, _ in m["artifacts"])
                | dict.fromkeys(key[0] for m in machines for key in m["cases"]))


def _case_keys(machines):
    """Every case any machine has: by net, batch, threads, runtime, variant."""
    keys = {key for m in machines for key in m["cases"]}
    nets = _rank(_nets(machines))
    runtimes = _rank((k[2] for k in keys), RUNTIMES)
    variants = _rank((k[1] for k in keys), VARIANTS)
    return sorted(keys, key=lambda k: (nets[k[0]], k[3], k[4], runtimes[k[2]], variants[k[1]]))


def _reference_key(key):
    net, variant, runtime, batch, threads = key
    return (net, variant_table.float_counterpart(variant), runtime, batch, threads)


def _timed(case):
    return case is not None and case.timed


def _speedup(machine, key):
    """Times faster than the float32 of the same file format, same runtime, same machine."""
    reference_key = _reference_key(key)
    if reference_key == key:
        return None
    case, reference = machine["cases"].get(key), machine["cases"].get(reference_key)
    return reference.median / case.median if _timed(case) and _timed(reference) else None


def _case_entries(machines):
    entries = []
    for key in _case_keys(machines):
        net, variant, runtime, batch, threads = key
        entry = {"net": net, "variant": variant, "runtime": runtime, "batch_size": batch,
                 "threads": threads, "reference": _reference_key(key)[1], "machines": {}}
        for machine in machines:
            case = machine["cases"].get(key)
            if case is None:
                continue
            if case.not_run:
                entry["machines"][machine["name"]] = {"not_run": str(case.not_run)}
            else:
                entry["machines"][machine["name"]] = {
                    "median": case.median, "per_image": case.per_image,
                    "precision": case.precision, "speedup": _speedup(machine, key)}
        entries.append(entry)
    return entries


def _keeps_accuracy(machine, case):
    """Within the tolerance; on unlabelled images, an agreement that bounds the loss within it."""
    row = machine["accuracy"].get((case.net, case.variant, case.runtime))
    return row is None or row.get("not_run") or worst_change(row) >= -ACCURACY_TOLERANCE


def _fastest_entries(machines):
    """Per net, batch size and threads: each machine's fastest option, and the fastest machine."""
    candidates = {}  # {(net, batch, threads): {machine name: [cases]}}
    for machine in machines:
        for key, case in machine["cases"].items():
            if _timed(case) and _keeps_accuracy(machine, case):
                candidates.setdefault((key[0], key[3], key[4]), {}).setdefault(
                    machine["name"], []).append(case)
    entries = []
    for net, batch, threads in dict.fromkeys((k[0], k[3], k[4]) for k in _case_keys(machines)):
        best = {}
        for machine in machines:
            options = candidates.get((net, batch, threads), {}).get(machine["name"])
            if options:
                case = min(options, key=lambda c: c.median)
                row = machine["accuracy"].get((net, case.variant, case.runtime)) or {}
                best[machine["name"]] = {"variant": case.variant, "runtime": case.runtime,
                                         "median": case.median,
                                         "delta_points": row.get("delta_points")}
        if not best:
            continue
        ranked = sorted(best, key=lambda name: best[name]["median"])
        entry = {"net": net, "batch_size": batch, "threads": threads, "machines": best,
                 "fastest": ranked[0], "ahead": None, "next": None}
        if len(ranked) > 1:
            entry["ahead"] = best[ranked[1]]["median"] / best[ranked[0]]["median"]
            entry["next"] = ranked[1]
        entries.append(entry)
    return entries


def _accuracy_entries(machines):
    keys = list(dict.fromkeys(key for m in machines for key in m["accuracy"]))
    nets, runtimes = _rank(_nets(machines)), _rank((k[2] for k in keys), RUNTIMES)
    variants = _rank((k[1] for k in keys), VARIANTS)
    keys.sort(key=lambda k: (nets.get(k[0], len(nets)), variants[k[1]], runtimes[k[2]]))
    entries = []
    for net, variant, runtime in keys:
        entry = {"net": net, "variant": variant, "runtime": runtime, "machines": {}}
        for machine in machines:
            row = machine["accuracy"].get((net, variant, runtime))
            if row is None:
                continue
            sha = (machine["artifacts"].get((net, variant)) or {}).get("sha256")
            entry["machines"][machine["name"]] = (
                {"not_run": str(row["not_run"])} if row.get("not_run") else
                {"accuracy": row["accuracy"], "delta_points": row["delta_points"],
                 "agreement": row["agreement"], "sha256": sha})
        entries.append(entry)
    return entries


def _artifact_entries(machines):
    keys = list(dict.fromkeys(key for m in machines for key in m["artifacts"]))
    nets, variants = _rank(_nets(machines)), _rank((k[1] for k in keys), VARIANTS)
    keys.sort(key=lambda k: (nets[k[0]], variants[k[1]]))
    entries = []
    for net, variant in keys:
        found = {m["name"]: m["artifacts"][(net, variant)] for m in machines
                 if (net, variant) in m["artifacts"]}
        groups = {}
        for name, meta in found.items():
            groups.setdefault(meta["sha256"], []).append(name)
        entries.append({"net": net, "variant": variant, "machines": found,
                        "same": len(groups) == 1 if len(found) > 1 else None,
                        "groups": list(groups.values())})
    return entries


def _machine_entry(machine):
    return {k: v for k, v in machine.items() if k not in ("artifacts", "cases", "accuracy")}


def compare(results_list, out, progress=print, force=False):
    """Write compare.md, compare.json and the plots of ``results_list`` into ``out``.

    ``results_list``: results dicts as ``quantlab run`` writes them (``load`` reads them
    from files). Returns the comparison, as written to compare.json. The output folder must
    be new, empty or written by quantlab before (else ``force``).
    """
    from quantlab import compare_report
    from quantlab.output import prepare_output, writing

    machines = _machines(results_list)
    out = Path(out)
    prepare_output(out, force)
    progress(f"comparing {len(machines)} machine(s): {', '.join(m['name'] for m in machines)}")
    comparison = {
        "schema": SCHEMA, "quantlab": quantlab.__version__,
        "machines": [_machine_entry(m) for m in machines],
        "accuracy_tolerance": ACCURACY_TOLERANCE,
        "nets": _nets(machines),
        "cases": _case_entries(machines),
        "fastest": _fastest_entries(machines),
        "accuracy": _accuracy_entries(machines),
        "artifacts": _artifact_entries(machines),
    }
    comparison["warnings"] = compare_report.read_first(comparison)
    comparison["findings"] = compare_report.findings(comparison)
    with writing(out):
        plot = compare_report.speedup_plot(comparison, out, progress)
        comparison["plots"] = [plot] if plot else []
        text = compare_report.markdown(comparison)  # before either file: both, or neither, new
        cache.write_json(out / "compare.json", comparison)
        with cache.atomic_file(out / "compare.md") as tmp:
            tmp.write_text(text)
    progress(f"comparison: {out / 'compare.md'}")
    return comparison
