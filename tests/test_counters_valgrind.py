"""valgrind backend: real callgrind runs on tiny float32 and int8 models, and its parsers."""

import argparse
import json
import subprocess

import numpy as np
import pytest

from conftest import one_line_error, quantlab
from quantlab import counters
from quantlab.counters import valgrind
from quantlab.counters import geometry
from quantlab.counters.geometry import parse_cache_geometry, valgrind_options
from quantlab.counters.protocol import dump_name
from quantlab.errors import QuantlabError

slow = pytest.mark.slow  # runs valgrind on a model


@pytest.fixture(scope="module")
def models(tiny_models):
    return tiny_models


@pytest.fixture(scope="module")
def counted(models):
    """Each (variant, batch size) counted once under valgrind, on demand."""
    done = {}

    def get(variant, batch_size, **options):
        key = (variant, batch_size, tuple(sorted(options.items())))
        if key not in done:
            done[key] = counters.measure(models[variant], batch_size, backend="valgrind", **options)
        return done[key]

    return get


CASES = [("float32", 1), ("float32", 16), ("int8", 1), ("int8", 16)]


# --- real counting -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def together(models):
    """The int8 model counted at batch 1 and 16 by one worker, with 2 and with 4 runs measured."""
    return {iterations: counters.measure_many(models["int8"], [1, 16, 1], backend="valgrind",
                                              iterations=iterations)
            for iterations in (2, 4)}


@slow
def test_two_runs_of_the_same_case_count_the_same_instructions_and_nearly_the_same_misses(models, counted):
    again, first = counters.measure(models["int8"], 1, backend="valgrind"), counted("int8", 1)
    assert again["per_inference"]["instructions"] == first["per_inference"]["instructions"]
    assert again["warmup"] == first["warmup"] == valgrind.WARMUP  # fast runs: all planned
    assert again["top_kernels"] == first["top_kernels"]
    # Cache contents depend on where things land in memory (the worker's scratch folder has
    # a random name, for one), so a miss or two may move between runs; never more.
    for event, value in first["per_inference"].items():
        if value is not None:
            assert again["per_inference"][event] == pytest.approx(value, rel=0.02, abs=2), event


@slow
@pytest.mark.parametrize("batch_size", [1, 16])
def test_per_inference_counts_do_not_depend_on_how_many_runs_are_measured(together, batch_size):
    two, four = together[2][batch_size], together[4][batch_size]
    assert (two["iterations"], four["iterations"]) == (2, 4)
    per_two, per_four = two["per_inference"], four["per_inference"]
    # A window bug shifts these by a quarter or more (dropping the short window's subtraction:
    # +50 % with 2 runs, +25 % with 4; one run too few in the long window: -50 %, -25 %).
    for event in ("instructions", "l1d_loads"):
        assert per_four[event] == pytest.approx(per_two[event], rel=0.01), event
    # The tiny model's ~100 misses per inference are mostly Python's own data, which moves
    # by a dozen lines from window to window: only the order of magnitude is stable.
    for event in ("l1d_load_misses", "cache_references"):
        assert per_four[event] == pytest.approx(per_two[event], rel=0.25, abs=16), event


@slow
@pytest.mark.parametrize("batch_size", [1, 16])
def test_counting_several_batch_sizes_in_one_worker_counts_what_one_worker_each_counts(
        together, counted, batch_size):
    assert list(together[2]) == [1, 16]  # in the order given, each once
    shared, alone = together[2][batch_size], counted("int8", batch_size)
    assert shared["batch_size"] == batch_size
    # A worker that counts one batch size meets Python's one-off work on the code around the
    # runs (quickening, specializing: a few thousand instructions and dozens of misses, of
    # this tiny model's ~200 per inference) inside its windows; in the shared worker it is
    # over by the second batch size. Real nets run millions of instructions.
    assert shared["per_inference"]["instructions"] == pytest.approx(
        alone["per_inference"]["instructions"], abs=6000)
    assert shared["per_inference"]["l1d_loads"] == pytest.approx(
        alone["per_inference"]["l1d_loads"], abs=2000)
    assert [k["function"] for k in shared["top_kernels"][:3]] == [
        k["function"] for k in alone["top_kernels"][:3]]


