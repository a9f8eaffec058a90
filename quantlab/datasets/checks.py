"""Checks and errors shared by every dataset format: one-line errors naming the file, a
split's images against its labels, a data file where a folder stands."""

from quantlab.errors import QuantlabError

# Five times the largest split quantlab reads (60000 x 28 x 28 bytes = 45 MiB): an IDX header
# or an .npz member promising more is corrupt or crafted, and is refused before it is read.
MAX_SPLIT_BYTES = 256 << 20


def one_line(text):
    return " ".join(str(text).split())


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
