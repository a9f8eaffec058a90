"""Where artifacts live, how their keys are made, and how files are written safely.

Every artifact is keyed by a hash of everything that determines it, and is written under a
temporary name and renamed into place, so an interrupted run, a full disk or a read-only
folder never leaves a half-written file that a later run would trust. Files and folders are
created with the user's umask (0644 and 0755 for the usual 022), so a report can be shared.
"""

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path

from quantlab.errors import QuantlabError

# Why a write failed, and what helps besides writing elsewhere, for the errors that are
# about the place written to, not the data.
_WRITE_FAILURES = {
    errno.ENOSPC: ("no space left on the device", "make room there, or "),
    errno.EDQUOT: ("disk quota exceeded", "make room there, or "),
    errno.EFBIG: ("file larger than the file size limit (ulimit -f) or the file system allows",
                  "raise the limit, or "),
    errno.EROFS: ("read-only file system", ""),
    errno.EISDIR: ("a folder is in its place", "remove that folder, or "),
    errno.ENAMETOOLONG: ("a name in the path is too long", "shorten it, or "),
}
# Creating a file can also be refused outright.
_CREATE_FAILURES = {**_WRITE_FAILURES, errno.EACCES: ("permission denied", ""),
                    errno.EPERM: ("permission denied", ""),
                    errno.ENOENT: ("the file system does not let it be made (e.g. /proc)", "")}
_IN_THE_WAY = {errno.EEXIST: ("it is a file", ""), errno.ENOTDIR: ("part of the path is a file", "")}


def cache_root():
    """The cache folder, always absolute: artifact paths go to processes that run in other
    folders (the timing child runs in a temporary one), where a relative QUANTLAB_CACHE
    would name another place. A relative one is taken from the current folder, ~ expanded."""
    root = os.environ.get("QUANTLAB_CACHE") or Path.home() / ".cache" / "quantlab"
    try:
        return Path(os.path.abspath(os.path.expanduser(root)))
    except FileNotFoundError:  # relative, and the current folder was deleted
        raise QuantlabError(f"QUANTLAB_CACHE {root} is relative to the current folder, which no "
                            "longer exists; give it as an absolute path") from None


def config_hash(config):
    """Stable short hash of a JSON-able mapping."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_folder_of(folder, key):
    """Whether ``folder``, named ``<what>-<config_hash of its key>``, is the folder of ``key``
    (read from a file inside it): files copied in from another key's folder are not its own."""
    return Path(folder).name.endswith(f"-{config_hash(key)}")


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _elsewhere(path):
    """Where to write instead: the cache and the output folder are chosen differently."""
    try:
        in_cache = Path(path).resolve().is_relative_to(cache_root().resolve())
    except (OSError, RuntimeError):  # RuntimeError: a loop of links (Python 3.11)
        in_cache = False
    if in_cache:
        return "set QUANTLAB_CACHE to a folder with room that you can write"
    return "choose another folder (--out DIR)"


def _failure(error, path, failures, verb="write"):
    """A one-line QuantlabError for ``error``, or None when it is not about the place."""
    if error.errno not in failures:
        return None
    reason, remedy = failures[error.errno]
    return QuantlabError(f"cannot {verb} {path}: {reason}; {remedy}{_elsewhere(path)}")


def _unique_name(path):
    return path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"


def _create_private(path, create):
    """Run ``create(name)`` on fresh unique names beside ``path`` until one is new."""
    while True:
        name = _unique_name(path)
        try:
            create(name)
            return name
        except FileExistsError:
            continue
        except OSError as error:
            raise _failure(error, path, _CREATE_FAILURES) or error from None


def _make_parent(path):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _failure(error, path.parent, {**_CREATE_FAILURES, **_IN_THE_WAY},
                       "create the folder") or error from None


@contextlib.contextmanager
def atomic_file(path):
    """Yield a temporary path beside ``path``; rename it into place only on success.

    The temporary file is created with the user's umask. If the disk is full or the place
    is read-only, the error is one line naming ``path``, and nothing is left behind.
    """
    path = Path(path)
    _make_parent(path)
    # os.open with mode 0o666 lets the umask decide, where mkstemp would force 0600.
    tmp = _create_private(path, lambda name: os.close(
        os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)))
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as error:
        raise _failure(error, path, _WRITE_FAILURES) or error from None
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path):
    """Yield a temporary directory beside ``path``; rename it into place only on success."""
    path = Path(path)
    _make_parent(path)
    tmp = _create_private(path, lambda name: os.mkdir(name, 0o777))
    try:
        yield tmp
        if path.exists():  # another process finished the same work first: keep theirs
            return
        os.rename(tmp, path)
    except OSError as error:
        raise _failure(error, path, _WRITE_FAILURES) or error from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def locked(path, progress=None):
    """Hold the lock of the artifact at ``path`` (a file beside it) while it is looked up and
    made: two processes that share a cache (test workers, the workers of one machine) then
    make it once, and never replace each other's files while they are read. Where no lock
    file can be made (a read-only cache), go on without: reading needs no lock, and a write
    fails with its own one-line error."""
    path = Path(path)
    try:
        _make_parent(path)
        # Never through a link: a lock file planted as one would create a file elsewhere.
        fd = os.open(path.parent / f".{path.name}.lock", os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW,
                     0o666)
    except (OSError, QuantlabError):
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress:
                progress(f"waiting for another quantlab process that is making {path}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_bytes(path, content):
    with atomic_file(path) as tmp:
        tmp.write_bytes(content)


def code_digest(*code):
    """Short digest of the source of ``code`` (modules, functions): part of a cache key, so
    that a change to the code that makes an artifact never returns one made by the old code."""
    import inspect

    digest = hashlib.sha256()
    for part in code:
        digest.update(inspect.getsource(part).encode())
    return digest.hexdigest()[:16]


def write_json(path, data):
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def check_writable(folder, what="folder", fix=None):
    """Raise a one-line error unless files can be created in ``folder`` (made if missing).

    Call it before long work whose results go there. The probe is a file of one block under
    a fresh unique name, removed again: no file of the user's is touched, none is left.
    ``what`` names the folder in the message ("output folder"), ``fix`` says what to do.
    """
    folder = Path(folder)
    probe = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        name = _unique_name(folder / "quantlab-write-test")
        fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        probe = name  # from here on the probe is ours to remove
        try:
            os.write(fd, bytes(4096))  # a full disk often still has room for an empty file
        finally:
            os.close(fd)
    except OSError as error:
        reason = {**_CREATE_FAILURES, **_IN_THE_WAY}.get(error.errno, (error.strerror, ""))[0]
        raise QuantlabError(f"cannot write to {what} {folder}: {reason}; "
                            f"{fix or _elsewhere(folder)}") from None
    finally:
        if probe is not None:
            probe.unlink(missing_ok=True)
