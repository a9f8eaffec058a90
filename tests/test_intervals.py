"""Intervals of per-round ratios, interleaved rounds under a patched timer, and the ties the
report names: each checked against values worked out by hand, not with the code's formulas."""

import random
import statistics

import pytest

from quantlab import intervals, latency_suite, lookups, report, rounds
from quantlab.report import sentences


def test_the_interval_of_ten_rounds_is_the_second_and_ninth_value():
    # Sorted: 0.90 0.95 1.00 1.02 1.03 1.05 1.06 1.10 1.20 1.50. For n = 10, P(B <= 1) =
    # 11/1024 = 1.07 % <= 2.5 % and P(B <= 2) = 56/1024 = 5.5 % > 2.5 %, so k = 2: the
    # interval is [x_(2), x_(9)] = [0.95, 1.20], with coverage 1 - 2 x 11/1024 = 97.85 %.
    values = [1.05, 0.90, 1.20, 1.00, 1.50, 1.03, 0.95, 1.10, 1.02, 1.06]
    interval = intervals.median_interval(values)
    assert (interval.low, interval.high) == (0.95, 1.20)
    assert interval.value == pytest.approx(1.04)  # (1.03 + 1.05) / 2
    assert interval.confidence == pytest.approx(1 - 22 / 1024)
    assert interval.rounds == 10


@pytest.mark.parametrize("n, k", [(5, 1), (6, 1), (8, 1), (9, 2), (12, 3), (20, 6)])
def test_ranks_from_the_binomial_table(n, k):
    # From a binomial(n, 1/2) table: the largest k with P(B <= k - 1) <= 0.025.
    assert intervals.rank(n) == k


def test_five_rounds_cannot_reach_95_percent_and_say_so():
    interval = intervals.median_interval([3, 1, 2, 5, 4])
    assert (interval.low, interval.value, interval.high) == (1, 3, 5)
    assert interval.confidence == pytest.approx(1 - 2 / 32)  # 93.75 %


@pytest.mark.parametrize("n, rank", [(1, 1), (4, 1), (5, 2), (8, 2), (9, 3), (12, 3), (13, 4),
                                     (52, 13)])
def test_the_lower_quartile_is_the_ceil_of_a_quarter_of_n_th_fastest(n, rank):
    values = [float(v) for v in range(n, 0, -1)]  # n down to 1: the r-th fastest is r
    assert intervals.lower_quartile(values) == rank


def test_a_ratio_compares_lower_quartiles_with_a_bootstrap_interval():
    # Eight rounds: the reference 8 s in each, the candidate 1 s in one and 2 s in the other
    # seven. The lower quartile of 8 is the 2nd fastest: 8 / 2 = 4. A resample of 8 draws has
    # 1 s as its 2nd fastest when it draws round 1 at least twice: 1 - (7/8)^8 - 8 (1/8)
    # (7/8)^7 = 1 - 0.3436 - 0.3927 = 26.4 % of resamples say 8, the others 4: 4 holds the
    # bottom 2.5 %, 8 the top: the interval is [4, 8].
    interval = intervals.ratio([8.0] * 8, [1.0] + [2.0] * 7)
    assert (interval.low, interval.value, interval.high) == (4.0, 4.0, 8.0)
    assert interval.rounds == 8


def test_disturbances_only_add_time_so_the_lower_quartiles_hold_the_ratio():
    # A neighbour took the candidate's core in half of the rounds (2x as long then): the
    # median of per-round ratios would say 3x; the lower quartiles (the 3rd fastest of 10)
    # still say 4x. A resample has fewer than 3 of the 5 fast rounds with P(B <= 2) for
    # B ~ binomial(10, 1/2), 56/1024 = 5.5 % > 2.5 %: its ratio, 2, is the interval's low end.
    reference = [0.010] * 10
    candidate = [0.0025, 0.005, 0.0025, 0.005, 0.005, 0.0025, 0.0025, 0.005, 0.005, 0.0025]
    assert statistics.median(r / c for r, c in zip(reference, candidate)) == pytest.approx(3.0)
    interval = intervals.ratio(reference, candidate)
    assert (interval.low, interval.value, interval.high) == pytest.approx((2.0, 4.0, 4.0))
    # Three disturbed rounds of ten: fewer than 3 of the 7 fast ones in a resample has
    # P(B <= 2), B ~ binomial(10, 7/10), = 0.16 % < 2.5 %: no doubt left.
    calmer = [0.0025] * 7 + [0.005] * 3
    interval = intervals.ratio(reference, calmer)
    assert (interval.low, interval.value, interval.high) == pytest.approx((4.0, 4.0, 4.0))


