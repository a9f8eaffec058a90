"""A user's images as the user's model takes them, cut into disjoint splits.

``load_user`` reads a folder of class subfolders (``image_folder``) or an .npz (``user_npz``),
makes every image the model's size and channel count, applies the preprocessing the user
names (torchvision's ToTensor + Normalize convention: ``x = (pixel * scale - mean) / std``
per channel, scale 1/255 unless given) and puts the axes in the model's layout (NCHW or
NHWC). Nothing is guessed silently: what was read and applied is returned as
``Dataset.record``, for results.json and the report.

A fixed seed permutes the images once and cuts the permutation in three: calibration images
(what int8 ranges are computed from), validation images (for choosing among quantized
options) and test images (what is scored); no image is in two of them. The test split keeps
the permuted order, so that its first images are a random sample of every class.
"""

from pathlib import Path

import numpy as np

from quantlab import safe_text
from quantlab.datasets import image_folder, user_npz
from quantlab.datasets.checks import fail
from quantlab.datasets.dataset import Dataset
from quantlab.defaults import CALIBRATION_SIZE, SEED
from quantlab.errors import QuantlabError

LAYOUTS = ("NCHW", "NHWC")
SCALE = 1 / 255  # pixels 0..255 to 0..1, as torchvision's ToTensor and Keras' Rescaling do
VALIDATION_SIZE = 500
# Each of calibration and validation takes at most this share of the images, so that at least
# half of them are scored however small the folder.
MOST_SHARE = 4
MIN_IMAGES = MOST_SHARE  # one calibration, one validation and two test images


def load_user(source, image_shape, layout, num_classes, *, scale=None, mean=None, std=None,
              calibration_size=CALIBRATION_SIZE, validation_size=VALIDATION_SIZE, seed=SEED):
    """The images at ``source`` as a Dataset in the model's ``layout`` and preprocessing.

    ``image_shape``: (height, width, channels) the model takes; ``layout``: "NCHW" or "NHWC";
    ``num_classes``: the model's outputs, which the labels are checked against; ``scale``:
    None for SCALE; ``mean`` and ``std``: one value, or one per channel (None: 0 and 1)."""
    source = Path(source).expanduser()
    height, width, channels = fixed_image_shape(image_shape)
    layout = check_layout(layout)
    mean, std = normalization(mean, std, channels)
    scale = SCALE if scale is None else scale
    check_scale(scale)
    if source.is_dir():
        pixels, labels, class_names, per_class = image_folder.read(source, (height, width), channels)
        if len(class_names) != num_classes:
            raise fail(source, f"has {len(class_names)} class folders but the model has "
                               f"{num_classes} outputs; class folders are matched to outputs in "
                               "sorted order, so give one folder per output")
        kind = "image_folder"
    elif source.is_file():
        pixels, labels = user_npz.read(source, (height, width), channels)
        class_names, per_class, kind = tuple(str(c) for c in range(num_classes)), None, "npz"
        if labels is not None and len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            bad = int(labels.min() if labels.min() < 0 else labels.max())
            raise fail(source, f"label {bad} in y is out of range 0..{num_classes - 1} (the model "
                               f"has {num_classes} outputs); give labels the model's outputs number")
    else:
        what = "is neither a folder nor a file" if source.exists() else "does not exist"
        raise fail(source, f"{what}; give a folder of class subfolders of PNG/JPEG images, or an "
                           ".npz with x (and y)")
    calibration, validation, test = cut(len(pixels), calibration_size, validation_size, seed,
                                        source)

    def split(indices):
        x = to_model(pixels[indices], scale, mean, std, layout)
        return x, None if labels is None else labels[indices]

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = map(split, (calibration, validation, test))
    record = {
        "kind": kind, "source": str(source), "files": len(pixels), "files_per_class": per_class,
        "labelled": labels is not None, "image_size": [height, width], "channels": channels,
        "resize": image_folder.RESIZE, "color": image_folder.COLOR_MODES[channels],
        "scale": float(scale), "mean": mean.tolist(), "std": std.tolist(), "layout": layout,
        "seed": int(seed),
        "splits": {"calibration": len(calibration), "validation": len(validation),
                   "test": len(test)},
        "calibration_asked": int(calibration_size), "validation_asked": int(validation_size),
    }
    return Dataset(name=_name(source), class_names=class_names, x_train=x_train, y_train=y_train,
                   x_test=x_test, y_test=y_test, source=str(source), x_val=x_val, y_val=y_val,
                   layout=layout, record=record)


def fixed_image_shape(image_shape):
    shape = tuple(image_shape)
    if len(shape) != 3 or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
        raise QuantlabError(f"the model's image shape is {shape}, not a fixed height x width x "
                            "channels; quantlab needs a model with a fixed input image size")
    return tuple(int(d) for d in shape)


def check_layout(layout):
    upper = str(layout).upper()
    if upper not in LAYOUTS:
        raise QuantlabError(f"unknown layout {layout!r}; give NCHW (channels first, as PyTorch) "
                            "or NHWC (channels last, as Keras)")
    return upper


def check_scale(scale):
    if not np.isfinite(scale) or scale <= 0:
        raise QuantlabError(f"scale {scale} must be a positive number (pixels are multiplied "
                            "by it; 1/255 maps 0..255 to 0..1)")


def normalization(mean, std, channels):
    """(mean, std) as arrays of one value per channel, checked."""
    values = []
    for what, given, default in (("mean", mean, 0.0), ("std", std, 1.0)):
        given = (default,) if given is None else tuple(np.atleast_1d(given))
        if len(given) not in (1, channels):
            raise QuantlabError(f"{len(given)} {what} values for a model of {channels} channel(s); "
                                f"give one value, or one per channel")
        array = np.broadcast_to(np.asarray(given, np.float64), (channels,)).copy()
        if not np.all(np.isfinite(array)):
            raise QuantlabError(f"{what} {list(given)} is not all finite numbers")
        values.append(array)
    if np.any(values[1] <= 0):
        raise QuantlabError(f"std {values[1].tolist()} must be positive: pixels are divided by it")
    return tuple(values)


def cut(count, calibration_size, validation_size, seed, where):
    """Index arrays of the calibration, validation and test images: one seeded permutation
    cut in three, each of the first two at most a MOST_SHARE-th of the images."""
    if count < MIN_IMAGES:
        raise fail(where, f"holds {count} images; quantlab needs at least {MIN_IMAGES} (one to "
                          "calibrate, one to validate, two to test)")
    if calibration_size < 1 or validation_size < 0:
        raise QuantlabError(f"calibration size {calibration_size} must be at least 1 and "
                            f"validation size {validation_size} at least 0")
    order = np.random.default_rng(seed).permutation(count)
    calibration = min(calibration_size, count // MOST_SHARE)
    validation = min(validation_size, count // MOST_SHARE)
    return (order[:calibration], order[calibration:calibration + validation],
            order[calibration + validation:])


def to_model(pixels, scale, mean, std, layout):
    """float32 (pixels * scale - mean) / std per channel, in ``layout``."""
    x = pixels.astype(np.float32)
    x *= np.float32(scale)
    x -= mean.astype(np.float32)
    x /= std.astype(np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if layout == "NCHW" else x


def _name(source):
    """The data's name in file names and reports: the folder's or file's name, made safe."""
    return safe_text.as_plain_name(source.stem, "data")
