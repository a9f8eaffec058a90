"""The cross-machine report: several machines' ``results.json`` side by side.

    results = load(["laptop-report", "server/results.json"])   # files copied from anywhere
    comparison = compare(results, Path("fleet"))                # compare.md, compare.json, PNG

It reads results as data and measures nothing. A case is the same case on two machines when
its net, variant, runtime, batch size and threads match; every ratio is taken on one machine
(a variant against the float32 of its file format on the same runtime), so machines are
compared by what quantization buys on each, next to their absolute latencies. Whether the
machines ran the same bytes is checked by sha256 and said first where they did not. Every
sentence is generated from the numbers, never written by hand.
"""

import json
import math
from pathlib import Path

import quantlab
from quantlab import cache, tables
from quantlab.defaults import REFERENCE, REFERENCE_RUNTIME, RUNTIMES, VARIANTS
from quantlab.errors import QuantlabError

SCHEMA = 1  # of compare.json
READS = 2  # the results.json schema this module reads (quantlab.study.SCHEMA)
MAX_BYTES = 64 * 1024 * 1024  # far above any study's results.json; refuses a huge file unread
HEADLINE = "int8"  # the variant of the "does int8 pay?" table and plot
ACCURACY_TOLERANCE = 1.0  # points: a faster option that loses more is not "fastest"
TIE = 1.05  # a machine less than 5 % ahead is not called faster: timing varies that much
_FIX = "give the results.json that `quantlab run` wrote, or the report folder that holds it"


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
            # Plain JSON only: nothing in the file is run. NaN and Infinity are not JSON.
            results = json.loads(path.read_bytes(), parse_constant=_no_constant)
        except (ValueError, RecursionError) as error:
            raise QuantlabError(f"{path} is not JSON ({str(error).splitlines()[0][:80]}); "
                                f"{_FIX}") from None
        if not isinstance(results, dict):
            raise _not_results(path, "not a JSON object")
        results["source"] = str(path)
        loaded.append(results)
    _machines(loaded)
    return loaded


def _no_constant(name):
    raise ValueError(f"{name} is not a number JSON allows")


def _not_results(where, what):
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
        if not isinstance(value, str) or not value or len(value) > 300:
            self.fail(field, "is not a name")
        return value

    def number(self, value, field, optional=False, positive=False):
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or (positive and value <= 0):
            self.fail(field, f"is not a {'positive ' if positive else ''}number")
        return value

    def whole(self, value, field, optional=False):
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.fail(field, "is not a whole number of at least 1")
        return value


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
                                                "machine.cpu.available_cores", optional=True),
                "logical_cores": check.number(cpu.get("logical_cores"), "machine.cpu.logical_cores",
                                              optional=True),
                "mhz": check.number(cpu.get("mhz"), "machine.cpu.mhz", optional=True),
                "flags": sorted(k for k, v in check.mapping(cpu.get("flags") or {},
                                                            "machine.cpu.flags").items() if v is True),
                "caches": {k: check.number(v, f"machine.cpu.caches.{k}") for k, v in
                           check.mapping(cpu.get("caches") or {}, "machine.cpu.caches").items()}},
        "versions": {k: v for k, v in versions.items() if v},
        "threads": check.number(machine.get("threads"), "machine.threads", optional=True),
        "counter_backend": check.text(machine.get("counter_backend"), "machine.counter_backend",
                                      optional=True),
        "runtimes": [check.text(r, "runtimes") for r in runtimes],
        "dataset": check.text(dataset.get("name"), "dataset.name", optional=True),
        "test_images": check.number(dataset.get("test"), "dataset.test", optional=True),
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
            record["artifacts"][(check.text(net, "net"), check.text(variant, "variant"))] = {
                "sha256": sha, "bytes": check.number(meta.get("bytes"), f"{field}.bytes", optional=True)}
    for number, case in enumerate(check.items(results["cases"], "cases")):
        field = f"cases[{number}]"
        for key in ("net", "variant", "runtime"):
            check.text(case.get(key), f"{field}.{key}")
        check.whole(case.get("batch_size"), f"{field}.batch_size")
        check.whole(case.get("threads"), f"{field}.threads", optional=True)
        if not case.get("not_run"):
            check.number(case.get("median"), f"{field}.median", positive=True)
            check.number(case.get("per_image"), f"{field}.per_image", optional=True)
            check.text(case.get("precision"), f"{field}.precision", optional=True)
        record["cases"][tables.case_key(case)] = case
    for number, row in enumerate(check.items(results.get("accuracy") or [], "accuracy")):
        field = f"accuracy[{number}]"
        for key in ("net", "variant", "runtime"):
            check.text(row.get(key), f"{field}.{key}")
        if not row.get("not_run"):
            for key in ("accuracy", "delta_points", "agreement"):
                check.number(row.get(key), f"{field}.{key}")
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

