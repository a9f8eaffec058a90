"""Lookups in a study's results: the timed cases, the reference of every speed-up, speed-ups
and their intervals, ties, and the option to ship. No text beyond a number's own wording.

The report and the plots both read these; this module imports neither (the report draws the
plots, so either one importing the other's lookups would make a cycle).
"""

from quantlab import deployment, intervals
from quantlab.defaults import ACCURACY_TOLERANCE, REFERENCE, REFERENCE_RUNTIME


def span(values, fmt="{:.2f}", unit=""):
    """``3.42x`` for one value (or equal ends), ``3.42-3.91x`` for a range."""
    low, high = fmt.format(min(values)), fmt.format(max(values))
    return f"{low}{unit}" if low == high else f"{low}-{high}{unit}"


def scored(results):
    return [row for row in results["accuracy"] if not row.get("not_run")]


def accuracy_of(results, net, variant, runtime):
    return next((row for row in scored(results) if (row["net"], row["variant"], row["runtime"])
                 == (net, variant, runtime)), None)


def timed(results):
    return [case for case in results["cases"] if case.get("median")]


def batch_sizes(results, net):
    """The batch sizes ``net`` was studied at: the study's, or the net's own (the quick study
    times today's nets at batch 1 alone)."""
    config = results["config"]
    return (config.get("batch_sizes_by_net") or {}).get(net, config["batch_sizes"])


def threads_of(case):
    return case.get("threads") or 1


def thread_counts(results):
    """The thread counts the cases were timed at, in the order the study gave them."""
    return list(dict.fromkeys(threads_of(c) for c in timed(results))) or [1]


def threads_text(n):
    return f"{n} thread" + ("s" if n != 1 else "")


def timed_at(results, threads=None):
    """The timed cases at one thread count (default: the first, the one counted)."""
    threads = threads or thread_counts(results)[0]
    return [case for case in timed(results) if threads_of(case) == threads]


def reference(results):
    """(variant, runtime) that every ratio of this study is against, as results.json records
    it: the float32 of the studied model on its natural runtime (LiteRT float32 for
    quantlab's nets, the file itself on ONNX Runtime for a user's ONNX model). A file
    written before it was recorded had LiteRT float32, the only reference there was."""
    recorded = results.get("reference") or {}
    return (recorded.get("variant") or REFERENCE, recorded.get("runtime") or REFERENCE_RUNTIME)


def reference_text(results):
    """``float32 on litert``: the reference as the report names it."""
    return "{} on {}".format(*reference(results))


def is_reference(results, variant, runtime):
    return (variant, runtime) == reference(results)


def reference_case(results, case):
    """The reference on the same net, batch size and thread count: what every speed-up is
    against."""
    variant, runtime = reference(results)
    return next((c for c in timed(results) if
                 (c["net"], c["variant"], c["runtime"], c["batch_size"], threads_of(c)) ==
                 (case["net"], variant, runtime, case["batch_size"], threads_of(case))), None)


def round_seconds(case):
    return (case.get("interleaved") or {}).get("seconds")


def quartile_seconds(case, rounds=None):
    """What options are ranked by: a case's lower quartile of its first ``rounds`` rounds
    (what speed-ups compare), or its median where it was not timed in rounds."""
    return intervals.lower_quartile((round_seconds(case) or [case["median"]])[:rounds])


def same_rounds(a, b):
    """Whether two cases were timed in one group's rounds, so that their ratio pairs them
    round by round (results of schema 2, before groups were named: rounds of equal count)."""
    x, y = a.get("interleaved") or {}, b.get("interleaved") or {}
    if not (x.get("seconds") and y.get("seconds")):
        return False
    if "group" in x and "group" in y:
        return x["group"] == y["group"]
    return len(x["seconds"]) == len(y["seconds"])


def ratio(slow, fast):
    """How many times faster ``fast`` is than ``slow``, as an Interval when both were timed in
    the same rounds (their lower quartiles compared), else None."""
    if same_rounds(slow, fast):
        return intervals.ratio(round_seconds(slow), round_seconds(fast))
    return None


def pace_by_group(results):
    """{(net, batch size): [each round's pace]} (``intervals.pace``) for each group of rounds
    of two cases or more (a net and batch size: its thread counts share its rounds)."""
    groups = {}
    for case in timed(results):
        if round_seconds(case):
            groups.setdefault((case["net"], case["batch_size"]), []).append(round_seconds(case))
    return {group: intervals.pace(rows) for group, rows in groups.items() if len(rows) > 1}


# How much faster than usual the whole machine may run in a round before the report says
# that a ratio may not repeat: the agreement check's own tolerance. (Slower rounds are the
# disturbances that the lower quartiles leave out.)
PACE_NOTED = 0.10


def faster_rounds(results):
    """([(pace, (net, batch size), round number)] of the rounds in which the whole machine ran
    more than PACE_NOTED faster than usual, fastest first; how many rounds there were). Over
    the quick studies of a day on one host, two studies of which only one had four such
    rounds or more disagreed on a median of 13 speed-ups of 136, against 7 where neither had."""
    paces = [(pace, group, number) for group, rounds in pace_by_group(results).items()
             for number, pace in enumerate(rounds)]
    return sorted(pace for pace in paces if pace[0] < 1 - PACE_NOTED), len(paces)


def speedup_method(results):
    """How the speed-ups of ``results`` were made, in words (results.json's speedup.method)."""
    method = next((c["speedup"].get("method") for c in timed(results) if c.get("speedup")),
                  intervals.RATIO_METHOD)
    return METHOD_WORDS.get(method, f"the {method}")


