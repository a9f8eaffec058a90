"""Interleaved timing: the cases of one group (one net, batch size and thread count, every
variant on every runtime) timed in rounds, so that every ratio between them is measured
on the same machine at the same time.

One window of a single case measures the machine as it was during that window: a neighbour
that starts between the reference and a candidate moves their ratio by half on this kind
of machine. Here every round runs one short window of each case, in an order shuffled from
round to round; a case's value is the median over rounds, and each ratio compares the two
cases' lower quartiles of the rounds they shared (``quantlab.intervals``). Halfway through
its minimum rounds a group may load every model anew (``renew``): where a model's weights
land in memory is drawn anew with each load and moves its speed by up to 10 % on this kind
of machine, as much as a second process does, so that each case's rounds see two loads,
not the luck of one. A case leaves the
rounds once its speed-up against the group's reference is known to within +-``target`` (its
95 % interval); the group stops when none is left, or when its time budget is spent; the
result says which. Several groups take
their rounds in turn (``run_groups``), so that each group's rounds spread over the time of
all of them.
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
TARGET = 0.05  # stop when every speed-up's interval is within +-5 % of its value
# At least nine rounds: the fewest whose 95 % interval leaves out the most extreme round at
# each end (quantlab.intervals), so that one round a neighbour disturbed cannot make it.
MIN_ROUNDS = 9
# The round before which a group's models are loaded anew (``renew``): every case is still
# in the rounds then, and both loads get about half of the minimum.
RENEW_AT = MIN_ROUNDS // 2


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


def run(cases, reference, budget_seconds, target=TARGET, seed=0, clock=time.perf_counter,
        min_rounds=MIN_ROUNDS):
    """Time ``cases`` (Timed) in rounds; returns ({key: [seconds per round]}, how it stopped).

    ``reference`` is the key every speed-up is taken against, or a function of a case's key
    giving its reference (one per thread count, say): the stopping rule watches those
    speed-ups; at least ``min_rounds`` rounds run whatever the budget, so that every
    interval exists.
    """
    return run_groups({None: cases}, reference, budget_seconds, target, seed, clock,
                      min_rounds)[None]


def run_groups(groups, reference, budget_seconds, target=TARGET, seed=0, clock=time.perf_counter,
               min_rounds=MIN_ROUNDS, said=lambda line: None, renew=None):
    """Time several groups ({name: [Timed]}) in rounds taken in turn: one round of each
    group still going, in a shuffled order, then the next. Returns {name: (seconds, how it
    stopped)} as ``run`` does for one group.

    A neighbour's burst of a few seconds shifts every case timed during it; a group whose
    rounds all ran in one second can lie wholly inside one, and its intervals, narrow, do
    not show it. Taken in turn, each group's rounds spread over the time of all of them, so
    that a burst lands in a few rounds of each and the rest show the machine without it.
    ``budget_seconds`` is per group: the time spent in its own rounds. ``said`` gets a line
    every few seconds while groups are still going. ``renew(name, keys)``, if given, is
    called once per group before its round ``RENEW_AT`` with the keys of its cases, and
    returns {key: call}, each the same case loaded anew; the rounds go on with those calls
    (the time it takes is not the group's).
    """
    reference_of = reference if callable(reference) else lambda key: reference
    shuffle = random.Random(seed).shuffle
    going = {name: _Group(list(cases)) for name, cases in groups.items()}
    done, cycles, last_said = {}, 0, clock()
    while going:
        cycles += 1
        names = list(going)
        shuffle(names)
        due = [name for name in names if renew is not None and going[name].rounds == RENEW_AT]
        if due:  # seconds of loading, where no round is said
            said(f"loading the models of {len(due)} group(s) again for their rounds "
                 f"{RENEW_AT + 1} and on")
        for name in names:
            group = going[name]
            if name in due:
                group.renew(renew(name, [case.key for case in group.cases]))
            started = clock()
            group.one_round(shuffle, clock)
            group.spent += clock() - started
            how = group.stopped(reference_of, budget_seconds, target, min_rounds)
            if how:
                done[name] = (group.seconds, how)
                del going[name]
        if going and clock() - last_said >= SAY_EVERY:
            last_said = clock()
            said(f"{cycles} rounds, {len(going)} of {len(groups)} groups still going")
    return done


SAY_EVERY = 5.0  # seconds between progress lines while groups are timed in turn


class _Group:
    """One group's cases, their windows so far, and the time its rounds took. A case whose
    speed-up is known to within the target leaves the rounds after the minimum (its
    reference stays while any case of it goes on): the time goes to the wide ones."""

    def __init__(self, cases):
        self.cases = cases
        self.calls = {case.key: calls_per_window(case.guess_seconds) for case in cases}
        self.seconds = {case.key: [] for case in cases}
        self.settled = set()  # keys of the cases that left the rounds
        self.width = {}  # each option's speed-up interval, +- share; fixed once it has left
        self.spent = 0.0

    @property
    def rounds(self):
        """Rounds run so far (every case runs the first ``min_rounds``)."""
        return max(map(len, self.seconds.values()), default=0)

    def renew(self, calls):
        for case in self.cases:
            case.call = calls[case.key]

    def one_round(self, shuffle, clock):
        shuffle(self.cases)
        for case in self.cases:
            if case.key not in self.settled:
                self.seconds[case.key].append(window(case.call, self.calls[case.key], clock))

    def stopped(self, reference_of, budget_seconds, target, min_rounds):
        """How the group stopped ({rounds, stopped, widest, target}), or None to go on."""
        rounds = self.rounds
        if rounds < min_rounds:
            return None
        options = [key for key in self.seconds if key != reference_of(key)]
        width = self.width
        for key in options:
            if key not in self.settled:  # a case that left has no new rounds to pair
                width[key] = intervals.ratio(self.seconds[reference_of(key)],
                                             self.seconds[key]).relative_halfwidth
        self.settled |= {key for key in options if width[key] <= target}
        going = [key for key in options if key not in self.settled]
        # A reference leaves with the last case measured against it (a ratio pairs a case's
        # rounds with the reference's first ones: the rounds they shared).
        self.settled |= {key for key in self.seconds if key not in options
                         and not any(reference_of(other) == key for other in going)}
        spread = max(width.values(), default=0.0)
        if not going:
            return {"rounds": rounds, "stopped": "converged", "widest": spread, "target": target}
        if self.spent >= budget_seconds:
            return {"rounds": rounds, "stopped": "budget", "widest": spread, "target": target}
        return None