def _order(values, known):
    """Known names in their canonical order, then the others as first seen."""
    values = list(dict.fromkeys(values))
    return sorted(values, key=lambda v: (known.index(v) if v in known else len(known), values.index(v)))


def _nets(machines):
    return list(dict.fromkeys(net for m in machines for net, _ in m["artifacts"])
                | dict.fromkeys(key[0] for m in machines for key in m["cases"]))


def _case_keys(machines):
    """Every case any machine has: by net, batch, threads, runtime, variant."""
    keys = {key for m in machines for key in m["cases"]}
    nets = _nets(machines)
    runtimes = _order((k[2] for k in keys), list(RUNTIMES))
    variants = _order((k[1] for k in keys), list(VARIANTS))
    return sorted(keys, key=lambda k: (nets.index(k[0]), k[3], k[4], runtimes.index(k[2]),
                                       variants.index(k[1])))


def _reference_key(key):
    net, variant, runtime, batch, threads = key
    return (net, tables.float_counterpart(variant), runtime, batch, threads)


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
    entries = []
    for net, batch, threads in dict.fromkeys((k[0], k[3], k[4]) for k in _case_keys(machines)):
        best = {}
        for machine in machines:
            options = [c for k, c in machine["cases"].items() if (k[0], k[3], k[4]) == (net, batch, threads)
                       and _timed(c) and _keeps_accuracy(machine, c)]
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
                 "fastest": ranked[0], "ahead": None}
        if len(ranked) > 1:
            entry["ahead"] = best[ranked[1]]["median"] / best[ranked[0]]["median"]
            entry["next"] = ranked[1]
        entries.append(entry)
    return entries


def _accuracy_entries(machines):
    keys = list(dict.fromkeys(key for m in machines for key in m["accuracy"]))
    nets, runtimes = _nets(machines), _order((k[2] for k in keys), list(RUNTIMES))
    variants = _order((k[1] for k in keys), list(VARIANTS))
    keys.sort(key=lambda k: (nets.index(k[0]) if k[0] in nets else len(nets),
                             variants.index(k[1]), runtimes.index(k[2])))
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
    nets, variants = _nets(machines), _order((k[1] for k in keys), list(VARIANTS))
    keys.sort(key=lambda k: (nets.index(k[0]), variants.index(k[1])))
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
    from quantlab import study

    machines = _machines(results_list)
    out = Path(out)
    study.prepare_output(out, force)
    progress(f"comparing {len(machines)} machine(s): {', '.join(m['name'] for m in machines)}")
    comparison = {
        "schema": SCHEMA, "quantlab": quantlab.__version__,
        "machines": [_machine_entry(m) for m in machines],
        "nets": _nets(machines),
        "cases": _case_entries(machines),
        "fastest": _fastest_entries(machines),
        "accuracy": _accuracy_entries(machines),
        "artifacts": _artifact_entries(machines),
    }
    comparison["warnings"] = warnings(comparison)
    comparison["findings"] = findings(comparison)
    comparison["plots"] = [name for name in [int8_plot(comparison, out)] if name]
    cache.write_json(out / "compare.json", comparison)
    with cache.atomic_file(out / "compare.md") as tmp:
        tmp.write_text(markdown(comparison))
    progress(f"comparison: {out / 'compare.md'}")
    return comparison


