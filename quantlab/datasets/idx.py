"""MNIST and Fashion-MNIST in a folder: the four IDX files, gzipped or not, or Keras'
mnist.npz in their place.

MNIST and Fashion-MNIST share their file names, so a folder's IDX files must also carry the
dataset's identity: files whose checksums are those of the published release are that
dataset wherever they are (and a copy of the other dataset's files is refused, naming it);
files of unknown origin are accepted only from a folder named after the dataset.

IDX files are decompressed as a stream and read to exactly the size their header promises,
so a small gzip file that expands to gigabytes costs no more memory than a real one.
"""

import gzip
import hashlib
import math
import os
import zlib

import numpy as np

from quantlab.datasets import checks, npz
from quantlab.datasets.checks import check_labels, check_split, existing_file, fail
from quantlab.datasets.names import CLASS_NAMES, SPELLINGS

_FILES = {  # split -> (file stem, number of dimensions in the IDX header)
    "x_train": ("train-images", 3),
    "y_train": ("train-labels", 1),
    "x_test": ("t10k-images", 3),
    "y_test": ("t10k-labels", 1),
}
_MAGIC = {3: 0x00000803, 1: 0x00000801}  # unsigned bytes, 3 or 1 dimensions
# All four files of a set together: MNIST's hold 55 MB. Training holds the pixels as float32
# (4 bytes each) beside a few copies, so this cap keeps a set within a few hundred MiB.
_MAX_TOTAL = 128 << 20
# Deflate expands a stream at most 1032-fold (a 258-byte match per 2 bits): a gzip file of
# n bytes cannot hold more, whatever its header promises.
_DEFLATE_MAX_RATIO = 1032
_EXCESS_COUNTED = 1 << 20  # how far past the promised size a too-long file is read

