"""scikit-learn's digits: 1797 8 x 8 images bundled with scikit-learn, split the same way on
every load.

The images are read from the file scikit-learn ships (``sklearn/datasets/data/digits.csv.gz``)
and split as ``train_test_split(test_size=0.2, stratify=labels, random_state=0)`` splits
them, without importing scikit-learn: its import takes 1.2-1.5 s, paid by every process
that loads digits (a study, each of its workers, each test worker).
"""

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from quantlab.datasets.names import CLASS_NAMES
from quantlab.errors import QuantlabError

TEST_SHARE, SEED = 0.2, 0


def _csv_path():
    spec = importlib.util.find_spec("sklearn")  # where the package is, without importing it
    path = (Path(next(iter(spec.submodule_search_locations)), "datasets", "data", "digits.csv.gz")
            if spec and spec.submodule_search_locations else None)
    if path is None or not path.is_file():
        raise QuantlabError("digits needs scikit-learn, whose package holds its images: "
                            "install it with `pip install scikit-learn`")
    return path


def _approximate_mode(class_counts, n_draws, rng):
    """scikit-learn's ``_approximate_mode``: how many of ``n_draws`` fall to each class
    (floored shares, then the largest remainders, ties broken by ``rng``)."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need = int(n_draws - floored.sum())
    remainder = continuous - floored
    for value in np.sort(np.unique(remainder))[::-1]:
        if need <= 0:
            break
        (tied,) = np.where(remainder == value)
        chosen = rng.choice(tied, size=min(len(tied), need), replace=False)
        floored[chosen] += 1
        need -= len(chosen)
    return floored.astype(int)


def stratified_split(labels, test_share=TEST_SHARE, seed=SEED):
    """(train indices, test indices) exactly as scikit-learn's ``StratifiedShuffleSplit``
    (what ``train_test_split(stratify=...)`` uses) draws them with ``random_state=seed``: the
    same draws from the same generator in the same order."""
    n_test = int(np.ceil(test_share * len(labels)))
    n_train = len(labels) - n_test
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    by_class = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(counts, n_train, rng)
    t_i = _approximate_mode(counts - n_i, n_test, rng)
    train, test = [], []
    for members, n, t in zip(by_class, n_i, t_i):
        shuffled = members.take(rng.permutation(len(members)), mode="clip")
        train.extend(shuffled[:n])
        test.extend(shuffled[n:n + t])
    return rng.permutation(train), rng.permutation(test)


def _table(path):
    """The 1797 rows of 64 pixels (0..16) and a label (0..9) of the file at ``path``."""
    try:
        with gzip.open(path, "rt") as lines:
            table = np.loadtxt(lines, delimiter=",", ndmin=2)
    except (OSError, EOFError, ValueError, UnicodeDecodeError) as error:
        raise QuantlabError(f"{path} cannot be read ({error}): reinstall scikit-learn") from None
    if (table.shape[1:] != (65,) or len(table) < 20 or not np.isin(table[:, -1], range(10)).all()
            or table[:, :-1].min() < 0 or table[:, :-1].max() > 16):
        raise QuantlabError(f"{path} does not hold scikit-learn's digits (rows of 64 pixels "
                            f"of 0 to 16 and a label of 0 to 9): reinstall scikit-learn")
    return table


def load():
    table = _table(_csv_path())
    images = table[:, :-1].reshape(-1, 8, 8, 1).astype(np.uint8)  # 8x8 pixels of 0..16
    labels = table[:, -1].astype(np.int64)
    # Stratified with a fixed seed: the same split on every load, every class in both halves.
    train, test = stratified_split(labels)
    return {"x_train": images[train], "y_train": labels[train], "x_test": images[test],
            "y_test": labels[test], "class_names": CLASS_NAMES["digits"],
            "source": "scikit-learn", "scale": 16.0}
