"""How sure a ratio is: medians of per-round measurements with a 95 % confidence interval,
and whether two options are told apart or tied.

Cases are timed in rounds (``quantlab.rounds``): in each round every case of a group runs one
short window, so a ratio of two cases is taken per round, from two numbers measured seconds
apart on the same machine, and whatever the machine did then (a neighbour, the clock) moves
both. The per-round ratios are summarized by their median and a distribution-free interval
for it: the order statistics x_(k) and x_(n+1-k) of the n sorted values, with k the largest
rank for which the binomial(n, 1/2) tail P(B <= k-1) stays within 2.5 % (the classical
interval for a median; it assumes nothing about the shape of the noise, which on a shared
machine is anything but normal, and needs no random resampling, so it can be checked by
hand: for 10 rounds it is [x_(2), x_(9)], with 97.9 % coverage). Fewer than 6 rounds cannot
reach 95 %: the interval is then the whole range, with the coverage it has.
"""

import math
import statistics
from dataclasses import dataclass

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    median: float
    low: float
    high: float
    rounds: int
    confidence: float  # the coverage the chosen order statistics really have

    def contains(self, value):
        return self.low <= value <= self.high

    @property
    def relative_halfwidth(self):
        """Half the width as a share of the median: 0.05 is about +-5 %."""
        return (self.high - self.low) / (2 * self.median) if self.median else math.inf

    def as_dict(self):
        return {"median": self.median, "low": self.low, "high": self.high,
                "rounds": self.rounds, "confidence": self.confidence}


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


def ratio(numerator_seconds, denominator_seconds, confidence=CONFIDENCE):
    """numerator / denominator per round (paired), with its interval; a speed-up of a case
    against a reference is ``ratio(reference, case)``. Both must come from one group's
    rounds (quantlab.rounds), where every case runs from the first round until it leaves:
    the rounds they share are the first ones of both."""
    shared = min(len(numerator_seconds), len(denominator_seconds))
    if not shared:
        raise ValueError("a case without rounds has no ratio")
    return median_interval([a / b for a, b in zip(numerator_seconds[:shared],
                                                  denominator_seconds[:shared])], confidence)


def tied(seconds_a, seconds_b, confidence=CONFIDENCE):
    """Whether two cases timed in the same rounds cannot be told apart: the interval of their
    per-round ratio holds 1."""
    return ratio(seconds_a, seconds_b, confidence).contains(1.0)


def times_digits(value, digits=1):
    """Decimals that keep a ratio's second significant digit below 1: a slow-down of 0.25x
    shown as 0.2x would be a fifth off."""
    return digits if value >= 1 else max(digits, 2)


def times_text(interval, digits=1):
    """``3.1x (2.9-3.3)``, ``0.25x (0.24-0.26)``: a speed-up with its interval."""
    fmt = f"{{:.{times_digits(interval.median, digits)}f}}"
    return (f"{fmt.format(interval.median)}x ({fmt.format(interval.low)}-"
            f"{fmt.format(interval.high)})")