# md5 of the published .gz files: Fashion-MNIST's README, and the list torchvision and
# others check MNIST's downloads against.
PUBLISHED_GZ_MD5 = {
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


def _path(folder, stem, ndim):
    # Published name first, then the ".idx" spelling some mirrors use; gzipped or not.
    for sep in ("-", "."):
        for ext in (".gz", ""):
            path = existing_file(folder / f"{stem}{sep}idx{ndim}-ubyte{ext}")
            if path:
                return path
    return None


def find(name, folder):
    """The set's arrays from ``folder``, or None when it holds none of its files."""
    paths = {split: _path(folder, stem, ndim) for split, (stem, ndim) in _FILES.items()}
    missing = [f"{stem}-idx{ndim}-ubyte[.gz]" for split, (stem, ndim) in _FILES.items()
               if paths[split] is None]
    if len(missing) == len(paths):
        npz_path = existing_file(folder / "mnist.npz") if name == "mnist" else None
        if npz_path is None:
            return None
        raw = npz.load(npz_path)
        _check_identity(name, npz_path, raw, {}, named=True)  # the file's name says mnist
        return raw
    if missing:
        raise fail(folder, f"incomplete {name} IDX files, missing {', '.join(missing)}")
    _check_total(folder, paths)
    raw = {split: read(path, _FILES[split][1]) for split, path in paths.items()}
    named = folder.name.lower() in SPELLINGS[name]
    _check_identity(name, folder, raw, paths, named)
    for x_split, y_split in (("x_train", "y_train"), ("x_test", "y_test")):
        x, y = raw[x_split], raw[y_split]
        if x.shape[1:] != (28, 28):
            raise fail(paths[x_split], f"images are {x.shape[1]}x{x.shape[2]}, expected 28x28")
        check_split(x, y, f"{paths[x_split]} and {paths[y_split].name}")
        check_labels(y, paths[y_split])
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
            owner = PUBLISHED_GZ_MD5.get(_md5_of(path))
        found[split] = owner
    others = sorted({owner for owner in found.values() if owner not in (None, name)})
    if others:
        raise fail(where, f"holds the published {others[0]} files (their checksums say so), "
                          f"not {name}; use --dataset {others[0]}, or give the folder with "
                          f"the {name} files")
    if named or all(owner == name for owner in found.values()):
        return
    raise fail(where, f"holds IDX files that are not the published {name} files, in a folder "
                      f"not named after {name}: MNIST and Fashion-MNIST files share their "
                      f"names, so quantlab will not guess; put them in a folder named "
                      f"{SPELLINGS[name][0]}/ and pass that folder or its parent")


def _md5_of(path):
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_total(folder, paths):
    """Refuse a set whose headers promise more than _MAX_TOTAL together, before any
    payload is read: each file may be within its own limit and the four still too much."""
    total = sum(math.prod(read(path, _FILES[split][1], header_only=True))
                for split, path in paths.items())
    if total > _MAX_TOTAL:
        raise fail(folder, f"its four IDX headers promise {total} bytes together, more than "
                           f"quantlab reads for one dataset ({_MAX_TOTAL >> 20} MiB); the "
                           "files are corrupt or crafted")


def read(path, ndim, header_only=False):
    """The IDX file's array, read to exactly the size its header promises (its dimensions
    only, with ``header_only``)."""
    with open(path, "rb") as f:
        compressed = f.read(2) == b"\x1f\x8b"  # gzip magic; IDX files start with 0x0000
        f.seek(0)
        if not compressed:
            if path.suffix == ".gz":
                raise fail(path, "is named .gz but is not gzip data")
            return _read_stream(f, path, ndim, header_only, os.fstat(f.fileno()).st_size, False)
        try:
            with gzip.GzipFile(fileobj=f, mode="rb") as stream:
                return _read_stream(stream, path, ndim, header_only,
                                    _DEFLATE_MAX_RATIO * os.fstat(f.fileno()).st_size, True)
        except (OSError, EOFError, zlib.error) as error:  # BadGzipFile is an OSError
            raise fail(path, f"corrupt or truncated gzip data ({error})") from error


def _read_stream(stream, path, ndim, header_only, capacity, compressed):
    """``capacity``: the most bytes the file can hold, header included."""
    header_size = 4 + 4 * ndim
    header = stream.read(header_size)
    if len(header) < header_size:
        raise fail(path, f"only {len(header)} bytes, shorter than the {header_size}-byte IDX "
                         "header")
    magic = int.from_bytes(header[:4], "big")
    if magic != _MAGIC[ndim]:
        raise fail(path, f"bad magic number 0x{magic:08x}, expected 0x{_MAGIC[ndim]:08x} "
                         f"(an IDX file of unsigned bytes with {ndim} dimension(s))")
    dims = tuple(int.from_bytes(header[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(dims)
    shape = " x ".join(map(str, dims))
    if expected > checks.MAX_SPLIT_BYTES:
        raise fail(path, f"header promises {shape} = {expected} bytes, more than quantlab reads "
                         f"from an IDX file ({checks.MAX_SPLIT_BYTES >> 20} MiB); the file is "
                         "corrupt or crafted")
    if expected > capacity - header_size:  # refused before the memory is taken
        if compressed:
            raise fail(path, f"header promises {shape} = {expected} bytes, more than its "
                             f"{capacity // _DEFLATE_MAX_RATIO} compressed bytes can hold (gzip "
                             f"expands at most {_DEFLATE_MAX_RATIO}-fold); the file is truncated "
                             "or crafted")
        raise fail(path, f"header says {shape} = {expected} bytes of data but the file has "
                         f"{max(capacity - header_size, 0)}")
    if header_only:
        return dims
    data = np.empty(expected, np.uint8)
    got = _read_into(stream, memoryview(data))
    excess = _excess(stream) if got == expected else 0
    if got != expected or excess:
        more = " or more" if excess >= _EXCESS_COUNTED else ""
        raise fail(path, f"header says {shape} = {expected} bytes of data but the file has "
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
