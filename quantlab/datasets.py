"""Loading real image datasets, and resolving where their files live.

Nothing here trains or quantizes; this module only finds dataset files, checks them and
returns them as arrays. It imports no TensorFlow: Keras is imported only for the opt-in
download, scikit-learn only for ``digits``.

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

MNIST and Fashion-MNIST share their file names, so a folder's IDX files must also carry the
dataset's identity: files whose checksums are those of the published release are that
dataset wherever they are (and a copy of the other dataset's files is refused, naming it);
files of unknown origin are accepted only from a folder named after the dataset.

IDX files are decompressed as a stream and read to exactly the size their header promises,
so a small gzip file that expands to gigabytes costs no more memory than a real one.

CIFAR-10 batches may hold fewer records than the official 10000 (the tests use small ones);
each batch is checked on its own: whole records, as many labels as images, labels 0..9.
"""

import functools
import gzip
import hashlib
import io
import math
import os
import pickle
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from quantlab.errors import QuantlabError

NAMES = ("fashion_mnist", "mnist", "cifar10", "digits")
DEFAULT = "fashion_mnist"

SYSTEM_DIR = Path("/usr/share/datasets")

CLASS_NAMES = {
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    "mnist": tuple(str(d) for d in range(10)),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck"),
    "digits": tuple(str(d) for d in range(10)),
}

# Folder names a dataset may live under: the Debian/Keras spelling first.
_SPELLINGS = {
    "fashion_mnist": ("fashion-mnist", "fashion_mnist"),
    "mnist": ("mnist",),
    "cifar10": ("cifar10", "cifar-10"),
}

_IDX_FILES = {  # split -> (file stem, number of dimensions in the IDX header)
    "x_train": ("train-images", 3),
    "y_train": ("train-labels", 1),
    "x_test": ("t10k-images", 3),
    "y_test": ("t10k-labels", 1),
}
_IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}  # unsigned bytes, 3 or 1 dimensions
# Five times the largest split quantlab reads (60000 x 28 x 28 bytes = 45 MiB): a header
# promising more is corrupt or crafted, and is refused before anything is decompressed.
_IDX_MAX_BYTES = 256 << 20
# All four files of a set together: MNIST's hold 55 MB. Training holds the pixels as float32
# (4 bytes each) beside a few copies, so this cap keeps a set within a few hundred MiB.
_IDX_MAX_TOTAL = 128 << 20
# Deflate expands a stream at most 1032-fold (a 258-byte match per 2 bits): a gzip file of
# n bytes cannot hold more, whatever its header promises.
_DEFLATE_MAX_RATIO = 1032
_EXCESS_COUNTED = 1 << 20  # how far past the promised size a too-long file is read

# md5 of the published .gz files: Fashion-MNIST's README, and the list torchvision and
# others check MNIST's downloads against.
_PUBLISHED_GZ_MD5 = {
    "f68b3c2dcbeaaa9fbdd348bbdeb94873": "mnist",  # train-images-idx3-ubyte.gz
    "d53e105ee54ea40749a09fcbcd1e9432": "mnist",  # train-labels-idx1-ubyte.gz
    "9fb629c4189551a2d022fa330f9573f3": "mnist",  # t10k-images-idx3-ubyte.gz
    "ec29112dd5afa0611ce80d1b7f02629c": "mnist",  # t10k-labels-idx1-ubyte.gz
    "8d4fb7e6c68d591d4c3dfef9ec88bf0d": "fashion_mnist",  # train-images-idx3-ubyte.gz
    "25c81989df183df01b3e8a0aad5dffbe": "fashion_mnist",  # train-labels-idx1-ubyte.gz
    "bef4ecab320f06d8554ea6380940ec79": "fashion_mnist",  # t10k-images-idx3-ubyte.gz
    "bb300cfdad3c16e7a12a480ee83cd310": "fashion_mnist",  # t10k-labels-idx1-ubyte.gz
}
# sha256 of the uncompressed pixels and labels (the IDX payload after its header, which is
# also what an .npz holds), so that a recompressed or unpacked copy is still recognised:
# Debian's dataset-fashion-mnist repacks the .gz files without their stored name and time.
_CONTENT_SHA256 = {
    # train images, train labels, test images, test labels
    "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012": "fashion_mnist",
    "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7": "fashion_mnist",
    "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a": "fashion_mnist",
    "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9": "fashion_mnist",
}

