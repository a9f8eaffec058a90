"""A user's own images as the user's model takes them: real Fashion-MNIST pictures written as
PNG and JPEG files (and .npz arrays) here, read back through quantlab.datasets.load_user, and
every kind of hostile folder or file refused in one line."""

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dataset_archives as archives
from conftest import one_line_error, quantlab
from quantlab import datasets
from quantlab.datasets import idx, image_folder
from quantlab.errors import QuantlabError
from quantlab.study import StudyConfig

FASHION_TEST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
FASHION_LABELS = Path("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")
CLASSES = ("bag", "sneaker", "trouser")  # folder names, deliberately not in label order
PER_CLASS = 16
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def pictures():
    """{class folder name: uint8 28 x 28 images}: the first PER_CLASS real Fashion-MNIST test
    images of Bag (8), Sneaker (7) and Trouser (1)."""
    if not FASHION_TEST.is_file():
        pytest.fail(f"{FASHION_TEST} is missing: apt-get install dataset-fashion-mnist")
    images, labels = idx.read(FASHION_TEST, 3), idx.read(FASHION_LABELS, 1)
    return {name: images[labels == label][:PER_CLASS]
            for name, label in zip(CLASSES, (8, 7, 1))}


def _folder(root, pictures, jpeg=()):
    """Write the pictures as one subfolder per class: PNG, or JPEG for the classes in ``jpeg``."""
    for name, images in pictures.items():
        (root / name).mkdir(parents=True)
        for i, image in enumerate(images):
            suffix = "jpg" if name in jpeg else "png"
            Image.fromarray(image).save(root / name / f"{i:03d}.{suffix}")
    return root


def _all_splits(data):
    x = np.concatenate([data.x_train, data.x_val, data.x_test])
    y = None if not data.labelled else np.concatenate([data.y_train, data.y_val, data.y_test])
    return x, y


def _refused(call, *fragments):
    with pytest.raises(QuantlabError) as error:
        call()
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.mark.fashion_mnist
def test_a_png_folder_gives_back_every_pixel_and_label_once_in_disjoint_splits(tmp_path, pictures):
    root = _folder(tmp_path / "clothes", pictures)
    data = datasets.load_user(root, (28, 28, 1), "NHWC", 3, calibration_size=5,
                              validation_size=7, seed=3)
    assert data.class_names == tuple(sorted(CLASSES)) and data.layout == "NHWC"
    assert [len(data.x_train), len(data.x_val), len(data.x_test)] == [5, 7, 3 * PER_CLASS - 12]
    x, y = _all_splits(data)
    assert x.dtype == np.float32 and x.shape[1:] == (28, 28, 1)
    # Lossless PNG and scale 1/255: each image comes back as its pixels / 255, with the label
    # of its folder in sorted order, and no image lands in two splits.
    got = sorted((np.rint(image * 255).astype(np.uint8).tobytes(), int(label))
                 for image, label in zip(x, y))
    written = sorted((image.tobytes(), sorted(CLASSES).index(name))
                     for name, images in pictures.items() for image in images)
    assert got == written
    assert np.allclose(x * 255, np.rint(x * 255), atol=1e-4)
    record = data.record
    assert record["files_per_class"] == {name: PER_CLASS for name in sorted(CLASSES)}
    assert record["splits"] == {"calibration": 5, "validation": 7, "test": 36}
    assert record["seed"] == 3 and record["scale"] == pytest.approx(1 / 255)
    assert record["mean"] == [0.0] and record["std"] == [1.0] and record["source"] == str(root)


@pytest.mark.fashion_mnist
def test_resize_rgb_nchw_and_normalization_match_a_hand_computation(tmp_path, pictures):
    root = _folder(tmp_path / "clothes", pictures, jpeg=("sneaker",))
    data = datasets.load_user(root, (14, 20, 3), "NCHW", 3, mean=MEAN, std=STD, seed=0)
    assert data.input_shape == (3, 14, 20) and data.image_shape == (14, 20, 3)
    x, y = _all_splits(data)
    # By hand: Pillow decodes, converts to RGB and resizes bilinearly; numpy scales,
    # normalizes per channel and moves channels first.
    expected = {}
    for name in sorted(CLASSES):
        for path in sorted((root / name).iterdir()):
            rgb = np.asarray(Image.open(path).convert("RGB").resize((20, 14), Image.BILINEAR))
            normalized = (rgb.astype(np.float64) / 255 - np.array(MEAN)) / np.array(STD)
            expected[path] = normalized.transpose(2, 0, 1)
    assert len(x) == len(expected) == 3 * PER_CLASS
    matched = set()
    for image in x:
        path = min(expected, key=lambda p: np.abs(expected[p] - image).max())
        assert np.abs(expected[path] - image).max() < 1e-5
        matched.add(path)
    assert len(matched) == len(expected)  # every file once
    # Grey pictures made RGB: three equal channels, each normalized with its own mean and std.
    assert not np.allclose(x[:, 0], x[:, 1])
    assert np.allclose(x[:, 0] * STD[0] + MEAN[0], x[:, 2] * STD[2] + MEAN[2], atol=1e-5)


