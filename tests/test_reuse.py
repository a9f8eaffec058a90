"""Nothing is reused across a change of what it was computed from: the data (its full
content, not its name or folder), the code that trains and exports, and the shape of what a
stored result holds.

The end-to-end scenario is a quick study on an MNIST-format set made here, run three times
with one ``--out`` and one cache: on files A, then on files B under the same name (the same
first 64 images and every label the same, other images after them), then on A again with
some of A's stored results replaced by valid JSON of the wrong shape. The cache is given as
a relative path, as a careless user would. Counting is off there (it is keyed by the
artifacts' sha256, which the data changes); a stored count of the wrong shape is tried on
its own, on a tiny model.
"""

import ast
import importlib
import importlib.util
import inspect
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

import dataset_archives as archives
import quantlab
from conftest import FEW_ROUNDS, quick_config
from quantlab import cache, datasets, evaluate, runtime, study, training, variants
from quantlab.errors import QuantlabError
from quantlab.stamps import read_stamped, stamp

STUDY = ("run", "--dataset", "mnist", "--quick", "--nets", "conv", "--variants", "float32,int8",
         "--runtimes", "litert", "--batch-sizes", "1", "--threads", "1", "--counters", "off", *FEW_ROUNDS)
SAME_FIRST = 64  # images the two sets share at the start of each split


def two_sets():
    """Files A and B: the same labels and first 64 images of each split, other images after."""
    a = archives.mnist_arrays(n_train=300, n_test=100, seed=0)
    other = archives.mnist_arrays(n_train=300, n_test=100, seed=1)
    b = {split: array.copy() for split, array in a.items()}
    for split in ("x_train", "x_test"):
        b[split][SAME_FIRST:] = other[split][SAME_FIRST:]
    return a, b


def write_set(folder, arrays):
    """The four IDX files in ``folder``/mnist (a folder named after the dataset, since files
    of unknown origin are accepted only there); returns ``folder``."""
    archives.write_idx_files(folder / "mnist", arrays)
    return folder


def run_study(cwd, data_dir, out):
    """``quantlab run`` as a user runs it from ``cwd``, with the cache given relative to it."""
    return subprocess.run([sys.executable, "-m", "quantlab.cli", *STUDY, "--data-dir", str(data_dir),
                           "--out", str(out)], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "QUANTLAB_CACHE": "cache"}, timeout=900)


@pytest.fixture(scope="module")
def swapped(tmp_path_factory):
    """The three runs: {"a", "b": the two sets' folders, "work": the folder quantlab runs in,
    "runs": [(process, results.json)] in order, "damaged": {stage: A's stored result made
    the wrong shape before the third run}}."""
    root = tmp_path_factory.mktemp("swapped")
    a, b = two_sets()
    sets = {"a": write_set(root / "a", a), "b": write_set(root / "b", b)}
    work, data, out = root / "work", root / "data", root / "report"
    work.mkdir()
    runs = []

    def study_on(name):
        shutil.rmtree(data, ignore_errors=True)
        shutil.copytree(sets[name], data)  # the same file names, the other set's bytes
        result = run_study(work, data, out)
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append((result, json.loads((out / "results.json").read_text())))

    study_on("a")
    stored_a = sorted((out / ".state").glob("*.json"))
    study_on("b")
    # Valid JSON of the wrong shape in A's stored results; its per-layer error stays as it was.
    damaged = {}
    for stage, content in (("eval", "null"), ("latency", "{}")):
        damaged[stage] = next(path for path in stored_a if path.name.startswith(f"{stage}-"))
        damaged[stage].write_text(content)
    study_on("a")
    return {**sets, "work": work, "runs": runs, "damaged": damaged}


def accuracy_row(results, variant="float32"):
    return next(row for row in results["accuracy"]
                if row["variant"] == variant and row["runtime"] == "litert")


def artifact_shas(results):
    return {v: a["sha256"] for v, a in results["nets"]["conv"]["artifacts"].items()}


