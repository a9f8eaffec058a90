"""How sure a number is: the median of per-round measurements, and a ratio of two cases
timed in the same rounds, each with a 95 % confidence interval; whether two options are told
apart or tied.

Cases are timed in rounds (``quantlab.rounds``): in each round every case of a group runs one
short window. A case's typical time is the median of its rounds, with a distribution-free
interval: the order statistics x_(k) and x_(n+1-k) of the n sorted values, with k the largest
rank for which the binomial(n, 1/2) tail P(B <= k-1) stays within 2.5 % (the classical
interval for a median; for 10 rounds it is [x_(2), x_(9)], with 97.9 % coverage). Fewer than
6 rounds cannot reach 95 %: the interval is then the whole range, with the coverage it has.

A ratio of two cases (a speed-up) is the ratio of their fastest rounds. What disturbs a
window on a shared machine (a neighbour on the host, another process on one of the two
cores) only ever adds time, so the fastest round of a case is the one least disturbed, and
it is what the case's code costs when the machine lets it run. Between two studies on this
project's 2-core VMs it holds several times better than the median of per-round ratios did
(README.md, *How sure a ratio is*). Its interval is the percentile interval of the ratio
over bootstrap resamples of the rounds (the rounds drawn with replacement, each draw taking
both cases' windows of that round), computed exactly rather than by random resampling: a
resample holds only rounds ranked at least i-th fastest of one case and j-th of the other
with probability (c/n)^n, c the number of such rounds, which gives the chance of every pair
of fastest rounds and so of every ratio; it can be checked by hand. It is as wide as the few
fastest rounds of the two cases disagree.
"""

import math
import statistics
from dataclasses import asdict, dataclass, fields

CONFIDENCE = 0.95
RATIO_METHOD = "fastest rounds"  # results.json's speedup.method for a ``ratio`` (schema 5)


@dataclass(frozen=True)
class Interval:
    value: float  # the estimate: a median, or a ratio of fastest rounds
    low: float
    high: float
    rounds: int
    confidence: float  # the coverage the chosen order statistics really have

    def contains(self, value):
        return self.low <= value <= self.high

    @property
    def relative_halfwidth(self):
        """Half the width as a share of the value: 0.05 is about +-5 %."""
        return (self.high - self.low) / (2 * self.value) if self.value else math.inf

    def as_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, stored):
        """The Interval ``as_dict`` wrote (keys beside its fields, such as a method, aside)."""
        return cls(**{field.name: stored[field.name] for field in fields(cls)})


def _binomial_tail(n, k):
    """P(B <= k) for B ~ binomial(n, 1/2)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n


def rank(n, confidence=CONFIDENCE):
    """The rank k (1-based) of the interval's lower end [x_(k), x_(n+1-k)]; 1 when even the
    whole range falls short of ``confidence``."""
    k = 1
    while k < n // 2 and 2 * _binomial_tail(n, k) <= 1 - confidence:
        k += 1
    return k


def median_interval(values, confidence=CONFIDENCE):
    """The median of ``values`` with its distribution-free confidence interval."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("no values")
    k = rank(n, confidence)
    coverage = 1 - 2 * _binomial_tail(n, k - 1)
    return Interval(statistics.median(ordered), ordered[k - 1], ordered[n - k], n, coverage)


def _ranks(values):
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0] * len(values)
    for rank, index in enumerate(order):
        ranks[index] = rank
    return ranks


def _fastest_of_resamples(top, bottom):
    """[(ratio, probability)]: the distribution of min(top*) / min(bottom*) over every
    resample of the rounds (drawn with replacement, n of n, the same rounds for both).

    A resample holds only rounds at or above rank i of ``top`` and rank j of ``bottom`` with
    probability S(i, j) = (c(i, j) / n)^n, c counting such rounds; the chance that its
    fastest rounds are exactly the i-th of ``top`` and the j-th of ``bottom`` is then
    S(i, j) - S(i+1, j) - S(i, j+1) + S(i+1, j+1)."""
    n = len(top)
    count = [[0] * (n + 1) for _ in range(n + 1)]
    for i, j in zip(_ranks(top), _ranks(bottom)):
        count[i][j] = 1
    for i in range(n - 1, -1, -1):  # count[i][j]: rounds ranked at least i and at least j
        for j in range(n - 1, -1, -1):
            count[i][j] += count[i + 1][j] + count[i][j + 1] - count[i + 1][j + 1]
    survive = [[(c / n) ** n for c in row] for row in count]
    top, bottom = sorted(top), sorted(bottom)
    outcomes = []
    for i in range(n):
        for j in range(n):
            chance = (survive[i][j] - survive[i + 1][j] - survive[i][j + 1]
                      + survive[i + 1][j + 1])
            if chance > 0:
                outcomes.append((top[i] / bottom[j], chance))
    return sorted(outcomes)


def ratio(numerator_seconds, denominator_seconds, confidence=CONFIDENCE):
    """numerator / denominator of the two cases' fastest rounds, with its bootstrap interval;
    a speed-up of a case against a reference is ``ratio(reference, case)``. Both must come
    from one group's rounds (quantlab.rounds), where every case runs from the first round
    until it leaves: only the rounds they shared (the first ones of both) are compared, and
    resampled together, round by round."""
    shared = min(len(numerator_seconds), len(denominator_seconds))
    if not shared:
        raise ValueError("a case without rounds has no ratio")
    top, bottom = numerator_seconds[:shared], denominator_seconds[:shared]
    tail, reached, low, high = (1 - confidence) / 2, 0.0, None, None
    outcomes = _fastest_of_resamples(top, bottom)
    for value, probability in outcomes:
        reached += probability
        if low is None and reached >= tail - 1e-12:
            low = value
        if reached >= 1 - tail - 1e-12:
            high = value
            break
    high = outcomes[-1][0] if high is None else high
    return Interval(min(top) / min(bottom), low, high, shared, confidence)


def tied(seconds_a, seconds_b, confidence=CONFIDENCE):
    """Whether two cases timed in the same rounds cannot be told apart: the interval of the
    ratio of their fastest rounds holds 1."""
    return ratio(seconds_a, seconds_b, confidence).contains(1.0)


def times_digits(value, digits=1):
    """Decimals that keep a ratio's second significant digit below 1: a slow-down of 0.25x
    shown as 0.2x would be a fifth off."""
    return digits if value >= 1 else max(digits, 2)


def times_text(interval, digits=1):
    """``3.1x (2.9-3.3)``, ``0.25x (0.24-0.26)``: a speed-up with its interval."""
    fmt = f"{{:.{times_digits(interval.value, digits)}f}}"
    return (f"{fmt.format(interval.value)}x ({fmt.format(interval.low)}-"
            f"{fmt.format(interval.high)})")
