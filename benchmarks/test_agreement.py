"""Does an answer survive a second run? Two quick studies in a row on this machine (same
cache, so the same weights and files), and every pick and ratio of the second checked
against the first.

    pytest benchmarks/test_agreement.py -s

For every net, batch size and thread count the second run's pick must be the first run's
pick or one of its named ties, and every speed-up of the second run must lie within the
first run's 95 % interval or within 10 % of its value. The disagreements are printed, and
beside them how many speed-ups would have moved by more than 10 % between the two runs had
they been made from other statistics of the same rounds (fastest round, lower quartile,
median, median of per-round ratios): which one holds best differs between hosts (README.md,
*How sure a ratio is*). Both studies stay in pytest's temporary folder for a closer look.
"""

import json
import os
import statistics
import subprocess
import sys

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


def _lower_quartile(seconds):
    ordered = sorted(seconds)
    position = (len(ordered) - 1) / 4
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


# Each a speed-up from the reference's and the case's rounds, the rounds they shared.
STATISTICS = {
    "fastest round": lambda ref, case: min(ref) / min(case),
    "lower quartile": lambda ref, case: _lower_quartile(ref) / _lower_quartile(case),
    "median": lambda ref, case: statistics.median(ref) / statistics.median(case),
    "median of per-round ratios": lambda ref, case: statistics.median(
        r / c for r, c in zip(ref, case)),
}


def moves_by_statistic(first, second):
    """{statistic: (speed-ups that moved by more than TOLERANCE between the runs, compared)}."""
    def speedups(results):
        found = {}
        for case in lookups.timed(results):
            reference = lookups.reference_case(results, case)
            case_rounds = lookups.round_seconds(case)
            if reference is None or reference is case or not case_rounds:
                continue
            ref_rounds = lookups.round_seconds(reference)[:len(case_rounds)]
            found[_key(case)] = {name: speedup(ref_rounds, case_rounds[:len(ref_rounds)])
                                 for name, speedup in STATISTICS.items()}
        return found

    before, after = speedups(first), speedups(second)
    common = before.keys() & after.keys()
    return {name: (sum(abs(after[key][name] / before[key][name] - 1) > TOLERANCE
                       for key in common), len(common)) for name in STATISTICS}


def test_two_quick_studies_in_a_row_agree(tmp_path):
    first = _study(tmp_path / "first")
    second = _study(tmp_path / "second")
    ratios = sum(1 for c in lookups.timed(second) if c.get("speedup"))
    said = disagreements(first, second)
    print(f"\n{len(said)} disagreement(s) in {ratios} ratios and the picks:")
    for line in said:
        print(f"  {line}")
    print("speed-ups that moved by more than 10 %, by the statistic they are made from:")
    for name, (moved, compared) in moves_by_statistic(first, second).items():
        print(f"  {name}: {moved} of {compared}")
    assert not said
