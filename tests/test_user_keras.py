"""A user's Keras model studied on the user's own images (``quantlab run --quick --model
m.keras --data FOLDER``): the sensitivity (mixed precision) stage runs on the folder's
validation split, which neither calibrates int8 nor is scored.

The model is quantlab's quick-trained dense net on Fashion-MNIST (cached), saved as .keras;
the images are 600 real Fashion-MNIST test images written as PNG files into class folders.
Which images were in which split is worked out from what results.json records (the seed
and the split counts), and checked against the accuracies the study reports: the float
model, run here by plain Keras on those files, scores on them what the study says it scored.
"""

import contextlib
import io
import json

import numpy as np
import pytest
from markdown_it import MarkdownIt

from conftest import FEW_ROUNDS, quick_config

PER_CLASS = 60  # 600 images: 150 calibrate, 150 validate, 300 are scored
# The model's file name: matplotlib math that does not parse, HTML and a link. The net is
# named by the stem as a plain name: a folder in the cache, a heading, a plot's title.
FILE = "mine $\\nope$ <b>[l](http:e).keras"
NAME = "mine_nope_b_l_http_e"
NET = "dense"


@pytest.fixture(scope="module")
def studied(fashion, tmp_path_factory):
    from PIL import Image

    from quantlab import byo, cli, training

    folder = tmp_path_factory.mktemp("keras")
    root = folder / "images"
    for label in range(fashion.num_classes):
        (root / f"class{label}").mkdir(parents=True)
        for number in np.flatnonzero(fashion.y_test == label)[:PER_CLASS]:
            pixels = np.round(fashion.x_test[number, :, :, 0] * 255).astype(np.uint8)
            Image.fromarray(pixels, "L").save(root / f"class{label}" / f"{number:05d}.png")
    model = folder / FILE
    trained = training.train(quick_config(NET), fashion).model
    _untrained(trained).save(model)
    untrained = model.read_bytes()
    trained.save(model)
    mine = model.read_bytes()
    out = folder / "R"
    # Right after quantlab first reads the file, it becomes an untrained net of the same
    # shape, and it is put back once the study is done: every number below must still be
    # the trained net's (the one the study read).
    def read_then_swapped(path):
        content = read(path)
        model.write_bytes(untrained)
        return content

    read = byo.read_model_file
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(io.StringIO()) as said:
        patch.setattr(byo, "read_model_file", read_then_swapped)
        status = cli.main(["run", "--quick", "--model", str(model), "--data", str(root),
                           "--variants", "float32,int8", "--runtimes", "litert", "--out", str(out),
                           "--counters", "off", "--threads", "1", "--batch-sizes", "1", *FEW_ROUNDS])
    model.write_bytes(mine)
    assert status == 0, said.getvalue()[-3000:]
    return json.loads((out / "results.json").read_text()), model, root, said.getvalue()


def _untrained(model):
    from quantlab._tf import keras

    return keras().models.clone_model(model)  # the same layers, weights drawn anew


def test_a_model_file_name_of_markup_names_the_net_plainly_everywhere(studied):
    results, model, _, _ = studied
    assert list(results["nets"]) == [NAME] and results["model"]["file"] == FILE
    out = model.parent / "R"
    for written in ("report.md", "details.md"):  # rendered as a viewer would, raw HTML on
        html = MarkdownIt("commonmark", {"html": True}).enable("table").render(
            (out / written).read_text())
        assert "<b>" not in html and 'href="http:e"' not in html, written
    assert (out / "latency.png").read_bytes()[:4] == b"\x89PNG"  # its title drawn as text


def test_a_keras_file_swapped_during_the_study_changes_nothing_it_reports(studied):
    import hashlib

    results, model, _, said = studied
    assert results["model"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    # The untrained net would answer one class for most images (the study warns of that).
    assert "warning: " not in said, said
    [float32] = [row for row in results["accuracy"] if row["variant"] == "float32"]
    assert float32["accuracy"] > 0.6


def _splits(root, data):
    """The files of each split as results.json records them: the class folders and their
    files sorted, permuted once with the recorded seed, cut in calibration, validation, test."""
    files = sorted(root.rglob("*.png"))
    order = np.random.default_rng(data["seed"]).permutation(len(files))
    calibration, validation = data["splits"]["calibration"], data["splits"]["validation"]
    cuts = np.split(order, [calibration, calibration + validation])
    return [[files[i] for i in part] for part in cuts]


def _keras_accuracy(model, files):
    """Top-1 accuracy of the .keras file on the PNG files, by Keras and Pillow alone."""
    from PIL import Image

    from quantlab._tf import keras

    pixels = np.stack([np.asarray(Image.open(f).convert("L"), np.float32) / 255 for f in files])
    scores = keras().models.load_model(model).predict(pixels[..., None], verbose=0)
    labels = np.array([int(f.parent.name.removeprefix("class")) for f in files])
    return float(np.mean(scores.argmax(axis=1) == labels))


def test_a_keras_models_layers_are_chosen_on_validation_images_it_neither_calibrates_nor_scores(
        studied):
    results, model, root, _ = studied
    data = results["dataset"]
    counts = data["splits"]
    assert sum(counts.values()) == 10 * PER_CLASS
    assert counts == {"calibration": 150, "validation": 150, "test": 300}
    assert data["calibration"] == counts["calibration"] and data["test"] == counts["test"]
    calibration, validation, test = _splits(root, data)
    assert len(set(calibration) | set(validation) | set(test)) == 10 * PER_CLASS  # disjoint

    ranking = results["sensitivity"][NAME]["int8"]["ranking"]
    assert ranking["validation_images"] == counts["validation"]
    assert ranking["layers"] and ranking["float_accuracy"] > 0.5
    # The float model scores on the validation files what the stage measured, and on the test
    # files what the report gives for float32 (the stage runs the float .tflite, the report
    # LiteRT: at most one image's answer may differ from Keras's by rounding).
    assert ranking["float_accuracy"] == pytest.approx(_keras_accuracy(model, validation),
                                                      abs=1.01 / len(validation))
    [reference] = [r for r in results["accuracy"]
                   if (r["variant"], r["runtime"]) == ("float32", "litert")]
    assert reference["test_images"] == len(test)
    assert reference["accuracy"] == pytest.approx(_keras_accuracy(model, test),
                                                  abs=1.01 / len(test))


def test_a_keras_model_fed_shifted_pixels_is_warned_of_on_its_first_batch(studied):
    from types import SimpleNamespace

    from quantlab import byo, datasets
    from quantlab.study import user_model

    _, model, root, said = studied
    assert "warning: " not in said  # its pixels were scaled as it was trained: nothing to say
    # --mean 1: every pixel shifted down by the whole range the net was trained on. (A wrong
    # --scale alone changes nothing here: a ReLU net with small biases gives nearly the same
    # top-1 for x and 255 x.)
    shifted = datasets.load_user(root, (28, 28, 1), "NHWC", 10, mean=[1.0])
    doubt = user_model.first_batch_doubt(SimpleNamespace(model=model), shifted, None,
                                         byo.read_keras(model))
    assert doubt and doubt.startswith(f"{NAME}: the Keras model, on the first 64 test images "), doubt
    assert "check --scale, --mean, --std and --layout" in doubt
    scaled = datasets.load_user(root, (28, 28, 1), "NHWC", 10)
    assert user_model.first_batch_doubt(SimpleNamespace(model=model), scaled, None,
                                        byo.read_keras(model)) is None
