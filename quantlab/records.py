"""What results.json holds: its field table and its schema history (the other files quantlab
writes carry a version stamp: ``quantlab.stamps``).

One table drives checking, upgrading and reading (as pyperf's ``_metadata.METADATA`` drives
its check, parse and format): each field of a results file, of its machine and of a case
has a check, whether it must be there, the schema that brought it, and a one-line meaning.

    results = records.upgrade(json.loads(text))  # any schema quantlab wrote, as the current one
    records.check(results)                         # raises Invalid naming the first bad field

Cheap to import (no numpy, no TensorFlow): compare and the plugin read it.
"""

import math
from dataclasses import dataclass
from pathlib import PurePath

from quantlab import safe_text
from quantlab.defaults import REFERENCE, REFERENCE_RUNTIME
from quantlab.errors import QuantlabError

# What each schema changed: a file of any of them is read (``upgrade``).
HISTORY = {
    1: "The first layout, written without a schema key: per net, accuracy by variant and "
       "latency and counts by variant and batch size, each variant on the one runtime its "
       "format had (TensorFlow for float32_tf, LiteRT for the others).",
    2: "Runtime as an axis: flat lists of accuracy rows and cases, each naming its runtime; "
       "artifacts with file, format and precision. Later, without a bump: machine name and "
       "host, deployment rows, measured clock, bandwidth, peaks and ceilings, thread_counts, "
       "and per case interleaved, speedup, window_median, threads_busy.",
    3: "Every field of the table is there: what a file of schema 2 lacks is null (not recorded).",
    4: "A user's own model and images: the reference of every ratio (LiteRT float32 before), "
       "the model file and sha256, whether images had labels (else accuracy is null, agreement "
       "stands in), calibration count, preprocessing; per-layer sensitivity, mixed precision.",
    5: "Speed-ups compare the two cases' fastest rounds (speedup: value, low, high, rounds, "
       "confidence, method) where 2-4 took the median of per-round ratios (speedup.median); "
       "each case's fastest round (fastest).",
    6: "Speed-ups compare the two cases' lower quartiles of rounds (speedup.method 'lower "
       "quartiles'; 5 compared fastest rounds), with an interval from 2000 seeded bootstrap "
       "resamples; each case's lower quartile (lower_quartile).",
}
SCHEMA = max(HISTORY)  # of results.json: the one this quantlab writes
NOT_RECORDED = None  # the value of a field the writing version did not record
# The range of each kind of quantity, far wider than any study measures (a nanosecond to an
# hour per batch, up to a TiB): a number outside it is an edited or damaged file, and would
# overflow to infinity or divide by zero in a ratio. Counts are of images, cores, threads or
# batch sizes; fractions are accuracies or agreements; points are accuracy changes.
PLAUSIBLE = {"seconds": (1e-9, 3600.0), "bytes": (1, 1 << 40), "MHz": (1, 1e6),
             "count": (1, 1e9), "fraction": (0, 1), "points": (-100, 100), "ratio": (1e-9, 1e9)}


@dataclass(frozen=True)
class Field:
    name: str
    check: str  # a key of _CHECKS
    required: object  # True, False, or "run": required unless the row says why it did not run
    since: int  # the schema that brought it
    meaning: str


