"""The stored-state rule of every stage, for the study and the fleet alike: each result is
kept in ``OUT/.state`` under a hash of what it depends on, read back when it holds what the
stage makes, and measured again (with a notice) when it does not."""

import json

from quantlab import cache, stamps


def state_path(config, stage, key):
    return config.out / ".state" / f"{stage}-{cache.config_hash(key)}.json"


# What each stage stores, checked when it is read back: its rows, the keys each row has,
# and whether there may be none (a user's own model has no per-layer error; every net has
# its reference's accuracy and at least one timed or refused case). A stage not listed
# here is checked as rows of any keys.
_STORED_ROWS = {"layers": (("op", "tensor", "rmse_over_scale", "max_abs_error"), True),
                "eval": (("net", "variant", "runtime"), False),
                "latency": (("net", "variant", "runtime", "batch_size"), False),
                "deployment": (("net", "variant", "runtime"), True)}


def well_formed(stage, stored):
    """Whether a stored result has the shape ``stage`` makes: valid JSON of another shape
    (``null``, ``{}``, a list of something else) would fail later, far from its cause."""
    if stage.startswith("fleet-"):  # a task's outcome and its window
        return isinstance(stored, dict) and "value" in stored
    if stage == "counters":  # one case's counts, or why there are none
        return isinstance(stored, dict) and ("failed" in stored
                                             or {"rates", "per_inference"} <= stored.keys())
    keys, may_be_empty = _STORED_ROWS.get(stage, ((), True))
    return (isinstance(stored, list) and (may_be_empty or bool(stored))
            and all(isinstance(row, dict) and all(k in row for k in keys) for row in stored))


def read_state(path):
    """What a stage stored at ``path``; OSError or ValueError when it cannot be read, None
    (not what the stage stores) when written before stamps or by another version of them."""
    if not path.is_file():  # a FIFO would block the read: nothing usable there
        raise FileNotFoundError(f"no stored file at {path}")
    try:
        return stamps.unstamp(json.loads(path.read_text()), "state")
    except stamps.Stale:
        return None
    except RecursionError:  # nested deeper than any stage writes
        raise ValueError(f"{path} is nested too deeply") from None


def foreign(stage, stored, key):
    """Why rows stored under ``key`` cannot be its result, or None: a row of another net, of
    a (variant, runtime) not studied, naming other files than the key's, or holding a value
    no study measures (checked as results.json is: quantlab.records)."""
    from quantlab import records

    if not key or not isinstance(stored, list):
        return None
    table = {"eval": records.ACCURACY, "latency": records.CASE}.get(stage)
    pairs = {tuple(pair) for pair in key.get("pairs") or ()}
    files = key.get("artifacts") or {}
    for number, row in enumerate(stored):
        if "net" in key and row.get("net", key["net"]) != key["net"]:
            return f"holds a row of another net ({str(row['net'])[:40]!r})"
        if pairs and "variant" in row and (row["variant"], row.get("runtime")) not in pairs:
            return "holds a row of a variant and runtime this study does not study"
        if files and row.get("model_sha256") not in (None, files.get(row.get("variant"))):
            return "names other files than this study's"
        if table:
            try:
                records.check_fields(row, table, f"row {number}.")
            except records.Invalid as error:
                return f"holds what no study measures ({str(error)[:80]})"
    return None


def write_state(path, value):
    cache.write_json(path, stamps.stamp("state", value))


def recall(path, stage, label, progress, key=None):
    """What ``stage`` stored at ``path`` (under ``key``), or None when there is nothing usable
    there.

    A stored file that cannot be read (truncated by a crash, edited by hand) or that does not
    hold what the stage makes for ``key`` is measured again, not trusted and not fatal: said,
    not raised.
    """
    if not path.is_file():
        return None
    try:
        stored = read_state(path)
    except (OSError, ValueError):
        progress(f"{label}: stored result {path.name} is unreadable; measuring again")
        return None
    if not well_formed(stage, stored):
        progress(f"{label}: stored result {path.name} is not what this stage stores; "
                 f"measuring again")
        return None
    why = foreign(stage, stored, key)
    if why:
        progress(f"{label}: stored result {path.name} {why}; measuring again")
        return None
    progress(f"{label}: done earlier, reusing {path.name}")
    return stored


def _cached_stage(config, stage, key, compute, progress, label):
    """Return the stored result of a stage, or compute and store it."""
    path = state_path(config, stage, key)
    stored = recall(path, stage, label, progress, key)
    if stored is None:
        stored = compute()
        write_state(path, stored)
    return stored


def artifact_key(artifacts):
    return {v: a.sha256 for v, a in sorted(artifacts.items())}


def remembered(stage, key, compute):
    """``compute()``'s rows, kept in the quantlab cache as well as in a study's own
    ``OUT/.state``, for a stage whose result depends on nothing but ``key`` (files by sha256,
    the data's, the code's digest, the versions): a study with another --out, or another
    machine's worker sharing this cache, reads it instead of computing it again. A stored
    file that cannot be read or is not what the stage makes is computed again."""
    path = cache.cache_root() / stage / f"{cache.config_hash(key)}.json"
    try:
        stored = read_state(path)
        if well_formed(stage, stored) and not foreign(stage, stored, key):
            return stored
    except (OSError, ValueError):
        pass  # nothing stored yet, or damaged: computed again
    rows = compute()
    write_state(path, rows)
    return rows
