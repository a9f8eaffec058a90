"""Interleaved timing: the cases of one group (one net, batch size and thread count, every
variant on every runtime) timed in rounds, so that every ratio between them is measured
on the same machine at the same time.

One window of a single case measures the machine as it was during that window: a neighbour
that starts between the reference and a candidate moves their ratio by half on this kind
of machine. Here every round runs one short window of each case, in an order shuffled from
round to round; a case's value is the median over rounds, and each ratio is taken round by
round (``quantlab.intervals``). Rounds go on until every case's speed-up against the group's
reference is known to within +-``target`` (its 95 % interval), or the time budget is spent;
the result says which.
"""

import random
import statistics
import time
from dataclasses import dataclass

from quantlab import intervals

# One case's share of a round: as many calls as fill it, at least one (a call of 10 ms or
# more is a window by itself; more calls of a slow case would only make the round longer).
WINDOW_SECONDS = 0.01
MIN_CALLS = 1
MAX_CALLS = 1000
TARGET = 0.05  # stop when every speed-up's interval is within +-5 % of its median
# At least nine rounds: the fewest whose 95 % interval leaves out the most extreme round at
# each end (quantlab.intervals), so that one round a neighbour disturbed cannot make it.
MIN_ROUNDS = 9


@dataclass
class Timed:
    """One case of a group: the call to time (its input already prepared) and a first guess
    of its duration (pytest-benchmark's median), which sets how many calls fill a window."""
    key: object
    call: object
    guess_seconds: float


def calls_per_window(guess_seconds):
    return max(MIN_CALLS, min(MAX_CALLS, round(WINDOW_SECONDS / max(guess_seconds, 1e-9))))


def window(call, calls, clock=time.perf_counter):
    """The median duration of ``calls`` calls, after a quarter as many untimed ones: the
    previous case of the round has just evicted this one's weights from the caches, which a
    deployment that runs one model does not pay on every call."""
    for _ in range(max(1, calls // 4)):
        call()
    durations = []
    for _ in range(calls):
        start = clock()
        call()
        durations.append(clock() - start)
    return statistics.median(durations)


def widest(seconds, reference_of):
    """The widest relative interval of any case's speed-up against its reference."""
    return max((intervals.ratio(seconds[reference_of(key)], values).relative_halfwidth
                for key, values in seconds.items() if key != reference_of(key)), default=0.0)


def run(cases, reference, budget_seconds, target=TARGET, seed=0, clock=time.perf_counter,
        min_rounds=MIN_ROUNDS):
    """Time ``cases`` (Timed) in rounds; returns ({key: [seconds per round]}, how it stopped).

    ``reference`` is the key every speed-up is taken against, or a function of a case's key
    giving its reference (one per thread count, say): the stopping rule watches those
    speed-ups; at least ``min_rounds`` rounds run whatever the budget, so that every
    interval exists.
    """
    reference_of = reference if callable(reference) else lambda key: reference
    order = list(cases)
    calls = {case.key: calls_per_window(case.guess_seconds) for case in order}
    seconds = {case.key: [] for case in order}
    shuffle = random.Random(seed).shuffle
    started = clock()
    while True:
        shuffle(order)
        for case in order:
            seconds[case.key].append(window(case.call, calls[case.key], clock))
        rounds = len(seconds[order[0].key])
        if rounds < min_rounds:
            continue
        spread = widest(seconds, reference_of)
        if spread <= target:
            return seconds, {"rounds": rounds, "stopped": "converged", "widest": spread,
                             "target": target}
        if clock() - started >= budget_seconds:
            return seconds, {"rounds": rounds, "stopped": "budget", "widest": spread,
                             "target": target}