F = Field
TOP = (
    F("schema", "version", True, 2, "the layout of this file (HISTORY)"),
    F("quantlab", "text", False, 1, "the quantlab version that wrote it"),
    F("config", "object", False, 1, "the study's options"),
    F("dataset", "object", False, 1, "name, source, train and test image counts, input shape"),
    F("machine", "object", True, 1, "the machine the study ran on (MACHINE)"),
    F("runtimes", "names", False, 2, "the runtimes the study used"),
    F("reference", "reference", False, 4, "{variant, runtime} every ratio is against (null: "
      "LiteRT float32, quantlab's nets' reference)"),
    F("model", "object", False, 4, "a user's own model: file, sha256, format, input (null: "
      "quantlab's nets)"),
    F("nets", "object", True, 1, "per net: artifacts (ARTIFACT), training, per-layer error, variants skipped and why"),
    F("accuracy", "rows", False, 2, "per net, variant and runtime: top-1 accuracy (ACCURACY)"),
    F("cases", "rows", True, 2, "per net, variant, runtime, batch size, threads: timings (CASE)"),
    F("deployment", "rows", False, 2, "load time, first inference and memory of each model"),
    F("roofline", "object", False, 2, "ceilings and each counted case's bound"),
    F("sensitivity", "object", False, 4, "per net and quantizer: layers ranked, search (SENSITIVITY)"),
    F("findings", "list", False, 1, "sentences the report leads with"),
    F("recommendations", "list", False, 2, "what to ship, per net and batch size"),
)
MACHINE = (
    F("name", "text", False, 2, "the machine's name (QUANTLAB_MACHINE, else the host name)"),
    F("host", "text", False, 2, "the physical host, to tell machines that share one"),
    F("cpu", "object", False, 1, "model, cores, clock, ISA flags, caches (CPU)"),
    F("threads", "whole count", False, 1, "the thread count counted and drawn on the roofline"),
    F("thread_counts", "list", False, 2, "every thread count timed"),
    F("versions", "versions", False, 1, "quantlab, Python and runtime package versions"),
    F("runtimes_skipped", "object", False, 2, "runtimes left out, each with why"),
    F("counter_backend", "text", False, 1, "perf, valgrind, or null when not counted"),
    F("cache_geometry", "text", False, 1, "the caches valgrind simulated"),
    F("clock", "object", False, 2, "the measured core clock"),
    F("bandwidth", "object", False, 2, "the measured read bandwidth of each cache level"),
    F("peaks", "object", False, 2, "the measured arithmetic peaks"),
    F("ceilings", "object", False, 2, "every measurement of the ceilings and their spread"),
)
CPU = (
    F("model", "text", False, 1, "the CPU's model name"),
    F("available_cores", "whole count", False, 1, "cores this process may use"),
    F("logical_cores", "whole count", False, 1, "logical cores of the machine"),
    F("mhz", "MHz", False, 1, "the nominal clock"),
    F("flags", "object", False, 1, "ISA flags: {flag: present}"),
    F("caches", "caches", False, 1, "{level: bytes}"),
)
DATASET = (
    F("name", "text", False, 1, "the dataset's name"),
    F("source", "text", False, 1, "where its files came from"),
    F("train", "whole count", False, 1, "training images"),
    F("test", "whole count", False, 1, "test images every accuracy is measured on"),
    F("labelled", "flag", False, 4, "whether the test images had labels"),
    F("calibration", "whole count", False, 4, "images int8 calibration read"),
    F("preprocessing", "object", False, 4, "what each pixel went through: scale, mean, std, "
      "layout, size"),
)
ARTIFACT = (
    F("sha256", "sha256", True, 1, "the exported file's digest: the same bytes everywhere"),
    F("bytes", "bytes", False, 1, "its size on disk"),
    F("path", "text", False, 1, "where it was"),
    F("file", "text", False, 2, "its file name"),
    F("format", "text", False, 2, "tflite, onnx or graphdef"),
    F("execute_in", "text", False, 2, "the precision it computes in"),
)
CASE = (
    F("net", "text", True, 1, "the net"),
    F("variant", "plain", True, 1, "the variant"),
    F("runtime", "plain", True, 1, "the runtime that ran it"),
    F("batch_size", "whole count", True, 1, "images per inference call"),
    F("threads", "whole count", False, 1, "inference threads"),
    F("not_run", "words", False, 2, "why the runtime could not run it"),
    F("median", "seconds", "run", 1, "median seconds per inference call"),
    F("per_image", "seconds", False, 1, "median seconds per image"),
    F("precision", "text", False, 2, "what the kernels compute in"),
    F("p50", "seconds", False, 1, "50th percentile seconds per call"),
    F("p90", "seconds", False, 1, "90th percentile"),
    F("p99", "seconds", False, 1, "99th percentile"),
    F("rounds", "whole count", False, 1, "pytest-benchmark's rounds"),
    F("counters", "object", False, 1, "cache and instruction counts per inference"),
    F("not_counted", "words", False, 2, "why it has no counts"),
    F("interleaved", "object", False, 2, "the interleaved rounds it was timed in again"),
    F("speedup", "object", False, 2, "times faster than its reference, with its interval"),
    F("fastest", "seconds", False, 5, "its fastest round's seconds per call"),
    F("lower_quartile", "seconds", False, 6, "the ceil(n/4)-th fastest of its n rounds"),
    F("window_median", "seconds", False, 2, "pytest-benchmark's own window's median"),
    F("threads_busy", "whole count", False, 2, "threads that really worked"),
)
SPEEDUP = (
    F("value", "ratio", True, 5, "the reference's lower quartile of rounds over the case's "
      "(fastest round in schema 5; method says)"),
    F("low", "ratio", True, 5, "the 95 % interval's low end"),
    F("high", "ratio", True, 5, "its high end"),
    F("rounds", "whole count", True, 5, "the rounds the two cases shared"),
    F("confidence", "fraction", True, 5, "the interval's coverage"),
    F("method", "words", False, 5, "how the value was made"),
)
INTERLEAVED = (  # a case's ``interleaved``: the rounds its speed-up and latency come from
    F("seconds", "series of seconds", True, 2, "seconds per call in each round, in order"),
    F("rounds", "whole count", False, 2, "the rounds its group ran"),
    F("group", "text", False, 2, "the group whose rounds it ran in (a net and batch size)"),
)
ACCURACY = (
    F("net", "text", True, 1, "the net"),
    F("variant", "plain", True, 1, "the variant"),
    F("runtime", "plain", True, 2, "the runtime that ran it"),
    F("not_run", "words", False, 2, "why the runtime could not run it"),
    F("accuracy", "fraction", "run", 1, "top-1 accuracy on the test split"),
    F("delta_points", "points", "run", 1, "accuracy change against the reference, in points"),
    F("agreement", "fraction", "run", 1, "share of images with the reference's top-1 class"),
)
SENSITIVITY = (  # one quantizer of one net (NNCF's accuracy control: only its own field)
    F("ranking", "object", False, 4, "sensitivity.rank: statistic, drop_points, layers"),
    F("fallback", "words", False, 4, "why layers are kept in float, or why not"),
    F("search", "object", False, 4, "mixed_precision.search: kept_float, steps, accuracy"),
    F("mixed", "object", False, 4, "the mixed variant made: variant, file, sha256, bytes"),
    F("accuracy_control", "object", False, 4, "NNCF's: reverted operations, accuracy, drop"))
