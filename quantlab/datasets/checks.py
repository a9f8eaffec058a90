"""Checks and errors shared by every dataset format: one-line errors naming the file, a
split's images against its labels, a data file where a folder stands."""

import math
import zipfile
import zlib

from quantlab.errors import QuantlabError
from quantlab.safe_text import one_line

# Five times the largest split quantlab reads (60000 x 28 x 28 bytes = 45 MiB): an IDX header
# or an .npz member promising more is corrupt or crafted, and is refused before it is read.
MAX_SPLIT_BYTES = 256 << 20


# What reading a damaged or crafted .npz raises: zipfile's own errors, a bad CRC or header,
# a compression method it lacks (NotImplementedError), an encrypted member (RuntimeError).
NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError,
              RuntimeError)


def fail(where, problem):
    return QuantlabError(one_line(f"{where}: {problem}"))


def check_split(x, y, where, x_what="images", y_what="labels"):
    if len(x) != len(y):
        raise fail(where, f"{len(x)} {x_what} but {len(y)} {y_what}")


def check_labels(y, where):
    if len(y) and (y.min() < 0 or y.max() > 9):
        bad = int(y.min() if y.min() < 0 else y.max())
        raise fail(where, f"label {bad} is out of range 0..9")


def existing_file(path):
    """``path`` if it is a file, None if nothing is there; a folder in its place is an error."""
    if path.is_file():
        return path
    if path.exists():
        raise fail(path, "is a folder (or other non-file) where the data file should be; "
                         "put the file itself there")
    return None


def npy_header(archive, info, where, name):
    """(shape, dtype) of the array in .npz member ``info``, from its .npy header alone: numpy
    allocates what the header promises before it reads a byte, so an array of Python objects
    (numpy would unpickle them, and pickles can run code) and one promising more than its
    member holds are refused here."""
    import numpy as np

    with archive.open(info) as member:
        try:
            version = np.lib.format.read_magic(member)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(member)
        except ValueError as error:
            raise fail(where, f"{name} is not a numpy array file ({error}); save it with np.savez")
    if dtype.hasobject:
        raise fail(where, f"{name} holds Python objects (pickled), which quantlab never loads; "
                          "save plain numeric arrays")
    promised = math.prod(shape) * dtype.itemsize
    if promised > info.file_size:
        raise fail(where, f"{name}'s header promises {'x'.join(map(str, shape))} {dtype} = "
                          f"{promised} bytes but the member holds {info.file_size}; the file is "
                          "truncated or crafted")
    return shape, dtype
