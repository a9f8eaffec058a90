"""The dataset every part of quantlab reads: images and labels of each split, and what was
read and applied to make them."""

import functools
import hashlib
from dataclasses import dataclass, replace

import numpy as np

from quantlab.errors import QuantlabError


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays with == is not a bool
class Dataset:
    """Images float32, labels int64 in 0..num_classes-1.

    A built-in dataset: images in [0, 1] shaped N x H x W x C, a training and a test split.
    A user's data (``load_user``): images as the user's model takes them, in its layout
    (N x C x H x W for NCHW) and preprocessing (normalized pixels are not in [0, 1]); the
    training split holds only the calibration images (a user's model is not trained), beside a
    validation and a test split, all three disjoint; labels are None for an .npz without ``y``.
    """

    name: str
    class_names: tuple
    x_train: np.ndarray
    y_train: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray | None
    source: str
    x_val: np.ndarray | None = None  # a user's data only: the validation split
    y_val: np.ndarray | None = None
    layout: str = "NHWC"  # of the images' axes after the batch: NHWC or NCHW
    # What was read and applied (source, files, preprocessing, splits and seed), JSON-ready,
    # for results.json and the report; None for a built-in dataset.
    record: dict | None = None

    @property
    def input_shape(self):
        """The shape of one image in the arrays, in their layout (a model's input shape)."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def image_shape(self):
        """(height, width, channels) whatever the layout."""
        shape = self.input_shape
        return (*shape[1:], shape[0]) if self.layout == "NCHW" else shape

    @property
    def labelled(self):
        return self.y_test is not None

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
        # The validation split only where there is one: a built-in dataset hashes as it always
        # did, so what is cached under its hash stays found.
        extra = ("x_val", "y_val") if self.x_val is not None else ()
        for split in ("x_train", "y_train", "x_test", "y_test", *extra):
            array = getattr(self, split)
            if array is None:  # unlabelled: no labels is other data than any labels
                digest.update(f"{split} none\n".encode())
                continue
            array = np.ascontiguousarray(array)
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
        return replace(self, x_train=self.x_train[:limit],
                       y_train=None if self.y_train is None else self.y_train[:limit])