RANKING = (F("drop_points", "points", True, 4, "int8's loss on validation images"),
           F("statistic", "plain", True, 4, "the cheap per-layer statistic"),
           F("layers", "rows", True, 4, "most sensitive first: layer, statistic, points regained"))
MIXED_FILE = (F("variant", "plain", True, 4, ""), F("sha256", "sha256", True, 4, ""))
# Images without labels have no accuracy: only the agreement is required then.
UNLABELLED = tuple(Field(f.name, f.check, False, f.since, f.meaning)
                   if f.name in ("accuracy", "delta_points") else f for f in ACCURACY)


# --- checking -----------------------------------------------------------------------------

class Invalid(QuantlabError):
    """A field of a results file that is not what the table says; ``str`` names it."""


def _text(value, name):
    if not isinstance(value, str) or not value or len(value) > 300 or not value.isprintable():
        raise Invalid(f"{name} is not a name")


def _plain(value, name):
    if not safe_text.is_plain_name(value):  # a name quantlab itself gives: a variant, a runtime
        raise Invalid(f"{name} is not a plain name")


def _number(kind, whole=False):
    low, high = PLAUSIBLE[kind]

    def check(value, name):
        number = not isinstance(value, bool) and isinstance(value, int if whole else (int, float))
        huge = number and isinstance(value, int) and abs(value) > 1e300  # beyond float's range
        if not number or huge or not math.isfinite(value) or not low <= value <= high:
            shown = ("is a number beyond 1e300" if huge else f"is {value:g}" if number
                     else "is not a number")
            raise Invalid(f"{name} {shown}: expected a {'whole ' if whole else ''}number from "
                          f"{low:g} to {high:g} ({kind})")
    return check


def _kind(python_type, said):
    def check(value, name):
        if not isinstance(value, python_type):
            raise Invalid(f"{name} is not {said}")
    return check


def _rows(value, name):
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise Invalid(f"{name} is not a list of objects")


def _sha256(value, name):
    if not isinstance(value, str) or len(value) != 64 or not all(c in "0123456789abcdef" for c in value):
        raise Invalid(f"{name} is not a sha256")


def _reference(value, name):
    _kind(dict, "an object")(value, name)
    for key in ("variant", "runtime"):
        _plain(value.get(key), f"{name}.{key}")


def _names(value, name):
    _kind(list, "a list")(value, name)
    for item in value:
        _plain(item, name)


def _series(check_one):
    def check(value, name):
        if not isinstance(value, list) or not value:
            raise Invalid(f"{name} is not a list of numbers")
        for number, item in enumerate(value):
            check_one(item, f"{name}[{number}]")
    return check


