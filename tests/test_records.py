"""The field table and schema history of results.json, on stored files of every schema.

tests/data/results/v3.json is a real quick study's results.json (digits, dense, float32 and
int8 on LiteRT, batch 1, one thread); v2.json and v1.json are the same results in the layouts
quantlab wrote them in before (schema 2 as it was first written, and the first layout, which
had no schema key), made by the inverse of each upgrade step. v4.json is a real quick study
of a user's ONNX model on a folder of PNG images (tests/test_user_model.py's Keras net,
exported channels first with its normalization folded in). v5.json is a real quick study of
digits (dense; float32 and int8 on LiteRT, their ONNX files on ONNX Runtime; batch 1, one
thread) whose speed-ups compare fastest rounds; v6.json the same study made again, whose
speed-ups compare lower quartiles of rounds.
"""

import copy
import json
from pathlib import Path

import pytest

from conftest import one_line_error, quantlab
from quantlab import records, stamps
from quantlab.counters import result as counter_result
from quantlab.defaults import REFERENCE, REFERENCE_RUNTIME

SCHEMA = records.SCHEMA

STORED = Path(__file__).parent / "data" / "results"


def _stored(version):
    return json.loads((STORED / f"v{version}.json").read_text())


def _tables():
    return {"": records.TOP, "machine.": records.MACHINE, "case": records.CASE,
            "accuracy": records.ACCURACY, "cpu": records.CPU, "artifact": records.ARTIFACT,
            "dataset": records.DATASET, "speedup": records.SPEEDUP,
            "interleaved": records.INTERLEAVED}


def test_every_schema_has_its_history_and_an_upgrade_step():
    assert SCHEMA == 6
    assert sorted(records.HISTORY) == list(range(1, SCHEMA + 1))
    assert sorted(records._STEPS) == list(range(1, SCHEMA))
    for table in _tables().values():
        for field in table:
            assert field.check in records._CHECKS and field.meaning and 1 <= field.since <= SCHEMA


def test_each_stored_file_holds_only_what_its_schema_wrote():
    """What the table says came later is absent from an older file (and present in v3)."""
    for version in range(1, SCHEMA + 1):
        results = _stored(version)
        assert records.version(results) == version
        later = {f.name for f in records.TOP if f.since > version}
        assert not later & results.keys()
        if version == 1:
            figures = [f for entry in results["nets"].values()
                       for batches in entry["latency"].values() for f in batches.values()]
            assert figures and not {f.name for f in records.CASE if f.since > 1} & set().union(*figures)
        assert not {f.name for f in records.MACHINE if f.since > version} & results["machine"].keys()
    # schema 2 as first written lacked what was added later without a bump
    assert not {"interleaved", "speedup", "window_median", "threads_busy"} & _stored(2)["cases"][0].keys()
    assert {"interleaved", "speedup", "window_median", "threads_busy"} <= _stored(3)["cases"][0].keys()


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_file_upgrades_to_the_same_numbers_with_the_rest_not_recorded(version):
    current, upgraded = _stored(3), records.upgrade(_stored(version))
    records.check(upgraded)
    assert upgraded["schema"] == SCHEMA
    key = ("net", "variant", "runtime", "batch_size", "threads", "median", "per_image", "p99")
    assert [[c[k] for k in key] for c in upgraded["cases"]] == [[c[k] for k in key] for c in current["cases"]]
    row = ("net", "variant", "runtime", "accuracy", "delta_points", "agreement")
    assert [[r[k] for k in row] for r in upgraded["accuracy"]] == [[r[k] for k in row]
                                                                   for r in current["accuracy"]]
    for case in upgraded["cases"]:
        assert case["interleaved"] is records.NOT_RECORDED and case["threads_busy"] is records.NOT_RECORDED
    assert upgraded["machine"]["name"] is records.NOT_RECORDED
    assert upgraded["deployment"] is records.NOT_RECORDED
    assert {f.name for f in records.TOP} <= upgraded.keys()


def test_schema_2_as_written_last_is_schema_3():
    """Schema 2 gained fields without a bump; its last layout is what schema 3 names."""
    late = _stored(3)
    late["schema"] = 2
    assert records.upgrade(late) == records.upgrade(_stored(3))


