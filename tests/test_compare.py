"""`quantlab compare` on the results of real quick studies, and on bad input.

Only one machine exists where these tests run: the studies run on one CPU and present as
machines through QUANTLAB_MACHINE. "laptop" and "server" are real quick studies on digits
(conftest: ``digits_study``, ``resumed_study``); "server" trains with another seed, so its
artifacts are other bytes. "desktop" is laptop's own results.json cut down to what a machine
that measured conv alone, on LiteRT at batch 1, would have written: the same bytes as
laptop's. The report must say both, and that all three share one physical host.
"""

import copy
import json
import shutil
from pathlib import Path

import pytest

from conftest import one_line_error, quantlab
from quantlab import compare, compare_report, tables
from quantlab.errors import QuantlabError

def _cut_down(results, name, net, variants, runtime, batch_size):
    """``results`` as a machine ``name`` that measured only these cases would have written them."""
    cut = copy.deepcopy(results)
    cut["machine"]["name"], cut["runtimes"] = name, [runtime]
    artifacts = results["nets"][net]["artifacts"]
    cut["nets"] = {net: {**results["nets"][net], "artifacts": {v: artifacts[v] for v in variants}}}
    cut["cases"] = [c for c in results["cases"] if (c["net"], c["runtime"], c["batch_size"]) ==
                    (net, runtime, batch_size) and c["variant"] in variants]
    cut["accuracy"] = [r for r in results["accuracy"]
                       if (r["net"], r["runtime"]) == (net, runtime) and r["variant"] in variants]
    return cut


@pytest.fixture(scope="module")
def studies(digits_study, resumed_study, tmp_path_factory):
    """{name: report folder} of laptop, server and desktop."""
    desktop = tmp_path_factory.mktemp("machines") / "desktop"
    desktop.mkdir()
    (desktop / "results.json").write_text(json.dumps(
        _cut_down(digits_study[2], "desktop", "conv", ("float32", "int8"), "litert", 1)))
    return {"laptop": digits_study[0], "server": resumed_study["out"], "desktop": desktop}


def _results(folder):
    return json.loads((folder / "results.json").read_text())