# --- sentences --------------------------------------------------------------------------------

def _and(items):
    items = list(items)
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def _times(gains):
    """Speed-ups (times faster) in P17's words: ``2.8x faster``, ``2.5-3.4x faster``,
    ``1.2x slower``, ``from 1.2x slower to 2.0x faster``; equal ends are one number."""
    low, high = min(gains), max(gains)
    if low < 1 < high:
        if f"{1 / low:.1f}" == f"{high:.1f}" == "1.0":
            return "as fast (1.0x)"
        return f"from {tables.speed_ratio(1, 1 / low)} to {tables.speed_ratio(1, 1 / high)}"
    word = "faster" if low >= 1 else "slower"
    ends = sorted((g if low >= 1 else 1 / g for g in (low, high)))
    low_text, high_text = f"{ends[0]:.1f}", f"{ends[1]:.1f}"
    return f"{low_text}x {word}" if low_text == high_text else f"{low_text}-{high_text}x {word}"


def _where_cases(cases):
    """``conv at batch 1, 8 and medium at batch 1``: the cases, grouped by net."""
    by_net = {}
    for net, batch, threads in cases:
        by_net.setdefault(net, []).append(f"{batch}" + (f" ({threads} threads)" if threads != 1 else ""))
    return _and(f"{net} at batch {', '.join(batches)}" for net, batches in by_net.items())


def _names(comparison):
    return [m["name"] for m in comparison["machines"]]


def warnings(comparison):
    """What changes the meaning of every comparison below: said first, in bold."""
    said = []
    split = {}
    for entry in comparison["artifacts"]:
        if entry["same"] is False:
            pattern = " / ".join(", ".join(group) for group in entry["groups"])
            split.setdefault(pattern, {}).setdefault(entry["net"], []).append(entry["variant"])
    for pattern, nets in split.items():
        which = _and(f"{net} ({', '.join(variants)})" for net, variants in nets.items())
        said.append(f"**Different weights**: the artifacts of {which} are not the same bytes on "
                    f"every machine (machines with the same sha256: {pattern}); for these, speed "
                    f"and accuracy compare different files, not only different machines.")
    datasets = {m["name"]: m["dataset"] for m in comparison["machines"]}
    if len(set(datasets.values())) > 1:
        said.append("**Different data**: the machines studied different datasets ("
                    + ", ".join(f"{d} on {n}" for n, d in datasets.items()) + ").")
    hosts = {}
    for machine in comparison["machines"]:
        if machine["host"]:
            hosts.setdefault(machine["host"], []).append(machine["name"])
    for names in hosts.values():
        if len(names) > 1:
            said.append(f"**One CPU**: {_and(names)} ran on one physical host (the same host and "
                        f"boot id): what differs between them is run-to-run variation, not the CPU.")
    return said


