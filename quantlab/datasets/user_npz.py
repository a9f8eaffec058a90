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
import zlib

import numpy as np

from quantlab.datasets import image_folder
from quantlab.datasets.checks import check_split, fail

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
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise fail(path, f"is not a readable .npz file ({error}); save it with np.savez") from None
    if y is not None:
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise fail(path, f"y is {y.dtype} {y.shape}; expected N integer labels")
        check_split(x, y, path, "images in x", "labels in y")
        y = y.astype(np.int64)
    return _images(x, path, tuple(image_size), channels), y


def _check_header(archive, info, path, name):
    """Refuse the array before numpy allocates it: objects, or more than the member holds."""
    with archive.open(info) as member:
        try:
            version = np.lib.format.read_magic(member)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(member)
        except ValueError as error:
            raise fail(path, f"{name} is not a numpy array file ({error}); save it with np.savez")
    if dtype.hasobject:
        raise fail(path, f"{name} holds Python objects (pickled), which quantlab never loads; "
                         "save plain numeric arrays")
    promised = math.prod(shape) * dtype.itemsize
    if promised > info.file_size:
        raise fail(path, f"{name}'s header promises {'x'.join(map(str, shape))} {dtype} = "
                         f"{promised} bytes but the member holds {info.file_size}; the file is "
                         "truncated or crafted")
    if name == "x" and shape and shape[0] > image_folder.MAX_IMAGES:
        raise fail(path, f"x holds {shape[0]} images, more than quantlab reads "
                         f"({image_folder.MAX_IMAGES}); save a sample of them")
    if math.prod(shape) * 4 > image_folder.MAX_FLOAT_BYTES:
        raise fail(path, f"{name} is {'x'.join(map(str, shape))}, more than quantlab holds "
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