@pytest.fixture(scope="module")
def three(studies, tmp_path_factory):
    """The command run on all three: (its output folder, the process, compare.json, inputs)."""
    out = tmp_path_factory.mktemp("compared") / "fleet"
    result = quantlab("compare", str(studies["laptop"]), str(studies["server"] / "results.json"),
                      str(studies["desktop"]), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    inputs = {name: _results(folder) for name, folder in studies.items()}
    return out, result, json.loads((out / "compare.json").read_text()), inputs


def _batch(key):
    """The batch column of a case: its batch size, and its threads where not 1."""
    return str(key[3]) + (f" ({key[4]} threads)" if key[4] != 1 else "")


def _medians(results):
    return {tables.case_key(c): c["median"] for c in results["cases"] if c.get("median")}


def _section(markdown, heading):
    """The text under ``heading`` up to the next heading."""
    text = markdown.split(f"\n{heading}\n", 1)[1]
    return "\n".join(line for line in text.split("\n#", 1)[:1])


def _row(markdown, *cells):
    """The table row that starts with ``cells``."""
    start = "| " + " | ".join(cells) + " |"
    rows = [line for line in markdown.splitlines() if line.startswith(start)]
    assert len(rows) == 1, (start, rows)
    return [cell.strip() for cell in rows[0].strip("|").split(" | ")]


def test_the_command_prints_where_the_report_is_and_writes_it_all(three):
    out, result, comparison, _ = three
    assert result.stdout.strip() == str(out / "compare.md")
    assert "comparing 3 machine(s): laptop, server, desktop" in result.stderr
    assert [m["name"] for m in comparison["machines"]] == ["laptop", "server", "desktop"]
    assert comparison["plots"] == ["compare_speedup.png"]
    assert (out / "compare_speedup.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_each_machine_is_a_column_with_its_cpu_flags_cores_and_software(three):
    out, _, _, inputs = three
    report = (out / "compare.md").read_text()
    assert "|  | laptop | server | desktop |" in report
    cpu = inputs["laptop"]["machine"]["cpu"]
    assert _row(report, "CPU")[1:] == [cpu["model"]] * 3
    flags = _row(report, "ISA flags")[1]
    assert flags.split(", ") == sorted(f for f, present in cpu["flags"].items() if present)
    assert _row(report, "cores available / logical")[1] == f"{cpu['available_cores']} / {cpu['logical_cores']}"
    for key, version in inputs["server"]["machine"]["versions"].items():
        if version:
            assert _row(report, key)[2] == version
    assert _row(report, "runtimes")[1:] == [", ".join(inputs["laptop"]["runtimes"]), "litert, openvino",
                                             "litert"]
    assert "openvino" in inputs["laptop"]["runtimes"]


def test_latencies_and_ratios_are_the_numbers_of_the_inputs(three):
    out, _, comparison, inputs = three
    report = (out / "compare.md").read_text()
    entries = {(e["net"], e["variant"], e["runtime"], e["batch_size"], e["threads"]): e
               for e in comparison["cases"]}
    checked = 0
    for name, results in inputs.items():
        medians = _medians(results)
        for key, median in medians.items():
            measured = entries[key]["machines"][name]
            assert measured["median"] == median
            reference = medians.get((key[0], "float32", *key[2:]))
            if key[1] == "float32":
                assert measured["speedup"] is None
                continue
            assert measured["speedup"] == pytest.approx(reference / median)
            column = 3 + list(inputs).index(name)
            cell = _row(_section(report, f"### {key[0]}"), _batch(key), key[2], key[1])[column]
            assert cell == f"{tables.seconds(median)} ({tables.speed_ratio(reference, median)})"
            checked += 1
    # laptop and server: 2 nets x 2 batches x 2 runtimes x (2 and 1) quantized; desktop: 1;
    # at one thread, and at every core where a study timed that too
    at_one_thread = 2 * 2 * 2 * 2 + 2 * 2 * 2 + 1
    assert checked == sum(k[1] != "float32" for r in inputs.values() for k in _medians(r))
    assert checked >= at_one_thread


def test_a_case_that_a_machine_did_not_measure_is_a_dash(three):
    out, _, comparison, inputs = three
    conv = _section((out / "compare.md").read_text(), "### conv")
    server = _medians(inputs["server"])[("conv", "int8", "litert", 4, 1)]
    cells = _row(conv, "4", "litert", "int8")
    assert cells[3] == "–" and cells[5] == "–" and cells[4].startswith(tables.seconds(server) + " (")
    assert _row(conv, "8", "openvino", "dynamic_int8")[4:] == ["–", "–"]
    assert "Not every machine measured the same batch sizes: 1, 8 on laptop; 1, 4 on server; " \
           "1 on desktop" in "\n".join(comparison["findings"])


def test_different_artifacts_are_said_first_and_in_the_sha256_table(three):
    out, _, comparison, inputs = three
    report = (out / "compare.md").read_text()
    assert report.index("## Read this first") < report.index("## Machines")
    warnings = [w for w in comparison["warnings"] if w.startswith("**Different weights**")]
    assert any("conv (float32, int8)" in w and "laptop, desktop / server" in w for w in warnings)
    assert any("medium (float32, int8)" in w and "laptop / server" in w for w in warnings)
    for net in ("conv", "medium"):
        sha = {name: results["nets"][net]["artifacts"]["int8"]["sha256"]
               for name, results in inputs.items() if net in results["nets"]}
        assert sha["laptop"] != sha["server"]
        entry = next(e for e in comparison["artifacts"] if (e["net"], e["variant"]) == (net, "int8"))
        assert entry["same"] is False
        row = _row(report, net, "int8", sha["laptop"][:12])
        assert row[3] == sha["server"][:12] and row[-1] == "**no**"
    conv = next(e for e in comparison["artifacts"] if (e["net"], e["variant"]) == ("conv", "int8"))
    assert conv["groups"] == [["laptop", "desktop"], ["server"]]


def test_the_same_bytes_on_two_machines_are_recognised(studies, tmp_path):
    comparison = compare.compare(compare.load([studies["laptop"], studies["desktop"]]), tmp_path / "out",
                                 progress=lambda _: None)
    assert not any("Different weights" in w for w in comparison["warnings"])
    shared = [e for e in comparison["artifacts"] if e["same"] is not None]
    assert {(e["net"], e["variant"]) for e in shared} == {("conv", "float32"), ("conv", "int8")}
    assert all(e["same"] for e in shared)
    report = (tmp_path / "out" / "compare.md").read_text()
    assert "all of them are the same bytes everywhere" in report
    # The same bytes on the same test images: the same accuracy.
    same = "The same bytes give the same top-1 accuracy on every machine in 2 case(s)."
    assert same in comparison["findings"]


def test_one_physical_host_is_said_plainly(three):
    _, _, comparison, inputs = three
    assert len({r["machine"]["host"] for r in inputs.values()}) == 1
    assert any(w.startswith("**One CPU**: laptop, server and desktop ran on one physical host")
               for w in comparison["warnings"])


def _worded(gains):
    """A range of speed-ups as the findings word it."""
    low, high = min(gains), max(gains)
    if low < 1 < high:
        ends = tables.speed_ratio(1, 1 / low), tables.speed_ratio(1, 1 / high)
        if {e.split("x")[0] for e in ends} == {"1.0"}:
            return "as fast (1.0x)"
        return f"from {ends[0]} to {ends[1]}"
    word, ends = ("faster", (low, high)) if low >= 1 else ("slower", (1 / high, 1 / low))
    ends = f"{ends[0]:.1f}", f"{ends[1]:.1f}"
    return f"{ends[0]}x {word}" if ends[0] == ends[1] else f"{ends[0]}-{ends[1]}x {word}"


def test_findings_give_what_int8_buys_on_each_machine_from_the_inputs(three):
    _, _, comparison, inputs = three
    # The one case all three measured: int8 against float32 on litert, conv at batch 1.
    line = next(f for f in comparison["findings"] if f.startswith("int8 on litert against float32 on litert: "))
    for name, results in inputs.items():
        medians = _medians(results)
        worded = tables.speed_ratio(medians[("conv", "float32", "litert", 1, 1)],
                                    medians[("conv", "int8", "litert", 1, 1)])
        # faster or slower: whichever this CPU's kernels make it, the line says it as the inputs do
        assert f"{worded} on " in line and name in line.split(worded)[1].split(";")[0]
    assert "(conv at batch 1)" in line
    # A variant that only one machine ran on this runtime: its range over its own cases.
    medians = _medians(inputs["laptop"])
    keys = sorted((k for k in medians if k[1:3] == ("dynamic_int8", "openvino")),
                  key=lambda k: (("conv", "medium").index(k[0]), k[3], k[4]))
    own = [medians[(k[0], "float32", *k[2:])] / medians[k] for k in keys]
    where = " and ".join(f"{net} at batch " + ", ".join(_batch(k) for k in keys if k[0] == net)
                         for net in ("conv", "medium"))
    assert (f"dynamic_int8 on openvino against float32 on openvino: {_worded(own)} on laptop "
            f"({where}).") in comparison["findings"]


def test_the_fastest_machine_per_net_and_batch_comes_from_the_inputs(three):
    out, _, comparison, inputs = three
    report = (out / "compare.md").read_text()
    for net, batch in (("conv", 1), ("medium", 1)):
        best = {}
        for name, results in inputs.items():
            losing = {(r["net"], r["variant"], r["runtime"]) for r in results["accuracy"]
                      if r["delta_points"] < -comparison["accuracy_tolerance"]}
            options = [c for c in results["cases"] if c.get("median")
                       and (c["net"], c["batch_size"], c.get("threads") or 1) == (net, batch, 1)
                       and (c["net"], c["variant"], c["runtime"]) not in losing]
            if options:
                best[name] = min(options, key=lambda c: c["median"])
        winner = min(best, key=lambda n: best[n]["median"])
        entry = next(e for e in comparison["fastest"]
                     if (e["net"], e["batch_size"], e["threads"]) == (net, batch, 1))
        assert entry["fastest"] == winner
        row = _row(_section(report, "## Fastest machine and runtime"), net, str(batch))
        option = f"{best[winner]['variant']} on {best[winner]['runtime']}"
        assert row[2 + list(inputs).index(winner)] == f"{option}, {tables.seconds(best[winner]['median'])}"
        ahead = sorted(b["median"] for b in best.values())[1] / best[winner]["median"]
        assert row[-1].startswith(f"{winner}, {ahead:.2f}x ahead of ")
        said = "\n".join(comparison["findings"])
        if ahead >= compare_report.TIE:
            assert f"{winner} with {option} is the fastest for " in said
        else:
            assert "No machine is 5 % ahead of the next for" in said


def test_accuracy_is_side_by_side(three):
    out, _, _, inputs = three
    report = (out / "compare.md").read_text()
    for name, results in inputs.items():
        for row in results["accuracy"]:
            cells = _row(_section(report, "## Accuracy"), row["net"], row["variant"], row["runtime"])
            assert cells[3 + list(inputs).index(name)] == (
                f"{row['accuracy']:.4f} ({row['delta_points']:+.2f} points, "
                f"{100 * row['agreement']:.1f} % agree)")


def test_compare_is_a_plain_function_of_results_dicts(studies, tmp_path):
    """As a fleet calls it: dicts in memory, no file they came from."""
    laptop, server = _results(studies["laptop"]), _results(studies["server"])
    server["machine"]["name"] = "lab | rack 2"
    said = []
    comparison = compare.compare([laptop, server], tmp_path / "fleet", progress=said.append)
    assert [m["name"] for m in comparison["machines"]] == ["laptop", "lab | rack 2"]
    assert said[-1] == f"comparison: {tmp_path / 'fleet' / 'compare.md'}"
    assert "|  | laptop | lab \\| rack 2 |" in (tmp_path / "fleet" / "compare.md").read_text()
    with pytest.raises(QuantlabError, match="both come from machine 'laptop'"):
        compare.compare([laptop, _results(studies["laptop"])], tmp_path / "twice")
    assert not (tmp_path / "twice").exists()


def test_results_from_before_machine_names_are_labelled_by_cpu_and_folder(studies, tmp_path):
    """quantlab wrote schema 2 without machine name and host for a while: such files compare."""
    old = _results(studies["server"])
    del old["machine"]["name"], old["machine"]["host"]
    (tmp_path / "old-server").mkdir()
    (tmp_path / "old-server" / "results.json").write_text(json.dumps(old))
    comparison = compare.compare(compare.load([studies["laptop"], tmp_path / "old-server"]),
                                 tmp_path / "out", progress=lambda _: None)
    assert comparison["machines"][1]["name"] == f"{old['machine']['cpu']['model']} (old-server)"
    assert not any("One CPU" in w for w in comparison["warnings"])  # no host to tell


def test_a_stored_file_of_each_older_schema_compares_beside_a_study_of_today(studies, tmp_path):
    """tests/data/results: the same study as quantlab wrote it in the first layout and in
    schema 2; each is upgraded and compared with laptop's current results.json."""
    stored = Path(__file__).parent / "data" / "results"
    for version in (1, 2):
        out = tmp_path / f"v{version}"
        done = quantlab("compare", str(studies["laptop"]), str(stored / f"v{version}.json"), "--out", str(out))
        assert done.returncode == 0, done.stderr[-2000:]
        comparison = json.loads((out / "compare.json").read_text())
        old = comparison["machines"][1]
        assert old["name"] == f"AMD EPYC (v{version}.json)" and old["host"] is None
        dense = {e["variant"]: e["machines"] for e in comparison["cases"]
                 if (e["net"], e["runtime"], e["batch_size"], e["threads"]) == ("dense", "litert", 1, 1)}
        medians = _medians(_results_of(stored / "v3.json"))
        assert dense["int8"][old["name"]]["speedup"] == pytest.approx(
            medians[("dense", "float32", "litert", 1, 1)] / medians[("dense", "int8", "litert", 1, 1)])


def _results_of(path):
    return json.loads(path.read_text())


def test_an_output_folder_of_other_files_needs_force(studies, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    one_line_error(quantlab("compare", str(studies["laptop"]), str(studies["server"]), "--out", str(out)),
                   "--force")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    forced = quantlab("compare", str(studies["laptop"]), str(studies["server"]), "--out", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (out / "notes.txt").read_text() == "mine" and (out / "compare.md").is_file()
    again = quantlab("compare", str(studies["laptop"]), str(studies["server"]), "--out", str(out))
    assert again.returncode == 0, again.stderr  # written by quantlab now


def _edited(studies, folder, edit):
    results = _results(studies["server"])
    edit(results)
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(results))
    return folder


@pytest.mark.parametrize("make, fragments", [
    (lambda s, t: t / "nowhere", ["does not exist", "report folder"]),
    (lambda s, t: t, ["holds no results.json"]),
    (lambda s, t: s["laptop"] / "report.md", ["is not JSON"]),
    (lambda s, t: (t / "r.json").write_bytes(b"\xff\xfe{") and t / "r.json", ["is not JSON"]),
    (lambda s, t: (t / "r.json").write_text('[1, 2]') and t / "r.json", ["not a quantlab results file"]),
    (lambda s, t: (t / "r.json").write_text('{"benchmarks": []}') and t / "r.json",
     ["not a quantlab results file"]),
    (lambda s, t: _edited(s, t / "v4", lambda r: r.update(schema=compare.READS + 1)),
     [f"schema {compare.READS + 1}", f"reads schemas 1 to {compare.READS}", "or a newer one"]),
    (lambda s, t: _edited(s, t / "v1", lambda r: r.pop("schema")), ["no schema, but cases as schema 2"]),
    (lambda s, t: _edited(s, t / "host", lambda r: r["machine"].update(host=7)), ["machine.host is not a name"]),
    (lambda s, t: _edited(s, t / "bad", lambda r: r["cases"][0].update(median="fast")),
     ["cases[0].median is not a number: expected a number from 1e-09 to 3600 (seconds)"]),
    (lambda s, t: _edited(s, t / "nan", lambda r: r["cases"][0].update(median=float("nan"))),
     ["cases[0].median is not a number: expected a number from 1e-09 to 3600 (seconds)"]),
    (lambda s, t: _edited(s, t / "sha", lambda r: r["nets"]["conv"]["artifacts"]["int8"].update(sha256="x")),
     ["nets.conv.artifacts.int8.sha256"]),
    (lambda s, t: shutil.copytree(s["server"], t / "copy"),
     ["both come from machine 'server'", "QUANTLAB_MACHINE"]),
    (lambda s, t: s["server"] / "results.json", ["is given twice"]),
    (lambda s, t: t / ("x" * 300), ["cannot read", "File name too long"]),
])
def test_bad_input_is_one_line_and_writes_nothing(studies, tmp_path, make, fragments):
    bad = make(studies, tmp_path)
    out = tmp_path / "out"
    one_line_error(quantlab("compare", str(studies["server"]), str(bad), "--out", str(out)), *fragments)
    assert not out.exists()


# --- hand-made results files: the smallest a machine could have written ---------------------

def _minimal(name, cases, **fields):
    """results.json of machine ``name`` that timed ``cases`` (net, variant, batch, median)."""
    return {"schema": compare.READS, "machine": {"name": name}, "nets": {},
            "cases": [{"net": net, "variant": variant, "runtime": "litert", "batch_size": batch,
                       "median": median} for net, variant, batch, median in cases], **fields}


def _written(folder, results):
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(results))
    return folder


@pytest.mark.parametrize("edit, fragment", [
    (lambda r: r["cases"][1].update(median=5e-324),
     "cases[1].median is 4.94066e-324: expected a number from 1e-09 to 3600 (seconds)"),
    (lambda r: r["cases"][1].update(median=1e308),
     "cases[1].median is 1e+308: expected a number from 1e-09"),
    (lambda r: r["cases"][1].update(median=0), "cases[1].median is 0: expected a number from 1e-09"),
    (lambda r: r["cases"][1].update(per_image=-1e-3), "cases[1].per_image is -0.001"),
    (lambda r: r["cases"][1].update(batch_size=2**40),
     "cases[1].batch_size is 1.09951e+12: expected a whole number from 1 to 1e+09 (count)"),
    (lambda r: r["cases"][1].update(batch_size=1.5), "cases[1].batch_size is not a number"),
    (lambda r: r["machine"].update(cpu={"available_cores": 0}), "machine.cpu.available_cores is 0"),
    (lambda r: r["machine"].update(cpu={"caches": {"l2": 1e300}}), "machine.cpu.caches.l2 is 1e+300"),
    (lambda r: r["machine"].update(cpu={"mhz": "4.4 GHz"}), "machine.cpu.mhz is not a number"),
    (lambda r: r.update(accuracy=[{"net": "conv", "variant": "int8", "runtime": "litert",
                                   "accuracy": 2.0, "delta_points": 0, "agreement": 1}]),
     "accuracy[0].accuracy is 2: expected a number from 0 to 1 (fraction)"),
    (lambda r: r["cases"][1].update(median=10**400), "cases[1].median is a number beyond 1e300"),
    # The second row of a case would have hidden the first.
    (lambda r: r["cases"].append(dict(r["cases"][1], median=3.0)), "two cases for conv int8 litert 1 1"),
])
def test_quantities_outside_what_a_study_measures_are_refused_before_any_arithmetic(tmp_path, edit, fragment):
    """A median of 5e-324 made a speed-up of infinity, and its inverse a ZeroDivisionError."""
    bad = _minimal("edited", [("conv", "float32", 1, 2e-3), ("conv", "int8", 1, 1e-3)])
    edit(bad)
    good = _minimal("fine", [("conv", "float32", 1, 2e-3), ("conv", "int8", 1, 1e-3)])
    out = tmp_path / "out"
    one_line_error(quantlab("compare", str(_written(tmp_path / "fine", good)),
                            str(_written(tmp_path / "edited", bad)), "--out", str(out)),
                   "is not a quantlab results file", fragment, "give the results.json")
    assert not out.exists()


def test_the_plausible_ends_are_accepted_and_compared(tmp_path):
    fastest, slowest = compare.PLAUSIBLE["seconds"]
    results = [_minimal("a", [("conv", "float32", 1, slowest), ("conv", "int8", 1, fastest)]),
               _minimal("b", [("conv", "float32", 1, fastest), ("conv", "int8", 1, slowest)])]
    comparison = compare.compare(results, tmp_path / "out", progress=lambda _: None)
    gains = {name: m["speedup"] for name, m in comparison["cases"][1]["machines"].items()}
    assert gains == {"a": pytest.approx(slowest / fastest), "b": pytest.approx(fastest / slowest)}
    report = (tmp_path / "out" / "compare.md").read_text()
    assert "3600000000000.0x faster" in report and "3600000000000.0x slower" in report


def _lines_run(function, *args):
    """How many lines of quantlab's own code ``function(*args)`` executes: a count of its
    work that does not depend on how fast or busy the machine is."""
    import sys

    import quantlab

    package, executed = quantlab.__path__[0], [0]

    def local(frame, event, arg):
        executed[0] += event == "line"
        return local

    def on_call(frame, event, arg):
        return local if frame.f_code.co_filename.startswith(package) else None

    sys.settrace(on_call)
    try:
        function(*args)
    finally:
        sys.settrace(None)
    return executed[0]


def _many(name, count):
    """``count`` cases over count/40 nets and 20 batch sizes, float32 and int8 alternately."""
    return _minimal(name, [(f"net{i // 40}", ("float32", "int8")[i % 2], (i // 2) % 20 + 1,
                            (2e-3, 1e-3)[i % 2] * (1 + i % 7)) for i in range(count)])


def test_the_work_of_a_comparison_grows_linearly_with_the_cases(tmp_path):
    """180 000 cases took longer than 5 minutes when every net, batch size and case looked
    through all cases: twice the cases must be about twice the work, counted in lines run."""
    def work(count):
        results = [_many("a", count), _many("b", count)]
        return _lines_run(lambda: compare.compare(results, tmp_path / f"out{count}", progress=lambda _: None))

    small, large = work(2000), work(4000)
    assert 1.8 < large / small < 2.4, (small, large)  # quadratic work would be near 4x
    report = (tmp_path / "out4000" / "compare.md").read_text()
    assert report.count("\n### net") == 100  # each net's latency table, every case in one


def test_a_path_with_a_line_break_or_an_escape_is_one_line_of_plain_text(tmp_path):
    named = tmp_path / "nl\nquantlab: error: fake\x1b[31m"
    named.mkdir()
    result = quantlab("compare", str(named), "--out", str(tmp_path / "out"))
    one_line_error(result, "holds no results.json")
    assert len(result.stderr.strip().splitlines()) == 1 and "\x1b" not in result.stderr


def test_a_v1_batch_of_unicode_digits_is_refused_as_no_batch_size(tmp_path):
    results = json.loads((Path(__file__).parent / "data" / "results" / "v1.json").read_text())
    latency = results["nets"]["dense"]["latency"]["int8"]
    latency["\u00b2"] = latency.pop("1")  # "²": str.isdigit() says yes, int() says no
    one_line_error(quantlab("compare", str(_written(tmp_path / "v1", results)), "--out",
                            str(tmp_path / "out")), "batch_size is not a number")


def test_machines_whose_names_read_the_same_are_one_machine(tmp_path):
    cases = [("conv", "float32", 1, 2e-3), ("conv", "int8", 1, 1e-3)]
    one_line_error(quantlab("compare", str(_written(tmp_path / "a", _minimal("lab 1", cases))),
                            str(_written(tmp_path / "b", _minimal("lab  1", cases))),
                            "--out", str(tmp_path / "out")), "both come from machine 'lab 1'")


def _unlabelled(name, accuracy):
    rows = [{"net": "conv", "variant": variant, "runtime": "litert", "accuracy": accuracy,
             "delta_points": None, "agreement": 1.0} for variant in ("float32", "int8")]
    return _minimal(name, [("conv", "float32", 1, 2e-3), ("conv", "int8", 1, 1e-3)],
                    accuracy=rows, dataset={"name": "mine", "labelled": False})


def test_unlabelled_studies_compare_by_agreement_and_claim_no_accuracy(tmp_path):
    with_labels = _minimal("labelled", [("conv", "float32", 1, 2e-3), ("conv", "int8", 1, 1e-3)],
                           dataset={"name": "mine", "labelled": True},
                           accuracy=[{"net": "conv", "variant": "int8", "runtime": "litert",
                                      "accuracy": 0.9, "delta_points": -0.1, "agreement": 0.99}])
    results = [_unlabelled("a", None), _unlabelled("b", None), _unlabelled("c", 0.5), with_labels]
    comparison = compare.compare(results, tmp_path / "out", progress=lambda _: None)
    assert not [f for f in comparison["findings"] if "same top-1 accuracy" in f]
    report = (tmp_path / "out" / "compare.md").read_text()
    assert "0.5000 (100.0 % agree)" in report and "0.9000 (-0.10 points, 99.0 % agree)" in report


def test_machine_names_that_start_with_an_underscore_stay_in_the_legend(tmp_path):
    import warnings

    cases = [("conv", "float32", 1, 2e-3), ("conv", "int8", 1, 1e-3)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns of a legend it leaves empty
        comparison = compare.compare([_minimal("_x", cases), _minimal("_y", cases)],
                                     tmp_path / "out", progress=lambda _: None)
    assert comparison["plots"] == ["compare_speedup.png"]


def test_a_folder_where_the_report_goes_is_one_line(tmp_path):
    cases = [("conv", "float32", 1, 2e-3), ("conv", "int8", 1, 1e-3)]
    out = tmp_path / "out"
    (out / "compare.md").mkdir(parents=True)
    (out / ".quantlab-report").write_text("{}")
    one_line_error(quantlab("compare", str(_written(tmp_path / "a", _minimal("a", cases))),
                            "--out", str(out)), "compare.md", "a folder is in its place")
    long_out = tmp_path / ("o" * 300)
    one_line_error(quantlab("compare", str(tmp_path / "a"), "--out", str(long_out)),
                   "File name too long", "choose another with --out")