def _speed_findings(comparison):
    """Per variant and runtime: what it buys on each machine, over the cases all measured."""
    groups = {}
    for entry in comparison["cases"]:
        gains = {name: m["speedup"] for name, m in entry["machines"].items() if m.get("speedup")}
        if gains:
            groups.setdefault((entry["variant"], entry["runtime"], entry["reference"]), []).append(
                ((entry["net"], entry["batch_size"], entry["threads"]), gains))
    said = []
    for (variant, runtime, reference), cases in groups.items():
        names = [n for n in _names(comparison) if any(n in gains for _, gains in cases)]
        common = [(where, gains) for where, gains in cases if all(n in gains for n in names)]
        scope = common if common else cases
        by_text = {}  # machines with the same numbers share one phrase
        for name in names:
            by_text.setdefault(_times([g[name] for _, g in scope if name in g]), []).append(name)
        per_machine = [f"{text} on {_and(which)}" for text, which in by_text.items()]
        line = f"{variant} on {runtime} against {reference} on {runtime}: {'; '.join(per_machine)}"
        line += (f" ({_where_cases(w for w, _ in scope)})" if common or len(names) == 1
                 else " (no case measured on all of them)")
        if len(names) > 1 and common:
            where, gains = max(common, key=lambda c: max(c[1].values()) / min(c[1].values()))
            if max(gains.values()) / min(gains.values()) >= 1.1:
                line += (f"; the machines differ most for {where[0]} at batch {where[1]}: "
                         + _and(f"{tables.speed_ratio(1, 1 / gains[n])} on {n}" for n in names))
        said.append(line + ".")
    return said


def _fastest_findings(comparison):
    """One line per machine and option that is fastest somewhere, listing where."""
    wins, ties = {}, []
    for entry in comparison["fastest"]:
        where = (entry["net"], entry["batch_size"], entry["threads"])
        if entry["ahead"] is None:
            continue
        if entry["ahead"] < TIE:
            ties.append(where)
            continue
        best = entry["machines"][entry["fastest"]]
        wins.setdefault((entry["fastest"], best["variant"], best["runtime"]), []).append(
            (where, entry["ahead"]))
    said = [f"{name} with {variant} on {runtime} is the fastest for "
            f"{_where_cases(w for w, _ in cases)}, "
            f"{_times([a for _, a in cases]).replace('faster', 'ahead of the next machine')}."
            for (name, variant, runtime), cases in wins.items()]
    if ties:
        said.append(f"No machine is {100 * (TIE - 1):.0f} % ahead of the next for "
                    f"{_where_cases(ties)}: there their fastest options tie within timing noise.")
    return said


def _accuracy_findings(comparison):
    """The same bytes on the same data should score the same: say whether they did."""
    if len({m["dataset"] for m in comparison["machines"]}) > 1:
        return []
    same, differ = 0, []
    for entry in comparison["accuracy"]:
        files = {}
        for name, scored in entry["machines"].items():
            if "accuracy" in scored and scored["sha256"]:
                files.setdefault(scored["sha256"], {})[name] = scored["accuracy"]
        for scores in files.values():
            if len(scores) < 2:
                continue
            if len(set(scores.values())) == 1:
                same += 1
            else:
                differ.append(f"{entry['net']} {entry['variant']} on {entry['runtime']} ("
                              + ", ".join(f"{a:.4f} on {n}" for n, a in scores.items()) + ")")
    said = [f"The same bytes give the same top-1 accuracy on every machine in {same} case(s)."] if same else []
    if differ:
        said.append(f"The same bytes give different top-1 accuracy on different machines: "
                    f"{'; '.join(differ)}.")
    return said


def _coverage_findings(comparison):
    """What not every machine measured: the tables show it as –."""
    said = []
    for what, field in (("nets", "net"), ("variants", "variant"), ("runtimes", "runtime"),
                        ("batch sizes", "batch_size"), ("thread counts", "threads")):
        have = {n: list(dict.fromkeys(str(e[field]) for e in comparison["cases"]
                                      if n in e["machines"])) for n in _names(comparison)}
        if len({tuple(sorted(v)) for v in have.values()}) > 1:
            said.append(f"Not every machine measured the same {what}: "
                        + "; ".join(f"{', '.join(v) or 'none'} on {n}" for n, v in have.items())
                        + " (– in the tables).")
    versions = {}
    for machine in comparison["machines"]:
        for key, value in machine["versions"].items():
            versions.setdefault(key, {})[machine["name"]] = value
    names = _names(comparison)
    differ = [f"{key} " + ", ".join(f"{by.get(n, '–')} on {n}" for n in names)
              for key, by in versions.items() if len(set(by.values())) > 1 or len(by) < len(names)]
    if differ:
        said.append(f"Software differs: {'; '.join(differ)}.")
    return said


