"""The folder a report is written to: quantlab writes only into a folder that is new, empty
or written by quantlab before (its marker file says so), unless told ``--force``."""

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
