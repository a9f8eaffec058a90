"""A user's folder of images: one subfolder per class, PNG or JPEG files inside (the layout of
Keras' ``image_dataset_from_directory`` and torchvision's ``ImageFolder``), decoded with Pillow.

The folder is hostile until checked. Every entry is looked at before any image is decoded:
a file that is not a PNG or JPEG (by its bytes, not its name) is named and refused, and so is
a class folder without images, a symbolic link that leads outside the folder, and more images
than quantlab holds in memory. Hidden entries (names starting with a dot, such as .DS_Store)
are skipped, as ``ls`` does. Each file is read once; those bytes are what is decoded, by the
PNG and JPEG decoders only, after the image's size is checked against Pillow's
decompression-bomb limit (refused, not merely warned about as Pillow does below twice it).
"""

import io
import os
import warnings
from pathlib import Path

import numpy as np

from quantlab.datasets.checks import fail

# Any more images is surely not a folder meant for a quick accuracy check on one machine.
MAX_IMAGES = 100_000
# A PNG or JPEG far larger than any image a classifier takes; files are read whole.
MAX_FILE_BYTES = 64 << 20
SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}
# 8-bit modes Pillow converts to L and RGB without clipping (16-bit ones it clips to white).
EIGHT_BIT_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr"})
COLOR_MODES = {1: "L", 3: "RGB"}  # the model's channels -> what Pillow converts each image to
RESIZE = "bilinear (Pillow), aspect ratio not kept"  # as Keras' image_dataset_from_directory


def list_files(root):
    """(class names sorted, [(file path, class index)]) of the folder ``root``, every entry
    checked; nothing decoded yet."""
    root = Path(root)
    if not root.is_dir():
        raise fail(root, "is not a folder; give a folder with one subfolder of images per class")
    inside = _resolved(root)
    classes = sorted(_entries(root, inside))
    found = []
    for index, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            raise fail(folder, "is a file where only class folders belong; put each class's "
                               "images in a subfolder named after the class")
        count = 0
        for path in _walk(folder, inside, {_resolved(folder)}):
            count += 1
            found.append((path, index))
            if len(found) > MAX_IMAGES:
                raise fail(root, f"holds more than {MAX_IMAGES} images, more than quantlab "
                                 "reads; give a folder with a sample of them")
        if not count:
            raise fail(folder, "holds no images; remove the empty class folder, or add its "
                               "PNG or JPEG images")
    if not classes:
        raise fail(root, "holds no class folders; put each class's images in a subfolder "
                         "named after the class")
    return tuple(classes), found


def _entries(folder, inside):
    """The visible names in ``folder``, each checked not to lead outside ``inside``."""
    try:
        entries = list(os.scandir(folder))
    except OSError as error:
        raise fail(folder, f"cannot be listed ({error.strerror}); make it readable") from None
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_symlink():
            target = _resolved(Path(entry.path))
            if not target.is_relative_to(inside):
                raise fail(entry.path, f"is a symbolic link to {target}, outside {inside}; "
                                       "copy the file into the folder instead")
        yield entry.name


def _walk(folder, inside, seen):
    """The image files under ``folder`` (subfolders too, as Keras reads them), sorted."""
    for name in sorted(_entries(folder, inside)):
        path = folder / name
        if path.is_dir():
            real = _resolved(path)
            if real in seen:  # a link back up: already read
                continue
            yield from _walk(path, inside, seen | {real})
        elif path.is_file():
            _check_image_file(path)
            yield path
        else:
            raise fail(path, "is neither a file nor a folder; remove it")