def findings(comparison):
    """Statements derived from the numbers of the compared results (never hand-written)."""
    return (_speed_findings(comparison) + _fastest_findings(comparison)
            + _accuracy_findings(comparison) + _coverage_findings(comparison))


# --- the Markdown report ----------------------------------------------------------------------

def _cell(text):
    """A value from a results file, safe inside a table cell (no | or line break)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _size(n):
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} B"


def machine_table(comparison):
    """One column per machine: CPU, cores, clock, caches, ISA flags, software."""
    machines = comparison["machines"]
    first_on_host = {}
    for m in machines:
        first_on_host.setdefault(m["host"], m["name"])

    def host(m):
        if not m["host"]:
            return "–"
        shown = m["host"].split("/")[0]
        first = first_on_host[m["host"]]
        return shown if first == m["name"] else f"{shown} (same host as {first})"

    rows = [
        ["CPU"] + [m["cpu"]["model"] for m in machines],
        ["cores available / logical"] + [f"{m['cpu']['available_cores'] or '?'} / "
                                         f"{m['cpu']['logical_cores'] or '?'}" for m in machines],
        ["clock"] + [f"{m['cpu']['mhz']:.0f} MHz" if m["cpu"]["mhz"] else "–" for m in machines],
        ["caches"] + [", ".join(f"{k.upper().replace('D', 'd')} {_size(v)}" for k, v in m["cpu"]["caches"].items()) or "–"
                      for m in machines],
        ["ISA flags"] + [", ".join(m["cpu"]["flags"]) or "none found" for m in machines],
        ["inference threads"] + [str(m["threads"] or "–") for m in machines],
        ["runtimes"] + [", ".join(m["runtimes"]) or "–" for m in machines],
        ["counters"] + [m["counter_backend"] or "off" for m in machines],
        ["host"] + [host(m) for m in machines],
        ["dataset"] + [f"{m['dataset'] or '?'} ({'quick' if m['quick'] else 'full'} training)"
                       for m in machines],
    ]
    keys = list(dict.fromkeys(k for m in machines for k in m["versions"]))
    rows += [[key] + [m["versions"].get(key, "–") for m in machines] for key in keys]
    rows.append(["results"] + [m["source"] or "–" for m in machines])
    return tables.markdown_table([""] + [_cell(m["name"]) for m in machines],
                                 [[_cell(c) for c in row] for row in rows])


def _batch_label(entry):
    return f"{entry['batch_size']}" + (f" ({entry['threads']} threads)" if entry["threads"] != 1 else "")


def _latency_cell(measured):
    if measured is None:
        return "–"
    if "not_run" in measured:
        return "failed"
    cell = tables.seconds(measured["median"])
    return cell + (f" ({tables.speed_ratio(1, 1 / measured['speedup'])})" if measured["speedup"] else "")


def headline_variant(comparison):
    """``int8``, or the first variant that ran in int8 when no machine has it."""
    variants = [e["variant"] for e in comparison["cases"]]
    if HEADLINE in variants:
        return HEADLINE
    return next((e["variant"] for e in comparison["cases"] if any(
        m.get("precision") == "int8" for m in e["machines"].values())), None)


def int8_table(comparison, variant):
    """Per net and batch: what ``variant`` buys over float32 on each machine and runtime."""
    names = _names(comparison)
    rows = {}
    for entry in comparison["cases"]:
        if entry["variant"] != variant:
            continue
        row = rows.setdefault((entry["net"], _batch_label(entry)), {n: [] for n in names})
        for name, measured in entry["machines"].items():
            if measured.get("speedup"):
                row[name].append(f"{entry['runtime']} {tables.speed_ratio(1, 1 / measured['speedup'])}")
    return tables.markdown_table(["net", "batch"] + [_cell(n) for n in names],
                                 [[_cell(net), batch] + [", ".join(row[n]) or "–" for n in names]
                                  for (net, batch), row in rows.items()])


def fastest_table(comparison):
    names = _names(comparison)
    rows = []
    for entry in comparison["fastest"]:
        cells = []
        for name in names:
            best = entry["machines"].get(name)
            cells.append("–" if best is None else
                         f"{_cell(best['variant'])} on {_cell(best['runtime'])}, "
                         f"{tables.seconds(best['median'])}")
        winner = _cell(entry["fastest"])
        if entry["ahead"]:
            winner += f", {entry['ahead']:.2f}x ahead of {_cell(entry['next'])}"
        rows.append([_cell(entry["net"]), _batch_label(entry)] + cells + [winner])
    return tables.markdown_table(["net", "batch"] + [_cell(n) for n in names] + ["fastest"], rows)


def latency_table(comparison, net):
    names = _names(comparison)
    rows = [[_batch_label(e), _cell(e["runtime"]), _cell(e["variant"])]
            + [_latency_cell(e["machines"].get(n)) for n in names]
            for e in comparison["cases"] if e["net"] == net]
    return tables.markdown_table(["batch", "runtime", "variant"] + [_cell(n) for n in names], rows)


def accuracy_table(comparison):
    names = _names(comparison)

    def cell(scored):
        if scored is None:
            return "–"
        if "not_run" in scored:
            return "failed"
        return (f"{scored['accuracy']:.4f} ({scored['delta_points']:+.2f} points, "
                f"{100 * scored['agreement']:.1f} % agree)")

    return tables.markdown_table(
        ["net", "variant", "runtime"] + [_cell(n) for n in names],
        [[_cell(e["net"]), _cell(e["variant"]), _cell(e["runtime"])]
         + [cell(e["machines"].get(n)) for n in names] for e in comparison["accuracy"]])


def _artifact_summary(comparison):
    shared = [e for e in comparison["artifacts"] if e["same"] is not None]
    differ = sum(e["same"] is False for e in shared)
    return (f"{len(shared)} artifact(s) are on more than one machine; "
            + (f"**{differ} of them are not the same bytes everywhere**." if differ else
               "all of them are the same bytes everywhere.")
            + " Below, the first 12 hex digits of each file's sha256 on each machine.")


def artifact_table(comparison):
    names = _names(comparison)
    verdict = {True: "yes", False: "**no**", None: "(on one machine)"}
    return tables.markdown_table(
        ["net", "variant"] + [_cell(n) for n in names] + ["same bytes"],
        [[_cell(e["net"]), _cell(e["variant"])]
         + [e["machines"][n]["sha256"][:12] if n in e["machines"] else "–" for n in names]
         + [verdict[e["same"]]] for e in comparison["artifacts"]])


def not_run_lines(comparison):
    reasons = {}
    for entry in comparison["cases"]:
        for name, measured in entry["machines"].items():
            if "not_run" in measured:
                reasons.setdefault((name, measured["not_run"]), []).append(
                    f"{entry['net']} {entry['variant']} on {entry['runtime']} b{entry['batch_size']}")
    return [f"- {_cell(name)}: {_cell(reason)}: {_cell(', '.join(which))}"
            for (name, reason), which in reasons.items()]


def markdown(comparison):
    """The whole cross-machine report as Markdown."""
    names = _names(comparison)
    variant = headline_variant(comparison)
    parts = [f"# quantlab compare: {len(names)} machine(s) side by side",
             "Machines: " + _and(_cell(n) for n in names) + "."]
    if comparison["warnings"]:
        parts += ["## Read this first", "\n".join(f"- {line}" for line in comparison["warnings"])]
    parts += ["## Machines", machine_table(comparison),
              "## Findings", "\n".join(f"- {line}" for line in comparison["findings"]) or "- none"]
    if variant:
        parts += [f"## Does {variant} pay?",
                  f"{variant} against the float32 of the same file format on the same runtime, "
                  f"on each machine (–: not measured there).", int8_table(comparison, variant)]
    parts += ["## Fastest machine and runtime",
              f"Per net and batch size, each machine's fastest option among those within "
              f"{ACCURACY_TOLERANCE:g} accuracy point of {REFERENCE} (median latency of one "
              f"batch), and the fastest machine.", fastest_table(comparison),
              "## Every variant against float32",
              "Median latency of one batch on each machine; in brackets, against the float32 of "
              "the same file format on the same runtime and machine (the reference of the "
              f"study itself is {REFERENCE} on {REFERENCE_RUNTIME}). –: that machine did not "
              "measure the case; failed: the runtime could not run it there."]
    for net in comparison["nets"]:
        if any(e["net"] == net for e in comparison["cases"]):
            parts += [f"### {_cell(net)}", latency_table(comparison, net)]
    parts += ["## Accuracy",
              "Top-1 accuracy on the test split, change against float32 in points, and top-1 "
              "agreement with float32, on each machine.", accuracy_table(comparison),
              "## Are the artifacts the same bytes?", _artifact_summary(comparison),
              artifact_table(comparison)]
    failed = not_run_lines(comparison)
    if failed:
        parts += ["## Could not run", "\n".join(failed)]
    if comparison["plots"]:
        parts += ["## Plots"] + [f"![{name[:-4]}]({name})" for name in comparison["plots"]]
    return "\n\n".join(parts) + "\n"


# --- the plot ---------------------------------------------------------------------------------

def int8_plot(comparison, folder):
    """Per net: the headline variant's speed-up over float32, per batch size, one bar per
    machine (colour) and runtime (hatch). Returns the file name, or None with nothing to draw."""
    variant = headline_variant(comparison)
    cases = [e for e in comparison["cases"] if e["variant"] == variant
             and any(m.get("speedup") for m in e["machines"].values())]
    if not cases:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers and in CI
    import matplotlib.pyplot as plt

    nets = list(dict.fromkeys(e["net"] for e in cases))
    names = _names(comparison)
    hatches = ["", "//", "..", "xx", "\\\\", "oo"]
    figure, axes = plt.subplots(1, len(nets), figsize=(5.2 * len(nets), 4.2), squeeze=False)
    for axis, net in zip(axes[0], nets):
        mine = [e for e in cases if e["net"] == net]
        batches = list(dict.fromkeys(_batch_label(e) for e in mine))
        runtimes = list(dict.fromkeys(e["runtime"] for e in mine))
        bars = [(n, r) for n in names for r in runtimes
                if any(e["runtime"] == r and (e["machines"].get(n) or {}).get("speedup") for e in mine)]
        width = 0.8 / len(bars)
        for i, (name, runtime) in enumerate(bars):
            gains = []
            for batch in batches:
                entry = next((e for e in mine if e["runtime"] == runtime and _batch_label(e) == batch), None)
                gains.append(((entry["machines"].get(name) or {}).get("speedup") if entry else None) or 0)
            axis.bar([b + (i - (len(bars) - 1) / 2) * width for b in range(len(batches))], gains, width,
                     color=f"C{names.index(name) % 10}", hatch=hatches[runtimes.index(runtime) % len(hatches)],
                     edgecolor="black", linewidth=0.4, label=f"{name}, {runtime}")
        axis.axhline(1.0, color="black", linewidth=0.8)
        axis.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
        axis.set(title=f"{net}: {variant} vs float32", ylabel="x faster than float32, same runtime")
        axis.grid(True, axis="y", alpha=0.3)
        axis.legend(fontsize=6)
    figure.tight_layout()
    name = "compare_speedup.png"  # never a name from the inputs
    with cache.atomic_file(Path(folder) / name) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)
    return name