@pytest.mark.fashion_mnist
def test_the_seed_chooses_the_splits_and_a_small_folder_keeps_most_images_for_testing(tmp_path, pictures):
    root = _folder(tmp_path / "clothes", pictures)
    first, again, other = (datasets.load_user(root, (28, 28, 1), "NHWC", 3, seed=s) for s in (5, 5, 6))
    assert np.array_equal(first.x_test, again.x_test) and first.sha256 == again.sha256
    assert not np.array_equal(first.x_train, other.x_train) and first.sha256 != other.sha256
    # 500 calibration and validation images asked of 48: a quarter each, recorded.
    assert first.record["splits"] == {"calibration": 12, "validation": 12, "test": 24}
    assert first.record["calibration_asked"] == 500
    keys = [image.tobytes() for split in (first.x_train, first.x_val, first.x_test) for image in split]
    assert len(set(keys)) == len(keys) == 48


@pytest.mark.fashion_mnist
def test_an_npz_reads_as_the_same_images_and_without_y_has_no_labels(tmp_path, pictures):
    folder = datasets.load_user(_folder(tmp_path / "clothes", pictures), (28, 28, 1), "NCHW", 3, seed=1)
    x = np.concatenate([pictures[name] for name in sorted(CLASSES)])
    y = np.repeat(np.arange(3), PER_CLASS)
    np.savez(tmp_path / "clothes.npz", x=x, y=y)
    labelled = datasets.load_user(tmp_path / "clothes.npz", (28, 28, 1), "NCHW", 3, seed=1)
    # Same images in the same order, same seed: the same splits as the folder.
    for split in ("x_train", "y_train", "x_val", "x_test", "y_test"):
        assert np.array_equal(getattr(folder, split), getattr(labelled, split)), split
    np.savez(tmp_path / "unlabelled.npz", x=x)
    unlabelled = datasets.load_user(tmp_path / "unlabelled.npz", (28, 28, 1), "NCHW", 3, seed=1)
    assert not unlabelled.labelled and unlabelled.y_train is None and unlabelled.y_val is None
    assert np.array_equal(unlabelled.x_test, labelled.x_test)
    assert unlabelled.sha256 != labelled.sha256 and unlabelled.record["labelled"] is False
    # Float pixels already of the model's size are taken as they are (before --scale).
    np.savez(tmp_path / "float.npz", x=x[..., None] / np.float32(255), y=y)
    floats = datasets.load_user(tmp_path / "float.npz", (28, 28, 1), "NCHW", 3, scale=1.0, seed=1)
    assert np.allclose(floats.x_test, labelled.x_test, atol=1e-6)
    broken = x[..., None] / np.float32(255)
    broken[0, 0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=broken)
    _refused(lambda: datasets.load_user(tmp_path / "nan.npz", (28, 28, 1), "NCHW", 3), "NaN")


# --- hostile folders and files -----------------------------------------------------------------

def _digits_folder(root, classes=("a", "b"), per_class=3):
    """A tiny real folder: scikit-learn's 8 x 8 digits as PNG files."""
    from sklearn.datasets import load_digits

    images = (load_digits().images * 15).astype(np.uint8)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(images[c * per_class + i]).save(root / name / f"{i}.png")
    return root


def test_a_file_that_is_not_an_image_is_named(tmp_path):
    root = _digits_folder(tmp_path / "data")
    (root / "b" / "notes.png").write_text("not a picture\n")
    _refused(lambda: datasets.load_user(root, (8, 8, 1), "NHWC", 2),
             str(root / "b" / "notes.png"), "not a PNG or JPEG", "remove it")


def test_an_empty_class_folder_and_a_wrong_class_count_are_refused(tmp_path):
    root = _digits_folder(tmp_path / "data")
    (root / "c").mkdir()
    (root / "c" / ".DS_Store").write_bytes(b"\0")  # hidden: skipped, so c holds nothing
    _refused(lambda: datasets.load_user(root, (8, 8, 1), "NHWC", 3), str(root / "c"), "holds no images")
    (root / "c").rename(tmp_path / "c")
    _refused(lambda: datasets.load_user(root, (8, 8, 1), "NHWC", 10),
             "2 class folders", "10 outputs", "sorted order")