def test_a_ratio_compares_only_the_rounds_both_cases_ran():
    # A case that left the rounds after four (its interval narrow) is compared with the
    # reference's first four rounds: the ones they shared, not the reference's faster fifth
    # (the lower quartile of four rounds is the fastest).
    reference = [2.0, 2.2, 4.0, 4.0, 1.0]
    shared = intervals.ratio(reference, [1.0, 1.1, 2.0, 4.0])
    assert shared.value == pytest.approx(2.0) and shared.rounds == 4
    with pytest.raises(ValueError):
        intervals.ratio(reference, [])


def _noisy(base, noise, n, seed):
    rng = random.Random(seed)
    return [base * (1 + rng.uniform(-noise, noise)) for _ in range(n)]


def test_a_five_percent_shift_is_real_in_quiet_noise_and_a_tie_in_loud_noise():
    n = 12
    quiet_a, quiet_b = _noisy(1.0, 0.01, n, 1), _noisy(1.05, 0.01, n, 2)
    loud_a, loud_b = _noisy(1.0, 0.20, n, 3), _noisy(1.05, 0.20, n, 4)
    assert not intervals.tied(quiet_b, quiet_a)  # 5 % slower, told apart
    assert intervals.ratio(quiet_b, quiet_a).low > 1.03
    assert intervals.tied(loud_b, loud_a)  # the same 5 % inside +-20 %: a tie