def test_files_swapped_under_the_same_name_train_the_net_again_and_recompute_every_number(swapped):
    (first, before), (second, after), _ = swapped["runs"]
    assert "conv float epoch 1/2" in first.stderr
    assert "conv float epoch 1/2" in second.stderr  # trained again on B
    for reused in ("loaded from cache", "done earlier", "reusing"):
        assert reused not in second.stderr
    for variant in ("float32", "int8"):
        assert f"conv: exporting {variant}" in second.stderr
    assert "conv: timing" in second.stderr
    shas = artifact_shas(before), artifact_shas(after)
    assert all(shas[0][v] != shas[1][v] for v in ("float32", "int8"))
    # The accuracy stored for B is B's model scored on B's test images.
    b = datasets.load("mnist", swapped["b"])
    path = after["nets"]["conv"]["artifacts"]["float32"]["path"]
    probabilities = runtime.load(path, runtime="litert").predict(
        b.x_test, batch_size=evaluate.EVALUATION_BATCH)
    assert accuracy_row(after)["accuracy"] == float(np.mean(probabilities.argmax(1) == b.y_test))
    assert after["dataset"]["test"] == len(b.y_test)


def test_going_back_to_the_first_files_reuses_what_was_made_from_them(swapped):
    (_, before), _, (third, again) = swapped["runs"]
    assert "epoch" not in third.stderr and "exporting" not in third.stderr  # A's files are cached
    assert "conv: per-layer error: done earlier, reusing layers-" in third.stderr
    assert artifact_shas(again) == artifact_shas(before)
    assert again["nets"]["conv"]["layers"] == before["nets"]["conv"]["layers"]


def test_stored_results_of_the_wrong_shape_are_measured_again_with_a_notice(swapped):
    (_, before), _, (third, again) = swapped["runs"]
    for stage, path in swapped["damaged"].items():
        assert (f"stored result {path.name} is not what this stage stores; measuring again"
                in third.stderr), stage
        assert study.well_formed(stage, read_stamped(path, "state")), stage  # stored whole again
    assert "conv: timing" in third.stderr
    assert accuracy_row(again) == accuracy_row(before)  # scored again: the same numbers
    assert {case["variant"] for case in again["cases"]} == {"float32", "int8"}


def test_a_relative_cache_folder_is_the_one_in_the_folder_quantlab_started_in(swapped):
    cache_folder = swapped["work"] / "cache"
    (first, results), *_ = swapped["runs"]
    assert "timing" in first.stderr and (cache_folder / "models").is_dir()
    for artifact in results["nets"]["conv"]["artifacts"].values():
        path = artifact["path"]
        assert os.path.isabs(path) and path.startswith(str(cache_folder) + os.sep), path


def test_files_copied_in_from_another_key_s_folder_are_not_taken_for_its_own(swapped, tmp_path):
    (_, before), (_, after), _ = swapped["runs"]
    exported = {name: Path(results["nets"]["conv"]["artifacts"]["int8"]["path"]).parent
                for name, results in (("a", before), ("b", after))}
    trained = {name: Path(json.loads((folder / "int8.json").read_text())["trained_model"])
               for name, folder in exported.items()}
    for kind, folders in (("variants", exported), ("models", trained)):
        for name, folder in folders.items():  # copies: the fixture's cache stays as it is
            shutil.copytree(folder, tmp_path / kind / name / folder.name)
    a, b = (tmp_path / "variants" / name / exported[name].name for name in "ab")
    assert variants._cached(a, "int8").sha256 == artifact_shas(before)["int8"]
    for file in ("int8.tflite", "int8.json"):  # B's int8, sidecar and all, in A's folder
        shutil.copy(b / file, a / file)
    said = []
    assert variants._cached(a, "int8", said.append) is None
    assert said == [f"{a.name}: cached int8 (int8.tflite) is damaged or changed; exporting it again"]
    # A sidecar that names a file outside its folder, with that file's sha256.
    (tmp_path / "elsewhere.tflite").write_bytes((b / "int8.tflite").read_bytes())
    (b / "int8.tflite").unlink()
    meta = json.loads((b / "int8.json").read_text())
    (b / "int8.json").write_text(json.dumps({**meta, "file": "../../../elsewhere.tflite"}))
    assert variants._cached(b, "int8") is None
    a, b = (tmp_path / "models" / name / trained[name].name for name in "ab")
    assert training._cached_info(a, None)["key"]["data"] == datasets.load("mnist", swapped["a"]).sha256
    for file in ("weights.h5", "info.json"):
        shutil.copy(b / file, a / file)
    assert training._cached_info(a, said.append) is None and not a.exists()
    assert said[-1] == f"the cached model in {a} is damaged or incomplete: training it again"


# --- the data's digest ---------------------------------------------------------------------------

