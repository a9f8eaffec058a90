"""Small dataset files in the exact published layouts, for tests of quantlab.datasets.

The layouts follow the originals byte for byte where it matters: IDX headers (big-endian
magic 0x0803/0x0801 and dimensions), CIFAR-10 binary records (1 label byte + 3072
channel-first pixel bytes), and CIFAR-10 python batches as Python 2's cPickle wrote them
(protocol 2, str keys that load as bytes, numpy.core module names). Only the counts are
smaller: a few dozen images instead of 60000.
"""

import gzip
import io
import pickle
import struct
import tarfile

import numpy as np

IDX_NAMES = {  # split -> published file name without .gz
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"]


def idx_bytes(array):
    """An IDX file of unsigned bytes: magic 0x08 type byte, ndim byte, big-endian dims."""
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def mnist_arrays(n_train=30, n_test=10, seed=0):
    """Images 28x28 uint8 (never all zero) and labels cycling through 0..9."""
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": np.arange(n_train, dtype=np.uint8) % 10,
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": np.arange(n_test, dtype=np.uint8)[::-1] % 10,
    }


def write_idx_files(folder, arrays, gz=True, sep="-"):
    """The four IDX files in ``folder``; ``sep="."`` gives the train-images.idx3-ubyte spelling."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, name in IDX_NAMES.items():
        name = name.replace("-idx", f"{sep}idx")
        data = idx_bytes(arrays[split])
        path = folder / (name + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(data) if gz else data)
        paths[split] = path
    return paths


def write_mnist_npz(path, arrays):
    """Keras' mnist.npz: uncompressed npz with x_train, y_train, x_test, y_test."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


class Py2Pickler(pickle._Pickler):
    """Writes pickles as Python 2's cPickle did for the official CIFAR-10 files.

    Python 2 str becomes SHORT_BINSTRING/BINSTRING (which Python 3 loads as bytes with
    encoding="bytes"), and numpy globals are named from numpy.core, as in 2009.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        name = name or obj.__qualname__
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())
        self.memoize(obj)


def py2_pickle(obj):
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def cifar_batches(records=20, seed=0):
    """Six batches (5 train + test) of (N x 3072 channel-first uint8 pixels, labels list)."""
    rng = np.random.default_rng(seed)
    batches = []
    for b in range(6):
        data = rng.integers(0, 256, (records, 3072), dtype=np.uint8)
        labels = [int(v) for v in (np.arange(records) + b) % 10]
        batches.append((data, labels))
    return batches


PY_BATCH_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
BIN_BATCH_NAMES = [f"{n}.bin" for n in PY_BATCH_NAMES]


def cifar_python_files(batches):
    """cifar-10-batches-py/ contents: name -> bytes."""
    files = {}
    for i, (name, (data, labels)) in enumerate(zip(PY_BATCH_NAMES, batches)):
        label = "testing batch 1 of 1" if name == "test_batch" else f"training batch {i + 1} of 5"
        files[name] = py2_pickle({
            "data": data, "labels": labels, "batch_label": label,
            "filenames": [f"image_{i}_{j}.png" for j in range(len(labels))],
        })
    files["batches.meta"] = py2_pickle(
        {"num_cases_per_batch": len(batches[0][1]), "label_names": CIFAR_CLASSES, "num_vis": 3072})
    files["readme.html"] = b"<html>CIFAR-10</html>\n"
    return files


def cifar_binary_files(batches):
    """cifar-10-batches-bin/ contents: name -> bytes (records of label byte + pixels)."""
    files = {}
    for name, (data, labels) in zip(BIN_BATCH_NAMES, batches):
        records = np.concatenate([np.asarray(labels, np.uint8)[:, None], data], axis=1)
        files[name] = records.tobytes()
    files["batches.meta.txt"] = ("\n".join(CIFAR_CLASSES) + "\n\n").encode()
    files["readme.html"] = b"<html>CIFAR-10</html>\n"
    return files


def write_folder(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def write_tar_gz(path, inner, files):
    """A .tar.gz with every file under ``inner/``, as the official archives are laid out."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        folder = tarfile.TarInfo(inner)
        folder.type = tarfile.DIRTYPE
        folder.mode = 0o755
        tar.addfile(folder)
        for name, data in files.items():
            info = tarfile.TarInfo(f"{inner}/{name}")
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def expected_cifar_images(batches):
    """What a loader must return: N x 32 x 32 x 3 uint8, channels last."""
    data = np.concatenate([d for d, _ in batches])
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


class RunsShellCommand:
    """Pickles to a call of os.system(command): unpickling it runs the command."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        import os

        return (os.system, (self.command,))


class RunsEval:
    """Pickles to a call of builtins.eval(source)."""

    def __init__(self, source):
        self.source = source

    def __reduce__(self):
        return (eval, (self.source,))


def gzip_bomb(head, expanded_bytes):
    """gzip data that starts with ``head`` and expands to ``expanded_bytes`` more zeros.

    One compressed member of 16 MiB of zeros is about 16 KiB; a gzip file may hold many
    members one after another, so the bomb is built without ever holding what it expands to.
    """
    block = 16 << 20
    zeros = gzip.compress(bytes(block), compresslevel=9)
    return gzip.compress(head) + zeros * (expanded_bytes // block)


def with_zip_fields(content, method=None, flags=None):
    """``content``, a ZIP archive, with every member's compression method or general-purpose
    flags (local and central headers) set to the given values."""
    data = bytearray(content)
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(signature)
        while at >= 0:
            if flags is not None:
                data[at + flag_at:at + flag_at + 2] = flags.to_bytes(2, "little")
            if method is not None:
                data[at + flag_at + 2:at + flag_at + 4] = method.to_bytes(2, "little")
            at = data.find(signature, at + 4)
    return bytes(data)
