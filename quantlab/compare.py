"""The cross-machine report: several machines' ``results.json`` side by side.

    results = load(["laptop-report", "server/results.json"])   # files copied from anywhere
    comparison = compare(results, Path("fleet"))                # compare.md, compare.json, PNG

It reads results as data, checks every field it uses (a file may come from anywhere), and
measures nothing. A case is the same case on two machines when its net, variant, runtime,
batch size and threads match; every ratio is taken on one machine (a variant against the
float32 of its file format on the same runtime), so machines are compared by what
quantization buys on each, next to their absolute latencies. Which artifacts are the same
bytes on every machine is read from their sha256. ``compare_report`` turns the comparison
into words, tables and a plot.
"""

import json
import math
from pathlib import Path

import quantlab
from quantlab import cache, defaults, safe_text, tables, variant_table
from quantlab.defaults import RUNTIMES, VARIANTS
from quantlab.errors import QuantlabError

SCHEMA = 1  # of compare.json
READS = defaults.SCHEMA  # the results.json schema this module reads
MAX_BYTES = 64 * 1024 * 1024  # far above any study's results.json; refuses a huge file unread
ACCURACY_TOLERANCE = defaults.ACCURACY_TOLERANCE
_FIX = "give the results.json that `quantlab run` wrote, or the report folder that holds it"
# The range of each kind of quantity a results file may hold, far wider than any study
# measures (a nanosecond to an hour per batch, up to a TiB): a number outside it is an edited
# or damaged file, and would overflow to infinity or divide by zero in the ratios below.
PLAUSIBLE = {
    "seconds": (1e-9, 3600.0),
    "bytes": (1, 1 << 40),
    "count": (1, 1e9),  # images, cores, threads, batch sizes
    "MHz": (1, 1e6),
    "fraction": (0, 1),  # accuracy, agreement
    "points": (-100, 100),  # accuracy change
}


# --- reading ----------------------------------------------------------------------------------

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
        try:
            content = path.read_bytes()
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


def _not_results(where, what):
    what = " ".join(str(what).split())[:200]  # field names come from the file: one line, short
    return QuantlabError(f"{where} is not a quantlab results file ({what}); {_FIX}")


def _where(results, number):
    source = results.get("source") if isinstance(results, dict) else None
    return source if isinstance(source, str) else f"results {number}"


def _check_schema(results, where):
    if not isinstance(results, dict):
        raise _not_results(where, "not a JSON object")
    schema = results.get("schema")
    if schema is None and {"quantlab", "machine", "nets"} <= results.keys():
        raise QuantlabError(f"{where} was written by a quantlab before results.json had a "
                            f"schema version, which {quantlab.__version__} cannot compare; run "
                            f"that study again with quantlab {quantlab.__version__}")
    if schema is None or not {"machine", "cases", "nets"} <= results.keys():
        raise _not_results(where, "no schema, machine, nets and cases")
    if schema != READS:
        newer = isinstance(schema, int) and schema > READS
        raise QuantlabError(
            f"{where} has results.json schema {schema}; quantlab {quantlab.__version__} reads "
            f"schema {READS}: " + ("compare with the quantlab that wrote it" if newer
                                   else f"run that study again with quantlab {quantlab.__version__}"))


class _Checker:
    """Type checks that name the field of a hostile or edited file in one line."""

    def __init__(self, where):
        self.where = where

    def fail(self, field, what):
        raise _not_results(self.where, f"{field} {what}")

    def mapping(self, value, field):
        if not isinstance(value, dict):
            self.fail(field, "is not an object")
        return value

    def items(self, value, field):
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.fail(field, "is not a list of objects")
        return value

    def text(self, value, field, optional=False):
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value or len(value) > 300 or not value.isprintable():
            self.fail(field, "is not a name")
        return value

    def plain(self, value, field):
        """A name that quantlab itself gives (a variant, a runtime): a plain name."""
        if not safe_text.is_plain_name(value):
            self.fail(field, "is not a plain name")
        return value

    def number(self, value, field, kind, optional=False, whole=False):
        """A number of ``kind`` (a key of PLAUSIBLE), within its range."""
        if value is None and optional:
            return None
        low, high = PLAUSIBLE[kind]
        number = not isinstance(value, bool) and isinstance(value, int if whole else (int, float))
        if not number or not math.isfinite(value) or not low <= value <= high:
            shown = f"is {value:g}" if number else "is not a number"
            self.fail(field, f"{shown}: expected a {'whole ' if whole else ''}number from "
                             f"{low:g} to {high:g} ({kind})")
        return value


def _names(check, row, field):
    """The net, variant and runtime of a case or an accuracy row."""
    check.text(row.get("net"), f"{field}.net")
    check.plain(row.get("variant"), f"{field}.variant")
    check.plain(row.get("runtime"), f"{field}.runtime")