def test_the_dataset_digest_covers_every_image_and_label_and_is_computed_once(tmp_path):
    a, b = two_sets()
    first = datasets.load("mnist", write_set(tmp_path / "a", a))
    assert "sha256" not in vars(first)  # nothing is hashed until a key needs it
    digest = first.sha256
    assert vars(first)["sha256"] == digest  # remembered on the loaded object
    assert datasets.load("mnist", tmp_path / "a").sha256 == digest  # the same files, the same
    changed = [b]
    for split, index in (("x_train", -1), ("x_test", -1), ("y_train", 0), ("y_test", -1)):
        one = {name: array.copy() for name, array in a.items()}
        one[split][index] ^= 1  # one pixel (of one image) or one label
        changed.append(one)
    digests = {datasets.load("mnist", write_set(tmp_path / f"set{i}", arrays)).sha256
               for i, arrays in enumerate(changed)}
    assert len(digests) == len(changed) and digest not in digests
    assert first.subset(200).sha256 != digest


def test_the_trained_model_and_export_keys_see_images_past_the_first_64(tmp_path):
    a, b = (datasets.load("mnist", write_set(tmp_path / name, arrays))
            for name, arrays in zip("ab", two_sets()))
    config = quick_config("conv", dataset="mnist")
    assert training.model_dir(config, a) != training.model_dir(config, b)
    assert (training.model_dir(config, a, qat=True, base_key="mine")
            != training.model_dir(config, b, qat=True, base_key="mine"))
    size = variants.CALIBRATION_SIZE
    assert variants.export_dir(config, a, size) != variants.export_dir(config, b, size)
    # A user's own model is the same file on any data, but is calibrated on the data.
    assert (variants.export_dir(config, a, size, base_key="user-model-0")
            != variants.export_dir(config, b, size, base_key="user-model-0"))


# --- the code --------------------------------------------------------------------------------

# The modules on the export path, each loaded before those that import it.
EXPORT_PATH = ("quantlab._tf", "quantlab.nets", "quantlab.training", "quantlab.variants")


def export_key(sources, folder, monkeypatch, config, data):
    """The export folder as copies of EXPORT_PATH's modules, loaded from ``sources`` ({module
    name: its source}), compute it: each copy is imported by the copies after it."""
    with monkeypatch.context() as patch:
        for name in EXPORT_PATH:
            path = folder / uuid.uuid4().hex / f"{name.rpartition('.')[2]}.py"
            path.parent.mkdir(parents=True)
            path.write_text(sources[name])
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            patch.setitem(sys.modules, name, module)
            patch.setattr(quantlab, name.rpartition(".")[2], module)
            spec.loader.exec_module(module)
        return module.export_dir(config, data, variants.CALIBRATION_SIZE)


def changed_functions(source):
    """(name, a copy of ``source`` where that function or method does one thing more) for
    every function and method defined in ``source``."""
    lines = source.splitlines(keepends=True)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0]
            assert first.lineno > node.lineno, f"{node.name}: a body on the line of its def"
            extra = " " * first.col_offset + "pass\n"
            yield node.name, "".join(lines[:first.lineno - 1] + [extra] + lines[first.lineno - 1:])


def test_a_change_to_any_function_on_the_export_path_gives_a_new_export_key(tmp_path, monkeypatch):
    # Set A of the study above: IDX files read with numpy alone (digits would load scikit-learn).
    config = quick_config("conv", dataset="mnist")
    data = datasets.load("mnist", write_set(tmp_path / "a", two_sets()[0]))
    sources = {name: inspect.getsource(importlib.import_module(name)) for name in EXPORT_PATH}
    unchanged = export_key(sources, tmp_path, monkeypatch, config, data)
    assert unchanged == variants.export_dir(config, data, variants.CALIBRATION_SIZE)
    same_key = []
    for module in EXPORT_PATH:
        functions = list(changed_functions(sources[module]))
        assert len(functions) >= 3, module
        for function, changed in functions:
            key = export_key({**sources, module: changed}, tmp_path, monkeypatch, config, data)
            if key == unchanged:
                same_key.append(f"{module}.{function}")
    assert not same_key  # e.g. variants._content, which converts every TFLite variant
    # A constant counts too: which variants get int8 inputs and outputs.
    planted = sources["quantlab.variants"].replace('FULL_INTEGER = ("int8", "qat_int8"',
                                                   'FULL_INTEGER = ("qat_int8"')
    assert planted != sources["quantlab.variants"]
    assert export_key({**sources, "quantlab.variants": planted}, tmp_path, monkeypatch, config,
                      data) != unchanged


# --- stored results of the wrong shape ---------------------------------------------------------

