"""Loading a user's own Keras model never runs code from the file, whatever the file is.

Each hostile file is built here, byte by byte with h5py and zipfile, and would write a marker
file if Keras loaded it as it stands: each test shows quantlab refuses it with one line and no
marker, then shows that plain Keras, given the same file, does write the marker.
"""

import base64
import contextlib
import io
import json
import marshal
import sys
import zipfile

import h5py
import numpy as np
import pytest

from quantlab import byo
from quantlab.errors import QuantlabError
from conftest import within_3_gib
from test_datasets import error_without_permission, folder_others_can_enter


@pytest.fixture(scope="module")
def keras():
    from quantlab._tf import keras

    return keras()


def refusal(path, digits):
    with pytest.raises(QuantlabError) as excinfo:
        byo.load(path, digits)
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message
    return message


def plain_keras_load(keras, path):
    """What Keras alone does with the file; the errors after the payload ran do not matter."""
    with contextlib.suppress(Exception):
        keras.models.load_model(str(path), compile=False, safe_mode=True)


# --- hostile files ----------------------------------------------------------------------------

def lambda_writing(marker):
    """A Keras Lambda config whose function writes ``marker``, in Keras's own encoding."""
    function = eval(f"lambda x: (open({str(marker)!r}, 'w').close(), x)[1]")
    code = base64.encodebytes(marshal.dumps(function.__code__)).decode()
    return {"class_name": "Lambda", "config": {
        "name": "payload", "trainable": True, "dtype": "float32",
        "function": [code, None, None], "function_type": "lambda", "module": "__main__",
        "output_shape": None, "output_shape_type": "raw", "output_shape_module": None,
        "arguments": {}}}


INPUT = {"class_name": "InputLayer", "config": {
    "batch_input_shape": [None, 8, 8, 1], "dtype": "float32", "name": "input"}}
FLATTEN = {"class_name": "Flatten", "config": {"name": "flatten"}}
DENSE = {"class_name": "Dense", "config": {"name": "dense", "units": 10}}


def sequential(*layers):
    return {"class_name": "Sequential", "config": {"name": "sequential", "layers": list(layers)}}