# The tiny models by hand: conv 3x3x1 -> 4 filters over 8x8 ("same"), then 8*8*4 -> 10.
TINY_MACS = 8 * 8 * 3 * 3 * 1 * 4 + 8 * 8 * 4 * 10


@slow
@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_instructions_per_inference_stay_within_sane_bounds_of_the_multiply_accumulates(counted, variant):
    one = counted(variant, 1)["per_inference"]["instructions"]
    sixteen = counted(variant, 16)["per_inference"]["instructions"]
    # What 15 more images cost, free of the fixed cost of a call. No AVX2 instruction does
    # more than 32 multiply-accumulates (vpmaddubsw: 32 int8 pairs), and even scalar code,
    # a load and a multiply-add per MAC plus the loop, stays below 4 instructions per MAC.
    per_mac = (sixteen - one) / (15 * TINY_MACS)
    assert 1 / 32 < per_mac < 4
    # The fixed cost of one call (set the input, invoke, get the output) is real but bounded:
    # tens of thousands of instructions, not the millions of an import.
    assert 0 < one - per_mac * TINY_MACS < 200_000


@slow
@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_a_batch_of_16_costs_more_instructions_per_inference_than_a_batch_of_1(counted, variant):
    one = counted(variant, 1)["per_inference"]["instructions"]
    sixteen = counted(variant, 16)["per_inference"]["instructions"]
    assert sixteen > 2 * one


@slow
@pytest.mark.parametrize("batch_size", [1, 16])
def test_int8_and_float32_models_execute_different_kernels_and_counts(counted, batch_size):
    f32, int8 = counted("float32", batch_size), counted("int8", batch_size)
    assert f32["per_inference"]["instructions"] != int8["per_inference"]["instructions"]
    assert any("xnn_f32" in k["function"] for k in f32["top_kernels"])
    assert any("xnn_qs8" in k["function"] for k in int8["top_kernels"])


@slow
@pytest.mark.parametrize("variant, batch_size", CASES)
def test_miss_rates_are_fractions_and_counts_are_not_negative(counted, variant, batch_size):
    result = counted(variant, batch_size)
    for name, rate in result["rates"].items():
        assert rate is None or 0.0 <= rate <= 1.0, name
    for name, value in result["per_inference"].items():
        if name in ("cycles", "ipc"):
            assert value is None  # callgrind has no timing model
        else:
            assert value >= 0, name
    per = result["per_inference"]
    assert per["l1d_load_misses"] <= per["l1d_loads"] <= per["instructions"]


@slow
@pytest.mark.parametrize("variant, batch_size", CASES)
def test_the_costliest_functions_are_named_with_shares_summing_to_at_most_one(counted, variant, batch_size):
    top = counted(variant, batch_size)["top_kernels"]
    assert 1 <= len(top) <= 5
    assert sum(k["share"] for k in top) <= 1.0
    assert all(k["instructions"] > 0 and k["function"] for k in top)
    assert [k["instructions"] for k in top] == sorted((k["instructions"] for k in top), reverse=True)


@slow
def test_a_simulated_result_warns_about_avx2_kernels_and_names_the_simulated_caches(counted):
    result = counted("int8", 16)
    assert result["backend"] == "valgrind"
    assert result["events"] == list(valgrind.EVENTS)
    assert result["batch_size"] == 16 and result["iterations"] == valgrind.ITERATIONS
    assert result["scaling"] is None
    assert any("AVX-512" in c and "AVX2" in c for c in result["caveats"])
    simulated = result["cache_geometry"]
    assert simulated["name"] == "host"
    assert set(simulated) >= {"I1", "D1", "LL", "spec"}
    assert any(c.startswith("simulated caches (host geometry): I1 ") and "LL " in c
               for c in result["caveats"])
    # The host's caches as the kernel reports them (rounded where valgrind must), never
    # what CPUID claims.
    levels, _ = geometry.host_levels()
    assert {level: tuple(simulated[level].values()) for level in levels} == levels
    assert result["seconds"] > 0
    json.dumps(result)


