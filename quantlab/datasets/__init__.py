"""Loading real image datasets, and resolving where their files live.

Nothing here trains or quantizes; this package only finds dataset files, checks them and
returns them as arrays. It imports no TensorFlow: Keras is imported only for the opt-in
download, scikit-learn only for ``digits``.

One module per concern:

- ``names``: the built-in datasets, their class names and folder names;
- ``find``: where each built-in dataset is looked for, in which order, and how to provide it;
- ``idx``: MNIST and Fashion-MNIST IDX files, their identity and size limits;
- ``npz``: Keras' mnist.npz;
- ``cifar``: CIFAR-10 batches (binary or python pickles, tar or folder);
- ``digits``: scikit-learn's digits;
- ``checks``: the split, label and file checks every format shares.

The user's own image folders (one subfolder of PNG/JPEG files per class, the layout Keras'
``image_dataset_from_directory`` reads) belong in a module ``image_folder`` beside these.
"""

import functools
import hashlib
from dataclasses import dataclass, replace

import numpy as np

from quantlab.datasets import find
from quantlab.datasets.names import DEFAULT, NAMES  # noqa: F401  (what callers name)
from quantlab.errors import QuantlabError


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays with == is not a bool
class Dataset:
    """Images float32 in [0, 1] shaped N x H x W x C; labels int64 in 0..num_classes-1."""

    name: str
    class_names: tuple
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    @property
    def input_shape(self):
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_classes(self):
        return len(self.class_names)

    @functools.cached_property
    def sha256(self):
        """sha256 of every image and label as loaded, with their shapes: what a model or a
        result computed from this data is keyed by, so that other files under the same name
        never pass for these. Computed once per loaded dataset, when first asked (0.16-0.5 s
        for Fashion-MNIST's 70 000 float32 images); the arrays are not changed in place after."""
        digest = hashlib.sha256()
        for split in ("x_train", "y_train", "x_test", "y_test"):
            array = np.ascontiguousarray(getattr(self, split))
            # Shapes and types too: the same bytes cut into other splits are other data.
            digest.update(f"{split} {array.dtype.str} {array.shape}\n".encode())
            digest.update(array)  # its buffer: no copy
        return digest.hexdigest()

    def subset(self, limit):
        """The same dataset with only the first ``limit`` training images (test set kept)."""
        if limit is None:
            return self
        if int(limit) < 1:
            raise QuantlabError(f"subset limit must be at least 1, got {limit}")
        return replace(self, x_train=self.x_train[:limit], y_train=self.y_train[:limit])


def load(name, data_dir=None):
    """Load dataset ``name`` (one of NAMES); see quantlab.datasets.find for where it looks."""
    raw = find.first_copy(name, data_dir, download=True)
    images = {}
    for split in ("x_train", "x_test"):
        # In place, so only one float32 copy of the images ever exists.
        x = raw[split].astype(np.float32, order="C")
        x /= raw.get("scale", 255.0)
        images[split] = x
    return Dataset(name=name, class_names=tuple(raw["class_names"]),
                   x_train=images["x_train"], y_train=raw["y_train"].astype(np.int64),
                   x_test=images["x_test"], y_test=raw["y_test"].astype(np.int64),
                   source=raw["source"])


def survey(data_dir=None):
    """One dict per dataset in NAMES: is it available, from where, or why not. Never downloads."""
    rows = []
    for name in NAMES:
        row = {"name": name, "available": False, "source": None, "reason": None,
               "train": None, "test": None, "input_shape": None, "classes": None}
        try:
            raw = find.first_copy(name, data_dir, download=False)
        except QuantlabError as error:
            row["reason"] = str(error)
        else:
            row.update(available=True, source=raw["source"], train=len(raw["y_train"]),
                       test=len(raw["y_test"]), input_shape=list(raw["x_train"].shape[1:]),
                       classes=len(raw["class_names"]))
        rows.append(row)
    return rows
