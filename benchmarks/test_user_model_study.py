"""What a user's own model costs end to end: the quick study of an ONNX classifier (channels
first, normalized input, as PyTorch exports it) on a folder of 2,000 PNG images, in one
command, from an empty cache.

    pytest benchmarks/test_user_model_study.py

The model is ``tests/onnx_models.classifier`` (a convolution and a nearest-centroid layer
fitted to the images: no training, a real accuracy); the images are the first 2,000
Fashion-MNIST test images written as PNG files, one folder per class. One round: the study
itself repeats every measurement it reports, and a second round would find its cache warm.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from quantlab import datasets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import onnx_models  # noqa: E402  (a test helper, beside the tests)

IMAGES = 2000
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST's own, as a PyTorch user would normalize it


@pytest.fixture(scope="module")
def fashion():
    return datasets.load("fashion_mnist")  # missing: a one-line error naming the fix, no skip


def _folder(root, images, labels, class_names):
    from PIL import Image

    for index, (image, label) in enumerate(zip(images, labels)):
        folder = root / class_names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8)).save(folder / f"{index}.png")
    return root


def test_the_quick_study_of_a_user_onnx_model_on_2000_png_images(benchmark, fashion, tmp_path):
    images, labels = fashion.x_test[:IMAGES], fashion.y_test[:IMAGES]
    folder = _folder(tmp_path / "images", images, labels, fashion.class_names)
    model = onnx_models.write(tmp_path, onnx_models.classifier(
        fashion.x_train[:2000], fashion.y_train[:2000], mean=[MEAN], std=[STD]))
    out = tmp_path / "report"
    command = [sys.executable, "-m", "quantlab.cli", "run", "--quick", "--model", str(model),
               "--data", str(folder), "--mean", str(MEAN), "--std", str(STD), "--out", str(out)]
    environment = {**os.environ, "QUANTLAB_CACHE": str(tmp_path / "cache")}  # cold

    def study():
        subprocess.run(command, env=environment, check=True, stdout=subprocess.DEVNULL)

    benchmark.group = "user model study"
    benchmark.pedantic(study, rounds=1, iterations=1)
    benchmark.extra_info.update(images=IMAGES, cpu=os.cpu_count())
    report = (out / "report.md").read_text()
    for variant in ("onnx_int8", "onnx_int8_per_tensor", "openvino_int8"):
        assert variant in report