class PatchedTimer:
    """A clock that only calls move: each call costs its case's duration times the machine's
    load of the moment, which changes every ``period`` calls."""

    def __init__(self, loads=(1.0,), period=1):
        self.now, self.loads, self.period, self.calls = 0.0, list(loads), period, []

    def __call__(self):
        return self.now

    def case(self, name, seconds):
        def call():
            load = self.loads[(len(self.calls) // self.period) % len(self.loads)]
            self.calls.append(name)
            self.now += seconds * load
        return call


def test_rounds_pair_the_cases_so_that_machine_load_cancels_out():
    # float32: 10 ms, a window of its own, 1 timed call + 1 untimed; int8: 1 ms, 10 + 2: 14
    # calls a round. The load changes from round to round (up to 3x), never inside one.
    assert rounds.calls_per_window(0.01) == 1 and rounds.calls_per_window(0.001) == 10
    timer = PatchedTimer(loads=[1.0, 3.0, 1.5, 1.0, 2.0, 1.2], period=14)
    cases = [rounds.Timed("float32", timer.case("float32", 0.01), 0.01),
             rounds.Timed("int8", timer.case("int8", 0.001), 0.001)]
    seconds, summary = rounds.run(cases, "float32", budget_seconds=60, clock=timer)
    assert summary["stopped"] == "converged" and summary["rounds"] == rounds.MIN_ROUNDS == 9
    assert sorted(seconds["int8"]) == pytest.approx(
        [0.001 * load for load in (1, 1, 1, 1.2, 1.5, 1.5, 2, 3, 3)])
    speedup = intervals.ratio(seconds["float32"], seconds["int8"])
    assert (speedup.low, speedup.value, speedup.high) == pytest.approx((10.0, 10.0, 10.0))


def test_windows_hold_enough_calls_and_the_order_changes_between_rounds():
    timer = PatchedTimer(loads=[1.0])
    names = ["a", "b", "c", "d"]
    cases = [rounds.Timed(n, timer.case(n, 0.001), 0.001) for n in names]
    rounds.run(cases, "a", budget_seconds=60, clock=timer)
    calls = rounds.calls_per_window(0.001)  # 10 ms of 1 ms calls
    assert calls == 10
    per_window = calls + calls // 4  # timed calls and the untimed ones before them
    orders = [tuple(timer.calls[i] for i in range(start, start + 4 * per_window, per_window))
              for start in range(0, len(timer.calls), 4 * per_window)]
    assert all(sorted(order) == names for order in orders)  # each case once per round
    assert len(set(orders)) > 1  # shuffled


def test_a_group_goes_on_with_its_models_loaded_anew_halfway_through_its_minimum_rounds():
    # The first load of float32 runs at 12 ms, the second at 10 ms (its weights placed
    # better); int8 at 1 ms either way. Each group is loaded anew once, before its round
    # RENEW_AT, with all its cases, and the rounds go on with the second load.
    timer = PatchedTimer()
    renewed = []

    def cases(group):
        return [rounds.Timed((group, "float32"), timer.case("float32", 0.012), 0.01),
                rounds.Timed((group, "int8"), timer.case("int8", 0.001), 0.001)]

    def renew(group, keys):
        renewed.append((group, sorted(keys)))
        return {key: timer.case(key[1], 0.010 if key[1] == "float32" else 0.001) for key in keys}

    said = []
    timed = rounds.run_groups({"a": cases("a"), "b": cases("b")},
                              lambda key: (key[0], "float32"), budget_seconds=60, clock=timer,
                              renew=renew, said=said.append)
    assert rounds.RENEW_AT == 4
    assert said.count("loading the models of 2 group(s) again for their rounds 5 and on") == 1
    assert sorted(renewed) == [(g, [(g, "float32"), (g, "int8")]) for g in "ab"]  # once each
    for group in "ab":
        seconds, summary = timed[group]
        rounds_run = summary["rounds"]
        assert rounds_run >= 9
        assert seconds[(group, "float32")] == pytest.approx([0.012] * 4 +
                                                             [0.010] * (rounds_run - 4))
        speedup = intervals.ratio(seconds[(group, "float32")], seconds[(group, "int8")])
        assert speedup.value == pytest.approx(10.0)


def test_rounds_stop_at_the_budget_when_the_noise_will_not_settle():
    rng = random.Random(0)
    now = [0.0]

    def clock():
        return now[0]

    def case(seconds):
        def call():
            now[0] += seconds * rng.uniform(0.5, 1.5)  # each call on its own: unpaired noise
        return call

    cases = [rounds.Timed("a", case(0.001), 0.001), rounds.Timed("b", case(0.001), 0.001)]
    seconds, summary = rounds.run(cases, "a", budget_seconds=0.5, clock=clock, target=0.001)
    assert summary["stopped"] == "budget" and summary["widest"] > 0.001
    assert summary["rounds"] >= rounds.MIN_ROUNDS


def test_a_case_record_takes_its_median_over_rounds_and_its_speedup_interval():
    info = {"batch_size": 16, "median": 0.5, "macs_per_image": 1000,
            "peak_macs_per_second": 1e9}
    reference = [0.030] * 6
    mine = [0.010, 0.017, 0.016, 0.011, 0.012, 0.016]
    latency_suite.apply_rounds(info, mine, {"rounds": 6, "stopped": "converged"}, reference)
    assert info["window_median"] == 0.5
    assert info["median"] == pytest.approx(0.014)  # (0.012 + 0.016) / 2
    assert info["per_image"] == pytest.approx(0.014 / 16)
    assert info["macs_per_second"] == pytest.approx(1000 * 16 / 0.014)
    assert info["fastest"] == 0.010
    assert info["lower_quartile"] == 0.011  # the 2nd fastest of six
    # 0.030 / 0.011 = 2.73. The 2nd fastest of a resample of six is at most x_(i) when it
    # draws x_(1..i) at least twice: 1 - (1 - i/6)^6 - 6 (i/6) (1 - i/6)^5 = 0.263, 0.649,
    # 0.891, 0.982, 0.9993 for 0.010, 0.011, 0.012, 0.016, 0.016 (then 1 for 0.017). Below
    # the ratio 0.030 / 0.016 = 1.875 lies only 1.76 (0.07 % of resamples, under 2.5 %), and
    # 3.0 (0.030 / 0.010, 26 %) is the top: [1.875, 3.0].
    assert info["speedup"]["value"] == pytest.approx(0.030 / 0.011)
    assert (info["speedup"]["low"], info["speedup"]["high"]) == pytest.approx((1.875, 3.0))
    assert info["speedup"]["method"] == "lower quartiles"


# --- the report's ties ------------------------------------------------------------------------

def _results(cases, deltas=None):
    nets = {"medium": {"artifacts": {"float32": {"bytes": 4_000_000}, "int8": {"bytes": 1_000_000},
                                     "qat_int8": {"bytes": 1_010_000}}}}
    accuracy = [{"net": c["net"], "variant": c["variant"], "runtime": c["runtime"],
                 "delta_points": (deltas or {}).get(c["variant"], 0.0)} for c in cases]
    return {"nets": nets, "config": {"batch_sizes": [16]}, "accuracy": accuracy, "cases": cases}


def _case(variant, runtime, seconds):
    return {"net": "medium", "variant": variant, "runtime": runtime, "batch_size": 16,
            "median": sorted(seconds)[len(seconds) // 2],
            "interleaved": {"seconds": seconds, "rounds": len(seconds), "stopped": "converged",
                       "widest": 0.01, "target": 0.05}}


REFERENCE = [0.0100, 0.0101, 0.0099, 0.0100, 0.0102, 0.0098, 0.0100, 0.0101]
# Two options about 4x faster than the reference whose rounds cannot tell them apart: A's
# lower quartile (the 2nd fastest of 8) is 1 % faster than B's, B's fastest round 1 % faster
# than A's.
TIED_A = [0.00250, 0.00262, 0.00241, 0.00255, 0.00238, 0.00260, 0.00249, 0.00252]
TIED_B = [0.00246, 0.00255, 0.00259, 0.00236, 0.00251, 0.00244, 0.00247, 0.00262]


def test_what_to_ship_names_ties_and_prefers_the_lighter_runtime():
    # int8 on OpenVINO is 1 % faster than on LiteRT in the median but the rounds cannot tell
    # them apart; qat_int8 on LiteRT is 20 % slower: not a tie.
    litert, openvino = TIED_B, TIED_A
    qat = [s * 1.2 for s in litert]
    cases = [_case("float32", "litert", REFERENCE), _case("int8", "litert", litert),
             _case("int8", "openvino", openvino), _case("qat_int8", "litert", qat)]
    (line,) = report.recommendations(_results(cases))
    assert line.startswith("medium, batch 16: int8 on litert: 4.")
    assert "tie (not told apart within the 95 % interval): int8 on openvino" in line
    assert "qat_int8" not in line
    assert "chosen for less to deploy: no compile step and the smallest runtime" in line


def test_what_to_ship_without_a_tie_names_the_fastest_with_its_interval():
    fast = [s / 4 for s in REFERENCE]
    slow = [s / 2 for s in REFERENCE]
    cases = [_case("float32", "litert", REFERENCE), _case("int8", "openvino", fast),
             _case("int8", "litert", slow)]
    (line,) = report.recommendations(_results(cases))
    # Every round's ratio is exactly 4: median 4.0 and interval 4.0-4.0.
    assert line == ("medium, batch 16: int8 on openvino: 4.0x (4.0-4.0) faster than float32 on "
                    "litert, +0.00 points")


def test_a_tie_outside_the_accuracy_budget_is_no_option():
    litert = [s / 4 for s in REFERENCE]
    cases = [_case("float32", "litert", REFERENCE), _case("int8", "litert", litert),
             _case("qat_int8", "litert", list(litert))]
    (line,) = report.recommendations(_results(cases, {"int8": -1.5}))
    assert line.startswith("medium, batch 16: qat_int8 on litert") and "tie" not in line


def test_between_ties_on_one_runtime_the_smaller_file_is_chosen_and_said():
    int8, qat = TIED_B, TIED_A
    cases = [_case("float32", "litert", REFERENCE), _case("int8", "litert", int8),
             _case("qat_int8", "litert", qat)]
    (line,) = report.recommendations(_results(cases))
    # qat_int8 has the faster lower quartile, but the two are tied: int8's file is 10 kB smaller.
    assert line.startswith("medium, batch 16: int8 on litert:")
    assert line.endswith("tie (not told apart within the 95 % interval): qat_int8 on litert; "
                         "chosen for less to deploy: the smaller file")


def test_a_tie_only_noise_makes_is_named_but_not_shipped_for_being_lighter():
    # Two of int8 on OpenVINO's rounds are 20 % faster than its others, and so its lower
    # quartile (the 2nd fastest of 8) is 17 % faster than LiteRT's; a resample draws those two
    # rounds fewer than twice with P(B <= 1), B ~ binomial(8, 1/4), = 37 %, and in those LiteRT
    # is the faster, so the interval holds 1. A tie to name, not the option to ship: LiteRT's
    # lower quartile is more than 10 % slower.
    openvino = [0.00250, 0.00252, 0.00200, 0.00251, 0.00200, 0.00248, 0.00250, 0.00252]
    litert = [0.00240, 0.00241, 0.00242, 0.00240, 0.00243, 0.00241, 0.00242, 0.00240]
    cases = [_case("float32", "litert", REFERENCE), _case("int8", "litert", litert),
             _case("int8", "openvino", openvino)]
    (line,) = report.recommendations(_results(cases))
    assert line.startswith("medium, batch 16: int8 on openvino: 5.0x")  # 0.0099 / 0.0020
    assert line.endswith("tie (not told apart within the 95 % interval): int8 on litert")


def test_an_option_that_stayed_in_the_rounds_longer_is_judged_on_the_rounds_the_others_ran():
    # int8 on LiteRT left after nine rounds (known well: 2.50-2.52 ms); int8 on OpenVINO, noisy,
    # ran thirty, and after the ninth the machine grew quieter: 2.40 ms from then on. Over
    # the nine rounds both ran, LiteRT's lower quartile (the 3rd fastest, 2.50) beats
    # OpenVINO's (2.65): LiteRT is the fastest, 4.0x. Over all its thirty OpenVINO's would be
    # 2.40 (the 8th fastest): a win the quieter machine made, which LiteRT never saw.
    litert = [0.00250, 0.00251, 0.00252, 0.00250, 0.00251, 0.00250, 0.00252, 0.00251, 0.00250]
    openvino = [0.00260, 0.00300, 0.00280, 0.00265, 0.00290, 0.00270, 0.00275, 0.00262, 0.00285]
    openvino += [0.00240] * 21
    cases = [_case("float32", "litert", [0.0100] * 30), _case("int8", "litert", litert),
             _case("int8", "openvino", openvino)]
    for case in cases:
        case["interleaved"]["group"] = "medium-b16"
    (line,) = report.recommendations(_results(cases))
    assert line.startswith("medium, batch 16: int8 on litert: 4.0x (4.0-4.0)")
    assert "tie" not in line


def test_options_of_one_group_that_left_the_rounds_at_different_times_can_still_tie():
    # int8 on OpenVINO left the rounds after six (its interval narrow), int8 on LiteRT ran all
    # eight: their first six rounds, shared, cannot tell them apart. The same times from
    # another group (another batch size) are never paired.
    litert, openvino = TIED_A, TIED_B[:6]
    cases = [_case("float32", "litert", REFERENCE), _case("int8", "litert", litert),
             _case("int8", "openvino", openvino)]
    for case in cases:
        case["interleaved"]["group"] = "medium-b16"
    (line,) = report.recommendations(_results(cases))
    assert "tie (not told apart within the 95 % interval): int8 on openvino" in line
    cases[2]["interleaved"]["group"] = "medium-b1"
    (line,) = report.recommendations(_results(cases))
    assert "tie" not in line


def test_the_pace_of_a_round_is_every_cases_time_against_its_median_together():
    # a's median is 1.0 and b's 2.0: in round 4 both take 0.8 of it (0.8); in round 5, a
    # 1.0 and b 1.1 of it: sqrt(1.0 x 1.1) = 1.0488. c left after four rounds: the pace is
    # over the rounds all ran.
    a = [1.0, 1.0, 1.0, 0.8, 1.0]
    b = [2.0, 2.0, 2.0, 1.6, 2.2]
    assert intervals.pace([a, b]) == pytest.approx([1.0, 1.0, 1.0, 0.8, 1.1 ** 0.5])
    assert len(intervals.pace([a, b, [3.0, 3.0, 3.0, 3.0]])) == 4


def test_the_report_says_when_the_whole_machine_ran_faster_in_some_rounds():
    steady = [_case("float32", "litert", REFERENCE), _case("int8", "litert", TIED_A)]
    assert "whole machine" not in sentences.rounds_line(_results(steady))
    # Round 2: both cases 20 % faster than in their other rounds; round 6: 12 %; their
    # medians stay 10 ms and 2.5 ms, so the paces are 0.80 and 0.88.
    faster = [[0.010] * 8, [0.0025] * 8]
    for seconds in faster:
        seconds[1] *= 0.8
        seconds[5] *= 0.88
    results = _results([_case("float32", "litert", faster[0]), _case("int8", "litert", faster[1])])
    line = sentences.rounds_line(results)
    assert ("In 2 of 8 rounds the whole machine ran faster: every case of the round together at "
            "least 10 % faster than its median (up to 20 %, medium at batch 16, round 2;") in line
    assert "a speed-up measured at another pace may not repeat" in line
    fast, rounds = lookups.faster_rounds(results)
    assert [pace for pace, _, _ in fast] == pytest.approx([0.8, 0.88]) and rounds == 8


@pytest.mark.parametrize("method, words", [
    ("lower quartiles", "the ratio of the two cases' lower quartiles of rounds (the "
                        "ceil(n/4)-th fastest of the n rounds they shared)"),
    ("fastest rounds", "the ratio of the two cases' fastest rounds"),  # schema 5
    ("median of per-round ratios", "the median of per-round ratios"),  # 2-4, as upgraded
])
def test_the_report_says_how_the_speedups_it_reads_were_made(method, words):
    cases = [_case("float32", "litert", REFERENCE), _case("int8", "litert", TIED_A)]
    cases[1]["speedup"] = {"value": 4.0, "low": 3.9, "high": 4.1, "rounds": 8,
                           "confidence": 0.95, "method": method}
    assert lookups.speedup_method(_results(cases)) == words


@pytest.mark.parametrize("low, median, high, said", [
    (2.74, 3.0, 3.35, "2.74-3.35x faster"),
    (0.5, 0.625, 0.8, "1.25-2.00x slower"),  # 1 / 0.8 and 1 / 0.5
])
def test_an_interval_is_said_in_the_words_of_its_median(low, median, high, said):
    assert report.slower_or_faster(intervals.Interval(median, low, high, 9, 0.96)) == said


def test_the_stopping_rule_watches_each_case_against_its_own_reference():
    # Two thread counts. Each option is exactly 2x faster than the reference at its own count,
    # but the second count's pair is slowed by a load that changes from round to round (both
    # of it alike) and never lifts, the first's not: against its own reference every ratio
    # is exact, against the first count's reference the second pair's fastest rounds wander.
    calls = []
    loads = [1.5, 1.1, 2.0, 1.3, 1.7]
    per_round = 3 + 6 + 3 + 6  # 2 + 1 calls of a 4 ms case, 5 + 1 of a 2 ms one, twice
    now = [0.0]

    def case(name, seconds, loaded):
        def call():
            load = loads[(len(calls) // per_round) % len(loads)] if loaded else 1.0
            calls.append(name)
            now[0] += seconds * load
        return call

    cases = [rounds.Timed("ref1", case("ref1", 0.004, False), 0.004),
             rounds.Timed("int8-1", case("int8-1", 0.002, False), 0.002),
             rounds.Timed("ref2", case("ref2", 0.004, True), 0.004),
             rounds.Timed("int8-2", case("int8-2", 0.002, True), 0.002)]
    own = {"ref1": "ref1", "int8-1": "ref1", "ref2": "ref2", "int8-2": "ref2"}
    _, each_own = rounds.run(cases, own.get, budget_seconds=60, clock=lambda: now[0])
    assert each_own["stopped"] == "converged" and each_own["rounds"] == rounds.MIN_ROUNDS
    calls.clear()
    _, against_one = rounds.run(cases, "ref1", budget_seconds=0.5, clock=lambda: now[0])
    assert against_one["stopped"] == "budget" and against_one["widest"] > 0.05


@pytest.mark.parametrize("median, low, high, text", [
    (3.14, 2.94, 3.36, "3.1x (2.9-3.4)"),
    (0.25, 0.244, 0.262, "0.25x (0.24-0.26)"),  # one decimal would say 0.2x, a fifth off
    (0.96, 0.9, 1.02, "0.96x (0.90-1.02)"),
])
def test_a_ratio_below_one_keeps_its_second_significant_digit(median, low, high, text):
    assert intervals.times_text(intervals.Interval(median, low, high, 10, 0.979)) == text


def test_groups_taken_in_turn_outlast_a_burst_that_would_fill_one_group_timed_alone():
    # Three groups, each a reference of 4 ms and an option of 2 ms: 2.0x. A neighbour's burst
    # slows the option 1.5x for the first 0.3 s. Timed one group after the other, the first
    # group's nine rounds (30 ms each) all fall inside the burst and it reads 1.33x, with a
    # narrow interval; taken in turn, the burst holds three or four rounds of each group,
    # and the rounds without it give the ratio.
    now = [0.0]

    def case(seconds, bursts):
        def call():
            now[0] += seconds * (1.5 if bursts and now[0] < 0.3 else 1.0)
        return call

    def groups():
        return {name: [rounds.Timed("ref", case(0.004, False), 0.004),
                       rounds.Timed("int8", case(0.002, True), 0.002)] for name in "abc"}

    def speedup(seconds):
        return intervals.ratio(seconds["ref"], seconds["int8"]).value

    in_turn = rounds.run_groups(groups(), "ref", budget_seconds=60, clock=lambda: now[0])
    assert {name: speedup(seconds) for name, (seconds, _) in in_turn.items()} == pytest.approx(
        {"a": 2.0, "b": 2.0, "c": 2.0})
    assert all(how["stopped"] == "converged" for _, how in in_turn.values())
    now[0] = 0.0
    alone = {name: rounds.run(cases, "ref", budget_seconds=60, clock=lambda: now[0])
             for name, cases in groups().items()}
    assert speedup(alone["a"][0]) == pytest.approx(2.0 / 1.5)
    assert alone["a"][1]["stopped"] == "converged"  # and nothing in it shows the burst


def test_a_case_known_within_the_target_leaves_the_rounds_and_the_time_goes_to_the_wide_one():
    rng = random.Random(1)
    now = [0.0]

    def case(seconds, noise):
        def call():
            now[0] += seconds * (1 + rng.uniform(-noise, noise))
        return call

    cases = [rounds.Timed("ref", case(0.004, 0.0), 0.004),
             rounds.Timed("steady", case(0.002, 0.0), 0.002),
             rounds.Timed("noisy", case(0.002, 0.5), 0.002)]
    seconds, how = rounds.run(cases, "ref", budget_seconds=1.0, clock=lambda: now[0],
                              target=0.01)
    assert how["stopped"] == "budget" and how["rounds"] > rounds.MIN_ROUNDS
    assert len(seconds["steady"]) == rounds.MIN_ROUNDS  # exact at once: it left
    assert len(seconds["noisy"]) == len(seconds["ref"]) == how["rounds"]  # its reference stayed
    assert intervals.ratio(seconds["ref"], seconds["steady"]).value == pytest.approx(2.0)