# results.json's speedup.method in words: this quantlab's, then those of older schemas.
METHOD_WORDS = {
    intervals.RATIO_METHOD: "the ratio of the two cases' lower quartiles of rounds (the "
                            "ceil(n/4)-th fastest of the n rounds they shared)",
    "fastest rounds": "the ratio of the two cases' fastest rounds",
}


def speedup_interval(results, case):
    """The speed-up against the reference as an Interval, where the rounds give one."""
    if case.get("speedup"):
        return intervals.Interval.from_dict(case["speedup"])
    reference = reference_case(results, case)
    return ratio(reference, case) if reference else None


def speedup(results, case):
    """How many times faster than the reference on the same net and batch (None if unknown):
    the ratio of their lower quartiles where the cases were timed in rounds."""
    interval = speedup_interval(results, case)
    if interval:
        return interval.value
    reference = reference_case(results, case)
    return reference["median"] / case["median"] if reference else None


def times(slow, fast, digits=1):
    """``3.1x (2.9-3.3)``: ``fast`` against ``slow`` with its interval where there is one."""
    interval = ratio(slow, fast)
    if interval:
        return intervals.times_text(interval, digits)
    gain = slow["median"] / fast["median"]
    return f"{gain:.{intervals.times_digits(gain, digits)}f}x"


def slower_or_faster(interval):
    """An interval in the words of its value: ``2.74-3.35x faster`` or ``1.4-1.7x slower``
    (a slow-down's interval is the speed-up's, inverted)."""
    if interval.value >= 1:
        return f"{interval.low:.2f}-{interval.high:.2f}x faster"
    return f"{1 / interval.high:.2f}-{1 / interval.low:.2f}x slower"


def speedup_text(results, case, digits=1):
    """The speed-up against the reference with its 95 % interval: ``3.1x (2.9-3.3)``."""
    interval = speedup_interval(results, case)
    if interval:
        return intervals.times_text(interval, digits)
    gain = speedup(results, case)
    return f"{gain:.{intervals.times_digits(gain, digits)}f}x" if gain else None


# Among options that cannot be told apart, the one with less to deploy: LiteRT is one small
# library and an interpreter with no compile step; ONNX Runtime a larger library; OpenVINO
# compiles every model for the CPU at load; TensorFlow is the whole framework.
DEPLOYMENT_WEIGHT = {"litert": 0, "onnxruntime": 1, "openvino": 2, "tensorflow": 3}
WHY_LIGHTER = {"litert": "no compile step and the smallest runtime",
               "onnxruntime": "no compile step", "openvino": "", "tensorflow": ""}


def tied_with(fastest, options):
    """The options whose rounds cannot be told apart from the fastest's."""
    return [c for c in options if c is not fastest and same_rounds(c, fastest)
            and intervals.tied(round_seconds(c), round_seconds(fastest))]


def lighter(results, case):
    """The deployment weight of an option: its runtime, then its file's size."""
    files = results["nets"].get(case["net"], {}).get("artifacts", {})
    return (DEPLOYMENT_WEIGHT.get(case["runtime"], len(DEPLOYMENT_WEIGHT)),
            files.get(case["variant"], {}).get("bytes") or case.get("model_bytes") or 0)


def labelled(results):
    """Whether the test images had labels; without them agreement with the reference stands
    in for accuracy. Files written before unlabelled data was studied always had them."""
    return (results.get("dataset") or {}).get("labelled") is not False


def worst_change(row):
    """The accuracy change in points, or without labels its worst case: an image whose top-1
    class differs from the reference's can cost at most that image, so an agreement of 99 %
    bounds the loss at 1 point."""
    if row.get("delta_points") is not None:
        return row["delta_points"]
    return -100.0 * (1.0 - row["agreement"])


def max_drop(results):
    """Accuracy points an option may lose (``--max-drop``; a file written before it was an
    option had the fixed tolerance of the same value)."""
    chosen = (results.get("config") or {}).get("max_drop")
    return ACCURACY_TOLERANCE if chosen is None else chosen


def shippable(results, case):
    row = accuracy_of(results, case["net"], case["variant"], case["runtime"])
    return row is not None and worst_change(row) >= -max_drop(results)


def pick(results, net, batch, threads):
    """(the option to ship, the fastest, the ties) among the options of one net, batch size
    and thread count that keep accuracy; (None, None, []) when there is none."""
    options = [c for c in timed(results) if c["net"] == net and c["batch_size"] == batch
               and threads_of(c) == threads and shippable(results, c)]
    if not options:
        return None, None, []
    # Over the rounds every option ran: one that stayed in the rounds longer (a noisy one:
    # the others left once known) is judged on the same moments of the machine as the rest,
    # not on later rounds, perhaps quieter, that the others did not see.
    shared = min((len(round_seconds(c) or ()) for c in options), default=0) or None

    def floor(case):
        return quartile_seconds(case, shared)

    fastest = min(options, key=floor)
    ties = [fastest] + tied_with(fastest, options)
    # A tie that only noise makes (an interval wide enough to hold 1 around a value far
    # slower) is named, but not shipped for being lighter.
    close = [c for c in ties if floor(c) <= floor(fastest) * (1 + CLOSE_ENOUGH)]
    return min(close, key=lambda c: lighter(results, c)), fastest, ties


# How much slower (its lower quartile) a tie may be and still be chosen for less to deploy.
CLOSE_ENOUGH = 0.10


def deployment_note(results, case):
    """What a deployment of this option also pays (load, first inference, memory), if measured."""
    record = next((r for r in results.get("deployment") or []
                   if (r["net"], r["variant"], r["runtime"], threads_of(r)) ==
                   (case["net"], case["variant"], case["runtime"], threads_of(case))), None)
    return deployment.deployment_note(record) if record else None