def _each(check_one):
    def check(value, name):
        _kind(dict, "an object")(value, name)
        for key, item in value.items():
            if item is not None:
                check_one(item, f"{name}.{key}")
    return check


_CHECKS = {
    "text": _text, "plain": _plain, "sha256": _sha256, "names": _names, "rows": _rows,
    "object": _kind(dict, "an object"), "list": _kind(list, "a list"),
    "words": _kind(str, "text"),  # a reason, as a runtime or a tool said it: shown as text
    "flag": _kind(bool, "true or false"), "reference": _reference,
    "version": _number("count", whole=True),
    "whole count": _number("count", whole=True), "versions": _each(_text),
    "caches": _each(_number("bytes")), "series of seconds": _series(_number("seconds")),
    **{kind: _number(kind) for kind in PLAUSIBLE},
}


def check_fields(record, table, prefix=""):
    """Check ``record`` (a dict) against ``table``; raise Invalid naming the first bad field.
    Null is 'not recorded', fine for an optional field; fields not in the table are free."""
    if not isinstance(record, dict):
        raise Invalid(f"{prefix.rstrip('.') or 'the file'} is not an object")
    ran = not record.get("not_run")
    for field in table:
        value = record.get(field.name)
        if value is None and not (field.required is True or (field.required == "run" and ran)):
            continue
        if field.name not in record:
            raise Invalid(f"{prefix}{field.name} is missing")
        _CHECKS[field.check](value, prefix + field.name)  # null where required: said by its check


def check(results):
    """Check a results dict of the current schema field by field (raises Invalid)."""
    check_fields(results, TOP)
    check_fields(results["machine"], MACHINE, "machine.")
    check_fields(results["machine"].get("cpu") or {}, CPU, "machine.cpu.")
    check_fields(results.get("dataset") or {}, DATASET, "dataset.")
    for net, entry in results["nets"].items():
        _text(net, "nets")
        check_fields(entry, (F("artifacts", "object", False, 1, ""),), f"nets.{net}.")
        for variant, meta in (entry.get("artifacts") or {}).items():
            _plain(variant, f"nets.{net}.artifacts")
            check_fields(meta, ARTIFACT, f"nets.{net}.artifacts.{variant}.")
    for net, quantizers in (results.get("sensitivity") or {}).items():
        for name, entry in _object(quantizers, f"sensitivity.{net}").items():
            check_fields(entry, SENSITIVITY, f"sensitivity.{net}.{name}.")
            for part, table in (("ranking", RANKING), ("mixed", MIXED_FILE)):  # where made
                check_fields(entry.get(part) or {}, table if entry.get(part) else (),
                             f"sensitivity.{net}.{name}.{part}.")
    scored = ACCURACY if (results.get("dataset") or {}).get("labelled") is not False else UNLABELLED
    for table, rows in ((CASE, "cases"), (scored, "accuracy")):
        for number, row in enumerate(results.get(rows) or []):
            check_fields(row, table, f"{rows}[{number}].")
            if rows == "cases" and row.get("speedup") is not None:
                check_fields(row["speedup"], SPEEDUP, f"cases[{number}].speedup.")
            if rows == "cases" and row.get("interleaved") is not None:
                check_fields(row["interleaved"], INTERLEAVED, f"cases[{number}].interleaved.")


# --- versions -----------------------------------------------------------------------------

def version(results):  # a file without a schema key has the first layout
    return results.get("schema", 1)


def _object(value, name):
    _kind(dict, "an object")(value, name)
    return value


