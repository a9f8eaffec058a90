"""Per-layer sensitivity and mixed precision in the study: a quick study of the vit on the
digits, where full int8 loses far more than a point (78.6 -> 68.9 % after quick training),
finds the layers to keep in float, ships the mixed model as a variant that is scored and
timed like every other, and says so in results.json and the report."""

import json

import pytest

from conftest import FEW_ROUNDS, one_line_error, quantlab
from quantlab import mixed_precision, records
from quantlab.errors import QuantlabError
from quantlab.study import StudyConfig

# The cheapest study that still shows the fallback: TFLite's int8 on LiteRT alone, one batch
# size, one thread, nothing counted (ONNX Runtime's quantizers take the same path through
# quantlab.study.mixed, and NNCF's accuracy control costs 8-43 s a net).
VIT_STUDY = ("run", "--dataset", "digits", "--quick", "--nets", "vit", "--variants",
             "float32,int8", "--runtimes", "litert", "--batch-sizes", "1", "--threads", "1",
             "--counters", "off", "--max-drop", "1.5", *FEW_ROUNDS)


@pytest.fixture(scope="module")
def vit_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("vit") / "report"
    result = quantlab(*VIT_STUDY, "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text())


def test_the_vits_int8_needs_a_fallback_and_the_search_keeps_layers_in_float(vit_study):
    _, results = vit_study
    records.check(results)  # the new fields against the table
    entry = results["sensitivity"]["vit"]["int8"]
    ranking, search = entry["ranking"], entry["search"]
    assert ranking["drop_points"] > 1.5 and entry["fallback"].startswith("int8 loses")
    assert ranking["statistic"] == "rmse_over_scale"
    # A fallback was needed, so the worst layers were measured by what they regain.
    assert any(row["points_regained"] is not None for row in ranking["layers"])
    steps = search["steps"]
    assert steps[0]["tried"] is None and steps[0]["accuracy"] == pytest.approx(
        ranking["int8_accuracy"])
    assert search["kept_float"] == [step for step in steps if step["kept"]][-1]["float_layers"]
    assert search["kept_float"]  # at least one layer regained accuracy
    assert search["drop_points"] < ranking["drop_points"]  # what stayed regained accuracy
    assert search["max_drop"] == 1.5 == results["config"]["max_drop"]
    assert entry["mixed"]["variant"] == "int8_mixed"
    artifact = results["nets"]["vit"]["artifacts"]["int8_mixed"]
    assert artifact["sha256"] == entry["mixed"]["sha256"] and artifact["format"] == "tflite"


def test_the_mixed_variant_is_scored_and_timed_like_every_other(vit_study):
    _, results = vit_study
    scored = {row["variant"]: row for row in results["accuracy"]}
    assert {"float32", "int8", "int8_mixed"} <= scored.keys()
    # On the test images (never used to choose), the mixed model sits between int8 and float.
    assert scored["int8"]["accuracy"] < scored["int8_mixed"]["accuracy"]
    timed = {case["variant"] for case in results["cases"] if case.get("median")}
    assert {"float32", "int8", "int8_mixed"} <= timed


def test_the_report_shows_the_fallback_the_float_layers_and_the_front(vit_study):
    out, results = vit_study
    report = (out / "report.md").read_text()
    details = (out / "details.md").read_text()
    kept = results["sensitivity"]["vit"]["int8"]["search"]["kept_float"]
    assert "## Sensitivity" in report and "int8_mixed: layers kept in float: " in report
    assert all(layer in report for layer in kept)
    assert "against int8" in report  # the mixed model's speed beside int8's and float32's
    assert "the front, fastest first: " in report and "[plot](pareto_vit_b1.png)" in report
    assert (out / "pareto_vit_b1.png").read_bytes().startswith(b"\x89PNG")
    assert "## Sensitivity and mixed-precision search" in details
    assert "| step | kept in float |" in details


@pytest.mark.parametrize("given", ["-1", "nan", "lots"])
def test_a_max_drop_that_is_no_number_of_points_is_refused_in_one_line(given):
    one_line_error(quantlab("run", "--max-drop", given), "--max-drop", given)


def test_the_study_config_refuses_a_negative_max_drop_and_defaults_to_one_point():
    with pytest.raises(QuantlabError, match="max drop -0.5 is not accuracy points"):
        StudyConfig(max_drop=-0.5)
    assert StudyConfig().max_drop == mixed_precision.MAX_DROP == 1.0
