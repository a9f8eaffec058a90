"""How sure a number is: the median of per-round measurements, and a ratio of two cases
timed in the same rounds, each with a 95 % confidence interval; whether two options are told
apart or tied.

Cases are timed in rounds (``quantlab.rounds``): in each round every case of a group runs one
short window. A case's typical time is the median of its rounds, with a distribution-free
interval: the order statistics x_(k) and x_(n+1-k) of the n sorted values, with k the largest
rank for which the binomial(n, 1/2) tail P(B <= k-1) stays within 2.5 % (the classical
interval for a median; for 10 rounds it is [x_(2), x_(9)], with 97.9 % coverage). Fewer than
6 rounds cannot reach 95 %: the interval is then the whole range, with the coverage it has.

A ratio of two cases (a speed-up) is the ratio of their lower quartiles of rounds: the
ceil(n/4)-th fastest of n rounds (the inverted-CDF quantile, an order statistic: a round that
was timed, not a blend of two). What disturbs a window on a shared machine (a neighbour on the
host, another process on one of the two cores) only ever adds time, so the fast rounds are
the least disturbed; but the very fastest is also the luckiest (on this project's Intel host,
a window when the core's other hyperthread happened to be idle), and the luck of one round
does not come back in a second study. The lower quartile keeps to the fast rounds without
resting on one: over eight quick studies on that host it moved by more than 10 % between two
studies three times less often than the fastest round, and less often than the median
(README.md, *How sure a ratio is*). Its interval is the percentile interval of the ratio over
2000 bootstrap resamples of the rounds (the rounds drawn with replacement, each draw taking
both cases' windows of that round), drawn with a fixed seed, so that the same rounds always
give the same interval. It is as wide as the fast rounds of the two cases disagree.
"""

import functools
import math
import statistics
from dataclasses import asdict, dataclass, fields

CONFIDENCE = 0.95
RATIO_METHOD = "lower quartiles"  # results.json's speedup.method for a ``ratio`` (schema 6)
QUANTILE = 0.25  # the rounds' lower quartile, what a ratio compares
RESAMPLES = 2000  # bootstrap resamples of the rounds behind a ratio's interval


@dataclass(frozen=True)
class Interval:
    value: float  # the estimate: a median, or a ratio of lower quartiles
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


def lower_quartile(values):
    """The ceil(n/4)-th fastest of n values: the lower quartile, as a value that occurred."""
    ordered = sorted(values)
    return ordered[_quartile_rank(len(ordered))]


def _quartile_rank(n):  # 0-based
    return math.ceil(n * QUANTILE) - 1


@functools.lru_cache(maxsize=64)
def _resamples(n):
    """RESAMPLES rows of n round numbers drawn with replacement, the same for every ratio of n
    rounds (a fixed seed: a study's intervals do not change when its results are read again)."""
    import numpy  # here, not at the top: ``import quantlab`` stays light
    return numpy.random.default_rng(0).integers(0, n, size=(RESAMPLES, n))


def ratio(numerator_seconds, denominator_seconds, confidence=CONFIDENCE):
    """numerator / denominator of the two cases' lower quartiles of rounds, with its bootstrap
    interval; a speed-up of a case against a reference is ``ratio(reference, case)``. Both
    must come from one group's rounds (quantlab.rounds), where every case runs from the first
    round until it leaves: only the rounds they shared (the first ones of both) are compared,
    and resampled together, round by round. The interval's ends are ratios of resamples: the
    smallest with at least 2.5 % of them at or below it, and the smallest with 97.5 %."""
    import numpy
    shared = min(len(numerator_seconds), len(denominator_seconds))
    if not shared:
        raise ValueError("a case without rounds has no ratio")
    top = numpy.asarray(numerator_seconds[:shared], dtype=float)
    bottom = numpy.asarray(denominator_seconds[:shared], dtype=float)
    k, draws = _quartile_rank(shared), _resamples(shared)
    resampled = (numpy.partition(top[draws], k, axis=1)[:, k]
                 / numpy.partition(bottom[draws], k, axis=1)[:, k])
    tail = (1 - confidence) / 2
    low, high = numpy.quantile(resampled, [tail, 1 - tail], method="inverted_cdf")
    return Interval(float(lower_quartile(top) / lower_quartile(bottom)), float(low), float(high),
                    shared, confidence)


def pace(seconds_by_case):
    """Each round's pace of the machine as all cases of a group saw it together: the geometric
    mean over the cases of that round's seconds over the case's median (0.8: every case, on
    the whole, 20 % faster than usual). Over the rounds all of them ran. A ratio of two cases
    of one round cancels a pace they both felt alike, but not the rest: cases do not all gain
    alike from a faster machine (on the Intel host, in rounds 20 % faster on the whole, int8 on
    OpenVINO took 45 % less time and LiteRT float32 15 %: likely the core's other hyperthread
    falling idle, which compute-bound kernels gain most from), so the pace says when a ratio
    may not repeat."""
    rows = [list(seconds) for seconds in seconds_by_case if seconds]
    medians = [statistics.median(seconds) for seconds in rows]
    shared = min(map(len, rows), default=0)
    return [math.exp(statistics.fmean(math.log(seconds[r] / median)
                                      for seconds, median in zip(rows, medians)))
            for r in range(shared)]


def tied(seconds_a, seconds_b, confidence=CONFIDENCE):
    """Whether two cases timed in the same rounds cannot be told apart: the interval of the
    ratio of their lower quartiles holds 1."""
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