def h5_bytes(config, config_text=None):
    """A legacy Keras HDF5 model file holding ``config`` (or ``config_text``) and no weights."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5.attrs["model_config"] = config_text or json.dumps(config)
        h5.attrs["keras_version"] = "2.21.0"
        h5.attrs["backend"] = "tensorflow"
        h5.create_group("model_weights")
    return buffer.getvalue()


def keras_archive_bytes(config, extra=None, config_text=None, weights=None):
    """A .keras archive as tf_keras writes it: three stored members (plus ``extra``).

    ``config_text`` stands for ``config`` as JSON; ``weights`` for an empty weights file.
    """
    if weights is None:
        empty = io.BytesIO()
        with h5py.File(empty, "w"):
            pass
        weights = empty.getvalue()
    members = {"metadata.json": json.dumps({"keras_version": "2.21.0"}).encode(),
               "config.json": (config_text or json.dumps(config)).encode(),
               "model.weights.h5": weights, **(extra or {})}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def payload_module(tmp_path, monkeypatch):
    """An importable module that writes a marker when imported; returns (name, marker)."""
    name = f"payload_{tmp_path.name.replace('-', '_')}"
    marker = tmp_path / "imported"
    site = tmp_path / "site"
    site.mkdir()
    (site / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(site))
    yield name, marker
    sys.modules.pop(name, None)


def v3_layer(class_name, module, config):
    return {"module": module, "class_name": class_name, "config": config,
            "registered_name": None}


def v3_sequential(*layers):
    return {"module": "keras", "class_name": "Sequential",
            "config": {"name": "sequential", "layers": list(layers)}, "registered_name": None}


V3_INPUT = v3_layer("InputLayer", "keras.layers",
                    {"batch_input_shape": [None, 8, 8, 1], "dtype": "float32", "name": "input"})


def test_an_hdf5_model_with_a_lambda_layer_is_refused_and_its_code_never_runs(
        tmp_path, digits, keras):
    marker = tmp_path / "ran"
    path = tmp_path / "mine.h5"
    path.write_bytes(h5_bytes(sequential(INPUT, lambda_writing(marker), FLATTEN, DENSE)))
    assert "Lambda layer" in refusal(path, digits)
    assert not marker.exists()
    plain_keras_load(keras, path)  # the legacy loader ignores safe_mode: the payload is real
    assert marker.exists()


def test_an_hdf5_model_with_a_class_outside_keras_s_built_in_layers_is_refused(tmp_path, digits):
    # tf_keras's legacy loader looks such a name up among the classes registered in the
    # process (tfmot registers its own, for one); the allow-list admits none of them.
    path = tmp_path / "mine.h5"
    path.write_bytes(h5_bytes(sequential(INPUT, {"class_name": "QuantizeWrapperV2",
                                                 "config": {}})))
    assert "'QuantizeWrapperV2' layer or object, which is not one of Keras's built-in layers" \
        in refusal(path, digits)


def test_a_keras_archive_naming_a_module_outside_keras_is_refused_and_never_imported(
        tmp_path, digits, keras, payload_module):
    module, marker = payload_module
    config = v3_sequential(V3_INPUT)
    config["module"] = module
    path = tmp_path / "mine.keras"
    path.write_bytes(keras_archive_bytes(config))
    assert f"says Sequential comes from module {module!r}, outside Keras" in refusal(path, digits)
    assert not marker.exists()
    plain_keras_load(keras, path)  # even in safe mode, Keras imports the module it names
    assert marker.exists()


def test_a_file_that_is_both_hdf5_and_zip_is_refused_and_its_hdf5_lambda_never_runs(
        tmp_path, digits, keras):
    marker = tmp_path / "ran"
    clean = v3_sequential(V3_INPUT, v3_layer("Flatten", "keras.layers", {"name": "flatten"}))
    # The HDF5 part (read from the start) has the Lambda, the ZIP part (read from the end)
    # looks clean: a check of the archive passed it, and Keras loaded it by name as HDF5.
    polyglot = (h5_bytes(sequential(INPUT, lambda_writing(marker), FLATTEN, DENSE))
                + keras_archive_bytes(clean))
    path = tmp_path / "mine.h5"
    path.write_bytes(polyglot)
    assert h5py.is_hdf5(path) and zipfile.is_zipfile(path)
    assert "both an HDF5 file and a ZIP archive" in refusal(path, digits)
    assert not marker.exists()
    plain_keras_load(keras, path)
    assert marker.exists()


def test_a_keras_archive_with_a_member_keras_does_not_write_is_refused_by_name(tmp_path, digits):
    clean = v3_sequential(V3_INPUT, v3_layer("Flatten", "keras.layers", {"name": "flatten"}))
    path = tmp_path / "mine.keras"
    path.write_bytes(keras_archive_bytes(clean, extra={"assets/run.py": b"import os\n"}))
    assert "'assets/run.py'" in refusal(path, digits)


def test_a_compressed_keras_archive_is_refused_since_keras_stores_its_members(tmp_path, digits):
    clean = v3_sequential(V3_INPUT, v3_layer("Flatten", "keras.layers", {"name": "flatten"}))
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(keras_archive_bytes(clean))) as source, \
            zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as packed:
        for name in source.namelist():
            packed.writestr(name, source.read(name))
    path = tmp_path / "mine.keras"
    path.write_bytes(buffer.getvalue())
    assert "compressed" in refusal(path, digits)


# --- the configuration check on its own --------------------------------------------------------

@pytest.mark.parametrize("node, named", [
    ({"class_name": "Lambda", "config": {}}, "Lambda layer"),
    ({"class_name": "TFOpLambda", "config": {"function": "io.write_file"}}, "'TFOpLambda'"),
    ({"class_name": "Dense", "config": {"activation": {
        "class_name": "__lambda__", "config": {"value": "..."}}}}, "serialised Python function"),
    ({"class_name": "Dense", "config": {"activation": {
        "module": "os", "class_name": "function", "config": "system",
        "registered_name": "system"}}}, "serialised Python function"),
    ({"class_name": "Dense", "config": {"activation": "serialize"}}, "activation 'serialize'"),
    ({"module": "keras.layers", "class_name": "Dense", "config": {},
      "registered_name": "mine>Dense"}, "'mine>Dense'"),
    ({"module": "kerasx.layers", "class_name": "Dense", "config": {}}, "'kerasx.layers'"),
], ids=["lambda", "tf-op-lambda", "lambda-function", "named-function", "unknown-activation",
        "registered-custom-class", "module-that-only-starts-like-keras"])
def test_the_config_check_refuses_code_anywhere_in_the_tree_and_names_it(node, named):
    with pytest.raises(QuantlabError) as excinfo:
        byo.check_config(sequential(INPUT, node), "mine.h5")
    assert named in str(excinfo.value)


# --- real models, and files that are not models ------------------------------------------------

@pytest.fixture(scope="module")
def saved(tmp_path_factory, keras, digits):
    """A small model trained on digits and saved by Keras in both formats."""
    folder = tmp_path_factory.mktemp("saved")
    layers = keras.layers
    model = keras.Sequential([
        layers.Input((8, 8, 1)), layers.Conv2D(4, 3, activation="relu"),
        layers.BatchNormalization(), layers.MaxPooling2D(), layers.Flatten(),
        layers.Dropout(0.2), layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(digits.x_train, digits.y_train, epochs=1, verbose=0)
    model.save(folder / "mine.keras")
    model.save(folder / "mine.h5")
    return folder, model


@pytest.mark.parametrize("saved_as, named", [
    ("mine.keras", "mine.keras"), ("mine.h5", "mine.h5"),
    ("mine.keras", "really-an-archive.h5"), ("mine.h5", "really-hdf5.keras")])
def test_a_keras_saved_model_loads_through_the_loader_of_its_content_not_its_name(
        tmp_path, saved, digits, saved_as, named):
    folder, original = saved
    path = tmp_path / named
    content = (folder / saved_as).read_bytes()
    path.write_bytes(content)
    loaded = byo.load(path, digits)
    assert zipfile.ZipFile(folder / "mine.keras").namelist() == [
        "metadata.json", "config.json", "model.weights.h5"]
    assert loaded.info["sha256"] == byo.hashlib.sha256(content).hexdigest()
    # The softmax is stripped: the logits give the original's probabilities.
    x = digits.x_test[:16]
    logits = loaded.model.predict(x, verbose=0)
    probabilities = original.predict(x, verbose=0)
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert np.allclose(softmax, probabilities, atol=1e-5)


def test_a_missing_path_and_a_folder_are_one_line_errors(tmp_path, digits):
    assert "no model file at" in refusal(tmp_path / "missing.keras", digits)
    assert "is a folder" in refusal(tmp_path, digits)


def test_a_file_that_is_neither_format_is_a_one_line_error(tmp_path, digits):
    path = tmp_path / "mine.keras"
    path.write_bytes(b"not a model" * 100)
    assert "neither a .keras archive nor an HDF5 model" in refusal(path, digits)


def test_an_unreadable_model_file_is_a_one_line_error(digits):
    with folder_others_can_enter() as folder:
        path = folder / "mine.keras"
        path.write_bytes(b"PK")
        message = error_without_permission(path, lambda: byo.load(path, digits))
    assert message == (f"QuantlabError: cannot read {path}: permission denied; make it readable "
                       f"or copy it somewhere you can read")


# --- files that declare more than they hold ------------------------------------------------------

LOAD_WITHIN_3_GIB = """
import sys
from quantlab import byo, datasets
from quantlab.errors import QuantlabError
path, checked = sys.argv[1], sys.argv[2] == "checked"
if not checked:  # plain Keras
    from quantlab._tf import keras
    keras().models.load_model(path, compile=False, safe_mode=True)
    sys.exit(0)
