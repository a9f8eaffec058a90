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
- ``checks``: the split, label and file checks every format shares;
- ``dataset``: the ``Dataset`` every loader returns.

The user's own images, for studying the user's own model:

- ``image_folder``: a folder of class subfolders of PNG/JPEG files (the layout of Keras'
  ``image_dataset_from_directory`` and torchvision's ``ImageFolder``), decoded with Pillow;
- ``user_npz``: an .npz with ``x`` (and ``y``), read without pickles within size limits;
- ``user``: ``load_user``, which turns either into the model's input (size, channels, layout,
  scale, mean, std) and cuts it into disjoint calibration, validation and test splits.
"""

import numpy as np

from quantlab.datasets import find
from quantlab.datasets.dataset import Dataset
from quantlab.datasets.names import DEFAULT, NAMES  # noqa: F401  (what callers name)
from quantlab.datasets.user import load_user  # noqa: F401  (the user's own images)
from quantlab.errors import QuantlabError


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
