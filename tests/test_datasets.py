"""quantlab.datasets against real files: Fashion-MNIST from the Debian package, scikit-learn
digits, and MNIST/CIFAR-10 files built here in their exact published layouts."""

import contextlib
import gzip
import hashlib
import io
import math
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

import dataset_archives as archives
from quantlab import datasets
from quantlab.datasets import checks, find, idx, names
from quantlab.errors import QuantlabError

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = "apt-get install dataset-fashion-mnist"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No user Keras cache, no QUANTLAB_* settings: each test says where data is."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.delenv("QUANTLAB_DATA_DIR", raising=False)
    monkeypatch.delenv("QUANTLAB_ALLOW_DOWNLOAD", raising=False)
    return home


@pytest.fixture
def no_system_data(tmp_path, monkeypatch):
    """Point the Debian location at an empty folder, so only the test's files are found."""
    system = tmp_path / "usr-share-datasets"
    system.mkdir()
    monkeypatch.setattr(find, "SYSTEM_DIR", system)
    return system


@pytest.fixture(scope="module")
def fashion():
    if not DEBIAN_FASHION.is_dir():
        pytest.fail(f"{DEBIAN_FASHION} is missing: {INSTALL_HINT}")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("QUANTLAB_DATA_DIR", raising=False)
        mp.setenv("KERAS_HOME", "/nonexistent/keras-home")
        return datasets.load("fashion_mnist")


def one_line_error(excinfo):
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --- staging a permission error ---------------------------------------------------------

NOBODY = 65534


