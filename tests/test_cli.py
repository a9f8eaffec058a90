"""The command line, run as users run it: a real process, real data, real exit codes."""

import json
import os

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


def test_quantize_json_reports_every_variant_with_sizes_and_accuracy(tmp_path):
    result = quantlab("quantize", "conv", "--dataset", "digits", "--epochs", "1", "--json",
                      env={"QUANTLAB_CACHE": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    rows = {row["variant"]: row for row in report["variants"]}
    assert set(rows) == {"float32_tf", "float32", "dynamic_int8", "float16", "int8", "qat_int8", "bf16",
                         "onnx_float32", "onnx_int8"}
    assert rows["int8"]["size_ratio"] > 3
    assert all(os.path.isfile(path) for path in report["artifacts"].values())
    tables = quantlab("quantize", "conv", "--dataset", "digits", "--epochs", "1",
                      env={"QUANTLAB_CACHE": str(tmp_path)})
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

    from quantlab import arguments, study
    from quantlab.errors import QuantlabError

    np.random.seed(arguments.MAX_SEED)  # the largest seed is one numpy takes ...
    with pytest.raises(ValueError):
        np.random.seed(arguments.MAX_SEED + 1)  # ... and the next is not
    assert study.StudyConfig(seed=arguments.MAX_SEED).seed == arguments.MAX_SEED
    with pytest.raises(QuantlabError, match="out of range: give 0 to 4294967295"):
        study.StudyConfig(seed=arguments.MAX_SEED + 1)
