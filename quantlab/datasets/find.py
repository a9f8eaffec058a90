"""Where a built-in dataset's files are, and what to do when they are nowhere.

For fashion_mnist, mnist and cifar10 the first of these places that has the files wins:

1. the ``data_dir`` argument: its subfolder named after the dataset (e.g. ``fashion-mnist/``
   or ``fashion_mnist/``), else the folder itself;
2. the folder in the environment variable ``QUANTLAB_DATA_DIR`` (same rule);
3. the Debian location ``/usr/share/datasets/<name>/`` (package ``dataset-fashion-mnist``);
4. the Keras download cache (``$KERAS_HOME``, then ``~/.keras``, each with ``datasets/``),
   with Keras' own file names;
5. ``keras.datasets.<name>.load_data()``, only when ``QUANTLAB_ALLOW_DOWNLOAD=1``.

A place that has no files is skipped; a place whose files are incomplete or corrupt stops
the search with an error, and so does a data dir that does not exist, so a typo or a broken
copy never makes it quietly load another copy.
"""

import os
from pathlib import Path

import numpy as np

from quantlab.datasets import cifar, digits, idx
from quantlab.datasets.checks import one_line
from quantlab.datasets.names import CLASS_NAMES, NAMES, SPELLINGS
from quantlab.errors import QuantlabError

SYSTEM_DIR = Path("/usr/share/datasets")


def first_copy(name, data_dir, download):
    """Uint8 N x H x W x C images (pixel value / scale gives [0, 1]; scale 255 unless
    given), labels, class names and source of the first copy found."""
    try:
        return _search(name, data_dir, download)
    except PermissionError as error:
        raise QuantlabError(f"cannot read {error.filename or 'the dataset files'}: permission "
                            "denied; make the dataset's files and folders readable, or copy them "
                            "somewhere you can read and pass that folder with --data-dir") from None


def _search(name, data_dir, download):
    if name not in NAMES:
        raise QuantlabError(f"unknown dataset {name!r}; choose one of: {', '.join(NAMES)}")
    if name == "digits":
        return digits.load()
    folders = _folders(name, data_dir)
    for folder in folders:
        found = cifar.find(folder) if name == "cifar10" else idx.find(name, folder)
        if found is not None:
            return found
    looked = ", ".join(str(f) for f in folders)
    allowed = os.environ.get("QUANTLAB_ALLOW_DOWNLOAD") == "1"
    if allowed and download:
        try:
            return _download(name)
        except QuantlabError as error:
            looked += f"; {error}"
    elif not allowed:
        looked += "; Keras download skipped (QUANTLAB_ALLOW_DOWNLOAD is not 1)"
    raise QuantlabError(f"{name} not found (looked in: {looked}). {_HOW_TO_PROVIDE[name]}")


_IDX_LIST = ("train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
             "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz")
_HOW_TO_PROVIDE = {
    "fashion_mnist": "Install it with `apt-get install dataset-fashion-mnist`, or pass "
                     "--data-dir / set QUANTLAB_DATA_DIR to a folder with the IDX files "
                     f"({_IDX_LIST}).",
    "mnist": f"Put the four MNIST IDX files ({_IDX_LIST}) or Keras' mnist.npz in a folder "
             "and pass it with --data-dir or set QUANTLAB_DATA_DIR to it.",
    "cifar10": "Put cifar-10-python.tar.gz or cifar-10-binary.tar.gz (or the extracted "
               "cifar-10-batches-py/ or cifar-10-batches-bin/ folder) from "
               "https://www.cs.toronto.edu/~kriz/cifar.html in a folder and pass it with "
               "--data-dir or set QUANTLAB_DATA_DIR to it.",
}


def _folders(name, data_dir):
    """Every folder to search, in resolution order, without duplicates."""
    spellings = SPELLINGS[name]
    folders = []
    for label, root in (("data dir", data_dir),
                        ("QUANTLAB_DATA_DIR", os.environ.get("QUANTLAB_DATA_DIR"))):
        if root:
            root = Path(root).expanduser()
            # A folder the user named but that is not there is a typo: say so rather than
            # quietly loading the dataset from somewhere else.
            if not root.is_dir():
                raise QuantlabError(f"{label} {root} does not exist or is not a folder")
            # The named subfolder first: mnist and fashion_mnist share their file names.
            folders += [root / s for s in spellings] + [root]
    folders += [SYSTEM_DIR / s for s in spellings]
    # Keras keeps fashion-mnist in its own subfolder, mnist.npz and cifar-10-* at the top; its
    # download cache is $KERAS_HOME (quantlab's own under its cache, see quantlab._tf, unless
    # the user set one) and the user's ~/.keras.
    for keras_home in (os.environ.get("KERAS_HOME"), Path.home() / ".keras"):
        keras_datasets = Path(keras_home or Path.home() / ".keras") / "datasets"
        folders.append(keras_datasets / "fashion-mnist" if name == "fashion_mnist"
                       else keras_datasets)
    return list(dict.fromkeys(folders))


def _download(name):
    from quantlab._tf import keras

    try:
        (x_train, y_train), (x_test, y_test) = getattr(keras().datasets, name).load_data()
    except Exception as error:  # network, disk, or a bad download: all reported the same way
        raise QuantlabError(one_line(f"Keras download failed ({error})")) from error
    raw = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    for split in ("x_train", "x_test"):
        if raw[split].ndim == 3:  # MNIST-like: add the channel axis
            raw[split] = raw[split][..., None]
    for split in ("y_train", "y_test"):
        raw[split] = np.asarray(raw[split]).reshape(-1)  # CIFAR labels come as N x 1
    raw.update(class_names=CLASS_NAMES[name], source=f"keras.datasets.{name}.load_data()")
    return raw

