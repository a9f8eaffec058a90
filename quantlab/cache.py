"""Where artifacts live, how their keys are made, and how they are written atomically.

Every artifact is keyed by a hash of everything that determines it, and is written under a
temporary name and renamed into place, so an interrupted run never leaves a half-written
file that a later run would trust.
"""

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from quantlab.errors import QuantlabError


def cache_root():
    return Path(os.environ.get("QUANTLAB_CACHE") or Path.home() / ".cache" / "quantlab")


def config_hash(config):
    """Stable short hash of a JSON-able mapping."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_file(path):
    """Yield a temporary path beside ``path``; rename it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path):
    """Yield a temporary directory beside ``path``; rename it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():  # another process finished the same work first: keep theirs
            return
        os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_writable(folder):
    """Raise one line unless files can be created in ``folder`` (created if missing)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".quantlab-probe-"):
            pass
    except OSError as error:
        raise QuantlabError(f"cannot write to {folder}: {error.strerror}; choose another "
                            f"folder") from None


def write_bytes(path, content):
    with atomic_file(path) as tmp:
        tmp.write_bytes(content)


def code_digest(*functions):
    """Short digest of the source of ``functions``: part of a cache key, so that a change to
    the code that makes an artifact never returns one made by the old code."""
    import inspect

    digest = hashlib.sha256()
    for function in functions:
        digest.update(inspect.getsource(function).encode())
    return digest.hexdigest()[:16]


def write_json(path, data):
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