try:
    byo.load(path, datasets.load("digits"))
except QuantlabError as error:
    sys.exit(f"quantlab: {error}")
"""


def load_within_3_gib(path, checked):
    # Plain Keras on TensorFlow's plain CPU allocator: oneDNN's (the default) fails the same
    # way, after 20 s of retrying the allocation.
    return within_3_gib(LOAD_WITHIN_3_GIB, path, "checked" if checked else "plain",
                        env={} if checked else {"TF_ENABLE_ONEDNN_OPTS": "0"})


def test_a_dense_layer_of_12_million_units_is_refused_before_keras_allocates_its_3_gb_kernel(
        tmp_path):
    wide = v3_layer("Dense", "keras.layers", {"name": "wide", "units": 12_000_000})
    path = tmp_path / "mine.keras"
    path.write_bytes(keras_archive_bytes(v3_sequential(
        V3_INPUT, v3_layer("Flatten", "keras.layers", {"name": "flatten"}), wide)))
    assert path.stat().st_size < 10_000
    result = load_within_3_gib(path, checked=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    line, = result.stderr.splitlines()
    assert line.startswith(f"quantlab: {path} declares 2,930 MiB of weights by its variable "
                           f"'kernel' of shape (64, 12000000), more than the")
    # Unchecked, Keras builds the kernel before it reads a single weight: out of memory.
    plain = load_within_3_gib(path, checked=False)
    assert plain.returncode != 0 and ("OOM" in plain.stderr or "alloc" in plain.stderr.lower())


def test_stored_weights_that_declare_more_than_the_file_holds_are_refused(tmp_path, digits):
    # An HDF5 dataset of 3 GB declared, none of it written: the file stays small, and a
    # reader that trusts the shape allocates it all.
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5.create_dataset("layers/dense/vars/0", shape=(12_000_000, 64), dtype="float32")
    weights = buffer.getvalue()
    assert len(weights) < 10_000
    clean = v3_sequential(V3_INPUT, v3_layer("Flatten", "keras.layers", {"name": "flatten"}))
    path = tmp_path / "mine.keras"
    path.write_bytes(keras_archive_bytes(clean, weights=weights))
    assert ("declares 2,930 MiB of weights (the largest: 'layers/dense/vars/0' of shape "
            "(12000000, 64))") in refusal(path, digits)


def nested(depth):
    """A Keras configuration whose layer list nests ``depth`` levels of lists, as JSON text."""
    return ('{"module": "keras", "class_name": "Sequential", "config": {"name": "s", "layers": '
            + "[" * depth + "]" * depth + '}, "registered_name": null}')


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_a_configuration_nested_50000_levels_deep_is_refused_before_it_is_parsed(
        tmp_path, digits, fmt):
    text = nested(50_000)
    with pytest.raises(RecursionError):
        json.loads(text)  # what parsing it would do
    path = tmp_path / f"mine.{fmt}"
    if fmt == "keras":
        path.write_bytes(keras_archive_bytes(None, config_text=text))
    else:
        path.write_bytes(h5_bytes(None, config_text=text))
    assert "nested more than 64 levels deep" in refusal(path, digits)


def test_brackets_inside_strings_do_not_count_as_nesting():
    assert byo._json_depth('{"name": "[[[[{{{{", "layers": [[]]}') == 3
    assert byo._json_depth(r'{"name": "a \" [[[[ b"}') == 1


def test_a_keras_archive_whose_member_fails_its_checksum_is_a_one_line_error(tmp_path, digits):
    content = keras_archive_bytes(v3_sequential(V3_INPUT))
    at = content.index(b'"sequential"')
    path = tmp_path / "mine.keras"
    path.write_bytes(content[:at + 1] + b"S" + content[at + 2:])  # same length, bad CRC-32
    assert "is a damaged ZIP archive (its member config.json cannot be read back whole)" \
        in refusal(path, digits)


def test_a_layer_that_computes_gigabytes_from_a_small_image_is_refused_before_it_runs(
        tmp_path, digits, keras):
    layers = keras.layers
    model = keras.Sequential([layers.Input((8, 8, 1)), layers.UpSampling2D(5000, name="huge"),
                              layers.GlobalMaxPooling2D(), layers.Dense(10)])
    path = tmp_path / "mine.keras"
    model.save(path)  # Keras builds it from shapes alone; only running it would take 6 GB
    assert "of tensors per image (the largest: 'huge' of shape [1, 40000, 40000, 1])" \
        in refusal(path, digits)


@pytest.mark.parametrize("config", [5, np.array([1.0, 2.0]), np.bytes_(b'{"class_name": "\xff"}')],
                         ids=["a number", "an array", "bytes not UTF-8"])
def test_an_hdf5_model_config_that_is_not_text_is_one_line(tmp_path, digits, config):
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5.attrs["model_config"] = config
    path = tmp_path / "mine.h5"
    path.write_bytes(buffer.getvalue())
    message = refusal(path, digits)
    assert "model_config that is not text" in message or "not valid JSON" in message, message


@pytest.mark.parametrize("name, said", [
    ("a/b", "quantlab needs layer names of letters, digits"),
    ("a\\", "quantlab needs layer names of letters, digits"),
    ("sequential_with_softmax", "like its model"),
], ids=["a scope", "a backslash", "the wrapper's name"])
def test_a_layer_name_the_converters_would_split_refuse_or_spread_is_refused(tmp_path, digits,
                                                                              name, said):
    dense = {"class_name": "Dense", "config": {"name": name, "units": 10}}
    path = tmp_path / "mine.h5"
    path.write_bytes(h5_bytes(sequential(INPUT, FLATTEN, dense)))
    assert said in refusal(path, digits)
