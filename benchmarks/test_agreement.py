"""Does an answer survive a second run? Two quick studies in a row on this machine (same
cache, so the same weights and files), and every pick and ratio of the second checked
against the first.

    pytest benchmarks/test_agreement.py -s

For every net, batch size and thread count the second run's pick must be the first run's
pick or one of its named ties, and every speed-up of the second run must lie within the
first run's 95 % interval or within 10 % of its value. The disagreements are printed, and
beside them how the check would have gone had the speed-ups been made from other statistics
of the same rounds (fastest round, lower quartile (the study's own), median, median of
per-round ratios, each with a seeded paired bootstrap interval): which one holds best may
differ between hosts (README.md, *How sure a ratio is*). Last, how many rounds of each study
ran while the whole machine was more than 10 % faster than usual: where one study had such
rounds and the other not, disagreements are the machine's, not the statistic's. Both studies
stay in pytest's temporary folder.
"""

import json
import os
import subprocess
import sys

import numpy as np

from quantlab import lookups, tables

TOLERANCE = 0.10


def _study(out):
    done = subprocess.run([sys.executable, "-m", "quantlab.cli", "run", "--quick", "--counters",
                           "off", "--out", str(out)], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


def _key(case):
    return (case["net"], case["batch_size"], case.get("threads") or 1, case["variant"], case["runtime"])


def disagreements(first, second):
    """Lines naming every pick and ratio of ``second`` that ``first`` does not back."""
    said = []
    for net in first["nets"]:
        for batch in lookups.batch_sizes(first, net):
            for threads in lookups.thread_counts(first):
                _, _, ties = lookups.pick(first, net, batch, threads)
                best, _, _ = lookups.pick(second, net, batch, threads)
                if best and ties and _key(best) not in {_key(c) for c in ties}:
                    named = ", ".join(tables.variant_label(c) for c in ties)
                    said.append(f"{net} b{batch} t{threads}: pick {tables.variant_label(best)}, "
                                f"first run: {named}")
    before = {_key(c): c for c in lookups.timed(first)}
    for case in lookups.timed(second):
        earlier = before.get(_key(case))
        if not earlier or not earlier.get("speedup") or not case.get("speedup"):
            continue
        interval, now = earlier["speedup"], case["speedup"]["value"]
        if not (interval["low"] <= now <= interval["high"]
                or abs(now / interval["value"] - 1) <= TOLERANCE):
            said.append(f"{'/'.join(map(str, _key(case)))}: {now:.2f}x, first run "
                        f"{interval['value']:.2f}x ({interval['low']:.2f}-{interval['high']:.2f})")
    return said


def _quartile(seconds):  # as quantlab.intervals.lower_quartile: the ceil(n/4)-th fastest
    return np.quantile(seconds, 0.25, axis=-1, method="inverted_cdf")


# Each a speed-up from the reference's and the case's rounds (the rounds they shared; one
# bootstrap resample per row).
STATISTICS = {
    "fastest round": lambda ref, case: ref.min(-1) / case.min(-1),
    "lower quartile": lambda ref, case: _quartile(ref) / _quartile(case),
    "median": lambda ref, case: np.median(ref, -1) / np.median(case, -1),
    "median of per-round ratios": lambda ref, case: np.median(ref / case, -1),
}
RESAMPLES = 2000


def misses_by_statistic(first, second):
    """{statistic: (speed-ups of ``second`` more than TOLERANCE from ``first``'s, of those also
    outside ``first``'s 95 % interval, speed-ups compared)} had the speed-ups been made from
    that statistic of the same rounds; the interval from RESAMPLES seeded paired bootstrap
    resamples of the first run's rounds (the check's own rule, for any statistic)."""
    rng = np.random.default_rng(0)
    before, after = _rounds_of(first), _rounds_of(second)
    common = sorted(before.keys() & after.keys())
    found = {}
    for name, speedup in STATISTICS.items():
        moved = missed = 0
        for key in common:
            ref, case = before[key]
            now = speedup(*after[key])
            if abs(now / speedup(ref, case) - 1) > TOLERANCE:
                moved += 1
                rows = rng.integers(0, len(ref), size=(RESAMPLES, len(ref)))
                low, high = np.quantile(speedup(ref[rows], case[rows]), [0.025, 0.975])
                missed += not low <= now <= high
        found[name] = (moved, missed, len(common))
    return found


def _rounds_of(results):
    """{case key: (its reference's rounds, its rounds)}, the rounds they shared."""
    found = {}
    for case in lookups.timed(results):
        reference = lookups.reference_case(results, case)
        rounds = lookups.round_seconds(case)
        if reference is None or reference is case or not rounds:
            continue
        shared = min(len(rounds), len(lookups.round_seconds(reference)))
        found[_key(case)] = (np.array(lookups.round_seconds(reference)[:shared]),
                             np.array(rounds[:shared]))
    return found


def test_two_quick_studies_in_a_row_agree(tmp_path):
    first = _study(tmp_path / "first")
    second = _study(tmp_path / "second")
    ratios = sum(1 for c in lookups.timed(second) if c.get("speedup"))
    said = disagreements(first, second)
    print(f"\n{len(said)} disagreement(s) in {ratios} ratios and the picks:")
    for line in said:
        print(f"  {line}")
    print("had the speed-ups been made from another statistic of the same rounds:")
    for name, (moved, missed, compared) in misses_by_statistic(first, second).items():
        print(f"  {name}: {moved} of {compared} moved by more than 10 %, {missed} of them "
              f"outside the first run's interval too")
    print("rounds in which the whole machine ran faster than usual (a pace the other study "
          "may not have had):")
    for name, results in (("first", first), ("second", second)):
        fast, rounds = lookups.faster_rounds(results)
        most = f", up to {100 * (1 - fast[0][0]):.0f} %" if fast else ""
        print(f"  {name} study: {len(fast)} of {rounds} rounds more than "
              f"{100 * lookups.PACE_NOTED:g} % faster{most}")
    assert not said
