"""CIFAR-10: the official python or binary batches, as .tar.gz or extracted folder.

Batches may hold fewer records than the official 10000 (the tests use small ones); each batch
is checked on its own: whole records, as many labels as images, labels 0..9. Python batches
are pickles, read by an unpickler that builds only the plain data a batch holds.
"""

import io
import pickle
import tarfile
import zlib

import numpy as np

from quantlab.datasets.checks import check_labels, check_split, fail
from quantlab.datasets.names import CLASS_NAMES

_RECORD = 1 + 3 * 32 * 32  # binary format: label byte + channel-first pixels
_MAX_RECORDS = 10000  # per batch file, as published
_FORMATS = {  # format -> (folder inside the archive, batch files, metadata file)
    "python": ("cifar-10-batches-py",
               [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], "batches.meta"),
    "binary": ("cifar-10-batches-bin",
               [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"],
               "batches.meta.txt"),
}


def find(folder):
    """The arrays of the first CIFAR-10 copy in ``folder``, or None when it holds none."""
    candidates = []
    for fmt, (inner, batches, _) in _FORMATS.items():
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
            files = _read_folder(path, fmt)
        elif path.is_file():
            files = _read_tar(path, fmt)
        else:
            continue
        decode = _decode_python if fmt == "python" else _decode_binary
        raw = decode(files)
        raw["source"] = str(path)
        return raw
    return None


def _size_problem(fmt, name, size):
    """Why a batch or metadata file of this size cannot be genuine, or None."""
    if name == _FORMATS[fmt][2]:
        return "is larger than 1 MB" if size > 1 << 20 else None
    if fmt == "binary":
        if size == 0 or size % _RECORD or size // _RECORD > _MAX_RECORDS:
            return (f"is {size} bytes, not 1..{_MAX_RECORDS} whole "
                    f"{_RECORD}-byte records")
        return None
    # A python batch is 10000 x 3072 pixel bytes plus labels and file names (~31 MB).
    return f"is {size} bytes, too large for a CIFAR-10 batch" if size > 40_000_000 else None


def _read_folder(folder, fmt):
    _, batches, meta = _FORMATS[fmt]
    files = {}
    for name in batches + [meta]:
        path = folder / name
        if not path.is_file():
            if name == meta:  # optional: the class names are known anyway
                continue
            raise fail(folder, f"incomplete CIFAR-10 {fmt} folder, missing {name}")
        problem = _size_problem(fmt, name, path.stat().st_size)
        if problem:
            raise fail(path, problem)
        files[name] = (path, path.read_bytes())
    return files


def _read_tar(path, fmt):
    """The archive's batch files, read in memory: nothing is extracted to disk."""
    inner, batches, meta = _FORMATS[fmt]
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
                    raise fail(path, f"refusing member {member.name}: it {problem}")
                files[name] = (f"{path} member {member.name}", tar.extractfile(member).read())
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise fail(path, f"corrupt or truncated tar.gz archive ({error})") from error
    missing = [f"{inner}/{name}" for name in batches if name not in files]
    if missing:
        raise fail(path, f"not a complete CIFAR-10 {fmt} archive, missing {', '.join(missing)}")
    return files


def _splits(batches, class_names):
    """Stack (images N x 3072 channel-first, labels) batches into N x 32 x 32 x 3 splits."""
    def stack(parts):
        x = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return x, np.concatenate([p[1] for p in parts])

    x_train, y_train = stack(batches[:5])
    x_test, y_test = stack(batches[5:])
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
            "class_names": class_names}


def _decode_binary(files):
    _, batches, meta = _FORMATS["binary"]
    parts = []
    for name in batches:
        where, data = files[name]
        records = np.frombuffer(data, np.uint8).reshape(-1, _RECORD)  # sizes checked
        check_labels(records[:, 0], where)
        parts.append((records[:, 1:], records[:, 0]))
    class_names = CLASS_NAMES["cifar10"]
    if meta in files:
        where, data = files[meta]
        class_names = tuple(line.strip() for line in data.decode("latin1").splitlines()
                            if line.strip())
        _check_class_names(class_names, where)
    return _splits(parts, class_names)


def _decode_python(files):
    _, batches, meta = _FORMATS["python"]
    parts = []
    for name in batches:
        where, data = files[name]
        batch = _text_keys(_unpickle(data, where), where)
        x, y = batch.get("data"), np.asarray(batch.get("labels"))
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 \
                or x.shape[1] != 3072 or not 0 < len(x) <= _MAX_RECORDS:
            raise fail(where, f"b'data' is not a 1..{_MAX_RECORDS} x 3072 uint8 array")
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise fail(where, "b'labels' is not a list of integers")
        check_split(x, y, where)
        check_labels(y, where)
        parts.append((x, y))
    class_names = CLASS_NAMES["cifar10"]
    if meta in files:
        where, data = files[meta]
        names = _text_keys(_unpickle(data, where), where).get("label_names")
        if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
            raise fail(where, "b'label_names' is not a list of names")
        class_names = tuple(n.decode("latin1") if isinstance(n, bytes) else n for n in names)
        _check_class_names(class_names, where)
    return _splits(parts, class_names)


def _check_class_names(names, where):
    if len(names) != 10:
        raise fail(where, f"lists {len(names)} class names, expected 10")


def _text_keys(obj, where):
    # The official pickles come from Python 2, so their keys load as bytes (b"data").
    if not isinstance(obj, dict):
        raise fail(where, f"holds a {type(obj).__name__}, expected a dict")
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
        raise fail(where, f"refusing to unpickle it: it asks for {refused}, which a CIFAR-10 "
                          "batch never contains (the file is corrupt or crafted)") from None
    # Only the allow-listed callables can run, so any other failure is just a bad file; the
    # error types of a broken pickle are too many to list.
    except Exception as error:
        raise fail(where, f"not a valid CIFAR-10 python pickle ({type(error).__name__}: "
                          f"{error})") from None

