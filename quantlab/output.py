"""The folder a report is written to: quantlab writes only into a folder that is new, empty
or written by quantlab before (its marker file says so), unless told ``--force``."""

import contextlib
import fcntl
import os

import quantlab
from quantlab import cache
from quantlab.errors import QuantlabError

MARKER = ".quantlab-report"  # in every folder a study wrote: it may be written again


def prepare_output(out, force=False):
    """Make ``out`` ready: new, empty, or written by quantlab before (else ``--force``)."""
    try:
        _prepare(out, force)
    except (OSError, RuntimeError) as error:  # a name too long, a loop of links (RuntimeError)
        why = error.strerror if isinstance(error, OSError) else "a loop of symbolic links"
        raise QuantlabError(f"--out {out}: {why}; choose another with --out") from None


@contextlib.contextmanager
def writing(out):
    """Hold ``out``'s lock (its marker, locked) while a run writes into it: two runs writing
    one folder at once would mix their files, the last to finish silently winning."""
    try:
        fd = os.open(out / MARKER, os.O_RDWR | os.O_NOFOLLOW)
    except OSError as error:
        raise QuantlabError(f"--out {out}: cannot open its {MARKER} ({error.strerror}); "
                            f"choose another with --out") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise QuantlabError(f"--out {out} is being written by another quantlab run; wait "
                                f"for it to finish, or choose another with --out") from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _prepare(out, force):
    cache_root = cache.cache_root().resolve()
    if out.resolve() == cache_root or out.resolve().is_relative_to(cache_root):
        raise QuantlabError(f"--out {out} is quantlab's cache folder or inside it ({cache_root}), "
                            f"where reports would mix with cached files; choose another with --out")
    if out.exists() and not out.is_dir():
        raise QuantlabError(f"--out {out} is a file, not a folder; choose another with --out")
    if out.is_dir() and not (out / MARKER).is_file() and any(out.iterdir()) and not force:
        raise QuantlabError(f"--out {out} holds files that quantlab did not write; choose a new "
                            f"or empty folder, or add --force to write the report among them")
    cache.check_writable(out, "output folder", "choose another with --out")
    if not (out / MARKER).is_file():
        cache.write_json(out / MARKER, {"quantlab": quantlab.__version__})
