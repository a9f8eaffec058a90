"""A user's images as an .npz: ``x``, N images (uint8 N x H x W or N x H x W x C, channels
last, as Keras' datasets hold them; or float N x H x W x C already of the model's size), and
optionally ``y``, N integer labels.

The file is read once, and those bytes are what is checked and loaded. Before numpy sees an
array, its .npy header is read from the archive: an array of Python objects (which numpy
would unpickle, and pickles can run code) is refused, and so is an array whose header
promises more than its member holds or than quantlab keeps in memory, since numpy allocates
what the header promises before it reads. ``np.load`` runs with ``allow_pickle=False`` too.
"""

import io
import math
import zipfile

import numpy as np

from quantlab.datasets import image_folder
from quantlab.datasets.checks import NPZ_ERRORS, check_split, fail, npy_header

# The whole file is read into memory once; as large as the images it may hold as uint8.
MAX_FILE_BYTES = image_folder.MAX_FLOAT_BYTES // 4 + (64 << 20)


def read(path, image_size, channels):
    """(images uint8 N x H x W x C, or float32 already of that shape; labels int64 or None)."""
    with open(path, "rb") as f:
        content = f.read(MAX_FILE_BYTES + 1)
    if len(content) > MAX_FILE_BYTES:
        raise fail(path, f"is larger than {MAX_FILE_BYTES >> 20} MiB, more than quantlab reads; "
                         "save a sample of the images")
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            members = {info.filename: info for info in archive.infolist()}
            if "x.npy" not in members:
                raise fail(path, f"has no array x (it holds {', '.join(sorted(members)) or 'nothing'}); "
                                 "save the images as x (and labels as y) with np.savez")
            for name in ("x", "y"):
                if f"{name}.npy" in members:
                    _check_header(archive, members[f"{name}.npy"], path, name)
        with np.load(io.BytesIO(content), allow_pickle=False) as npz:
            x = npz["x"]
            y = npz["y"] if "y.npy" in members else None
    except NPZ_ERRORS as error:
        raise fail(path, f"is not a readable .npz file ({error}); save it with np.savez") from None
    if y is not None:
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise fail(path, f"y is {y.dtype} {y.shape}; expected N integer labels")
        check_split(x, y, path, "images in x", "labels in y")
        if y.dtype == np.uint64 and len(y) and y.max() > np.iinfo(np.int64).max:
            raise fail(path, f"label {y.max()} in y is out of range; labels count classes from 0")
        y = y.astype(np.int64)
    return _images(x, path, tuple(image_size), channels), y


# What each array may hold: uint8 pixels or float images; integer labels. Anything else is
# refused from its header, before numpy allocates it.
KINDS = {"x": "uf", "y": "iu"}


def _check_header(archive, info, path, name):
    """Refuse the array before numpy allocates it: objects, a kind it may not hold, more than
    the member holds or than quantlab keeps in memory."""
    shape, dtype = npy_header(archive, info, path, name)
    if dtype.kind not in KINDS[name] or dtype.itemsize > 8:
        raise fail(path, f"{name} holds {dtype} values; save x as uint8 pixels (or float images "
                         "of the model's size) and y as integer labels")
    if name == "x" and shape and shape[0] > image_folder.MAX_IMAGES:
        raise fail(path, f"x holds {shape[0]} images, more than quantlab reads "
                         f"({image_folder.MAX_IMAGES}); save a sample of them")
    if name == "x" and 0 in shape[1:]:
        raise fail(path, f"x is {'x'.join(map(str, shape))}: images of no pixels; save N x H x W "
                         "(x C) images")
    # As float32 at least: what the images become.
    if math.prod(shape) * max(dtype.itemsize, 4) > image_folder.MAX_FLOAT_BYTES:
        raise fail(path, f"{name} is {'x'.join(map(str, shape))} {dtype}, more than quantlab holds "
                         f"({image_folder.MAX_FLOAT_BYTES >> 20} MiB as float32); save fewer images")


def _images(x, path, image_size, channels):
    if x.dtype.kind == "f":  # already the model's size: used as they are (before --scale)
        if x.shape[1:] != (*image_size, channels):
            raise fail(path, f"x is float {'x'.join(map(str, x.shape))}; float images must be N x "
                             f"{image_size[0]} x {image_size[1]} x {channels} (the model's size, "
                             "channels last); or save uint8 pixels, which quantlab resizes")
        x = x.astype(np.float32)
        if not np.all(np.isfinite(x)):
            raise fail(path, "x holds NaN or infinite values; save finite pixel values")
        return x
    if x.dtype != np.uint8 or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[3] not in (1, 3, 4)):
        raise fail(path, f"x is {x.dtype} {'x'.join(map(str, x.shape))}; expected uint8 images "
                         "N x H x W or N x H x W x C (C 1, 3 or 4, channels last)")
    from PIL import Image

    if x.ndim == 4 and x.shape[3] == 1:
        x = x[..., 0]
    images = image_folder.allocate(len(x), image_size, channels, path)
    for i, pixels in enumerate(x):  # as an image file would be: Pillow converts and resizes
        images[i] = image_folder.conform(Image.fromarray(pixels), f"{path}: x[{i}]", image_size,
                                         channels)
    return images