def test_a_stored_user_model_study_reads_as_schema_4_with_its_own_reference():
    """v4.json: a quick study of an ONNX classifier (channels first, normalized input) on a
    folder of PNG images: its reference is its own float32 on ONNX Runtime."""
    stored = records.upgrade(_stored(4))
    records.check(stored)
    assert stored["reference"] == {"variant": "onnx_float32", "runtime": "onnxruntime"}
    assert stored["model"]["format"] == "onnx" and len(stored["model"]["sha256"]) == 64
    assert stored["dataset"]["labelled"] is True and stored["dataset"]["calibration"] >= 1


def test_older_speedups_keep_their_numbers_and_say_they_were_medians_of_ratios():
    stored = _stored(3)
    upgraded = records.upgrade(stored)
    records.check(upgraded)
    pairs = [(old["speedup"], new["speedup"]) for old, new in zip(stored["cases"], upgraded["cases"])
             if old.get("speedup")]
    assert pairs
    for old, new in pairs:
        assert new == {"value": old["median"], "low": old["low"], "high": old["high"],
                       "rounds": old["rounds"], "confidence": old["confidence"],
                       "method": "median of per-round ratios"}


def _timed_and_reference(stored):
    timed = [c for c in stored["cases"] if c.get("speedup")]
    reference = next(c for c in stored["cases"] if (c["variant"], c["runtime"]) ==
                     (REFERENCE, REFERENCE_RUNTIME))
    assert timed
    return timed, reference["interleaved"]["seconds"]


def test_a_stored_schema_5_study_keeps_its_fastest_round_speedups_when_upgraded():
    """v5.json: a real quick study (digits, dense, float32 and int8 on LiteRT and ONNX
    Runtime, batch 1, one thread): each speed-up is its reference's fastest round over the
    case's, within its interval, and says so; its lower quartiles were not recorded."""
    stored = _stored(5)
    upgraded = records.upgrade(stored)
    records.check(upgraded)
    assert [{k: v for k, v in c.items() if k != "lower_quartile"} for c in upgraded["cases"]] \
        == stored["cases"]
    timed, reference = _timed_and_reference(upgraded)
    for case in timed:
        speedup, rounds = case["speedup"], case["interleaved"]["seconds"]
        assert speedup["method"] == "fastest rounds" and case["fastest"] == min(rounds)
        assert case["lower_quartile"] is records.NOT_RECORDED
        shared = min(len(rounds), len(reference))
        assert speedup["value"] == pytest.approx(min(reference[:shared]) / min(rounds[:shared]))
        assert speedup["low"] <= speedup["value"] <= speedup["high"]