def _from_1(results):
    """Layout 1 -> 2: the per-net mappings become flat rows naming their runtime."""
    if "cases" in results:  # rows that only schema 2 and later write: its key was taken out
        raise Invalid("no schema, but cases as schema 2 and later write them")
    threads = results["machine"].get("threads")
    accuracy, cases, nets = [], [], {}
    for net, entry in results["nets"].items():
        entry = _object(entry, f"nets.{net}")
        stages = {stage: _object({} if entry.get(stage) is None else entry[stage],
                                 f"nets.{net}.{stage}")
                  for stage in ("accuracy", "latency", "counters")}
        for variant, row in stages["accuracy"].items():
            accuracy.append({**_object(row, f"nets.{net}.accuracy.{variant}"), "net": net,
                             "variant": variant, "runtime": _runtime_1(variant)})
        for variant, batches in stages["latency"].items():
            counts = stages["counters"].get(variant) or {}
            for batch, figures in _object(batches, f"nets.{net}.latency.{variant}").items():
                figures = _object(figures, f"nets.{net}.latency.{variant}.{batch}")
                whole = batch.isascii() and batch.isdigit() and len(batch) < 10
                cases.append({**figures, "runtime": figures.get("runtime") or _runtime_1(variant),
                              "net": net, "variant": variant, "threads": threads,
                              "batch_size": int(batch) if whole else batch,
                              "counters": counts.get(batch) if isinstance(counts, dict) else None})
        artifacts = entry.get("artifacts")
        if isinstance(artifacts, dict):  # each file by its name, as schema 2 has it
            artifacts = {variant: {"file": PurePath(meta["path"]).name, **meta}
                         if isinstance(meta, dict) and isinstance(meta.get("path"), str) else meta
                         for variant, meta in artifacts.items()}
        nets[net] = {**{k: v for k, v in entry.items() if k not in stages}, "artifacts": artifacts}
    return {**results, "schema": 2, "nets": nets, "accuracy": accuracy, "cases": cases,
            "runtimes": list(dict.fromkeys(str(case["runtime"]) for case in cases))}


def _runtime_1(variant):  # in layout 1, each file format had one runtime
    return "tensorflow" if variant == "float32_tf" else "litert"


def _from_2(results):
    """2 -> 3: every field a file of schema 2 may lack is there, null: not recorded."""
    def filled(record, table):  # the fields of schema 3; later ones come with their steps
        return {**{field.name: NOT_RECORDED for field in table if field.since <= 3}, **record}

    timed = [field for field in CASE if field.name != "not_run"]  # a case not run says why alone
    cases = results.get("cases")
    if isinstance(cases, list):
        cases = [filled(row, timed) if isinstance(row, dict) and not row.get("not_run") else row
                 for row in cases]
    return {**filled(results, TOP), "schema": 3, "machine": filled(results["machine"], MACHINE),
            "cases": cases}


def _from_3(results):
    """3 -> 4: the reference, which every study before was against, is said; the fields of a
    user's model and images are null (quantlab's own nets on labelled data)."""
    new = {field.name: NOT_RECORDED for field in TOP if field.since == 4}
    dataset = results.get("dataset")
    if isinstance(dataset, dict):
        dataset = {**{f.name: NOT_RECORDED for f in DATASET if f.since == 4}, **dataset}
    return {**new, **results, "schema": 4, "dataset": dataset,
            "reference": {"variant": REFERENCE, "runtime": REFERENCE_RUNTIME}}


def _from_4(results):
    """4 -> 5: a speed-up's value was the median of per-round ratios (said by its method)."""
    def renamed(case):
        if not (isinstance(case, dict) and isinstance(case.get("speedup"), dict)):
            return case
        speedup = {k: v for k, v in case["speedup"].items() if k != "median"}
        return {**case, "speedup": {"value": case["speedup"].get("median"), **speedup,
                                    "method": "median of per-round ratios"}}
    cases = results.get("cases")
    return {**results, "schema": 5,
            "cases": [renamed(c) for c in cases] if isinstance(cases, list) else cases}


def _from_5(results):
    """5 -> 6: a case's lower quartile was not recorded (its speed-up's method says what the
    speed-up compared: fastest rounds)."""
    cases = results.get("cases")
    if isinstance(cases, list):
        cases = [{**case, "lower_quartile": NOT_RECORDED}
                 if isinstance(case, dict) and not case.get("not_run") else case for case in cases]
    return {**results, "schema": 6, "cases": cases}


_STEPS = {1: _from_1, 2: _from_2, 3: _from_3, 4: _from_4, 5: _from_5}


def upgrade(results):
    """``results`` of any schema quantlab wrote, as SCHEMA; ``results`` and what it holds
    are left as they were (each step builds what it changes anew).

    Raises Invalid for a file whose structure cannot be upgraded, and Newer for a schema
    newer than this quantlab reads."""
    found = version(results)
    if not isinstance(found, int) or isinstance(found, bool) or found < 1:
        raise Invalid(f"schema {found!r} is not a schema version")
    if found > SCHEMA:
        raise Newer(found)
    for name in ("machine", "nets"):
        _object(results.get(name), name)
    while version(results) < SCHEMA:
        results = _STEPS[version(results)](results)
    return results


class Newer(QuantlabError):
    def __init__(self, found):  # a results file of a newer schema than this quantlab reads
        super().__init__(f"results.json schema {found}; this quantlab reads 1 to {SCHEMA}")
        self.found = found
