"""Keras' mnist.npz: four uint8 arrays, read without pickles and within the split limit."""

import io
import zipfile

import numpy as np

from quantlab.datasets import checks
from quantlab.datasets.checks import check_labels, check_split, fail
from quantlab.datasets.names import CLASS_NAMES


ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def load(path):
    try:
        with open(path, "rb") as f:  # read once: what is checked is what numpy reads
            content = f.read(len(ARRAYS) * checks.MAX_SPLIT_BYTES + 1)
        # Reading a member stops at its stated size, which each header is checked against.
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            members = {info.filename: info for info in archive.infolist()}
            largest = max((info.file_size for info in members.values()), default=0)
            if largest > checks.MAX_SPLIT_BYTES:
                raise fail(path, f"holds an array of {largest} bytes, more than quantlab reads "
                                 f"for one split ({checks.MAX_SPLIT_BYTES >> 20} MiB); the file "
                                 "is corrupt or crafted")
            for key in ARRAYS:
                if f"{key}.npy" not in members:
                    raise fail(path, f"lacks array {key!r}; expected {', '.join(ARRAYS)}")
                checks.npy_header(archive, members[f"{key}.npy"], path, key)
        # No pickles: an npz can hold code.
        with np.load(io.BytesIO(content), allow_pickle=False) as npz:
            raw = {key: npz[key] for key in ARRAYS}
    except PermissionError:
        raise
    except checks.NPZ_ERRORS as error:
        raise fail(path, f"not a readable .npz file ({error})") from error
    for split in ("x_train", "x_test"):
        x = raw[split]
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
            raise fail(path, f"{split} is {x.dtype} {x.shape}, expected uint8 N x 28 x 28")
        raw[split] = x[..., None]
    for split in ("y_train", "y_test"):
        if raw[split].ndim != 1 or raw[split].dtype.kind not in "iu":
            raise fail(path, f"{split} is {raw[split].dtype} {raw[split].shape}, "
                             "expected N integer labels")
    for x_split, y_split in (("x_train", "y_train"), ("x_test", "y_test")):
        check_split(raw[x_split], raw[y_split], path, f"{x_split} images", f"{y_split} labels")
        check_labels(raw[y_split], path)
    raw.update(class_names=CLASS_NAMES["mnist"], source=str(path))
    return raw