def _machine(results, number):
    """One machine's results, checked and keyed for lookup; raises on anything malformed."""
    where = _where(results, number)
    _check_schema(results, where)
    check = _Checker(where)
    machine = check.mapping(results["machine"], "machine")
    cpu = check.mapping(machine.get("cpu") or {}, "machine.cpu")
    versions = check.mapping(machine.get("versions") or {}, "machine.versions")
    for key, value in versions.items():
        check.text(value, f"machine.versions.{key}", optional=True)
    dataset = check.mapping(results.get("dataset") or {}, "dataset")
    config = check.mapping(results.get("config") or {}, "config")
    runtimes = results.get("runtimes") or []
    if not isinstance(runtimes, list):
        check.fail("runtimes", "is not a list")
    record = {
        "name": check.text(machine.get("name"), "machine.name", optional=True),
        "source": check.text(results.get("source"), "source", optional=True),
        "host": check.text(machine.get("host"), "machine.host", optional=True),
        "cpu": {"model": check.text(cpu.get("model"), "machine.cpu.model", optional=True) or "unknown",
                "available_cores": check.number(cpu.get("available_cores"),
                                                "machine.cpu.available_cores", "count", optional=True),
                "logical_cores": check.number(cpu.get("logical_cores"), "machine.cpu.logical_cores",
                                              "count", optional=True),
                "mhz": check.number(cpu.get("mhz"), "machine.cpu.mhz", "MHz", optional=True),
                "flags": sorted(k for k, v in check.mapping(cpu.get("flags") or {},
                                                            "machine.cpu.flags").items() if v is True),
                "caches": {k: check.number(v, f"machine.cpu.caches.{k}", "bytes") for k, v in
                           check.mapping(cpu.get("caches") or {}, "machine.cpu.caches").items()}},
        "versions": {k: v for k, v in versions.items() if v},
        "threads": check.number(machine.get("threads"), "machine.threads", "count", optional=True),
        "counter_backend": check.text(machine.get("counter_backend"), "machine.counter_backend",
                                      optional=True),
        "runtimes": [check.plain(r, "runtimes") for r in runtimes],
        "dataset": check.text(dataset.get("name"), "dataset.name", optional=True),
        "test_images": check.number(dataset.get("test"), "dataset.test", "count", optional=True),
        "quick": config.get("quick") is True,
        "quantlab": check.text(results.get("quantlab"), "quantlab", optional=True),
        "artifacts": {}, "cases": {}, "accuracy": {},
    }
    for net, entry in check.mapping(results["nets"], "nets").items():
        files = check.mapping(check.mapping(entry, f"nets.{net}").get("artifacts") or {},
                              f"nets.{net}.artifacts")
        for variant, meta in files.items():
            field = f"nets.{net}.artifacts.{variant}"
            check.mapping(meta, field)
            sha = check.text(meta.get("sha256"), f"{field}.sha256")
            if len(sha) != 64 or not all(c in "0123456789abcdef" for c in sha):
                check.fail(f"{field}.sha256", "is not a sha256")
            record["artifacts"][(check.text(net, "net"), check.plain(variant, field))] = {
                "sha256": sha,
                "bytes": check.number(meta.get("bytes"), f"{field}.bytes", "bytes", optional=True)}
    for number, case in enumerate(check.items(results["cases"], "cases")):
        field = f"cases[{number}]"
        _names(check, case, field)
        check.number(case.get("batch_size"), f"{field}.batch_size", "count", whole=True)
        check.number(case.get("threads"), f"{field}.threads", "count", optional=True, whole=True)
        if not case.get("not_run"):
            check.number(case.get("median"), f"{field}.median", "seconds")
            check.number(case.get("per_image"), f"{field}.per_image", "seconds", optional=True)
            check.text(case.get("precision"), f"{field}.precision", optional=True)
        record["cases"][tables.case_key(case)] = case
    for number, row in enumerate(check.items(results.get("accuracy") or [], "accuracy")):
        field = f"accuracy[{number}]"
        _names(check, row, field)
        if not row.get("not_run"):
            for key, kind in (("accuracy", "fraction"), ("delta_points", "points"),
                              ("agreement", "fraction")):
                check.number(row.get(key), f"{field}.{key}", kind)
        record["accuracy"][(row["net"], row["variant"], row["runtime"])] = row
    if record["name"] is None:  # written before machines had names: the CPU and the folder
        source = Path(record["source"]) if record["source"] else None
        label = (source.parent.name if source.name == "results.json" else source.name) if source else ""
        record["name"] = f"{record['cpu']['model']} ({label})" if label else record["cpu"]["model"]
    return record


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
    return case is not None and not case.get("not_run") and case.get("median")


def _speedup(machine, key):
    """Times faster than the float32 of the same file format, same runtime, same machine."""
    reference_key = _reference_key(key)
    if reference_key == key:
        return None
    case, reference = machine["cases"].get(key), machine["cases"].get(reference_key)
    return reference["median"] / case["median"] if _timed(case) and _timed(reference) else None


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
            if case.get("not_run"):
                entry["machines"][machine["name"]] = {"not_run": str(case["not_run"])}
            else:
                entry["machines"][machine["name"]] = {
                    "median": case["median"], "per_image": case.get("per_image"),
                    "precision": case.get("precision"), "speedup": _speedup(machine, key)}
        entries.append(entry)
    return entries


def _keeps_accuracy(machine, case):
    row = machine["accuracy"].get((case["net"], case["variant"], case["runtime"]))
    return row is None or row.get("not_run") or row["delta_points"] >= -ACCURACY_TOLERANCE


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
                case = min(options, key=lambda c: c["median"])
                row = machine["accuracy"].get((net, case["variant"], case["runtime"])) or {}
                best[machine["name"]] = {"variant": case["variant"], "runtime": case["runtime"],
                                         "median": case["median"],
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
    from quantlab.output import prepare_output

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
    plot = compare_report.speedup_plot(comparison, out, progress)
    comparison["plots"] = [plot] if plot else []
    cache.write_json(out / "compare.json", comparison)
    with cache.atomic_file(out / "compare.md") as tmp:
        tmp.write_text(compare_report.markdown(comparison))
    progress(f"comparison: {out / 'compare.md'}")
    return comparison