def test_a_symlink_leading_outside_the_folder_is_refused(tmp_path):
    root = _digits_folder(tmp_path / "data")
    outside = _digits_folder(tmp_path / "elsewhere", classes=("x",))
    os.symlink(outside / "x" / "0.png", root / "a" / "9.png")
    _refused(lambda: datasets.load_user(root, (8, 8, 1), "NHWC", 2),
             str(root / "a" / "9.png"), "outside", "copy the file")
    (root / "a" / "9.png").unlink()
    os.symlink(outside / "x", root / "c")  # a whole class folder elsewhere
    _refused(lambda: datasets.load_user(root, (8, 8, 1), "NHWC", 3), str(root / "c"), "outside")
    (root / "c").unlink()
    os.symlink(root / "a" / "0.png", root / "b" / "9.png")  # inside: read as an image of b
    assert datasets.load_user(root, (8, 8, 1), "NHWC", 2).record["files_per_class"] == {"a": 3, "b": 4}


def test_a_100_megapixel_png_is_refused_before_it_is_decoded(tmp_path):
    root = _digits_folder(tmp_path / "data")
    Image.new("1", (10_000, 10_000)).save(root / "a" / "huge.png")  # 1-bit: about 12 kB
    assert (root / "a" / "huge.png").stat().st_size < 100_000
    _refused(lambda: datasets.load_user(root, (8, 8, 1), "NHWC", 2),
             str(root / "a" / "huge.png"), "100000000 pixels", "decompression-bomb limit", "resize")


def test_a_16_bit_png_is_refused_rather_than_clipped(tmp_path):
    root = _digits_folder(tmp_path / "data")
    Image.fromarray(np.full((8, 8), 40_000, np.uint16)).save(root / "a" / "deep.png")
    _refused(lambda: datasets.load_user(root, (8, 8, 1), "NHWC", 2), "deep.png", "not 8 bits")


def test_more_images_than_memory_allows_are_refused_before_decoding(tmp_path):
    root = _digits_folder(tmp_path / "data")
    _refused(lambda: datasets.load_user(root, (8192, 8192, 3), "NHWC", 2),
             "6 images of 8192 x 8192 x 3", "give at most 2 images")


def test_an_npz_with_labels_beyond_the_models_outputs_is_refused(tmp_path):
    x = np.zeros((8, 8, 8), np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 2, 3, 4, 5, 6, 10]))
    _refused(lambda: datasets.load_user(tmp_path / "d.npz", (8, 8, 1), "NHWC", 10),
             "label 10 in y is out of range 0..9", "10 outputs")


def test_an_npz_holding_a_pickle_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "ran"
    # An object array whose pickle would create a file when loaded.
    payload = np.empty(1, dtype=object)
    payload[0] = _Creates(str(marker))
    np.savez(tmp_path / "evil.npz", x=np.zeros((4, 8, 8), np.uint8), y=payload)
    _refused(lambda: datasets.load_user(tmp_path / "evil.npz", (8, 8, 1), "NHWC", 2),
             "y holds Python objects", "never loads")
    assert not marker.exists()


class _Creates:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_an_npz_header_promising_more_than_its_member_holds_is_refused(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (100_000, 1024, 1024)})
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w") as archive:
        archive.writestr("x.npy", header.getvalue() + b"\0" * 64)
    _refused(lambda: datasets.load_user(tmp_path / "bomb.npz", (8, 8, 1), "NHWC", 2),
             "promises 100000x1024x1024", "truncated or crafted")


def test_an_npz_array_of_a_kind_it_may_not_hold_is_refused_before_numpy_reads_it(
        tmp_path, monkeypatch):
    from quantlab.datasets import user_npz

    # Four "elements" of 100 MB each, zeros compressed to a small file: numpy would take 400 MB.
    x = np.zeros(4, dtype=np.dtype((np.void, 100_000_000)))
    np.savez_compressed(tmp_path / "void.npz", x=x)
    assert (tmp_path / "void.npz").stat().st_size < 2_000_000
    monkeypatch.setattr(user_npz.np, "load", lambda *a, **k: pytest.fail("numpy read the array"))
    _refused(lambda: datasets.load_user(tmp_path / "void.npz", (8, 8, 1), "NHWC", 2),
             "x holds |V100000000 values", "uint8 pixels")


def test_npz_images_of_no_pixels_are_refused(tmp_path):
    np.savez(tmp_path / "empty.npz", x=np.zeros((4, 0, 5), np.uint8))
    _refused(lambda: datasets.load_user(tmp_path / "empty.npz", (8, 8, 1), "NHWC", 2),
             "x is 4x0x5: images of no pixels")


