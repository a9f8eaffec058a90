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
    try:
        return stamps.unstamp(json.loads(path.read_text()), "state")
    except stamps.Stale:
        return None


def write_state(path, value):
    cache.write_json(path, stamps.stamp("state", value))


def recall(path, stage, label, progress):
    """What ``stage`` stored at ``path``, or None when there is nothing usable there.

    A stored file that cannot be read (truncated by a crash, edited by hand) or that does not
    hold what the stage makes is measured again, not trusted and not fatal: said, not raised.
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
    progress(f"{label}: done earlier, reusing {path.name}")
    return stored


def _cached_stage(config, stage, key, compute, progress, label):
    """Return the stored result of a stage, or compute and store it."""
    path = state_path(config, stage, key)
    stored = recall(path, stage, label, progress)
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
        if well_formed(stage, stored):
            return stored
    except (OSError, ValueError):
        pass  # nothing stored yet, or damaged: computed again
    rows = compute()
    write_state(path, rows)
    return rows
