"""A user's ONNX image classifier studied on the user's own images, end to end, through
``quantlab run --quick --model m.onnx --data FOLDER --mean ... --std ...``.

The models are made as a PyTorch export would look, without PyTorch: a small Keras net
trained on Fashion-MNIST, wrapped so that it takes normalized input ((x/255 - mean) / std),
exported by tf2onnx with its input channels first (``inputs_as_nchw``); and a classifier
built with ``onnx.helper`` (tests/onnx_models.py). The images are real Fashion-MNIST test
images written as PNG files into class folders, as torchvision's ImageFolder reads them.
Every number the report gives for the model's float32 is checked against an evaluation of
the same file on the same images with plain ONNX Runtime and Pillow, no quantlab code.
"""

import json
import re

import numpy as np
import pytest

from conftest import FEW_ROUNDS, quantlab
from onnx_models import classifier, write

MEAN, STD = 0.286, 0.353  # Fashion-MNIST's pixel mean and spread, as a user would normalize
PER_CLASS = 30  # 300 images: 75 calibrate, 75 validate, 150 are scored
TRAIN_IMAGES = 6000
INT8 = ("onnx_int8", "onnx_int8_per_tensor", "openvino_int8")
RECIPE = "keras-nchw-v2"  # the cached model's recipe: change it when the model changes
RECIPE_HELPER = "model"  # the onnx.helper classifier's file name (tests/onnx_models.write)


def _keras_nchw_onnx(fashion, path):
    """A small Keras net trained one epoch on [0, 1] images, taking (x - MEAN) / STD channels
    first: a Rescaling layer undoes the normalization, tf2onnx moves the channels first."""
    import tf2onnx

    from quantlab._tf import keras, tf

    keras, tf = keras(), tf()
    tf.random.set_seed(0)
    layers = keras.layers
    net = keras.Sequential([keras.Input((28, 28, 1)), layers.Conv2D(8, 3, activation="relu"),
                            layers.MaxPooling2D(), layers.Flatten(),
                            layers.Dense(256, activation="relu"), layers.Dense(10)])
    net.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    net.fit(fashion.x_train[:TRAIN_IMAGES], fashion.y_train[:TRAIN_IMAGES], epochs=1,
            batch_size=64, verbose=0)
    normalized = keras.Input((28, 28, 1), name="pixels")
    model = keras.Model(normalized, net(layers.Rescaling(STD, offset=MEAN)(normalized)))
    spec = [tf.TensorSpec((None, 28, 28, 1), tf.float32, name="pixels")]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17,
                                          inputs_as_nchw=["pixels"])
    temporary = path.with_suffix(".partial")
    temporary.write_bytes(proto.SerializeToString())
    temporary.rename(path)


@pytest.fixture(scope="module")
def keras_onnx(fashion):
    """The Keras net as ONNX, kept in the test cache (training is not what is tested)."""
    from quantlab import cache

    folder = cache.cache_root() / "test-user-model"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{RECIPE}.onnx"
    if not path.exists():
        _keras_nchw_onnx(fashion, path)
    return path