@slow
def test_the_i7_6500u_geometry_is_simulated_when_asked_for(counted):
    result = counted("int8", 16, cache="i7-6500u")
    geometry = result["cache_geometry"]
    assert geometry["name"] == "i7-6500u"
    assert geometry["LL"] == {"size": 4194304, "assoc": 16, "line": 64}
    assert geometry["D1"] == {"size": 32768, "assoc": 8, "line": 64}
    assert geometry["spec"] == "I1=32768,8,64:D1=32768,8,64:LL=4194304,16,64"
    assert any("i7-6500u" in c for c in result["caveats"])
    # The cache geometry changes misses, never the instructions executed.
    host = counted("int8", 16)
    assert result["per_inference"]["instructions"] == host["per_inference"]["instructions"]


@slow
def test_an_explicit_geometry_spec_is_simulated_as_custom(counted):
    result = counted("float32", 1, cache="D1=16K,4,64:LL=1M,8,64")
    assert result["cache_geometry"]["name"] == "custom"
    assert result["cache_geometry"]["D1"] == {"size": 16384, "assoc": 4, "line": 64}
    assert result["cache_geometry"]["LL"] == {"size": 1048576, "assoc": 8, "line": 64}


@slow
def test_the_result_formats_as_a_short_text_block(counted):
    text = counters.format_result(counted("int8", 1))
    assert "instructions" in text and "L1d" in text and "AVX-512" in text
    assert len(text.splitlines()) < 20


@slow
def test_a_large_batch_counted_without_a_short_window_gives_the_same_counts_for_one_and_two_runs(models):
    large = valgrind.LARGE_BATCH
    one, two = (counters.measure(models["float32"], large, backend="valgrind", iterations=k)
                for k in (1, 2))
    assert (one["short_runs"], two["short_runs"]) == (0, 0)
    # What the empty short window leaves in (the control requests) is divided by the number
    # of runs: were it more than a rounding error, one run would count visibly more than two.
    for event in ("instructions", "l1d_loads"):
        assert one["per_inference"][event] == pytest.approx(two["per_inference"][event], rel=0.01)


def test_a_large_batch_after_a_smaller_one_gets_one_measured_run_and_no_warm_up():
    large, warm = valgrind.LARGE_BATCH, valgrind.WARMUP
    assert warm >= 8  # Python quickens a function on its 8th call: before the first window
    # (uncounted warm-up runs, measured runs, runs in the short window that is subtracted)
    assert valgrind.plan([1, 16, large]) == [(warm, 2, 1), (warm, 2, 1), (0, 1, 0)]
    # First in its worker, a large batch still runs once uncounted (weights, graph, Python).
    assert valgrind.plan([large, 1]) == [(1, 1, 0), (warm, 2, 1)]
    assert valgrind.plan([1, large], iterations=3) == [(warm, 3, 1), (0, 3, 0)]


def test_warm_up_runs_every_planned_run_unless_they_are_slow_and_then_stops_after_two(monkeypatch):
    from quantlab.counters import worker

    calls, seconds_per_run = [], [0.0]

    def timed_loop(run, prepared, count):  # each run takes what the test says, on any machine
        for _ in range(count):
            run(prepared)
        return count * seconds_per_run[0]

    monkeypatch.setattr(worker, "_loop", timed_loop)

    def warm_up(runs, each, budget):
        seconds_per_run[0] = each
        return worker.warm_up(calls.append, "x", runs, budget_seconds=budget)

    assert warm_up(10, 0.001, 0.2) == (10, pytest.approx(0.01)) and calls == ["x"] * 10
    # runs of 0.08 s: two take 0.16 s, under the budget, the third brings it over
    assert warm_up(10, 0.08, 0.2) == (3, pytest.approx(0.24))
    # however slow, two runs at least (Python's quickening still lands mostly before the
    # windows), and never more than planned
    assert warm_up(10, 0.15, 0.05) == (2, pytest.approx(0.3))
    assert [warm_up(n, 0.15, 0.05)[0] for n in (0, 1)] == [0, 1]


# --- errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, says", [
    ("I1=32768,8", "three numbers"),
    ("L2=32768,8,64", "unknown level"),
    ("LL=3000000,12,64", "power of two"),
    ("D1=32768,8,8", "line size"),
    ("D1=32768,8,64:D1=32768,8,64", "twice"),
    ("D1=32k,eight,64", "whole numbers"),
    ("pentium", "unknown cache geometry"),
])
def test_a_malformed_geometry_spec_is_refused_in_one_line(models, spec, says):
    with pytest.raises(QuantlabError, match=says) as caught:
        counters.measure(models["int8"], 1, backend="valgrind", cache=spec)
    assert "\n" not in str(caught.value)