def test_an_npz_label_beyond_int64_is_named_as_it_is(tmp_path):
    np.savez(tmp_path / "big.npz", x=np.zeros((1, 8, 8), np.uint8),
             y=np.array([2**63 + 5], np.uint64))
    _refused(lambda: datasets.load_user(tmp_path / "big.npz", (8, 8, 1), "NHWC", 2),
             f"label {2**63 + 5} in y is out of range")


@pytest.mark.parametrize("fields", [{"method": 99}, {"flags": 1}], ids=["unknown method", "encrypted"])
def test_an_npz_whose_members_zipfile_cannot_open_is_one_line(tmp_path, fields):
    np.savez(tmp_path / "plain.npz", x=np.zeros((4, 8, 8), np.uint8))
    (tmp_path / "d.npz").write_bytes(archives.with_zip_fields((tmp_path / "plain.npz").read_bytes(), **fields))
    _refused(lambda: datasets.load_user(tmp_path / "d.npz", (8, 8, 1), "NHWC", 2),
             "is not a readable .npz file")


def test_a_loop_of_symbolic_links_in_the_folder_is_one_line(tmp_path):
    root = _digits_folder(tmp_path / "data")
    (root / "a" / "loop").symlink_to("loop")
    _refused(lambda: datasets.load_user(root, (8, 8, 1), "NHWC", 2),
             str(root / "a" / "loop"), "leads back to itself")


def test_data_that_is_neither_folder_nor_file_is_named_so(tmp_path):
    os.mkfifo(tmp_path / "pipe.npz")  # reading it would block until a writer came
    _refused(lambda: datasets.load_user(tmp_path / "pipe.npz", (8, 8, 1), "NHWC", 2),
             "is neither a folder nor a file")


def test_too_many_images_are_refused_with_the_limit(tmp_path, monkeypatch):
    root = _digits_folder(tmp_path / "data")
    monkeypatch.setattr(image_folder, "MAX_IMAGES", 5)  # six real files against a lower limit
    _refused(lambda: datasets.load_user(root, (8, 8, 1), "NHWC", 2), "more than 5 images")


@pytest.mark.parametrize("kwargs, fragments", [
    ({"mean": (0.5, 0.5)}, ("2 mean values", "3 channel")),
    ({"std": (0.2, 0.0, 0.2)}, ("std", "must be positive")),
    ({"layout": "CHWN"}, ("unknown layout 'CHWN'", "NCHW")),
])
def test_preprocessing_that_cannot_fit_the_model_is_refused(tmp_path, kwargs, fragments):
    root = _digits_folder(tmp_path / "data")
    arguments = {"layout": "NHWC", **kwargs}
    _refused(lambda: datasets.load_user(root, (8, 8, 3), num_classes=2, **arguments), *fragments)


# --- the study's settings and the command line -------------------------------------------------

def test_study_config_checks_data_and_preprocessing(tmp_path):
    assert StudyConfig(data="digits").dataset == "digits"  # a built-in name is --dataset
    _refused(lambda: StudyConfig(data=tmp_path / "missing", model=tmp_path / "m.onnx"), "does not exist")
    root = _digits_folder(tmp_path / "data")
    _refused(lambda: StudyConfig(data=root), "needs --model")
    _refused(lambda: StudyConfig(mean=(0.5,)), "--mean applies to your own --data")
    _refused(lambda: StudyConfig(data=root, model=tmp_path / "m.onnx", mean=(0.1, 0.2, 0.3),
                                 std=(0.2, 0.2)), "3 mean values but 2 std values")
    for elsewhere, fragment in (({"scheduler": "tcp://10.0.0.5:8786"}, "run without --scheduler"),
                                ({"data_dir": str(tmp_path)}, "--data-dir finds built-in datasets")):
        _refused(lambda: StudyConfig(data=root, model=tmp_path / "m.onnx", **elsewhere), fragment)
    config = StudyConfig(data=root, model=tmp_path / "m.onnx", layout="nchw", scale=1.0)
    assert config.layout == "NCHW" and config.data == root


def test_quantlab_run_with_a_bad_folder_exits_2_with_one_line(tmp_path):
    root = _digits_folder(tmp_path / "data")
    (root / "a" / "readme.txt").write_text("these are digits\n")
    one_line_error(quantlab("run", "--model", str(tmp_path / "model.onnx"), "--data", str(root),
                            "--mean", "0.5", "--std", "0.25", "--out", str(tmp_path / "out")),
                   str(root / "a" / "readme.txt"), "not a PNG or JPEG")
    assert not (tmp_path / "out").exists()  # refused before any report folder is made