# A row of each stage as the study stores it, with the keys the study and the report read.
ROWS = {"layers": {"op": "FULLY_CONNECTED", "tensor": "t", "rmse_over_scale": 0.3,
                   "max_abs_error": 0.01, "scale": 0.1},
        "eval": {"net": "conv", "variant": "float32", "runtime": "litert", "accuracy": 0.9,
                 "delta_points": 0.0, "agreement": 1.0},
        "latency": {"net": "conv", "variant": "float32", "runtime": "litert", "batch_size": 1,
                    "median": 1e-3},
        "deployment": {"net": "conv", "variant": "float32", "runtime": "litert",
                       "not_run": "the runtime is not installed"}}


@pytest.mark.parametrize("content", ["null", "{}", "[]", "[1]", "[{}]", "[null]", '"rows"', "7",
                                     '{"net": "conv"}'])
@pytest.mark.parametrize("stage", list(ROWS))
def test_a_stored_stage_of_the_wrong_shape_is_measured_again_with_a_notice(tmp_path, stage,
                                                                         content):
    config = study.StudyConfig(out=tmp_path)
    path = study.state_path(config, stage, {"net": "conv"})
    path.parent.mkdir()
    path.write_text(json.dumps(stamp("state", json.loads(content))))  # of this quantlab, that shape
    said, made = [], [ROWS[stage]]

    def stage_result(label):
        return study._cached_stage(config, stage, {"net": "conv"}, lambda: list(made), said.append,
                                   label)

    if stage in ("layers", "deployment") and content == "[]":  # e.g. a user's own model
        assert stage_result("first") == [] and said == [f"first: done earlier, reusing {path.name}"]
        return
    assert stage_result("first") == made
    assert said == [f"first: stored result {path.name} is not what this stage stores; "
                    "measuring again"]
    assert read_stamped(path, "state") == made  # stored whole in its place
    made = []  # nothing is computed when the stored result is good
    assert stage_result("second") == [ROWS[stage]]


# The key of one net's stored rows: what they must be of (quantlab.study.stages.foreign).
KEY = {"net": "conv", "artifacts": {"float32": "a" * 64}, "pairs": [("float32", "litert")]}


@pytest.mark.parametrize("stage, change, why", [
    ("eval", {"net": "mlp"}, "holds a row of another net ('mlp')"),
    ("eval", {"variant": "float16"}, "holds a row of a variant and runtime this study does not study"),
    ("eval", {"accuracy": float("nan")}, "holds what no study measures (row 0.accuracy is nan"),
    ("latency", {"model_sha256": "b" * 64}, "names other files than this study's"),
    ("latency", {"median": "abc"}, "holds what no study measures (row 0.median is not a number"),
    ("deployment", {"runtime": "openvino"}, "holds a row of a variant and runtime"),
], ids=["other net", "not studied", "NaN accuracy", "other bytes", "a median of text",
        "other runtime"])
def test_stored_rows_that_cannot_be_this_keys_result_are_measured_again(tmp_path, stage, change,
                                                                        why):
    config = study.StudyConfig(out=tmp_path)
    path = study.state_path(config, stage, KEY)
    path.parent.mkdir()
    good = {**ROWS[stage], "model_sha256": "a" * 64} if stage == "latency" else ROWS[stage]
    path.write_text(json.dumps(stamp("state", [{**good, **change}]), allow_nan=True))
    said = []
    assert study._cached_stage(config, stage, KEY, lambda: [good], said.append, "it") == [good]
    [notice] = said
    assert notice.startswith(f"it: stored result {path.name} {why}")
    assert notice.endswith("; measuring again")
    said.clear()  # stored good in its place: read back
    assert study._cached_stage(config, stage, KEY, lambda: [], said.append, "it") == [good]
    assert said == [f"it: done earlier, reusing {path.name}"]


@pytest.mark.parametrize("kind", ["nested 100000 deep", "a FIFO"])
def test_a_stored_stage_too_deep_to_parse_or_not_a_file_is_measured_again(tmp_path, kind):
    config = study.StudyConfig(out=tmp_path)
    path = study.state_path(config, "eval", KEY)
    path.parent.mkdir()
    if kind == "a FIFO":
        os.mkfifo(path)  # reading it would wait for a writer forever
    else:
        path.write_text("[" * 100_000 + "]" * 100_000)
    said, good = [], ROWS["eval"]
    assert study._cached_stage(config, "eval", KEY, lambda: [good], said.append, "it") == [good]
    assert read_stamped(path, "state") == [good]  # stored whole in its place