def _resolved(path):
    """Where ``path`` leads, every link followed; a loop of links is a one-line error."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # a loop: RuntimeError up to Python 3.12, ELOOP after
        raise fail(path, "is a symbolic link that leads back to itself (a loop); remove it") \
            from None


def _check_image_file(path):
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as error:
        raise fail(path, f"cannot be read ({error.strerror}); make it readable") from None
    if not any(head.startswith(signature) for signature in SIGNATURES):
        raise fail(path, "is not a PNG or JPEG image (by its content); remove it from the "
                         "folder or convert it")


def read_bytes(path, inside):
    """The file's bytes, read once, at most MAX_FILE_BYTES of them, from where its path leads
    now (checked again: a link may have changed since the folder was listed)."""
    real = _resolved(Path(path))
    if not real.is_relative_to(inside):
        raise fail(path, f"leads to {real}, outside {inside}; copy the file into the folder")
    with os.fdopen(os.open(real, os.O_RDONLY | os.O_NOFOLLOW), "rb") as f:
        content = f.read(MAX_FILE_BYTES + 1)
    if len(content) > MAX_FILE_BYTES:
        raise fail(path, f"is larger than {MAX_FILE_BYTES >> 20} MiB, more than quantlab reads "
                         "for one image; shrink the image")
    return content


def decode(content, where, image_size, channels):
    """The image in ``content`` (PNG or JPEG bytes) as uint8 H x W x C: converted to the
    model's channels, resized to ``image_size`` (height, width) when it differs."""
    from PIL import Image

    with warnings.catch_warnings():
        # Pillow only warns up to twice its limit: here its limit is a refusal, made when the
        # header is read, before anything is decoded.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(content), formats=tuple(SIGNATURES.values()))
            return conform(image, where, image_size, channels)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
            raise fail(where, f"is over Pillow's decompression-bomb limit ({error}); resize the "
                              "image first") from None
        except (OSError, ValueError, SyntaxError) as error:  # OSError: UnidentifiedImageError too
            raise fail(where, f"cannot be decoded as a PNG or JPEG image ({error}); remove it or "
                              "save it again") from None


def conform(image, where, image_size, channels):
    """A Pillow image as the model takes it: uint8 H x W x C, converted to ``channels`` (1:
    grayscale, 3: RGB; alpha dropped), resized to ``image_size`` (height, width) if it differs."""
    from PIL import Image

    mode = COLOR_MODES.get(channels)
    if mode is None:
        raise fail(where, f"the model takes {channels} channels; quantlab converts images to "
                          "1 (grayscale) or 3 (RGB)")
    if image.mode not in EIGHT_BIT_MODES:
        raise fail(where, f"has pixel mode {image.mode} (not 8 bits per channel); save it "
                          "as an 8-bit PNG or JPEG")
    image = image.convert(mode)
    if image.size != (image_size[1], image_size[0]):
        image = image.resize((image_size[1], image_size[0]), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8).reshape(*image_size, channels)


def read(root, image_size, channels):
    """(uint8 N x H x W x C images, int64 labels, class names, {class: file count})."""
    classes, files = list_files(root)
    images = allocate(len(files), image_size, channels, root)
    inside = _resolved(Path(root))
    for i, (path, _) in enumerate(files):
        images[i] = decode(read_bytes(path, inside), path, image_size, channels)
    labels = np.array([index for _, index in files], dtype=np.int64)
    counts = {name: int(n) for name, n in zip(classes, np.bincount(labels, minlength=len(classes)))}
    return images, labels, classes, counts


# What the float32 images of all splits may take together: a few thousand 224 x 224 RGB images.
MAX_FLOAT_BYTES = 2 << 30


def allocate(count, image_size, channels, where):
    """An empty uint8 array for ``count`` images, refused beforehand if their float32 copy
    would take more than MAX_FLOAT_BYTES."""
    per_image = 4 * int(np.prod(image_size)) * channels
    if count * per_image > MAX_FLOAT_BYTES:
        fit = MAX_FLOAT_BYTES // per_image
        raise fail(where, f"{count} images of {image_size[0]} x {image_size[1]} x {channels} "
                          f"take {count * per_image >> 20} MiB as float32, more than quantlab holds "
                          f"({MAX_FLOAT_BYTES >> 20} MiB); give at most {fit} images")
    return np.empty((count, *image_size, channels), np.uint8)