def test_geometry_specs_are_canonical_and_become_valgrind_options():
    assert parse_cache_geometry("I7-6500U") == "i7-6500u"
    assert parse_cache_geometry("host") == "host"
    assert parse_cache_geometry("ll=4M,16,64:i1=32K,8,64") == "I1=32768,8,64:LL=4194304,16,64"
    assert valgrind_options("i7-6500u") == ["--I1=32768,8,64", "--D1=32768,8,64", "--LL=4194304,16,64"]


def test_a_bad_geometry_on_the_command_line_is_reported_by_argparse_with_its_reason(capsys):
    parser = argparse.ArgumentParser(prog="quantlab")
    parser.add_argument("--cache", type=parse_cache_geometry)
    with pytest.raises(SystemExit):
        parser.parse_args(["--cache", "LL=3000000,12,64"])
    assert "power of two" in capsys.readouterr().err


def test_every_geometry_we_accept_is_accepted_by_valgrind_itself(tmp_path):
    spec = parse_cache_geometry("I1=16K,4,64:D1=48K,12,64:LL=6M,12,64")
    done = subprocess.run(["valgrind", "--tool=callgrind", "--cache-sim=yes",
                           f"--callgrind-out-file={tmp_path / 'out'}", *valgrind_options(spec), "true"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    profile = valgrind.parse_profile((tmp_path / "out").read_text())
    assert profile.caches == {"I1": (16384, 4, 64), "D1": (49152, 12, 64), "LL": (6291456, 12, 64)}


def _sysfs(folder, caches):
    """A sysfs cache folder as the kernel writes it: index0, index1, ... with one file a field."""
    for index, (level, kind, size, ways, line) in enumerate(caches):
        entry = folder / f"index{index}"
        entry.mkdir(parents=True)
        for name, value in (("level", level), ("type", kind), ("size", size),
                            ("ways_of_associativity", ways), ("coherency_line_size", line)):
            (entry / name).write_text(f"{value}\n")
    return folder


# Read off real machines of this kind: the AMD Zen 4 guest (whose CPUID claims a 320 MB
# direct-mapped L3), and an Intel Sapphire Rapids guest (105 MiB 15-way L3: 114 688 sets).
ZEN4 = [(1, "Data", "32K", 8, 64), (1, "Instruction", "32K", 8, 64), (2, "Unified", "1024K", 8, 64),
        (3, "Unified", "32768K", 16, 64)]
SAPPHIRE_RAPIDS = [(1, "Data", "48K", 12, 64), (1, "Instruction", "32K", 8, 64),
                   (2, "Unified", "2048K", 16, 64), (3, "Unified", "107520K", 15, 64)]


def test_the_host_geometry_comes_from_sysfs_not_from_cpuid(tmp_path):
    folder = _sysfs(tmp_path / "cache", ZEN4)
    assert geometry.host_caches(folder) == {"I1": (32768, 8, 64), "D1": (32768, 8, 64),
                                            "LL": (33554432, 16, 64)}
    assert valgrind_options("host", folder) == ["--I1=32768,8,64", "--D1=32768,8,64",
                                                "--LL=33554432,16,64"]
    assert geometry.host_levels(folder)[1] == []  # nothing needed rounding


def test_a_host_cache_valgrind_cannot_simulate_is_rounded_down_and_said(tmp_path):
    folder = _sysfs(tmp_path / "cache", SAPPHIRE_RAPIDS)
    levels, notes = geometry.host_levels(folder)
    # 105 MiB / (15 x 64 B) = 114 688 sets: the largest power of two below is 65 536.
    assert levels["LL"] == (65536 * 15 * 64, 15, 64)
    assert levels["D1"] == (49152, 12, 64)  # 64 sets: as it is
    assert len(notes) == 1 and "LL 105 MiB 15-way" in notes[0] and "60 MiB 15-way" in notes[0]
    # Whatever we round to, valgrind simulates as given (no adjustment of its own).
    for level, (size, assoc, line) in levels.items():
        geometry.check_level(level, size, assoc, line)


def test_a_cache_of_2_gib_or_more_is_refused_as_valgrind_would_overflow():
    with pytest.raises(geometry.CacheGeometryError, match="valgrind takes sizes below 2 GiB"):
        geometry.check_level("LL", 1 << 31, 1, 64)
    geometry.check_level("LL", 1 << 30, 1, 64)


def test_valgrind_that_cannot_start_says_why(tiny_models, tmp_path):
    """With TMPDIR where no file can be made, valgrind's last line says only that it gave up."""
    result = quantlab("counters", str(tiny_models["float32"]), "--backend", "valgrind",
                      env={"TMPDIR": "/proc"})
    one_line_error(result, "Can't create client cmdline file in /proc", "Giving up")


def test_fully_associative_and_missing_sysfs_caches(tmp_path):
    folder = _sysfs(tmp_path / "cache", [(1, "Data", "32K", 0, 64)])
    assert geometry.host_caches(folder) == {"D1": (32768, 512, 64)}  # one set of 512 lines
    levels, notes = geometry.host_levels(tmp_path / "absent")
    assert levels == {} and "CPUID" in notes[0]
    assert valgrind_options("host", tmp_path / "absent") == []


@pytest.mark.parametrize("desc, expected", [
    ("desc: LL cache: 268435456 B, 64 B, direct-mapped", (268435456, 1, 64)),
    ("desc: LL cache: 65536 B, 64 B, fully associative", (65536, 1024, 64)),
    ("desc: LL cache: 65536 B, 64 B, 1024-way associative", (65536, 1024, 64)),
    ("desc: D1 cache: 32768 B, 64 B, 8-way associative", (32768, 8, 64)),
])
def test_every_way_valgrind_describes_a_cache_is_parsed(desc, expected):
    """The first line is what valgrind wrote on the Zen 4 guest when it read CPUID itself."""
    level = desc.split()[1]
    profile = valgrind.parse_profile(f"{desc}\nevents: Ir\nsummary: 1\n")
    assert profile.caches == {level: expected}


def test_the_rounded_host_geometry_is_accepted_by_valgrind_itself(tmp_path):
    levels, _ = geometry.host_levels(_sysfs(tmp_path / "cache", SAPPHIRE_RAPIDS))
    spec = geometry.spec_text(levels)
    done = subprocess.run(["valgrind", "--tool=callgrind", "--cache-sim=yes",
                           f"--callgrind-out-file={tmp_path / 'out'}", *valgrind_options(spec), "true"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # Simulated exactly as given. (valgrind still warns about what it read from CPUID on a
    # host such as the Zen 4 guest, before our options replace it: that warning is no caveat.)
    assert valgrind.parse_profile((tmp_path / "out").read_text()).caches == levels


@pytest.mark.parametrize("batch_sizes, says", [
    ([], "at least one"),
    ([1, 0], "at least 1, got 0"),
    ([16, 2.5], "whole number"),
])
def test_bad_batch_sizes_are_refused_in_one_line_before_valgrind_starts(models, batch_sizes, says):
    with pytest.raises(QuantlabError, match=says) as caught:
        counters.measure_many(models["int8"], batch_sizes, backend="valgrind")
    assert "\n" not in str(caught.value)


def test_a_missing_artifact_is_refused_in_one_line(tmp_path):
    with pytest.raises(QuantlabError, match="no model file at") as caught:
        counters.measure(tmp_path / "absent.tflite", 1, backend="valgrind")
    assert "\n" not in str(caught.value)


@slow
def test_a_corrupt_artifact_comes_back_from_the_worker_as_a_one_line_error(tmp_path):
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"\0\0\0\0TFL3" + np.random.default_rng(0).bytes(200))
    with pytest.raises(QuantlabError, match="truncated or corrupt") as caught:
        counters.measure(corrupt, 1, backend="valgrind")
    assert "\n" not in str(caught.value) and "==" not in str(caught.value)


@slow
def test_a_file_that_is_no_model_comes_back_as_a_one_line_error(tmp_path):
    junk = tmp_path / "notes.tflite"
    junk.write_text("these are not weights")
    with pytest.raises(QuantlabError, match="not a TFLite model") as caught:
        counters.measure(junk, 1, backend="valgrind")
    assert "\n" not in str(caught.value)


def test_the_worker_in_valgrind_mode_but_not_under_valgrind_says_so_in_one_line(tmp_path):
    # Its requests to callgrind are an instruction sequence that a real CPU runs as a no-op:
    # unanswered, they would count nothing and no dump would be written.
    from quantlab.counters import _process
    from quantlab.counters.protocol import ERROR_MARK, ERROR_STATUS

    argv = _process.worker_argv(tmp_path / "model.tflite", batch_size=1, iterations=2, mode="valgrind")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode == ERROR_STATUS
    [line] = out.stderr.strip().splitlines()
    assert line.startswith(ERROR_MARK) and "did not answer" in line and "valgrind --tool=callgrind" in line


# --- callgrind's file format ------------------------------------------------------------------

COMPRESSED = """\
# callgrind format
version: 1
positions: line
events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
desc: Trigger: dump quantlab-long
desc: I1 cache: 32768 B, 64 B, 8-way associative
desc: D1 cache: 49152 B, 64 B, 12-way associative
desc: LL cache: 318767104 B, 64 B, 38-way associative
summary: 1000 300 100 5 20 3 1 2 1

ob=(1) /lib/libmodel.so
fl=(1) kernels.c
fn=(1) xnn_gemm
10 600 200 50 2 15 2 1 2 1
+2 100 50 20
cfn=(2) helper
calls=3 20
12 250 40 20 1 3
fn=(2)
20 250 40 20 1 3 1 0 0 0
fn=(3) _PyEval_EvalFrameDefault'2
5 30 8 8 1
fn=(3)
*  20 2 2 0 2 0 0 0 0
totals: 1000 300 100 5 20 3 1 2 1
"""


def test_a_dump_is_known_by_the_name_in_its_trigger_line_and_no_other():
    assert valgrind.trigger_name(COMPRESSED) == "quantlab-long"
    named = COMPRESSED.replace("dump quantlab-long", f"dump {dump_name('short', 16)}")
    assert valgrind.trigger_name(named) == "quantlab-short-batch-16"
    assert dump_name("short", 16) != dump_name("short", 1)
    assert valgrind.trigger_name(COMPRESSED.replace("desc: Trigger: dump quantlab-long\n", "")) is None


def test_the_parser_reads_compressed_names_and_keeps_call_costs_out_of_self_cost():
    profile = valgrind.parse_profile(COMPRESSED)
    assert profile.trigger == "dump quantlab-long"
    assert profile.totals["Ir"] == 1000 and profile.totals["DLmr"] == 2
    ir = {name: cost[0] for name, cost in profile.functions.items()}
    # xnn_gemm's own lines only: the inclusive line after calls= belongs to helper.
    assert ir == {"xnn_gemm": 700, "helper": 250, "_PyEval_EvalFrameDefault": 50}
    assert profile.functions["xnn_gemm"][:3] == [700, 250, 70]
    assert profile.caches["LL"] == (318767104, 38, 64)


def test_self_costs_of_a_real_callgrind_dump_add_up_to_its_totals(tmp_path):
    subprocess.run(["valgrind", "--tool=callgrind", "--cache-sim=yes",
                    f"--callgrind-out-file={tmp_path / 'out'}", "true"],
                   capture_output=True, check=True)
    profile = valgrind.parse_profile((tmp_path / "out").read_text())
    for i, event in enumerate(profile.events):
        assert sum(cost[i] for cost in profile.functions.values()) == profile.totals[event], event


def test_callgrind_events_map_to_last_level_references_and_misses_as_perf_counts_them():
    per = dict(zip(valgrind.EVENTS, [1000, 300, 100, 5, 20, 3, 1, 2, 1]))
    counts = valgrind.to_counts(per)
    assert counts["instructions"] == 1000
    assert counts["cache_references"] == 5 + 20 + 3
    assert counts["cache_misses"] == 1 + 2 + 1
    assert (counts["l1d_loads"], counts["l1d_load_misses"]) == (300, 20)
    assert (counts["llc_loads"], counts["llc_load_misses"]) == (20, 2)
