"""The command line, run as users run it: a real process, real data, real exit codes."""

import json
import os
import subprocess
import sys

import pytest

from conftest import one_line_error, quantlab


def test_train_shows_epoch_progress_and_prints_accuracy_and_artifact_path(tmp_path):
    result = quantlab("train", "medium", "--dataset", "digits", "--epochs", "2",
                      env={"QUANTLAB_CACHE": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "medium float epoch 1/2" in result.stderr
    accuracy = float(result.stdout.split("test accuracy: ")[1].split()[0])
    assert accuracy > 0.8
    model = result.stdout.split("model: ")[1].strip()
    assert model.startswith(str(tmp_path)) and os.path.isfile(os.path.join(model, "weights.h5"))


@pytest.fixture(scope="module")
def fresh_home(tmp_path_factory):
    """``quantlab quantize conv --json`` as a new user runs it: an empty HOME and cache, so
    that every import and every exporter (tf2onnx, ONNX Runtime's and NNCF's quantizers)
    runs. {"home", "cache", "env", "quantized": the finished process}."""
    root = tmp_path_factory.mktemp("fresh")
    home, cache = root / "home", root / "cache"
    home.mkdir()
    env = {"HOME": str(home), "QUANTLAB_CACHE": str(cache), "QUANTLAB_DATA_DIR": "",
           "KERAS_HOME": "", "MPLCONFIGDIR": "", "XDG_CACHE_HOME": "", "XDG_CONFIG_HOME": "",
           "CI": "", "ORT_DISABLE_TELEMETRY": ""}
    env = {key: value for key, value in {**os.environ, **env}.items() if value != ""}
    quantized = subprocess.run([sys.executable, "-m", "quantlab.cli", "quantize", "conv",
                                "--dataset", "digits", "--epochs", "1", "--json"],
                               capture_output=True, text=True, env=env, timeout=900)
    assert quantized.returncode == 0, quantized.stderr[-3000:]
    return {"home": home, "cache": cache, "env": env, "quantized": quantized}


def test_quantize_json_reports_every_variant_with_sizes_and_accuracy(fresh_home):
    report = json.loads(fresh_home["quantized"].stdout)
    rows = {row["variant"]: row for row in report["variants"]}
    assert set(rows) == {"float32_tf", "float32", "dynamic_int8", "float16", "int8", "int8_per_tensor",
                         "int16x8", "qat_int8", "bf16", "onnx_float32", "onnx_int8",
                         "onnx_int8_per_tensor", "openvino_int8"}
    assert rows["int8"]["size_ratio"] > 3
    assert all(os.path.isfile(path) for path in report["artifacts"].values())
    tables = quantlab("quantize", "conv", "--dataset", "digits", "--epochs", "1",
                      env={"QUANTLAB_CACHE": str(fresh_home["cache"])})
    assert "| conv | int8 |" in tables.stdout and "SN size / QN size" in tables.stdout
    assert "standard accuracy" in tables.stdout


@pytest.mark.fashion_mnist
def test_datasets_lists_every_dataset_and_where_it_resolves(tmp_path):
    result = quantlab("datasets", "--json", env={"HOME": str(tmp_path), "QUANTLAB_DATA_DIR": ""})
    assert result.returncode == 0, result.stderr
    entries = {entry["name"]: entry for entry in json.loads(result.stdout)}
    assert set(entries) == {"fashion_mnist", "mnist", "cifar10", "digits"}
    assert entries["fashion_mnist"]["available"] and entries["fashion_mnist"]["train"] == 60000
    assert not entries["cifar10"]["available"] and entries["cifar10"]["reason"]
    text = quantlab("datasets", env={"HOME": str(tmp_path), "QUANTLAB_DATA_DIR": ""}).stdout
    assert "fashion_mnist" in text and "not available" in text


def test_an_unknown_net_is_a_one_line_error_listing_the_valid_ones():
    one_line_error(quantlab("train", "resnet"), "unknown net 'resnet'", "dense, medium, conv")


def test_an_unknown_dataset_is_a_one_line_error():
    one_line_error(quantlab("train", "medium", "--dataset", "imagenet"), "unknown dataset 'imagenet'")


def test_a_missing_dataset_says_where_it_looked_and_how_to_provide_it(tmp_path):
    line = one_line_error(
        quantlab("train", "medium", "--dataset", "cifar10",
                 env={"HOME": str(tmp_path), "KERAS_HOME": str(tmp_path / "keras"), "QUANTLAB_DATA_DIR": ""}),
        "cifar10")
    assert "--data-dir" in line and str(tmp_path) in line


def test_a_corrupt_model_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"\x00" * 64)
    one_line_error(quantlab("counters", str(path), "--backend", "valgrind"), "not a TFLite model")


def test_a_bad_number_is_a_one_line_usage_error():
    one_line_error(quantlab("train", "medium", "--epochs", "0"), "at least 1")


@pytest.mark.parametrize("command", [("train", "medium"), ("run", "--dataset", "digits")])
def test_a_seed_beyond_what_numpy_takes_is_a_one_line_usage_error(command):
    one_line_error(quantlab(*command, "--seed", "4294967296"),
                   "seed 4294967296 is out of range", "give 0 to 4294967295")


def test_the_seed_bound_is_numpys_and_a_study_config_keeps_to_it():
    import numpy as np

    from quantlab import options, study
    from quantlab.errors import QuantlabError

    np.random.seed(options.MAX_SEED)  # the largest seed is one numpy takes ...
    with pytest.raises(ValueError):
        np.random.seed(options.MAX_SEED + 1)  # ... and the next is not
    assert study.StudyConfig(seed=options.MAX_SEED).seed == options.MAX_SEED
    with pytest.raises(QuantlabError, match="out of range: give 0 to 4294967295"):
        study.StudyConfig(seed=options.MAX_SEED + 1)


def test_nothing_is_written_in_the_users_home(tmp_path, fresh_home):
    """Matplotlib's font cache (imported by tfmot, and for plots) and Keras's keras.json went
    into ~/.cache/matplotlib and ~/.keras: they belong under quantlab's cache. ONNX Runtime's
    import wrote a device id under ~/.cache/Microsoft, OpenVINO's a telemetry client id under
    ~/intel (and sent an event): quantlab turns both off. ``quantize`` (fresh_home) trains
    (with QAT), exports every variant and scores each on its runtime. Not under CI=true, where
    OpenVINO's telemetry stays off by itself."""
    home, cache, env = fresh_home["home"], fresh_home["cache"], fresh_home["env"]
    results = []
    for name, int8 in (("a", 1e-3), ("b", 5e-4)):
        results.append(tmp_path / f"{name}.json")
        results[-1].write_text(json.dumps({
            "schema": 2, "machine": {"name": name}, "nets": {},
            "cases": [{"net": "dense", "variant": variant, "runtime": "litert", "batch_size": 1,
                       "median": median} for variant, median in (("float32", 2e-3), ("int8", int8))]}))
    compared = subprocess.run([sys.executable, "-m", "quantlab.cli", "compare", *map(str, results),
                               "--out", str(tmp_path / "fleet")],
                              capture_output=True, text=True, env=env, timeout=900)
    assert compared.returncode == 0, compared.stderr[-3000:]
    assert (tmp_path / "fleet" / "compare_speedup.png").is_file()  # matplotlib drew
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []
    assert (cache / "keras" / "keras.json").is_file() and (cache / "matplotlib").is_dir()


def test_keras_datasets_in_the_users_home_are_still_found_once_keras_home_is_quantlabs(tmp_path):
    import numpy as np

    folder = tmp_path / ".keras" / "datasets"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.savez(folder / "mnist.npz", x_train=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
             y_train=np.arange(20, dtype=np.uint8) % 10,
             x_test=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
             y_test=np.arange(10, dtype=np.uint8))
    code = ("import os\nfrom quantlab import _tf, datasets\n_tf._prepare_environment()\n"
            "data = datasets.load('mnist')\nprint(os.environ['KERAS_HOME'])\nprint(data.source)\n"
            "print(len(data.x_train), len(data.x_test))")
    env = {key: value for key, value in os.environ.items()
           if key not in ("KERAS_HOME", "QUANTLAB_DATA_DIR")}
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**env, "HOME": str(tmp_path), "QUANTLAB_CACHE": str(tmp_path / "cache")},
                           timeout=300)
    assert found.returncode == 0, found.stderr[-3000:]
    keras_home, source, sizes = found.stdout.splitlines()[-3:]
    assert keras_home == str(tmp_path / "cache" / "keras")  # quantlab's, for Keras itself
    assert str(folder / "mnist.npz") in source and sizes == "20 10"