_CIFAR_RECORD = 1 + 3 * 32 * 32  # binary format: label byte + channel-first pixels
_CIFAR_MAX_RECORDS = 10000  # per batch file, as published
_CIFAR_FORMATS = {  # format -> (folder inside the archive, batch files, metadata file)
    "python": ("cifar-10-batches-py",
               [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], "batches.meta"),
    "binary": ("cifar-10-batches-bin",
               [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"],
               "batches.meta.txt"),
}


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
    """Load dataset ``name`` (one of NAMES); see the module docstring for where it looks."""
    raw = _find(name, data_dir, download=True)
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
            raw = _find(name, data_dir, download=False)
        except QuantlabError as error:
            row["reason"] = str(error)
        else:
            row.update(available=True, source=raw["source"], train=len(raw["y_train"]),
                       test=len(raw["y_test"]), input_shape=list(raw["x_train"].shape[1:]),
                       classes=len(raw["class_names"]))
        rows.append(row)
    return rows


# --- resolution -------------------------------------------------------------------------

def _find(name, data_dir, download):
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
        return _digits()
    folders = _folders(name, data_dir)
    for folder in folders:
        found = _find_cifar10(folder) if name == "cifar10" else _find_idx(name, folder)
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
    spellings = _SPELLINGS[name]
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
        raise QuantlabError(_one_line(f"Keras download failed ({error})")) from error
    raw = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    for split in ("x_train", "x_test"):
        if raw[split].ndim == 3:  # MNIST-like: add the channel axis
            raw[split] = raw[split][..., None]
    for split in ("y_train", "y_test"):
        raw[split] = np.asarray(raw[split]).reshape(-1)  # CIFAR labels come as N x 1
    raw.update(class_names=CLASS_NAMES[name], source=f"keras.datasets.{name}.load_data()")
    return raw


def _one_line(text):
    return " ".join(str(text).split())


def _fail(where, problem):
    return QuantlabError(_one_line(f"{where}: {problem}"))


def _check_split(x, y, where, x_what="images", y_what="labels"):
    if len(x) != len(y):
        raise _fail(where, f"{len(x)} {x_what} but {len(y)} {y_what}")


def _check_labels(y, where):
    if len(y) and (y.min() < 0 or y.max() > 9):
        bad = int(y.min() if y.min() < 0 else y.max())
        raise _fail(where, f"label {bad} is out of range 0..9")


# --- MNIST and Fashion-MNIST: IDX files or Keras' mnist.npz ------------------------------

def _existing_file(path):
    """``path`` if it is a file, None if nothing is there; a folder in its place is an error."""
    if path.is_file():
        return path
    if path.exists():
        raise _fail(path, "is a folder (or other non-file) where the data file should be; "
                          "put the file itself there")
    return None


def _idx_path(folder, stem, ndim):
    # Published name first, then the ".idx" spelling some mirrors use; gzipped or not.
    for sep in ("-", "."):
        for ext in (".gz", ""):
            path = _existing_file(folder / f"{stem}{sep}idx{ndim}-ubyte{ext}")
            if path:
                return path
    return None


def _find_idx(name, folder):
    paths = {split: _idx_path(folder, stem, ndim) for split, (stem, ndim) in _IDX_FILES.items()}
    missing = [f"{stem}-idx{ndim}-ubyte[.gz]" for split, (stem, ndim) in _IDX_FILES.items()
               if paths[split] is None]
    if len(missing) == len(paths):
        npz = _existing_file(folder / "mnist.npz") if name == "mnist" else None
        if npz is None:
            return None
        raw = _load_npz(npz)
        _check_identity(name, npz, raw, {}, named=True)  # the file's name says mnist
        return raw
    if missing:
        raise _fail(folder, f"incomplete {name} IDX files, missing {', '.join(missing)}")
    _check_idx_total(folder, paths)
    raw = {split: _read_idx(path, _IDX_FILES[split][1]) for split, path in paths.items()}
    named = folder.name.lower() in _SPELLINGS[name]
    _check_identity(name, folder, raw, paths, named)
    for x_split, y_split in (("x_train", "y_train"), ("x_test", "y_test")):
        x, y = raw[x_split], raw[y_split]
        if x.shape[1:] != (28, 28):
            raise _fail(paths[x_split], f"images are {x.shape[1]}x{x.shape[2]}, expected 28x28")
        _check_split(x, y, f"{paths[x_split]} and {paths[y_split].name}")
        _check_labels(y, paths[y_split])
        raw[x_split] = x[..., None]
    raw.update(class_names=CLASS_NAMES[name], source=str(folder))
    return raw


def _check_identity(name, where, raw, paths, named):
    """Refuse another dataset's published files, and files of unknown origin unless
    ``named`` (their folder or file carries the dataset's name)."""
    found = {}
    for split in ("x_train", "y_train", "x_test", "y_test"):
        owner = _CONTENT_SHA256.get(hashlib.sha256(raw[split]).hexdigest())
        path = paths.get(split)
        if owner is None and path is not None and path.suffix == ".gz":
            owner = _PUBLISHED_GZ_MD5.get(_md5_of(path))
        found[split] = owner
    others = sorted({owner for owner in found.values() if owner not in (None, name)})
    if others:
        raise _fail(where, f"holds the published {others[0]} files (their checksums say so), "
                           f"not {name}; use --dataset {others[0]}, or give the folder with "
                           f"the {name} files")
    if named or all(owner == name for owner in found.values()):
        return
    raise _fail(where, f"holds IDX files that are not the published {name} files, in a folder "
                       f"not named after {name}: MNIST and Fashion-MNIST files share their "
                       f"names, so quantlab will not guess; put them in a folder named "
                       f"{_SPELLINGS[name][0]}/ and pass that folder or its parent")


def _md5_of(path):
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_idx_total(folder, paths):
    """Refuse a set whose headers promise more than _IDX_MAX_TOTAL together, before any
    payload is read: each file may be within its own limit and the four still too much."""
    total = sum(math.prod(_read_idx(path, _IDX_FILES[split][1], header_only=True))
                for split, path in paths.items())
    if total > _IDX_MAX_TOTAL:
        raise _fail(folder, f"its four IDX headers promise {total} bytes together, more than "
                            f"quantlab reads for one dataset ({_IDX_MAX_TOTAL >> 20} MiB); the "
                            "files are corrupt or crafted")


def _read_idx(path, ndim, header_only=False):
    """The IDX file's array, read to exactly the size its header promises (its dimensions
    only, with ``header_only``)."""
    with open(path, "rb") as f:
        compressed = f.read(2) == b"\x1f\x8b"  # gzip magic; IDX files start with 0x0000
        f.seek(0)
        if not compressed:
            if path.suffix == ".gz":
                raise _fail(path, "is named .gz but is not gzip data")
            return _read_idx_stream(f, path, ndim, header_only, os.fstat(f.fileno()).st_size, False)
        try:
            with gzip.GzipFile(fileobj=f, mode="rb") as stream:
                return _read_idx_stream(stream, path, ndim, header_only,
                                        _DEFLATE_MAX_RATIO * os.fstat(f.fileno()).st_size, True)
        except (OSError, EOFError, zlib.error) as error:  # BadGzipFile is an OSError
            raise _fail(path, f"corrupt or truncated gzip data ({error})") from error


def _read_idx_stream(stream, path, ndim, header_only, capacity, compressed):
    """``capacity``: the most bytes the file can hold, header included."""
    header_size = 4 + 4 * ndim
    header = stream.read(header_size)
    if len(header) < header_size:
        raise _fail(path, f"only {len(header)} bytes, shorter than the {header_size}-byte IDX "
                          "header")
    magic = int.from_bytes(header[:4], "big")
    if magic != _IDX_MAGIC[ndim]:
        raise _fail(path, f"bad magic number 0x{magic:08x}, expected 0x{_IDX_MAGIC[ndim]:08x} "
                          f"(an IDX file of unsigned bytes with {ndim} dimension(s))")
    dims = tuple(int.from_bytes(header[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(dims)
    shape = " x ".join(map(str, dims))
    if expected > _IDX_MAX_BYTES:
        raise _fail(path, f"header promises {shape} = {expected} bytes, more than quantlab reads "
                          f"from an IDX file ({_IDX_MAX_BYTES >> 20} MiB); the file is corrupt "
                          "or crafted")
    if expected > capacity - header_size:  # refused before the memory is taken
        if compressed:
            raise _fail(path, f"header promises {shape} = {expected} bytes, more than its "
                              f"{capacity // _DEFLATE_MAX_RATIO} compressed bytes can hold (gzip "
                              f"expands at most {_DEFLATE_MAX_RATIO}-fold); the file is truncated "
                              "or crafted")
        raise _fail(path, f"header says {shape} = {expected} bytes of data but the file has "
                          f"{max(capacity - header_size, 0)}")
    if header_only:
        return dims
    data = np.empty(expected, np.uint8)
    got = _read_into(stream, memoryview(data))
    excess = _excess(stream) if got == expected else 0
    if got != expected or excess:
        more = " or more" if excess >= _EXCESS_COUNTED else ""
        raise _fail(path, f"header says {shape} = {expected} bytes of data but the file has "
                          f"{got + excess}{more}")
    return data.reshape(dims)


def _read_into(stream, view):
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _excess(stream):
    """How many bytes follow the promised data, counted up to _EXCESS_COUNTED."""
    excess = 0
    while excess < _EXCESS_COUNTED:
        block = stream.read(min(1 << 16, _EXCESS_COUNTED - excess))
        if not block:
            break
        excess += len(block)
    return excess


def _load_npz(path):
    try:
        with zipfile.ZipFile(path) as archive:  # reading stops at each member's stated size
            largest = max((info.file_size for info in archive.infolist()), default=0)
        if largest > _IDX_MAX_BYTES:
            raise _fail(path, f"holds an array of {largest} bytes, more than quantlab reads for "
                              f"one split ({_IDX_MAX_BYTES >> 20} MiB); the file is corrupt or "
                              "crafted")
        with np.load(path, allow_pickle=False) as npz:  # no pickles: an npz can hold code
            raw = {key: npz[key] for key in ("x_train", "y_train", "x_test", "y_test")}
    except KeyError as error:
        raise _fail(path, f"lacks array {error}; expected x_train, y_train, x_test, y_test")
    except PermissionError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise _fail(path, f"not a readable .npz file ({error})") from error
    for split in ("x_train", "x_test"):
        x = raw[split]
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
            raise _fail(path, f"{split} is {x.dtype} {x.shape}, expected uint8 N x 28 x 28")
        raw[split] = x[..., None]
    for split in ("y_train", "y_test"):
        if raw[split].ndim != 1 or raw[split].dtype.kind not in "iu":
            raise _fail(path, f"{split} is {raw[split].dtype} {raw[split].shape}, "
                              "expected N integer labels")
    for x_split, y_split in (("x_train", "y_train"), ("x_test", "y_test")):
        _check_split(raw[x_split], raw[y_split], path, f"{x_split} images", f"{y_split} labels")
        _check_labels(raw[y_split], path)
    raw.update(class_names=CLASS_NAMES["mnist"], source=str(path))
    return raw


# --- CIFAR-10: official python or binary archive, as .tar.gz or extracted folder ---------

def _find_cifar10(folder):
    candidates = []
    for fmt, (inner, batches, _) in _CIFAR_FORMATS.items():
        if (folder / batches[0]).is_file():  # pointed straight at an extracted folder
            candidates.append((folder, fmt))
    candidates += [
        (folder / "cifar-10-batches-py", "python"),
        (folder / "cifar-10-python.tar.gz", "python"),  # official download name
        (folder / "cifar-10-batches-py.tar.gz", "python"),  # Keras' name for the same file
        (folder / "cifar-10-batches-bin", "binary"),
        (folder / "cifar-10-binary.tar.gz", "binary"),
    ]
    for path, fmt in candidates:
        if path.is_dir():
            files = _read_cifar_folder(path, fmt)
        elif path.is_file():
            files = _read_cifar_tar(path, fmt)
        else:
            continue
        decode = _decode_cifar_python if fmt == "python" else _decode_cifar_binary
        raw = decode(files)
        raw["source"] = str(path)
        return raw
    return None


def _size_problem(fmt, name, size):
    """Why a batch or metadata file of this size cannot be genuine, or None."""
    if name == _CIFAR_FORMATS[fmt][2]:
        return "is larger than 1 MB" if size > 1 << 20 else None
    if fmt == "binary":
        if size == 0 or size % _CIFAR_RECORD or size // _CIFAR_RECORD > _CIFAR_MAX_RECORDS:
            return (f"is {size} bytes, not 1..{_CIFAR_MAX_RECORDS} whole "
                    f"{_CIFAR_RECORD}-byte records")
        return None
    # A python batch is 10000 x 3072 pixel bytes plus labels and file names (~31 MB).
    return f"is {size} bytes, too large for a CIFAR-10 batch" if size > 40_000_000 else None


def _read_cifar_folder(folder, fmt):
    _, batches, meta = _CIFAR_FORMATS[fmt]
    files = {}
    for name in batches + [meta]:
        path = folder / name
        if not path.is_file():
            if name == meta:  # optional: the class names are known anyway
                continue
            raise _fail(folder, f"incomplete CIFAR-10 {fmt} folder, missing {name}")
        problem = _size_problem(fmt, name, path.stat().st_size)
        if problem:
            raise _fail(path, problem)
        files[name] = (path, path.read_bytes())
    return files


def _read_cifar_tar(path, fmt):
    """The archive's batch files, read in memory: nothing is extracted to disk."""
    inner, batches, meta = _CIFAR_FORMATS[fmt]
    wanted = set(batches + [meta])
    files = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                folder, _, name = member.name.removeprefix("./").partition("/")
                if folder != inner or name not in wanted or name in files:
                    continue
                problem = "is not a regular file" if not member.isfile() else \
                    _size_problem(fmt, name, member.size)
                if problem:
                    raise _fail(path, f"refusing member {member.name}: it {problem}")
                files[name] = (f"{path} member {member.name}", tar.extractfile(member).read())
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise _fail(path, f"corrupt or truncated tar.gz archive ({error})") from error
    missing = [f"{inner}/{name}" for name in batches if name not in files]
    if missing:
        raise _fail(path, f"not a complete CIFAR-10 {fmt} archive, missing {', '.join(missing)}")
    return files


def _cifar_raw(batches, class_names):
    """Stack (images N x 3072 channel-first, labels) batches into N x 32 x 32 x 3 splits."""
    def stack(parts):
        x = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return x, np.concatenate([p[1] for p in parts])

    x_train, y_train = stack(batches[:5])
    x_test, y_test = stack(batches[5:])
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
            "class_names": class_names}


def _decode_cifar_binary(files):
    _, batches, meta = _CIFAR_FORMATS["binary"]
    parts = []
    for name in batches:
        where, data = files[name]
        records = np.frombuffer(data, np.uint8).reshape(-1, _CIFAR_RECORD)  # sizes checked
        _check_labels(records[:, 0], where)
        parts.append((records[:, 1:], records[:, 0]))
    class_names = CLASS_NAMES["cifar10"]
    if meta in files:
        where, data = files[meta]
        class_names = tuple(line.strip() for line in data.decode("latin1").splitlines()
                            if line.strip())
        _check_class_names(class_names, where)
    return _cifar_raw(parts, class_names)


def _decode_cifar_python(files):
    _, batches, meta = _CIFAR_FORMATS["python"]
    parts = []
    for name in batches:
        where, data = files[name]
        batch = _text_keys(_unpickle(data, where), where)
        x, y = batch.get("data"), np.asarray(batch.get("labels"))
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 \
                or x.shape[1] != 3072 or not 0 < len(x) <= _CIFAR_MAX_RECORDS:
            raise _fail(where, f"b'data' is not a 1..{_CIFAR_MAX_RECORDS} x 3072 uint8 array")
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise _fail(where, "b'labels' is not a list of integers")
        _check_split(x, y, where)
        _check_labels(y, where)
        parts.append((x, y))
    class_names = CLASS_NAMES["cifar10"]
    if meta in files:
        where, data = files[meta]
        names = _text_keys(_unpickle(data, where), where).get("label_names")
        if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
            raise _fail(where, "b'label_names' is not a list of names")
        class_names = tuple(n.decode("latin1") if isinstance(n, bytes) else n for n in names)
        _check_class_names(class_names, where)
    return _cifar_raw(parts, class_names)


def _check_class_names(names, where):
    if len(names) != 10:
        raise _fail(where, f"lists {len(names)} class names, expected 10")


def _text_keys(obj, where):
    # The official pickles come from Python 2, so their keys load as bytes (b"data").
    if not isinstance(obj, dict):
        raise _fail(where, f"holds a {type(obj).__name__}, expected a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _latin1_encode(text, encoding):
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(text, "latin1").
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise _Refused(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


# Everything a CIFAR-10 batch pickle may name: numpy arrays, their dtype, and (when
# re-pickled by Python 3) bytes. _reconstruct is taken from numpy itself because its module
# moved from numpy.core to numpy._core in numpy 2, and pickles name either one.
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _Refused(pickle.UnpicklingError):
    pass


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only the plain data a CIFAR-10 batch holds; any other global is refused,
    so a crafted file cannot make pickle import or call anything else."""

    def find_class(self, module, name):
        try:
            return _PICKLE_ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


def _unpickle(data, where):
    try:
        return _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _Refused as refused:
        raise _fail(where, f"refusing to unpickle it: it asks for {refused}, which a CIFAR-10 "
                           "batch never contains (the file is corrupt or crafted)") from None
    # Only the allow-listed callables can run, so any other failure is just a bad file; the
    # error types of a broken pickle are too many to list.
    except Exception as error:
        raise _fail(where, f"not a valid CIFAR-10 python pickle ({type(error).__name__}: "
                           f"{error})") from None


# --- scikit-learn digits -----------------------------------------------------------------

def _digits():
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as error:
        raise QuantlabError(f"digits needs scikit-learn ({error}); "
                            "install it with `pip install scikit-learn`") from error
    digits = load_digits()
    images = digits.images.astype(np.uint8)[..., None]  # 8x8 pixels of 0..16
    labels = digits.target.astype(np.int64)
    # Stratified with a fixed seed: the same split on every load, every class in both halves.
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.2, stratify=labels, random_state=0)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
            "class_names": CLASS_NAMES["digits"], "source": "scikit-learn", "scale": 16.0}