@pytest.fixture(scope="module")
def folder(fashion, tmp_path_factory):
    """PER_CLASS real test images of each class as PNG files, one folder per class."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images") / "fashion"
    for label in range(fashion.num_classes):
        (root / f"class{label}").mkdir(parents=True)
        chosen = np.flatnonzero(fashion.y_test == label)[:PER_CLASS]
        for number in chosen:
            pixels = np.round(fashion.x_test[number, :, :, 0] * 255).astype(np.uint8)
            Image.fromarray(pixels, "L").save(root / f"class{label}" / f"{number:05d}.png")
    return root


def independent_predictions(model, files):
    """Top-1 class of each PNG file by plain ONNX Runtime and Pillow: (x/255 - MEAN) / STD,
    channels first."""
    import onnxruntime
    from PIL import Image

    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    pixels = np.stack([np.asarray(Image.open(f).convert("L"), np.float32) for f in files])
    x = ((pixels / 255 - MEAN) / STD)[:, None, :, :].astype(np.float32)
    return session.run(None, {session.get_inputs()[0].name: x})[0].argmax(axis=1)


def scored_files(root, results):
    """The files of the test split, as results.json records it: the class folders and their
    files sorted, permuted once with the recorded seed, the calibration and validation
    images cut off the front."""
    files = sorted(p for p in root.rglob("*.png"))
    data = results["dataset"]
    order = np.random.default_rng(data["seed"]).permutation(len(files))
    first = data["splits"]["calibration"] + data["splits"]["validation"]
    return [files[i] for i in order[first:]]


@pytest.fixture(scope="module")
def studied(keras_onnx, folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "R"
    done = quantlab("run", "--quick", "--model", str(keras_onnx), "--data", str(folder),
                    "--mean", str(MEAN), "--std", str(STD), "--out", str(out),
                    "--counters", "off", "--threads", "1", "--batch-sizes", "1", *FEW_ROUNDS)
    assert done.returncode == 0, done.stderr[-3000:]
    return (json.loads((out / "results.json").read_text()), (out / "report.md").read_text(),
            (out / "details.md").read_text(), done.stdout + done.stderr)


def _row(results, variant, runtime):
    return next(r for r in results["accuracy"] if (r["variant"], r["runtime"]) == (variant, runtime))


def test_float32_accuracy_is_what_plain_onnxruntime_gives_on_the_same_images(studied, keras_onnx,
                                                                            folder):
    results, text, _, _ = studied
    files = scored_files(folder, results)
    labels = np.array([int(f.parent.name.removeprefix("class")) for f in files])
    expected = float(np.mean(independent_predictions(keras_onnx, files) == labels))
    reference = _row(results, "onnx_float32", "onnxruntime")
    assert reference["test_images"] == len(files) == results["dataset"]["test"]
    assert reference["accuracy"] == pytest.approx(expected, abs=1e-12)
    assert expected > 0.5  # a trained classifier, far above chance (10 %)
    assert f"| onnx_float32 on onnxruntime | {100 * expected:.2f} % |" in text


def test_every_ratio_is_against_the_models_own_float32_on_onnxruntime(studied):
    results, text, details, _ = studied
    assert results["reference"] == {"variant": "onnx_float32", "runtime": "onnxruntime"}
    assert results["schema"] >= 4  # the schema that brought a reference of its own
    for row in results["accuracy"]:
        assert (row["reference"], row["reference_runtime"]) == ("onnx_float32", "onnxruntime")
    assert "litert" not in {c["runtime"] for c in results["cases"]}
    assert "faster than onnx_float32 on onnxruntime" in text and "float32 on litert" not in text
    assert "x: times faster than onnx_float32 on onnxruntime" in details


def test_each_int8_variant_is_over_3_5_times_smaller_and_is_in_the_report(studied):
    results, text, details, _ = studied
    files = results["nets"][RECIPE]["artifacts"]  # the model is studied by its file's name
    which_runtime = details.split("## Which runtime", 1)[1].split("\n## ", 1)[0]
    for variant in INT8:
        assert files["onnx_float32"]["bytes"] / files[variant]["bytes"] >= 3.5, variant
        assert f"| {variant} |" in which_runtime, variant
        assert variant in text.split("## Size", 1)[1], variant
    # On a net this small the int8 files need not be faster at batch 1 (the call's overhead
    # is most of it): What to ship names the pick among every option, whichever it is.
    ship = text.split("## What to ship", 1)[1].split("\n## ", 1)[0]
    assert f"\n- {RECIPE}, batch 1: " in ship and ship.count(f"- {RECIPE}, batch 1") == 1
    options = {(c["variant"], c["runtime"]) for c in results["cases"] if c.get("median")}
    assert {v for v, _ in options} == {"onnx_float32", *INT8}
    assert any(f"batch 1: {v} on {r}" in ship for v, r in options)
    # Every int8 variant is weighed there, picked or not, with its size against the float file.
    [each] = [line for line in ship.splitlines() if line.startswith(f"- each quantizer of {RECIPE}")]
    for variant in INT8:
        ratio = files["onnx_float32"]["bytes"] / files[variant]["bytes"]
        [part] = [p for p in each.split(": ", 1)[1].split("; ") if p.startswith(f"{variant} on ")]
        assert part.endswith(f", {ratio:.2f}x smaller"), part


def test_the_report_names_the_model_its_sha256_the_images_and_their_preprocessing(studied,
                                                                                 keras_onnx,
                                                                                 folder):
    import hashlib

    results, text, _, said = studied
    digest = hashlib.sha256(keras_onnx.read_bytes()).hexdigest()
    assert results["model"]["sha256"] == digest and results["model"]["layout"] == "NCHW"
    data = results["dataset"]
    assert data["labelled"] is True and data["source"] == str(folder)
    assert data["calibration"] == data["splits"]["calibration"] == 75
    assert data["preprocessing"]["mean"] == [MEAN] and data["preprocessing"]["std"] == [STD]
    assert f"Model **{keras_onnx.name}** (onnx, sha256 `{digest}`" in text
    assert f"images from {folder}: 75 for calibration, 150 scored, labelled" in text
    assert f"mean {MEAN:g}, std {STD:g}, layout NCHW" in text
    assert text.index("## What to ship") < text.index("## Machine")
    assert "## Read first" not in text
    assert "warning: " not in said  # the first batch is checked, and found as it should be


@pytest.fixture(scope="module")
def unlabelled_and_unscaled(fashion, tmp_path_factory):
    """The onnx.helper classifier on an .npz without labels, studied with --scale 1: the
    model is then fed pixels of 0-255 where it expects 0-1."""
    folder = tmp_path_factory.mktemp("unlabelled")
    images = fashion.x_test[:200]
    model = write(folder, classifier(fashion.x_train[:2000], fashion.y_train[:2000],
                                     mean=(MEAN,), std=(STD,)))
    np.savez(folder / "images.npz", x=np.round(images[..., 0] * 255).astype(np.uint8))
    out = folder / "R"
    done = quantlab("run", "--quick", "--model", str(model), "--data", str(folder / "images.npz"),
                    "--scale", "1", "--mean", str(MEAN), "--std", str(STD), "--out", str(out),
                    "--counters", "off", "--threads", "1", "--batch-sizes", "1",
                    "--runtimes", "onnxruntime", *FEW_ROUNDS)
    assert done.returncode == 0, done.stderr[-3000:]
    return (json.loads((out / "results.json").read_text()), (out / "report.md").read_text(),
            done.stdout + done.stderr)


def test_without_labels_agreement_replaces_accuracy_and_the_report_says_so(unlabelled_and_unscaled):
    results, text, _ = unlabelled_and_unscaled
    assert results["dataset"]["labelled"] is False
    for row in results["accuracy"]:
        if not row.get("not_run"):
            assert row["accuracy"] is None and row["delta_points"] is None
            assert 0 <= row["agreement"] <= 1 and row["max_abs_diff"] >= 0
    assert "unlabelled images" in text and "The images have no labels" in text
    assert "Accuracy on" not in text


def test_a_wrong_scale_is_named_as_a_likely_preprocessing_mismatch(unlabelled_and_unscaled):
    results, text, said = unlabelled_and_unscaled
    reference = _row(results, "onnx_float32", "onnxruntime")
    share = reference["top_class_share"]
    assert share >= 0.6  # with --scale 1/255 its answers spread over the ten classes
    first = text.split("## Read first", 1)[1].split("\n## ", 1)[0]
    line = f"predicts one class for {100 * share:.0f} % of the {results['dataset']['test']} images"
    assert line in first and "check --scale, --mean, --std and --layout" in first
    assert f"warning: {RECIPE_HELPER}: onnx_float32 on onnxruntime {line}" in said
    # ... and said first on the first test images, before the model is exported or calibrated
    first = min(64, results["dataset"]["test"])
    early = re.search(rf"warning: {RECIPE_HELPER}: onnx_float32 on onnxruntime, on the first "
                      rf"{first} test images before the study goes on, predicts (one class for "
                      rf"\d+ % of the|the same class for all) {first} images; the images are likely "
                      rf"not preprocessed as the model expects: check --scale", said)
    assert early, said[:3000]
    assert early.start() < said.index(f"== {RECIPE_HELPER} ==") < said.index(line)
