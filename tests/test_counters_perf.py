"""perf backend: parsers on real recordings, the backend choice, and a real counting window."""

import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from quantlab import counters
from quantlab.counters import perf
from quantlab.counters.result import rates
from quantlab.errors import QuantlabError

DATA = Path(__file__).parent / "data" / "perf"


def recorded(name):
    return (DATA / name).read_text()


# --- the P17 recordings (human-readable, European numbers, multiplexed) ---------------------

@pytest.fixture(scope="module")
def p17_opt():
    return perf.parse(recorded("cache_medium_opt.txt"))


def test_p17_float_run_parses_to_the_exact_recorded_counts(p17_opt):
    values = p17_opt.values
    assert values["cache-references"] == 76076451357
    assert values["cache-misses"] == 34405508776
    assert values["cycles"] == 1360358894787
    assert values["instructions"] == 1784121078886
    assert values["L1-dcache-loads"] == 499004606740
    assert values["L1-dcache-load-misses"] == 49984453600
    assert values["LLC-loads"] == 12575519010
    assert values["LLC-load-misses"] == 2416100709
    assert values["faults"] == 13494076  # "13.494.076": dots group thousands here
    assert values["migrations"] == 268433  # "268.433" too, although it looks like a decimal
    assert p17_opt.elapsed == pytest.approx(369.084664546)


def test_p17_rates_and_ipc_match_what_perf_printed_beside_them(p17_opt):
    counts = perf.to_counts(p17_opt)
    assert counts["ipc"] == pytest.approx(1.31, abs=0.005)
    found = rates(counts)
    assert found["total_miss_rate"] == pytest.approx(0.45225, abs=5e-6)
    assert found["l1d_miss_rate"] == pytest.approx(0.1002, abs=5e-5)
    assert found["llc_miss_rate"] == pytest.approx(0.1921, abs=5e-5)


def test_p17_multiplexing_is_read_as_the_fraction_of_time_each_event_was_counted(p17_opt):
    assert p17_opt.fractions["cache-references"] == pytest.approx(0.2495)
    assert p17_opt.fractions["LLC-stores"] == pytest.approx(0.1663)
    assert p17_opt.fractions["faults"] == 1.0  # no percentage: counted all the time
    assert any("multiplexed" in note for note in perf.caveats(p17_opt))


def test_p17_not_supported_events_are_listed_and_have_no_value(p17_opt):
    assert p17_opt.unsupported == ["L1-dcache-store-misses", "L1-dcache-prefetches",
                                   "L1-dcache-prefetch-misses"]
    assert p17_opt.values["L1-dcache-prefetches"] is None
    assert p17_opt.not_counted == []


def test_p17_quantized_run_parses_too():
    stat = perf.parse(recorded("cache_medium_quant.txt"))
    counts = perf.to_counts(stat)
    assert stat.values["instructions"] == 8668164308907
    assert stat.values["cycles"] == 5524936628940
    assert counts["ipc"] == pytest.approx(1.57, abs=0.005)
    assert rates(counts)["total_miss_rate"] == pytest.approx(0.12952, abs=5e-6)
    assert rates(counts)["llc_miss_rate"] == pytest.approx(0.0383, abs=5e-5)


# --- recordings from this VM (perf 6.1) --------------------------------------------------------

def test_hardware_events_on_a_vm_without_counters_are_all_not_supported():
    stat = perf.parse(recorded("hardware_events_kvm.json"))
    assert sorted(stat.unsupported) == sorted(perf.HARDWARE_EVENTS)
    assert all(value is None for value in perf.to_counts(stat).values())


def test_perf_stat_json_software_events_give_values_units_and_full_counting_time():
    stat = perf.parse(recorded("software_events_kvm.json"))
    assert stat.values == {"task-clock": 103.956247, "context-switches": 139, "page-faults": 9383}
    assert stat.units["task-clock"] == "msec"
    assert set(stat.fractions.values()) == {1.0}
    assert stat.unsupported == [] and perf.caveats(stat) == []


def test_human_readable_output_of_this_perf_uses_a_decimal_point():
    stat = perf.parse(recorded("human_kvm.txt"))
    assert stat.values["task-clock"] == pytest.approx(46.39)
    assert stat.values["page-faults"] == 1302
    assert stat.unsupported == ["instructions", "cycles"]
    assert stat.elapsed == pytest.approx(0.089206729)


def test_json_lines_with_multiplexed_and_not_counted_events_are_understood():
    text = ('# started on x\n\n'
            '{"counter-value" : "1234567.000000", "unit" : "", "event" : "instructions:u", '
            '"event-runtime" : 1000, "pcnt-running" : 62.50, "metric-value" : 1.20, '
            '"metric-unit" : "insn per cycle"}\n'
            '{"counter-value" : "<not counted>", "unit" : "", "event" : "cycles:u", '
            '"event-runtime" : 0, "pcnt-running" : 0.00}\n'
            'Events enabled\n{"broken json\n')
    stat = perf.parse(text)
    assert stat.values["instructions"] == 1234567
    assert stat.fractions["instructions"] == pytest.approx(0.625)
    assert stat.not_counted == ["cycles"]
    assert any("not counted" in note for note in perf.caveats(stat))