@contextlib.contextmanager
def folder_others_can_enter():
    """A fresh folder every user may enter (pytest's own tmp folders are the owner's only)."""
    folder = Path(tempfile.mkdtemp(prefix="quantlab-test-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for inside in [*folder.rglob("*"), folder]:
            inside.chmod(0o755 if inside.is_dir() else 0o644)
        shutil.rmtree(folder)


def error_without_permission(path, call):
    """``call()``'s error, as "Type: message", once ``path`` may not be read or listed.

    chmod alone does not stop root, which the tests may run as: then ``call`` runs in a
    forked child that has become the user nobody, for whom ``path`` (owned by root, mode
    000) is as closed as it is for any other user. ``path`` must lie in a folder nobody
    may enter: see folder_others_can_enter.
    """
    mode = path.stat().st_mode
    path.chmod(0)
    try:
        if os.geteuid() != 0:
            return _error_of(call)
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - the child reports through the pipe
            try:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                os.write(write_end, _error_of(call).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            reported = pipe.read().decode()
        os.waitpid(child, 0)
        return reported
    finally:
        path.chmod(mode)


def _error_of(call):
    try:
        call()
    except Exception as error:  # the test compares the type too
        return f"{type(error).__name__}: {error}"
    return "no error"


# --- real data --------------------------------------------------------------------------

@pytest.mark.fashion_mnist
def test_fashion_mnist_from_debian_package_has_real_shapes_and_balanced_classes(fashion):
    assert fashion.name == "fashion_mnist"
    assert fashion.source == str(DEBIAN_FASHION)
    assert fashion.x_train.shape == (60000, 28, 28, 1)
    assert fashion.x_test.shape == (10000, 28, 28, 1)
    assert fashion.input_shape == (28, 28, 1)
    assert fashion.num_classes == 10
    assert fashion.class_names[0] == "T-shirt/top" and fashion.class_names[9] == "Ankle boot"
    for x in (fashion.x_train, fashion.x_test):
        assert x.dtype == np.float32
        assert x.min() == 0.0 and x.max() == 1.0
    for y, per_class in ((fashion.y_train, 6000), (fashion.y_test, 1000)):
        assert y.dtype == np.int64
        assert np.bincount(y, minlength=10).tolist() == [per_class] * 10
    # Real clothes: every image has ink, and the average pixel is neither black nor white.
    assert (fashion.x_train.reshape(60000, -1).max(axis=1) > 0).all()
    assert 0.2 < fashion.x_train.mean() < 0.4


@pytest.mark.fashion_mnist
def test_fashion_mnist_subset_keeps_the_first_training_images_and_the_whole_test_set(fashion):
    small = fashion.subset(500)
    assert small.x_train.shape == (500, 28, 28, 1)
    assert np.array_equal(small.x_train, fashion.x_train[:500])
    assert np.array_equal(small.y_train, fashion.y_train[:500])
    assert small.x_test is fashion.x_test
    assert fashion.x_train.shape[0] == 60000  # the original is untouched
    assert fashion.subset(None) is fashion


@pytest.mark.fashion_mnist
def test_survey_reports_fashion_mnist_available_and_cifar10_unavailable_with_a_reason(isolated):
    if not DEBIAN_FASHION.is_dir():
        pytest.fail(f"{DEBIAN_FASHION} is missing: {INSTALL_HINT}")
    rows = {row["name"]: row for row in datasets.survey()}
    assert list(rows) == list(datasets.NAMES)
    assert rows["fashion_mnist"] == {
        "name": "fashion_mnist", "available": True, "source": str(DEBIAN_FASHION),
        "reason": None, "train": 60000, "test": 10000, "input_shape": [28, 28, 1],
        "classes": 10}
    cifar = rows["cifar10"]
    assert cifar["available"] is False and cifar["source"] is None
    assert "cifar10 not found" in cifar["reason"] and "\n" not in cifar["reason"]
    assert str(isolated / ".keras" / "datasets") in cifar["reason"]
    assert rows["digits"]["available"] and rows["digits"]["train"] == 1437


def test_digits_are_8x8_in_unit_range_with_a_deterministic_stratified_split():
    first, second = datasets.load("digits"), datasets.load("digits")
    assert first.source == "scikit-learn"
    assert first.x_train.shape == (1437, 8, 8, 1) and first.x_test.shape == (360, 8, 8, 1)
    assert first.x_train.dtype == np.float32 and first.y_train.dtype == np.int64
    assert first.x_train.min() == 0.0 and first.x_train.max() == 1.0
    # 0..16 divided by 16 exactly: every value is a multiple of 1/16.
    assert np.array_equal(first.x_train * 16, np.round(first.x_train * 16))
    assert first.class_names == tuple("0123456789")
    for a, b in ((first.x_train, second.x_train), (first.y_train, second.y_train),
                 (first.x_test, second.x_test), (first.y_test, second.y_test)):
        assert np.array_equal(a, b)
    assert set(first.y_train.tolist()) == set(first.y_test.tolist()) == set(range(10))


def test_digits_are_the_images_and_split_scikit_learn_gives_read_without_importing_it():
    code = ("import sys; from quantlab import datasets; data = datasets.load('digits'); "
            "print('sklearn' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bundled = load_digits()
    images, labels = bundled.images[..., None] / 16.0, bundled.target
    expected = train_test_split(images, labels, test_size=0.2, stratify=labels, random_state=0)
    data = datasets.load("digits")
    for ours, theirs in zip((data.x_train, data.x_test, data.y_train, data.y_test), expected):
        assert np.array_equal(ours, theirs)


@pytest.mark.parametrize("content", [
    gzip.compress(b"0," * 64 + b"1\n")[:12],              # truncated
    b"plain text, not gzip",
    gzip.compress(b"0,1\n" * 30),                         # rows of 2, not 65
    gzip.compress(b"0," * 64 + b"11\n" * 1) * 30,         # a label of 11
    gzip.compress((b"17," * 64 + b"1\n") * 30),           # pixels above 16
])
def test_a_damaged_digits_file_is_one_line_naming_it_and_the_fix(tmp_path, content):
    from quantlab.datasets import digits

    path = tmp_path / "digits.csv.gz"
    path.write_bytes(content)
    with pytest.raises(QuantlabError) as error:
        digits._table(path)
    assert str(path) in str(error.value) and "reinstall scikit-learn" in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("counts, draws, expected", [
    ([4, 2], 3, [2, 1]), ([5, 2], 4, [3, 1]),  # scikit-learn's own examples
    ([3, 3, 3], 6, [2, 2, 2]),                 # no remainder: nothing drawn
])
def test_the_share_of_each_class_is_its_floored_share_plus_the_largest_remainders(counts, draws,
                                                                                  expected):
    from quantlab.datasets.digits import _approximate_mode

    found = _approximate_mode(np.array(counts), draws, np.random.RandomState(0))
    assert found.tolist() == expected


def test_importing_datasets_does_not_import_tensorflow_keras_or_sklearn():
    code = ("import sys, quantlab.datasets; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'tf_keras', 'sklearn') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


# --- MNIST-style IDX files and Keras' mnist.npz -----------------------------------------

def assert_mnist_loaded(ds, arrays, name="mnist"):
    assert ds.name == name
    assert ds.x_train.shape == (len(arrays["x_train"]), 28, 28, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert np.array_equal(np.round(ds.x_train[..., 0] * 255).astype(np.uint8), arrays["x_train"])
    assert np.array_equal(np.round(ds.x_test[..., 0] * 255).astype(np.uint8), arrays["x_test"])
    assert np.array_equal(ds.y_train, arrays["y_train"])
    assert np.array_equal(ds.y_test, arrays["y_test"])


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "plain"])
@pytest.mark.parametrize("sep", ["-", "."], ids=["published-names", "dot-idx-names"])
def test_mnist_idx_files_load_from_data_dir_gzipped_or_plain(tmp_path, no_system_data, gz, sep):
    arrays = archives.mnist_arrays()
    archives.write_idx_files(tmp_path / "mnist", arrays, gz=gz, sep=sep)
    ds = datasets.load("mnist", data_dir=tmp_path / "mnist")
    assert_mnist_loaded(ds, arrays)
    assert ds.source == str(tmp_path / "mnist")
    assert ds.class_names == tuple("0123456789")


@pytest.mark.parametrize("folder", ["fashion-mnist", "fashion_mnist"])
def test_fashion_mnist_is_found_in_a_subfolder_of_data_dir_with_either_spelling(tmp_path, folder):
    arrays = archives.mnist_arrays(seed=1)
    archives.write_idx_files(tmp_path / "data" / folder, arrays)
    ds = datasets.load("fashion_mnist", data_dir=str(tmp_path / "data"))
    assert_mnist_loaded(ds, arrays, name="fashion_mnist")
    assert ds.source == str(tmp_path / "data" / folder)
    assert ds.class_names[-1] == "Ankle boot"


def test_data_dir_beats_the_environment_variable_which_beats_the_system_folder(
        tmp_path, monkeypatch, no_system_data):
    by_place = {}
    for seed, place in enumerate(["arg", "env", "system"]):
        folder = no_system_data / "mnist" if place == "system" else tmp_path / place / "mnist"
        by_place[place] = archives.mnist_arrays(seed=seed)
        archives.write_idx_files(folder, by_place[place])
    monkeypatch.setenv("QUANTLAB_DATA_DIR", str(tmp_path / "env"))
    assert_mnist_loaded(datasets.load("mnist", data_dir=tmp_path / "arg"), by_place["arg"])
    assert_mnist_loaded(datasets.load("mnist"), by_place["env"])
    monkeypatch.delenv("QUANTLAB_DATA_DIR")
    ds = datasets.load("mnist")
    assert_mnist_loaded(ds, by_place["system"])
    assert ds.source == str(no_system_data / "mnist")


def test_an_empty_data_dir_falls_through_to_the_next_place(tmp_path, monkeypatch,
                                                           no_system_data):
    arrays = archives.mnist_arrays(seed=3)
    archives.write_idx_files(tmp_path / "env" / "mnist", arrays)
    monkeypatch.setenv("QUANTLAB_DATA_DIR", str(tmp_path / "env"))
    (tmp_path / "empty").mkdir()
    assert_mnist_loaded(datasets.load("mnist", data_dir=tmp_path / "empty"), arrays)


def test_each_dataset_takes_the_subfolder_named_after_it_from_one_data_dir(tmp_path):
    mnist, fashion = archives.mnist_arrays(seed=9), archives.mnist_arrays(seed=10)
    archives.write_idx_files(tmp_path / "mnist", mnist)  # same file names as Fashion-MNIST's
    archives.write_idx_files(tmp_path / "fashion-mnist", fashion)
    assert_mnist_loaded(datasets.load("fashion_mnist", data_dir=tmp_path), fashion,
                        name="fashion_mnist")
    assert_mnist_loaded(datasets.load("mnist", data_dir=tmp_path), mnist)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_files_of_unknown_origin_in_a_folder_not_named_after_the_dataset_are_refused(
        tmp_path, no_system_data, name):
    archives.write_idx_files(tmp_path / "downloads", archives.mnist_arrays())
    with pytest.raises(QuantlabError) as excinfo:
        datasets.load(name, data_dir=tmp_path / "downloads")
    message = one_line_error(excinfo)
    assert str(tmp_path / "downloads") in message and "not named after" in message
    assert f"folder named {names.SPELLINGS[name][0]}/" in message


def link_fashion_files(folder):
    folder.mkdir(parents=True)
    for path in DEBIAN_FASHION.iterdir():
        (folder / path.name).symlink_to(path)
    return folder


@pytest.mark.fashion_mnist
@pytest.mark.parametrize("where", ["debian-folder", "folder-named-mnist"])
def test_the_fashion_mnist_files_cannot_pass_as_mnist_even_in_a_folder_named_mnist(
        tmp_path, no_system_data, where):
    folder = DEBIAN_FASHION if where == "debian-folder" else link_fashion_files(tmp_path / "mnist")
    with pytest.raises(QuantlabError) as excinfo:
        datasets.load("mnist", data_dir=folder)
    message = one_line_error(excinfo)
    assert f"{folder}: holds the published fashion_mnist files" in message
    assert "use --dataset fashion_mnist" in message


@pytest.mark.fashion_mnist
def test_the_published_fashion_mnist_files_load_from_a_folder_of_any_name(tmp_path, no_system_data):
    folder = link_fashion_files(tmp_path / "downloads")
    ds = datasets.load("fashion_mnist", data_dir=folder)
    assert ds.source == str(folder) and ds.x_train.shape == (60000, 28, 28, 1)


def test_files_with_the_checksums_of_the_published_mnist_files_are_not_taken_for_fashion_mnist(
        tmp_path, no_system_data, monkeypatch):
    # The real MNIST files are not on this machine: list these files' checksums as MNIST's,
    # as the real files' are.
    paths = archives.write_idx_files(tmp_path / "fashion-mnist", archives.mnist_arrays())
    for path in paths.values():
        monkeypatch.setitem(idx.PUBLISHED_GZ_MD5,
                            hashlib.md5(path.read_bytes()).hexdigest(), "mnist")
    with pytest.raises(QuantlabError) as excinfo:
        datasets.load("fashion_mnist", data_dir=tmp_path)
    assert "fashion-mnist: holds the published mnist files" in one_line_error(excinfo)
    # Published files are the dataset they are, whatever their folder is called.
    assert datasets.load("mnist", data_dir=tmp_path / "fashion-mnist").name == "mnist"


@pytest.mark.parametrize("via", ["argument", "environment"])
def test_a_data_dir_that_does_not_exist_is_an_error_not_a_fallback(tmp_path, monkeypatch, via):
    missing = tmp_path / "typo"
    if via == "environment":
        monkeypatch.setenv("QUANTLAB_DATA_DIR", str(missing))
    with pytest.raises(QuantlabError) as excinfo:
        datasets.load("fashion_mnist", data_dir=missing if via == "argument" else None)
    message = one_line_error(excinfo)
    assert str(missing) in message and "does not exist" in message


def test_mnist_npz_and_fashion_mnist_load_from_the_keras_cache_under_home(
        isolated, no_system_data):
    mnist = archives.mnist_arrays(seed=4)
    fashion = archives.mnist_arrays(seed=5)
    keras_datasets = isolated / ".keras" / "datasets"
    archives.write_mnist_npz(keras_datasets / "mnist.npz", mnist)
    archives.write_idx_files(keras_datasets / "fashion-mnist", fashion)
    ds = datasets.load("mnist")
    assert_mnist_loaded(ds, mnist)
    assert ds.source == str(keras_datasets / "mnist.npz")
    ds = datasets.load("fashion_mnist")
    assert_mnist_loaded(ds, fashion, name="fashion_mnist")
    assert ds.source == str(keras_datasets / "fashion-mnist")


def test_keras_home_overrides_the_keras_cache_location(tmp_path, monkeypatch, no_system_data):
    mnist = archives.mnist_arrays(seed=6)
    archives.write_mnist_npz(tmp_path / "kh" / "datasets" / "mnist.npz", mnist)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert_mnist_loaded(datasets.load("mnist"), mnist)


def test_the_environment_variable_beats_the_keras_cache(tmp_path, monkeypatch, isolated,
                                                        no_system_data):
    in_env, in_keras = archives.mnist_arrays(seed=7), archives.mnist_arrays(seed=8)
    archives.write_idx_files(tmp_path / "env" / "mnist", in_env)
    archives.write_mnist_npz(isolated / ".keras" / "datasets" / "mnist.npz", in_keras)
    monkeypatch.setenv("QUANTLAB_DATA_DIR", str(tmp_path / "env"))
    assert_mnist_loaded(datasets.load("mnist"), in_env)


# --- CIFAR-10: python and binary archives, tar.gz or extracted --------------------------

def assert_cifar_loaded(ds, batches):
    expected = archives.expected_cifar_images(batches)
    n_train = sum(len(labels) for _, labels in batches[:5])
    assert ds.name == "cifar10"
    assert ds.x_train.shape == (n_train, 32, 32, 3) and ds.x_test.shape == (20, 32, 32, 3)
    assert ds.input_shape == (32, 32, 3) and ds.num_classes == 10
    pixels = np.round(np.concatenate([ds.x_train, ds.x_test]) * 255).astype(np.uint8)
    assert np.array_equal(pixels, expected)
    # Channel-first to channel-last: pixel (row 0, col 1) green is stored at 1024 + 1.
    assert ds.x_train[0, 0, 1, 1] == np.float32(batches[0][0][0, 1024 + 1] / 255)
    labels = [label for _, batch_labels in batches for label in batch_labels]
    assert np.concatenate([ds.y_train, ds.y_test]).tolist() == labels
    assert ds.class_names == tuple(archives.CIFAR_CLASSES)


@pytest.mark.parametrize("layout", [
    "cifar-10-python.tar.gz", "cifar-10-batches-py", "cifar-10-binary.tar.gz",
    "cifar-10-batches-bin"])
def test_cifar10_loads_from_each_official_archive_and_extracted_folder(tmp_path, layout):
    batches = archives.cifar_batches()
    python = "py" in layout or "python" in layout
    files = (archives.cifar_python_files if python else archives.cifar_binary_files)(batches)
    inner = "cifar-10-batches-py" if python else "cifar-10-batches-bin"
    if layout.endswith(".tar.gz"):
        archives.write_tar_gz(tmp_path / layout, inner, files)
    else:
        archives.write_folder(tmp_path / layout, files)
    ds = datasets.load("cifar10", data_dir=tmp_path)
    assert_cifar_loaded(ds, batches)
    assert ds.source == str(tmp_path / layout)


def test_cifar10_loads_from_the_keras_cache_archive_and_from_a_batches_folder_given_directly(
        tmp_path, monkeypatch, no_system_data):
    batches = archives.cifar_batches(seed=1)
    files = archives.cifar_python_files(batches)
    archive = archives.write_tar_gz(tmp_path / "kh" / "datasets" / "cifar-10-batches-py.tar.gz",
                                    "cifar-10-batches-py", files)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    ds = datasets.load("cifar10")
    assert_cifar_loaded(ds, batches)
    assert ds.source == str(archive)
    folder = archives.write_folder(tmp_path / "anywhere", files)
    assert datasets.load("cifar10", data_dir=folder).source == str(folder)


def test_cifar10_batches_repickled_by_python3_with_bytes_keys_also_load(tmp_path):
    batches = archives.cifar_batches(seed=2)
    files = {name: pickle.dumps({b"data": data, b"labels": labels}, protocol=2)
             for name, (data, labels) in zip(archives.PY_BATCH_NAMES, batches)}
    archives.write_folder(tmp_path / "cifar10" / "cifar-10-batches-py", files)
    assert_cifar_loaded(datasets.load("cifar10", data_dir=tmp_path), batches)


# --- bad input: one-line QuantlabError naming the file and the problem ------------------

def test_unknown_dataset_name_lists_the_valid_names():
    with pytest.raises(QuantlabError) as excinfo:
        datasets.load("imagenet")
    message = one_line_error(excinfo)
    assert "imagenet" in message
    for name in datasets.NAMES:
        assert name in message


def test_missing_fashion_mnist_names_every_place_looked_and_the_apt_install_fix(
        tmp_path, monkeypatch, isolated, no_system_data):
    (tmp_path / "arg").mkdir()
    (tmp_path / "env").mkdir()
    monkeypatch.setenv("QUANTLAB_DATA_DIR", str(tmp_path / "env"))
    with pytest.raises(QuantlabError) as excinfo:
        datasets.load("fashion_mnist", data_dir=tmp_path / "arg")
    message = one_line_error(excinfo)
    for place in [tmp_path / "arg", tmp_path / "arg" / "fashion-mnist", tmp_path / "env",
                  tmp_path / "env" / "fashion_mnist", no_system_data / "fashion-mnist",
                  isolated / ".keras" / "datasets" / "fashion-mnist"]:
        assert str(place) in message
    assert INSTALL_HINT in message
    assert "QUANTLAB_DATA_DIR" in message and "--data-dir" in message
    assert "QUANTLAB_ALLOW_DOWNLOAD" in message


@pytest.mark.parametrize("name, files", [
    ("mnist", ["train-images-idx3-ubyte.gz", "mnist.npz"]),
    ("cifar10", ["cifar-10-python.tar.gz", "cifar-10-binary.tar.gz"])])
def test_missing_mnist_or_cifar10_says_which_files_to_put_where(isolated, no_system_data,
                                                                 name, files):
    with pytest.raises(QuantlabError) as excinfo:
        datasets.load(name)
    message = one_line_error(excinfo)
    assert f"{name} not found" in message
    assert str(isolated / ".keras" / "datasets") in message
    assert str(no_system_data / name) in message
    assert "apt-get" not in message
    for file in files:
        assert file in message


def idx_folder_with(tmp_path, split, data):
    """Valid IDX files in tmp_path/mnist, with one of them replaced by ``data``."""
    paths = archives.write_idx_files(tmp_path / "mnist", archives.mnist_arrays())
    paths[split].write_bytes(data)
    return paths[split]


def test_truncated_gzip_idx_file_is_reported_with_its_name(tmp_path):
    whole = gzip.compress(archives.idx_bytes(archives.mnist_arrays()["x_train"]))
    bad = idx_folder_with(tmp_path, "x_train", whole[: len(whole) // 2])
    with pytest.raises(QuantlabError) as excinfo:
        datasets.load("mnist", data_dir=tmp_path / "mnist")
    message = one_line_error(excinfo)
    assert str(bad) in message and "gzip" in message


def test_wrong_magic_number_is_reported(tmp_path):
    labels = archives.idx_bytes(archives.mnist_arrays()["y_train"])
    # A label file where an image file should be: magic 0x801 instead of 0x803.
    bad = idx_folder_with(tmp_path, "x_train", gzip.compress(labels))
    with pytest.raises(QuantlabError) as excinfo:
        datasets.load("mnist", data_dir=tmp_path / "mnist")
    message = one_line_error(excinfo)
    assert str(bad) in message and "magic" in message and "0x00000801" in message


@pytest.mark.parametrize("change, size", [(-28, 7812), (+5, 7845)], ids=["short", "long"])
def test_payload_of_another_length_than_the_header_says_is_reported(tmp_path, change, size):
    data = archives.idx_bytes(archives.mnist_arrays()["x_test"])  # 10 x 28 x 28 = 7840 bytes
    data = data[:change] if change < 0 else data + b"\x00" * change
    bad = idx_folder_with(tmp_path, "x_test", gzip.compress(data))
    with pytest.raises(QuantlabError) as excinfo:
        datasets.load("mnist", data_dir=tmp_path / "mnist")
    message = one_line_error(excinfo)
    assert str(bad) in message and "7840 bytes" in message and f"has {size}" in message


def refused_with_peak(load):
    """(the QuantlabError ``load`` raised, the peak of memory traced while it ran): numpy's
    arrays and Python's bytes are both traced."""
    tracemalloc.start()
    try:
        with pytest.raises(QuantlabError) as excinfo:
            load()
        return excinfo, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("head, refusal", [
    (b"\x00" * 16, "bad magic number 0x00000000"),
    (archives.idx_bytes(archives.mnist_arrays()["x_train"]),
     f"header says 30 x 28 x 28 = 23520 bytes of data but the file has {23520 + (1 << 20)} or more"),
], ids=["zeros-from-the-start", "zeros-after-a-valid-file"])
def test_a_gzip_bomb_is_refused_without_expanding_it_in_memory(tmp_path, head, refusal):
    paths = archives.write_idx_files(tmp_path / "mnist", archives.mnist_arrays())
    expands_to = 3 << 29  # 1.5 GiB of zeros behind the head
    paths["x_train"].write_bytes(archives.gzip_bomb(head, expands_to))
    assert paths["x_train"].stat().st_size < 4 << 20
    excinfo, peak = refused_with_peak(lambda: datasets.load("mnist", data_dir=tmp_path / "mnist"))
    message = one_line_error(excinfo)
    assert str(paths["x_train"]) in message and refusal in message
    assert peak < 16 << 20  # expanding the file would take 1.5 GiB


def test_an_idx_header_promising_more_than_any_dataset_holds_is_refused_before_reading(tmp_path):
    header = struct.pack(">HBBIII", 0, 0x08, 3, 4_000_000, 28, 28)  # 3 GB of images
    bad = idx_folder_with(tmp_path, "x_train", gzip.compress(header))
    with pytest.raises(QuantlabError) as excinfo:
        datasets.load("mnist", data_dir=tmp_path / "mnist")
    message = one_line_error(excinfo)
    assert str(bad) in message
    assert "header promises 4000000 x 28 x 28 = 3136000000 bytes" in message and "256 MiB" in message


def idx_header(*dims):
    return struct.pack(">HBB", 0, 0x08, len(dims)) + struct.pack(f">{len(dims)}I", *dims)


def honest_gzip_of_zeros(head, zeros):
    """One gzip stream of ``head`` and exactly ``zeros`` zero bytes, made 16 MiB at a time."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as stream:
        stream.write(head)
        for start in range(0, zeros, 16 << 20):
            stream.write(bytes(min(16 << 20, zeros - start)))
    return out.getvalue()


def test_a_small_gzip_set_whose_headers_together_promise_too_much_is_refused_before_reading(tmp_path):
    """Each image file promises just under the 256 MiB a file may hold, and gzip can hold it
    (zeros, 1000-fold): under 1 MB of files that would have become 0.5 GB of pixels, then 2 GB
    of float32 in training."""
    n = 342_000  # 342000 x 28 x 28 = 268128000 bytes, just under 256 MiB = 268435456
    folder = tmp_path / "mnist"
    folder.mkdir()
    for split, name in archives.IDX_NAMES.items():
        dims = (n, 28, 28) if split.startswith("x") else (n,)
        (folder / f"{name}.gz").write_bytes(honest_gzip_of_zeros(idx_header(*dims), math.prod(dims)))
    assert sum(f.stat().st_size for f in folder.iterdir()) < 1 << 20
    excinfo, peak = refused_with_peak(lambda: datasets.load("mnist", data_dir=folder))
    message = one_line_error(excinfo)
    assert str(folder) in message
    assert f"promise {2 * n * 28 * 28 + 2 * n} bytes together" in message and "128 MiB" in message
    assert peak < 16 << 20


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
def test_a_header_promising_more_than_the_file_can_hold_is_refused_before_memory_is_taken(tmp_path, gz):
    header = idx_header(100_000, 28, 28)  # 78.4 MB of images, in a file of 1 KiB
    bad = idx_folder_with(tmp_path, "x_train", (gzip.compress if gz else bytes)(header + bytes(1000)))
    if not gz:
        bad = bad.rename(bad.with_suffix(""))
    excinfo, peak = refused_with_peak(lambda: datasets.load("mnist", data_dir=tmp_path / "mnist"))
    message = one_line_error(excinfo)
    assert str(bad) in message and "100000 x 28 x 28 = 78400000 bytes" in message
    assert ("compressed bytes can hold (gzip expands at most 1032-fold)" if gz
            else "but the file has 1000") in message
    assert peak < 16 << 20


def test_image_and_label_counts_that_differ_are_reported(tmp_path):
    labels = archives.idx_bytes(np.zeros(29, np.uint8))  # 30 images, 29 labels
    bad = idx_folder_with(tmp_path, "y_train", gzip.compress(labels))
    with pytest.raises(QuantlabError) as excinfo:
        datasets.load("mnist", data_dir=tmp_path / "mnist")
    message = one_line_error(excinfo)
    assert bad.name in message and "30 images but 29 labels" in message


def test_label_out_of_range_is_reported(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    labels[3] = 10
    bad = idx_folder_with(tmp_path, "y_test", gzip.compress(archives.idx_bytes(labels)))
    with pytest.raises(QuantlabError) as excinfo:
        datasets.load("mnist", data_dir=tmp_path / "mnist")
    message = one_line_error(excinfo)
    assert str(bad) in message and "label 10" in message


def test_an_incomplete_set_of_idx_files_is_reported_not_skipped(tmp_path):
    paths = archives.write_idx_files(tmp_path / "mnist", archives.mnist_arrays())
    paths["y_test"].unlink()
    with pytest.raises(QuantlabError) as excinfo:
        datasets.load("mnist", data_dir=tmp_path / "mnist")
    assert "t10k-labels-idx1-ubyte" in one_line_error(excinfo)


def test_an_unreadable_idx_file_is_a_one_line_error(no_system_data):
    with folder_others_can_enter() as folder:
        paths = archives.write_idx_files(folder / "mnist", archives.mnist_arrays())
        message = error_without_permission(paths["y_train"],
                                           lambda: datasets.load("mnist", data_dir=folder))
    assert message.startswith(f"QuantlabError: cannot read {paths['y_train']}: permission denied;")


def test_an_unreadable_data_folder_is_a_one_line_error(no_system_data):
    with folder_others_can_enter() as folder:
        archives.write_idx_files(folder / "mnist", archives.mnist_arrays())
        message = error_without_permission(folder / "mnist",
                                           lambda: datasets.load("mnist", data_dir=folder))
    assert message.startswith(f"QuantlabError: cannot read {folder / 'mnist'}/")
    assert "permission denied; make the dataset's files and folders readable" in message


def test_a_folder_where_an_idx_file_should_be_is_a_one_line_error(tmp_path):
    paths = archives.write_idx_files(tmp_path / "mnist", archives.mnist_arrays())
    paths["x_test"].unlink()
    paths["x_test"].mkdir()
    with pytest.raises(QuantlabError) as excinfo:
        datasets.load("mnist", data_dir=tmp_path / "mnist")
    assert one_line_error(excinfo) == (f"{paths['x_test']}: is a folder (or other non-file) "
                                       "where the data file should be; put the file itself there")


def test_mnist_npz_with_a_missing_array_is_reported(tmp_path):
    arrays = archives.mnist_arrays()
    del arrays["y_test"]
    bad = archives.write_mnist_npz(tmp_path / "mnist.npz", arrays)
    with pytest.raises(QuantlabError) as excinfo:
        datasets.load("mnist", data_dir=tmp_path)
    message = one_line_error(excinfo)
    assert str(bad) in message and "y_test" in message


def test_mnist_npz_with_an_array_larger_than_any_split_is_refused_before_it_is_read(
        tmp_path, monkeypatch):
    bad = archives.write_mnist_npz(tmp_path / "mnist.npz", archives.mnist_arrays())
    monkeypatch.setattr(checks, "MAX_SPLIT_BYTES", 20_000)  # x_train holds 30 x 28 x 28 bytes
    with pytest.raises(QuantlabError) as excinfo:
        datasets.load("mnist", data_dir=tmp_path)
    message = one_line_error(excinfo)
    assert str(bad) in message and "holds an array of 23648 bytes" in message


def test_mnist_npz_whose_header_promises_more_than_its_member_holds_is_refused(tmp_path):
    arrays = archives.mnist_arrays()
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (10**9, 28, 28)})
    bad = archives.write_mnist_npz(tmp_path / "mnist.npz", arrays)
    with zipfile.ZipFile(bad, "w") as archive:  # the other three arrays as they were
        for key, array in arrays.items():
            member = io.BytesIO()
            np.save(member, array)
            archive.writestr(f"{key}.npy", header.getvalue() + b"\0" * 100 if key == "x_train"
                             else member.getvalue())
    with pytest.raises(QuantlabError) as excinfo:
        datasets.load("mnist", data_dir=tmp_path)
    message = one_line_error(excinfo)
    assert str(bad) in message and "x_train's header promises 1000000000x28x28" in message


def test_mnist_npz_whose_members_zipfile_cannot_open_is_one_line(tmp_path):
    bad = archives.write_mnist_npz(tmp_path / "mnist.npz", archives.mnist_arrays())
    bad.write_bytes(archives.with_zip_fields(bad.read_bytes(), method=99))
    with pytest.raises(QuantlabError) as excinfo:
        datasets.load("mnist", data_dir=tmp_path)
    assert "not a readable .npz file" in one_line_error(excinfo)


def test_cifar10_binary_batch_with_a_wrong_record_size_is_refused(tmp_path):
    files = archives.cifar_binary_files(archives.cifar_batches())
    files["data_batch_3.bin"] = files["data_batch_3.bin"][:-1]
    archive = archives.write_tar_gz(tmp_path / "cifar-10-binary.tar.gz", "cifar-10-batches-bin",
                                    files)
    with pytest.raises(QuantlabError) as excinfo:
        datasets.load("cifar10", data_dir=tmp_path)
    message = one_line_error(excinfo)
    assert str(archive) in message and "data_batch_3.bin" in message
    assert "3073-byte records" in message


def test_cifar10_binary_folder_with_a_wrong_record_size_is_refused(tmp_path):
    files = archives.cifar_binary_files(archives.cifar_batches())
    files["test_batch.bin"] += b"\x00" * 100
    folder = archives.write_folder(tmp_path / "cifar-10-batches-bin", files)
    with pytest.raises(QuantlabError) as excinfo:
        datasets.load("cifar10", data_dir=tmp_path)
    assert str(folder / "test_batch.bin") in one_line_error(excinfo)


def test_cifar10_binary_label_out_of_range_is_reported(tmp_path):
    files = archives.cifar_binary_files(archives.cifar_batches())
    records = bytearray(files["data_batch_2.bin"])
    records[3073 * 5] = 11  # the label byte of the sixth record
    files["data_batch_2.bin"] = bytes(records)
    archives.write_folder(tmp_path / "cifar-10-batches-bin", files)
    with pytest.raises(QuantlabError) as excinfo:
        datasets.load("cifar10", data_dir=tmp_path)
    message = one_line_error(excinfo)
    assert "data_batch_2.bin" in message and "label 11" in message


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_cifar10_tar_archive_is_reported(tmp_path, damage):
    files = archives.cifar_python_files(archives.cifar_batches())
    archive = archives.write_tar_gz(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py",
                                    files)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a tar" * 99)
    with pytest.raises(QuantlabError) as excinfo:
        datasets.load("cifar10", data_dir=tmp_path)
    message = one_line_error(excinfo)
    assert str(archive) in message and "tar" in message


def test_cifar10_archive_missing_a_batch_is_reported(tmp_path):
    files = archives.cifar_python_files(archives.cifar_batches())
    del files["data_batch_5"]
    archive = archives.write_tar_gz(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py",
                                    files)
    with pytest.raises(QuantlabError) as excinfo:
        datasets.load("cifar10", data_dir=tmp_path)
    message = one_line_error(excinfo)
    assert str(archive) in message and "cifar-10-batches-py/data_batch_5" in message


@pytest.mark.parametrize("payload", ["os.system", "builtins.eval"])
@pytest.mark.parametrize("container", ["tar.gz", "folder"])
def test_a_crafted_pickle_is_refused_and_never_executed(tmp_path, payload, container):
    marker = tmp_path / "pwned"
    if payload == "os.system":
        evil = archives.RunsShellCommand(f"touch {marker}")
    else:
        evil = archives.RunsEval(f"open({str(marker)!r}, 'w').close()")
    crafted = pickle.dumps(evil, protocol=2)
    files = archives.cifar_python_files(archives.cifar_batches())
    files["data_batch_1"] = crafted
    if container == "tar.gz":
        where = archives.write_tar_gz(tmp_path / "cifar-10-python.tar.gz",
                                      "cifar-10-batches-py", files)
    else:
        where = archives.write_folder(tmp_path / "cifar-10-batches-py", files) / "data_batch_1"
    with pytest.raises(QuantlabError) as excinfo:
        datasets.load("cifar10", data_dir=tmp_path)
    message = one_line_error(excinfo)
    assert str(where) in message and "refusing to unpickle" in message
    assert not marker.exists()
    # The payload is real: plain pickle.loads would have run it.
    pickle.loads(crafted)
    assert marker.exists()


def test_a_crafted_pickle_in_batches_meta_is_refused_too(tmp_path):
    files = archives.cifar_python_files(archives.cifar_batches())
    # _codecs.encode is admitted only for latin-1 bytes; other codecs are refused.
    files["batches.meta"] = (b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00"
                             b"rot13\x86R.")
    folder = archives.write_folder(tmp_path / "cifar-10-batches-py", files)
    with pytest.raises(QuantlabError) as excinfo:
        datasets.load("cifar10", data_dir=tmp_path)
    message = one_line_error(excinfo)
    assert str(folder / "batches.meta") in message and "refusing to unpickle" in message
