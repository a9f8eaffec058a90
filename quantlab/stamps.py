"""Version stamps of the files quantlab writes besides results.json (whose schema history is
``quantlab.records``): a study's stored stages (``state``) and a fleet's summary (``fleet``).
A file of another kind or version is Stale, and is made again rather than misread.

    cache.write_json(path, stamps.stamp("state", payload))
    payload = stamps.read_stamped(path, "state")  # raises stamps.Stale when it is not one
"""

import json
from pathlib import Path

from quantlab.errors import QuantlabError

STAMPED = {"state": 1, "fleet": 1}  # kind: its current version; bump when its payload changes
_FLAT = {"fleet"}  # a file people read: its own fields stay at the top, beside the stamp


class Stale(QuantlabError):
    """A stamped file that is unreadable, of another kind, or of another version."""


def stamp(kind, payload):
    """``payload`` as the JSON-able content of a file of ``kind`` (a key of STAMPED)."""
    head = {"kind": kind, "schema": STAMPED[kind]}
    return {**head, **payload} if kind in _FLAT else {**head, "data": payload}


def unstamp(stored, kind, where="the file"):
    """The payload of ``stored`` (parsed JSON) that ``stamp(kind, ...)`` made; else Stale."""
    if not isinstance(stored, dict) or stored.get("kind") != kind or (
            kind not in _FLAT and "data" not in stored):
        raise Stale(f"{where} is not a stamped {kind} file (written before files had versions?)")
    if stored.get("schema") != STAMPED[kind]:
        raise Stale(f"{where} is {kind} version {stored.get('schema')!r}; this quantlab "
                    f"reads version {STAMPED[kind]}")
    if kind in _FLAT:
        return {k: v for k, v in stored.items() if k not in ("kind", "schema")}
    return stored["data"]


def read_stamped(path, kind):
    """The payload of a file ``stamp(kind, ...)`` wrote; Stale (one line) if it is not one."""
    try:
        stored = json.loads(Path(path).read_bytes())
    except (OSError, ValueError, RecursionError) as error:
        raise Stale(f"{path} is unreadable ({str(error).splitlines()[0][:80]})") from None
    return unstamp(stored, kind, path)