def test_event_names_lose_their_pmu_and_modifiers():
    assert perf.canonical_event("cpu_core/instructions/u") == "instructions"
    assert perf.canonical_event("LLC-loads:u") == "LLC-loads"


# --- refusals and the choice of backend ---------------------------------------------------------

@pytest.mark.parametrize("stderr", [
    "Error:\nAccess to performance monitoring and observability operations is limited.\n"
    "Consider adjusting /proc/sys/kernel/perf_event_paranoid setting to open\n",
    "Error:\nNo permission to enable cycles event.\n",
    "failed to open counters: Permission denied\n",
])
def test_perf_permission_refusals_are_recognized(stderr):
    assert perf.permission_refusal(stderr)


def test_a_plain_perf_error_is_not_taken_for_a_permission_refusal():
    assert not perf.permission_refusal("event syntax error: 'foo'\n")


@pytest.mark.parametrize("status", ["missing", "permission", "unsupported", "not-counted", "failed"])
def test_every_refusal_is_one_line_that_says_what_to_do(status):
    message = perf.refusal_message(status, "2")
    assert "\n" not in message
    assert "valgrind" in message or "install" in message


def test_auto_picks_perf_exactly_when_the_probe_finds_working_hardware_counters():
    status, _ = perf.hardware_status()
    expected = "perf" if status == "ok" else "valgrind"
    assert counters.resolve_backend("auto") == expected
    assert perf.hardware_status() is perf.hardware_status()  # probed once, then cached


def test_asking_for_perf_is_granted_exactly_where_it_can_count_and_else_refused_in_one_line():
    status, detail = perf.hardware_status()
    if status == "ok":  # a machine with hardware counters: perf is granted as asked
        assert counters.resolve_backend("perf") == "perf"
        return
    with pytest.raises(QuantlabError) as caught:
        counters.resolve_backend("perf")
    assert str(caught.value) == perf.refusal_message(status, detail)
    assert "\n" not in str(caught.value)


def test_an_unknown_backend_is_refused_with_the_choices():
    with pytest.raises(QuantlabError, match="choose one of auto, perf, valgrind, off"):
        counters.resolve_backend("papi")


def test_backend_off_measures_nothing_and_returns_none():
    assert counters.measure("/no/such/model.tflite", 1, backend="off") is None


def test_importing_the_counters_package_imports_neither_tensorflow_nor_litert():
    code = ("import sys, quantlab.counters, quantlab.counters.worker; "
            "print([m for m in sys.modules if m.startswith(('tensorflow', 'ai_edge_litert'))])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- a real perf window around real inferences (software events: no hardware counters here) ----

@pytest.fixture(scope="module")
def float_model(tiny_models):
    return tiny_models["float32"]


SOFTWARE = ("task-clock", "page-faults", "context-switches")


def _children_cpu_ms():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return 1000 * (usage.ru_utime + usage.ru_stime)


def test_perf_counts_only_inside_the_window_the_worker_opens(float_model):
    before = _children_cpu_ms()
    empty = perf.count(float_model, 1, iterations=0, warmup=0, events=SOFTWARE)
    spent = _children_cpu_ms() - before
    # ~0.2 s of inference: far above what the empty window holds even when another process
    # shares the core and the control round trip waits (a few ms).
    busy = perf.count(float_model, 16, iterations=20000, warmup=5, events=SOFTWARE)
    # Loading Python, numpy and LiteRT is nearly all of the CPU time the worker takes, and
    # none of it is counted: the empty window holds only the control round trip.
    assert empty["totals"]["task-clock"] < 0.05 * spent
    assert busy["totals"]["task-clock"] > 10 * max(empty["totals"]["task-clock"], 0.1)
    assert busy["units"]["task-clock"] == "msec"
    assert busy["scaling"]["task-clock"] == 1.0
    assert busy["worker"]["windows"] == {"16": {"window": 20000}}
    assert busy["per_inference"]["instructions"] is None  # no hardware events asked for
    json.dumps(busy)


def test_a_corrupt_model_under_perf_comes_back_as_a_one_line_error(tmp_path):
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"\0\0\0\0TFL3" + np.random.default_rng(0).bytes(200))
    with pytest.raises(QuantlabError) as caught:
        perf.count(corrupt, 1, iterations=1, warmup=0, events=SOFTWARE)
    assert "corrupt" in str(caught.value) and "\n" not in str(caught.value)