def test_a_stored_schema_6_study_compares_lower_quartiles():
    """v6.json: the same study made again: each speed-up is its reference's lower quartile
    of rounds over the case's (the ceil(n/4)-th fastest of the n rounds they shared)."""
    stored = _stored(6)
    assert records.upgrade(stored) == stored
    records.check(stored)
    timed, reference = _timed_and_reference(stored)

    def quartile(seconds):
        return sorted(seconds)[-(-len(seconds) // 4) - 1]

    for case in timed:
        speedup, rounds = case["speedup"], case["interleaved"]["seconds"]
        assert speedup["method"] == "lower quartiles" and case["lower_quartile"] == quartile(rounds)
        shared = min(len(rounds), len(reference))
        assert speedup["rounds"] == shared
        assert speedup["value"] == pytest.approx(quartile(reference[:shared]) / quartile(rounds[:shared]))
        assert speedup["low"] <= speedup["value"] <= speedup["high"]


def test_a_speedup_without_its_value_or_with_a_wild_one_is_refused():
    edited = copy.deepcopy(_stored(SCHEMA))
    number = next(i for i, c in enumerate(edited["cases"]) if c.get("speedup"))
    del edited["cases"][number]["speedup"]["value"]
    with pytest.raises(records.Invalid, match=rf"cases\[{number}\]\.speedup\.value is missing"):
        records.check(edited)
    edited["cases"][number]["speedup"]["value"] = 1e300
    with pytest.raises(records.Invalid, match=rf"cases\[{number}\]\.speedup\.value is 1e\+300"):
        records.check(edited)


def test_accuracy_may_be_null_only_where_the_images_had_no_labels():
    unlabelled = copy.deepcopy(_stored(4))
    for row in unlabelled["accuracy"]:
        row.update(accuracy=None, delta_points=None)
    with pytest.raises(records.Invalid, match=r"accuracy\[0\]\.accuracy is not a number"):
        records.check(unlabelled)
    unlabelled["dataset"]["labelled"] = False
    records.check(unlabelled)
    unlabelled["accuracy"][0]["agreement"] = None  # agreement stands in: it must be there
    with pytest.raises(records.Invalid, match=r"accuracy\[0\]\.agreement is not a number"):
        records.check(unlabelled)


def test_a_reference_that_is_not_a_variant_and_runtime_is_refused():
    edited = copy.deepcopy(_stored(4))
    edited["reference"] = {"variant": "onnx float32", "runtime": "onnxruntime"}
    with pytest.raises(records.Invalid, match="reference.variant is not a plain name"):
        records.check(edited)
    edited["reference"] = ["onnx_float32", "onnxruntime"]
    with pytest.raises(records.Invalid, match="reference is not an object"):
        records.check(edited)


def test_schema_3_upgrades_with_litert_float32_as_its_reference_and_no_user_model():
    """Every study before schema 4 was against LiteRT float32, on quantlab's own nets."""
    upgraded = records.upgrade(_stored(3))
    records.check(upgraded)
    assert upgraded["reference"] == {"variant": REFERENCE, "runtime": REFERENCE_RUNTIME}
    new = {field.name for field in records.TOP if field.since == 4} - {"reference"}
    assert new >= {"model", "sensitivity"}
    assert all(upgraded[name] is records.NOT_RECORDED for name in new)
    assert upgraded["dataset"]["labelled"] is records.NOT_RECORDED
    assert {k: v for k, v in upgraded.items()
            if k not in ("schema", "reference", "dataset", "cases", *new)} \
        == {k: v for k, v in _stored(3).items() if k not in ("schema", "dataset", "cases")}
    assert [{k: v for k, v in case.items() if k not in ("speedup", "lower_quartile")}
            for case in upgraded["cases"]] \
        == [{k: v for k, v in case.items() if k != "speedup"} for case in _stored(3)["cases"]]


def test_compare_reads_a_stored_file_of_every_schema_and_two_schemas_together(tmp_path):
    files = [str(STORED / f"v{version}.json") for version in range(1, SCHEMA + 1)]
    for number, given in enumerate([*[[f] for f in files], [files[0], files[2]]]):
        out = tmp_path / f"out{number}"
        done = quantlab("compare", *given, "--out", str(out))
        assert done.returncode == 0, done.stderr[-2000:]
        comparison = json.loads((out / "compare.json").read_text())
        stored = [records.upgrade(json.loads(Path(f).read_text())) for f in given]
        for machine, results in zip(comparison["machines"], stored):
            for case in results["cases"]:
                key = ("net", "variant", "runtime", "batch_size")
                entry = next(e for e in comparison["cases"] if [e[k] for k in key] == [case[k] for k in key])
                assert entry["machines"][machine["name"]]["median"] == case["median"]
    assert [m["name"] for m in comparison["machines"]] == ["AMD EPYC (v1.json)", "vm (AMD EPYC)"]


def _written(tmp_path, results):
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(results))
    return str(path)


def test_a_newer_schema_is_refused_in_one_line_naming_it_and_the_fix(tmp_path):
    newer = _stored(3)
    newer["schema"] = SCHEMA + 1
    line = one_line_error(quantlab("compare", _written(tmp_path, newer), "--out", str(tmp_path / "out")),
                          f"schema {SCHEMA + 1}", f"reads schemas 1 to {SCHEMA}",
                          "compare it with the quantlab that wrote it, or a newer one")
    assert "edited.json" in line and not (tmp_path / "out").exists()


@pytest.mark.parametrize("version, edit, fragment", [
    (3, lambda r: r["machine"]["cpu"].update(mhz="fast"), "machine.cpu.mhz is not a number"),
    (2, lambda r: r["machine"].update(host=["a"]), "machine.host is not a name"),
    (2, lambda r: r["cases"][1].update(runtime="lite rt"), "cases[1].runtime is not a plain name"),
    (1, lambda r: r["nets"]["dense"]["latency"]["int8"]["1"].update(median=-1), "cases[1].median is -1"),
    (1, lambda r: r["nets"]["dense"].update(latency=[]), "nets.dense.latency is not an object"),
    (1, lambda r: r.update(cases=[]), "no schema, but cases as schema 2"),
    (3, lambda r: r.update(schema="3"), "schema '3' is not a schema version"),
    # The rounds a speed-up comes from: a crafted zero would divide by it.
    (6, lambda r: r["cases"][1]["interleaved"]["seconds"].__setitem__(0, 0.0),
     "cases[1].interleaved.seconds[0] is 0: expected a number from 1e-09"),
    (6, lambda r: r["cases"][1]["interleaved"].update(seconds="fast"),
     "cases[1].interleaved.seconds is not a list of numbers"),
    (6, lambda r: r["cases"][1]["interleaved"].update(seconds=[]),
     "cases[1].interleaved.seconds is not a list of numbers"),
])
def test_a_field_of_the_wrong_type_is_refused_in_one_line_naming_it(tmp_path, version, edit, fragment):
    results = _stored(version)
    edit(results)
    one_line_error(quantlab("compare", _written(tmp_path, results), "--out", str(tmp_path / "out")),
                   "is not a quantlab results file", fragment)


def test_a_stamped_file_reads_back_and_anything_else_is_stale(tmp_path):
    path = tmp_path / "state.json"
    payload = [{"net": "dense", "median": 1e-3}]
    path.write_text(json.dumps(stamps.stamp("state", payload)))
    assert stamps.read_stamped(path, "state") == payload
    with pytest.raises(stamps.Stale, match="is not a stamped fleet file"):
        stamps.read_stamped(path, "fleet")
    older = copy.deepcopy(stamps.stamp("state", payload))
    older["schema"] = 0
    path.write_text(json.dumps(older))
    with pytest.raises(stamps.Stale, match="state version 0; this quantlab reads version 1"):
        stamps.read_stamped(path, "state")
    path.write_text(json.dumps(payload))  # as .state files were written before they had stamps
    with pytest.raises(stamps.Stale, match="is not a stamped state file"):
        stamps.read_stamped(path, "state")
    path.write_text('{"kind": "state", "schema": 1, "da')
    with pytest.raises(stamps.Stale, match="is unreadable"):
        stamps.read_stamped(path, "state")


def test_a_stage_stored_before_stamps_is_measured_again_and_stored_stamped(tmp_path):
    from quantlab.study import StudyConfig, stages

    config, rows, said = StudyConfig(out=tmp_path), [{"net": "dense", "variant": "int8",
                                                      "runtime": "litert", "accuracy": 0.9,
                                                      "delta_points": 0.0, "agreement": 1.0}], []
    path = stages.state_path(config, "eval", {"net": "dense"})
    path.parent.mkdir()
    path.write_text(json.dumps(rows))  # the shape the stage stores, without its stamp
    measured = stages._cached_stage(config, "eval", {"net": "dense"}, lambda: rows, said.append, "dense")
    assert measured == rows and said == [f"dense: stored result {path.name} is not what this stage "
                                         f"stores; measuring again"]
    assert json.loads(path.read_text()) == stamps.stamp("state", rows)
    assert stages._cached_stage(config, "eval", {"net": "dense"}, list, said.append, "dense") == rows


def test_a_file_people_read_keeps_its_fields_at_the_top(tmp_path):
    summary = {"machines": {"a": {"workers": 1}}, "tasks": []}
    (tmp_path / "fleet.json").write_text(json.dumps(stamps.stamp("fleet", summary)))
    stored = json.loads((tmp_path / "fleet.json").read_text())
    assert stored["tasks"] == [] and (stored["kind"], stored["schema"]) == ("fleet", 1)
    assert stamps.read_stamped(tmp_path / "fleet.json", "fleet") == summary


def test_a_counter_result_carries_its_version():
    part = {"per_inference": {"instructions": 1000}, "iterations": 5, "warmup": 1, "events": []}
    counted = counter_result.assemble("perf", part, artifact="m.tflite", batch_size=1, threads=1,
                                      kernels="xnnpack", seconds=0.5)
    assert counted["schema"] == counter_result.SCHEMA == 1