@pytest.mark.parametrize("content", ["null", "{}", "[1]", '"rows"', "not json", None])
def test_a_result_kept_in_the_cache_is_read_back_for_its_key_alone_and_a_damaged_one_made_again(
        tmp_path, monkeypatch, content):
    """The per-layer error, kept in the quantlab cache for any study of the same files."""
    from quantlab import cache

    monkeypatch.setenv("QUANTLAB_CACHE", str(tmp_path / "cache"))
    key, made = {"artifacts": {"int8": "ab" * 32}}, [ROWS["layers"]]
    calls = []

    def compute():
        calls.append(1)
        return list(made)

    path = cache.cache_root() / "layers" / f"{cache.config_hash(key)}.json"
    if content is not None:  # stored earlier, then damaged
        path.parent.mkdir(parents=True)
        path.write_text(content if content == "not json"
                        else json.dumps(stamp("state", json.loads(content))))
    assert study.remembered("layers", key, compute) == made and len(calls) == 1
    assert read_stamped(path, "state") == made
    assert study.remembered("layers", key, compute) == made and len(calls) == 1  # read back
    other = {"artifacts": {"int8": "cd" * 32}}  # other bytes: computed for them
    assert study.remembered("layers", other, compute) == made and len(calls) == 2


@pytest.mark.parametrize("content", [None, [], {}, {"rates": {}}, [{"failed": "x"}], "failed"])
def test_a_stored_count_of_the_wrong_shape_is_not_taken_for_a_count(content):
    assert not study.well_formed("counters", content)


def test_a_stored_count_of_the_wrong_shape_is_counted_again_and_a_good_one_is_kept(tmp_path,
                                                                                 tiny_models):
    from quantlab import cache

    config = study.StudyConfig(out=tmp_path, quick=True, batch_sizes=(1,), nets=("conv",))
    artifacts = {v: variants.Artifact(v, path, {"sha256": cache.sha256_of(path)})
                 for v, path in tiny_models.items()}
    records = [{"net": "tiny", "variant": v, "runtime": "litert", "batch_size": 1}
               for v in artifacts]
    stored = {r["variant"]: study.state_path(config, "counters", study.counter_key(
        config, artifacts[r["variant"]], r, "valgrind")) for r in records}
    stored["float32"].parent.mkdir()
    stored["float32"].write_text("[]")
    kept = {"failed": "worker exited with status 1"}  # a failed count is stored as such
    stored["int8"].write_text(json.dumps(stamp("state", kept)))
    said = []
    study.start_counting(config, "tiny", artifacts, records, "valgrind", said.append).wait()
    assert [line for line in said if "counting" in line] == [
        "tiny: counting float32 on litert, batch 1, with valgrind"]
    float32, int8 = records
    assert float32["counters"]["per_inference"]["instructions"] > 0
    assert read_stamped(stored["float32"], "state") == float32["counters"]
    assert int8["counters"] is None and int8["not_counted"] == f"counting failed: {kept['failed']}"


def test_the_training_record_of_a_report_comes_only_from_a_whole_cached_model(tmp_path,
                                                                            monkeypatch):
    from quantlab.study import results

    monkeypatch.setenv("QUANTLAB_CACHE", str(tmp_path / "cache"))
    key = {"net": "conv"}
    folder = tmp_path / "cache" / "models" / f"conv-{cache.config_hash(key)}"
    folder.mkdir(parents=True)
    (folder / "weights.h5").write_bytes(b"the weights")
    info = {"key": key, "weights_sha256": cache.sha256_of(folder / "weights.h5"),
            "test_accuracy": 0.9, "epochs_run": 2}
    (folder / "info.json").write_text(json.dumps(info))
    assert results._training_record(folder)["test_accuracy"] == 0.9
    outside = tmp_path / "elsewhere" / folder.name
    shutil.copytree(folder, outside)
    assert results._training_record(outside) is None  # a sidecar may not point outside the cache
    for edited in ({**info, "weights_sha256": "0" * 64}, {**info, "key": {"net": "dense"}}, [1],
                   "[" * 100_000):
        (folder / "info.json").write_text(edited if isinstance(edited, str) else json.dumps(edited))
        assert results._training_record(folder) is None, edited
    (folder / "info.json").unlink()
    os.mkfifo(folder / "info.json")  # never waited on
    assert results._training_record(folder) is None


def test_a_cache_folder_that_is_a_loop_of_links_is_one_line(tmp_path):
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(QuantlabError) as refused:
        cache.check_writable(tmp_path / "loop" / "cache", "cache folder")
    assert "\n" not in str(refused.value) and "cannot write to cache folder" in str(refused.value)
