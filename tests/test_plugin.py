"""The pytest plugin and the latency suite, driven end to end through pytester."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import QAT_NETS
from quantlab import defaults, latency_suite, machine, tables

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
USAGE_ERROR = 4
MISS_RATES = "quantlab: cache miss rates"
LATENCY = "quantlab: latency"
TINY = "from quantlab.latency_suite import test_latency  # noqa: F401\n"
# Written at the end of the inner run: whether anything imported the counters package.
RECORD_IMPORTS = """
import sys
from pathlib import Path

def pytest_sessionfinish(session):
    Path("counters-imported.txt").write_text(str("quantlab.counters" in sys.modules))
"""
REQUIRED = {"net", "variant", "runtime", "batch_size", "threads", "runtime_version", "kernels",
            "precision", "primitives", "cpu_model", "isa", "model_bytes", "model_sha256", "median",
            "per_image", "p50", "p90", "p99", "macs_per_image", "macs_per_second", "arithmetic",
            "peak_macs_per_second", "peak_fraction", "peak"}


@pytest.fixture(scope="module")
def manifest(quick_variants, tmp_path_factory):
    """The quick medium float32 and int8 models, as ``quantlab run`` hands them over."""
    medium = quick_variants["medium"]
    path = tmp_path_factory.mktemp("manifest") / "manifest.json"
    path.write_text(json.dumps({"dataset": "fashion_mnist", "artifacts": [
        {"net": "medium", "variant": v, "path": str(medium[v].path), "sha256": medium[v].sha256}
        for v in ("float32", "int8")]}))
    return path


# --- options ---------------------------------------------------------------------------------

@pytest.mark.parametrize("option, message", [
    ("--quantlab-nets=dense,resnet", "unknown net 'resnet': choose from dense,medium,conv"),
    ("--quantlab-variants=int4", "unknown variant 'int4': choose from float32_tf,float32,dynamic_int8"),
    ("--quantlab-runtimes=tvm", "unknown runtime 'tvm': choose from litert,openvino,onnxruntime,tensorflow"),
    ("--quantlab-batch-sizes=16,0", "'16,0': every value must be at least 1"),
    ("--quantlab-threads=two", "'two': give thread counts as whole numbers or 'all'"),
    ("--quantlab-kernels=mkl", "unknown kernel library 'mkl': choose one of xnnpack, builtin"),
    ("--quantlab-counters=papi", "choose one of auto, perf, valgrind, off"),
    ("--quantlab-cache=D1=1000,3,64", "valgrind needs a power of two"),
    ("--quantlab-training=long", "unknown training 'long': choose one of quick, full"),
    ("--quantlab-dataset=imagenet", "choose one of fashion_mnist, mnist, cifar10, digits"),
    ("--quantlab-artifacts=missing.json", "cannot read missing.json"),
])
def test_bad_option_values_are_usage_errors_that_name_the_valid_choices(pytester, option, message):
    pytester.makepyfile(test_tiny=TINY)
    result = pytester.runpytest_subprocess(option)
    assert result.ret == USAGE_ERROR
    result.stderr.fnmatch_lines([f"*argument {option.split('=')[0]}: *{message}*"])


def test_a_manifest_without_the_selected_net_is_a_usage_error(pytester, manifest):
    result = pytester.runpytest_subprocess(f"--quantlab-artifacts={manifest}", "--quantlab-nets=conv")
    assert result.ret == USAGE_ERROR
    result.stderr.fnmatch_lines(["*--quantlab-artifacts lists no net 'conv' (it has medium)*"])


def _with_batch_sizes(manifest, folder, sizes):
    """``manifest`` with ``batch_sizes`` set on each entry: {variant: its value}."""
    content = json.loads(manifest.read_text())
    for entry in content["artifacts"]:
        entry["batch_sizes"] = sizes[entry["variant"]]
    path = folder / "sized.json"
    path.write_text(json.dumps(content))
    return path


def test_a_manifest_entry_is_timed_at_its_own_batch_sizes_only(pytester, manifest):
    # How a study times nets of different batch sizes in one run (the quick study's modern
    # nets at batch 1 only).
    pytester.makepyfile(test_tiny=TINY)
    sized = _with_batch_sizes(manifest, pytester.path, {"float32": [1, 4], "int8": [4]})
    result = pytester.runpytest_subprocess(
        "--collect-only", "-q", f"--quantlab-artifacts={sized}", "--quantlab-runtimes=litert",
        "--quantlab-batch-sizes=1,4")
    ids = [line.split("[")[1].rstrip("]") for line in result.outlines if "::test_latency[" in line]
    assert sorted(ids) == ["medium-float32-litert-b1", "medium-float32-litert-b4",
                           "medium-int8-litert-b4"]


@pytest.mark.parametrize("sizes", [[], [0], ["1"], [True], 4, [1.5]])
def test_a_manifest_with_bad_batch_sizes_is_a_one_line_usage_error(pytester, manifest, sizes):
    pytester.makepyfile(test_tiny=TINY)
    sized = _with_batch_sizes(manifest, pytester.path, {"float32": sizes, "int8": [1]})
    result = pytester.runpytest_subprocess(f"--quantlab-artifacts={sized}")
    assert result.ret == USAGE_ERROR
    result.stderr.fnmatch_lines(["*argument --quantlab-artifacts: *sized.json: batch_sizes must be "
                                 "a list of whole numbers of at least 1, not *"])


def test_options_select_the_cases_named_net_variant_runtime_batch_in_the_order_given(pytester):
    pytester.makepyfile(test_tiny=TINY)
    result = pytester.runpytest_subprocess(
        "--collect-only", "-q", "--quantlab-nets=medium,dense", "--quantlab-variants=int8,float32",
        "--quantlab-runtimes=litert", "--quantlab-batch-sizes=1,16", "--quantlab-threads=1,2")
    ids = [line.split("[")[1].rstrip("]") for line in result.outlines if "::test_latency[" in line]
    assert ids[:4] == ["medium-int8-litert-b1", "medium-float32-litert-b1", "medium-int8-litert-b1-t2",
                       "medium-float32-litert-b1-t2"]
    assert len(ids) == 16 and ids[-1] == "dense-float32-litert-b16-t2"


def test_threads_all_means_every_core_this_process_may_use(pytester):
    pytester.makepyfile(test_tiny=TINY)
    result = pytester.runpytest_subprocess(
        "--collect-only", "-q", "--quantlab-nets=medium", "--quantlab-variants=int8",
        "--quantlab-runtimes=litert", "--quantlab-batch-sizes=1", "--quantlab-threads=1,all")
    ids = [line.split("[")[1].rstrip("]") for line in result.outlines if "::test_latency[" in line]
    cores = len(os.sched_getaffinity(0))
    assert ids == ["medium-int8-litert-b1"] + ([f"medium-int8-litert-b1-t{cores}"] if cores > 1 else [])


def test_the_plugin_imports_neither_numpy_nor_pytest_benchmark():
    code = ("import sys, quantlab.pytest_plugin; print(sorted(m for m in sys.modules if m.split('.')[0] "
            "in ('numpy', 'tensorflow', 'ai_edge_litert', 'pytest_benchmark')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- timing ----------------------------------------------------------------------------------

def test_a_timed_run_fills_extra_info_and_measures_no_counters_when_they_are_off(pytester, manifest):
    pytester.makepyfile(test_tiny=TINY)
    pytester.makeconftest(RECORD_IMPORTS)
    result = pytester.runpytest_subprocess(
        f"--quantlab-artifacts={manifest}", "--quantlab-batch-sizes=1,4",
        "--benchmark-json=out.json", "--benchmark-max-time=0.05", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=8)
    report = json.loads((pytester.path / "out.json").read_text())
    assert report["machine_info"]["quantlab"]["cpu"]["model"]
    flags = open("/proc/cpuinfo").read().split("\n\n")[0].split()
    for bench in report["benchmarks"]:
        info, stats = bench["extra_info"], bench["stats"]
        assert REQUIRED <= set(info)
        assert "counters" not in info
        assert bench["group"] == f"medium-b{info['batch_size']}-{info['runtime']}"
        assert info["runtime"] in bench["name"]
        assert bench["options"]["warmup"]
        assert info["p50"] <= info["p90"] <= info["p99"]
        assert info["median"] == stats["median"] and stats["min"] <= info["p50"] <= stats["max"]
        assert info["model_bytes"] == Path(info["model_path"]).stat().st_size
        assert info["threads"] == 1 and info["runtime"] in ("litert", "openvino")
        assert info["precision"] == info["arithmetic"] == ("int8" if info["variant"] == "int8" else "float32")
        assert info["isa"] == {flag: flag in flags for flag in info["isa"]} and "avx2" in info["isa"]
    # The table's ratio is the one of the medians in the JSON, whichever way it goes on this CPU.
    medians = {(b["extra_info"]["variant"], b["extra_info"]["runtime"], b["extra_info"]["batch_size"]):
               b["extra_info"]["median"] for b in report["benchmarks"]}
    base, int8 = medians[("float32", "litert", 4)], medians[("int8", "openvino", 4)]
    ratio = f"{base / int8:.1f}x faster" if int8 <= base else f"{int8 / base:.1f}x slower"
    result.stdout.fnmatch_lines([f"*{LATENCY}*", f"*| medium | 4 | int8 | openvino | int8 |*| {ratio}*"])
    assert MISS_RATES not in result.stdout.str()
    assert (pytester.path / "counters-imported.txt").read_text() == "False"


def test_openvino_cases_compiled_together_each_get_their_own_model_and_keep_their_own_error(
        pytester, manifest):
    """A round group's OpenVINO cases are compiled on every core before the first is timed:
    each case still runs its own file, and a file that fails to load fails its cases alone."""
    content = json.loads(manifest.read_text())
    good = {entry["variant"]: entry for entry in content["artifacts"]}
    content["artifacts"].append({**good["int8"], "variant": "dynamic_int8", "sha256": "0" * 64})
    (pytester.path / "mixed.json").write_text(json.dumps(content))
    pytester.makepyfile(test_tiny=TINY)
    result = pytester.runpytest_subprocess(
        "--quantlab-artifacts=mixed.json", "--quantlab-runtimes=openvino",
        "--quantlab-batch-sizes=1,4", "--quantlab-threads=1,2", "--benchmark-json=out.json",
        "--benchmark-max-time=0.01", "-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=8, skipped=4)
    result.stdout.fnmatch_lines(["SKIPPED [[]4[]] *changed since it was exported*"])
    report = json.loads((pytester.path / "out.json").read_text())
    timed = [bench["extra_info"] for bench in report["benchmarks"]]
    assert sorted((i["variant"], i["batch_size"], i["threads"]) for i in timed) == sorted(
        (v, b, t) for v in ("float32", "int8") for b in (1, 4) for t in (1, 2))
    for info in timed:
        assert info["model_sha256"] == good[info["variant"]]["sha256"]
        assert info["precision"] == ("int8" if info["variant"] == "int8" else "float32")


def test_native_profiling_names_each_cases_kernels_and_the_runtimes_own_layer_times(pytester, manifest):
    pytester.makepyfile(test_tiny=TINY)
    result = pytester.runpytest_subprocess(
        f"--quantlab-artifacts={manifest}", "--quantlab-variants=int8", "--quantlab-batch-sizes=16",
        "--quantlab-profile=native", "--benchmark-json=out.json", "--benchmark-max-time=0.1",
        "--benchmark-min-rounds=500", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    benchmarks = {b["extra_info"]["runtime"]: b for b in
                  json.loads((pytester.path / "out.json").read_text())["benchmarks"]}
    infos = {name: bench["extra_info"] for name, bench in benchmarks.items()}
    litert, stats = infos["litert"]["native"], benchmarks["litert"]["stats"]
    # cpu-clock samples once per millisecond of CPU time, whatever else runs: at least half
    # of what the timed calls took at their fastest (500 rounds at least, however busy the
    # machine; the warm-up calls are sampled too and not counted here).
    cpu_ms = stats["rounds"] * stats["iterations"] * stats["min"] * 1e3
    assert litert["samples"] >= max(10, cpu_ms / 2), (litert["samples"], cpu_ms)
    assert litert["kernels"][0]["symbol"].startswith("xnn_qs8")
    assert infos["litert"]["kernel_isa"] not in (None, "unknown")
    layers = infos["openvino"]["layers"]
    assert sum(layer["share"] for layer in layers) == pytest.approx(1.0)
    assert any(layer["primitive"].lower().endswith("_i8") for layer in layers)
    result.stdout.fnmatch_lines(["*quantlab: native kernels of each timed case*",
                                 "*| medium | 16 | int8 | litert |*xnn_qs8*"])


def test_without_perf_the_timing_still_runs_and_says_in_one_line_why_nothing_is_attributed(
        pytester, manifest, monkeypatch):
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # a PATH with no perf on it
    pytester.makepyfile(test_tiny=TINY)
    result = pytester.runpytest_subprocess(
        f"--quantlab-artifacts={manifest}", "--quantlab-variants=int8", "--quantlab-runtimes=litert",
        "--quantlab-batch-sizes=1", "--quantlab-profile=native", "--benchmark-json=out.json",
        "--benchmark-max-time=0.05", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    [bench] = json.loads((pytester.path / "out.json").read_text())["benchmarks"]
    assert "perf" in bench["extra_info"]["native_missing"] and "native" not in bench["extra_info"]
    result.stdout.fnmatch_lines(["quantlab: no native kernel attribution: *perf*"])


def test_runs_two_machines_save_into_one_storage_are_compared_and_told_apart(pytester, tiny_models,
                                                                              monkeypatch, tmp_path):
    # pytest-benchmark files both runs under one folder named after OS and Python, not host:
    # the second machine compares against the first, and machine_info says which is which.
    # The storage is outside the current folder, where pytest-benchmark's own warning of a
    # different machine_info failed.
    storage = tmp_path / "shared"
    manifest = pytester.path / "manifest.json"
    manifest.write_text(json.dumps({"dataset": "digits", "artifacts": [
        {"net": "tiny", "variant": v, "path": str(path)} for v, path in tiny_models.items()]}))
    pytester.makepyfile(test_tiny=TINY)
    for name, compare in (("alpha", []), ("beta", ["--benchmark-compare"])):
        monkeypatch.setenv("QUANTLAB_MACHINE", name)
        result = pytester.runpytest_subprocess(
            f"--quantlab-artifacts={manifest}", "--quantlab-batch-sizes=1", "--quantlab-runtimes=litert",
            f"--benchmark-storage=file://{storage}", f"--benchmark-save={name}", *compare,
            "--benchmark-max-time=0.05", "-p", "no:cacheprovider")
        result.assert_outcomes(passed=2)
    saved = sorted(storage.glob("*/*.json"))
    assert [path.name for path in saved] == ["0001_alpha.json", "0002_beta.json"]
    assert [json.loads(path.read_text())["machine_info"]["quantlab"]["machine"] for path in saved] \
        == ["alpha", "beta"]
    for run in ("0001_alpha", "NOW"):  # both rows of the case, in the order of their times
        result.stdout.fnmatch_lines([f"*test_latency[[]tiny-int8-litert-b1[]] ({run})*"])
    printed = result.stdout.str() + result.stderr.str()
    assert re.search(r"Comparing against benchmarks from: \S+/0001_alpha\.json", printed)
    assert "Benchmark machine_info is different" in printed
    assert '"machine": "beta"' in printed and '"machine": "alpha"' in printed


@pytest.mark.slow
def test_valgrind_counters_fill_extra_info_and_the_summary_prints_the_miss_rate_table(pytester, manifest):
    # The suite file itself, given to pytest, as `quantlab run` does.
    result = pytester.runpytest_subprocess(
        latency_suite.__file__, f"--quantlab-artifacts={manifest}", "--quantlab-variants=int8",
        "--quantlab-batch-sizes=1", "--quantlab-counters=valgrind", "--quantlab-cache=i7-6500u",
        "--quantlab-runtimes=litert", "--benchmark-json=out.json", "--benchmark-max-time=0.05",
        "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    [bench] = json.loads((pytester.path / "out.json").read_text())["benchmarks"]
    counters = bench["extra_info"]["counters"]
    per, rates = counters["per_inference"], counters["rates"]
    assert counters["backend"] == "valgrind" and counters["cache_geometry"]["name"] == "i7-6500u"
    assert per["instructions"] > 100_000 and 0 < per["l1d_load_misses"] < per["l1d_loads"]
    assert all(0 <= rate <= 1 for rate in rates.values() if rate is not None)
    assert counters["caveats"] and counters["events"]
    result.stdout.fnmatch_lines([f"*{MISS_RATES}*valgrind*", "| batch | medium int8 (litert) |", "| 1 | */*/* |",
                                 "*instructions per inference*", "note: simulated by valgrind*"])


@pytest.mark.slow
def test_the_benchmark_suite_runs_every_case_of_the_matrix_once_with_timing_disabled(quick_variants,
                                                                                      tmp_path):
    # `pytest benchmarks/ --benchmark-disable`, as a user or CI types it: every net, variant,
    # runtime and batch size, of the quick nets as `quantlab run` hands them over (a manifest
    # of quick_variants: nothing is exported again, and there is no qat_int8 of the nets
    # outside QAT_NETS, whose cases are left out). Not the three valgrind runs of what
    # counting costs: the same calls on the same tiny model are test_counters_valgrind's; nor
    # the two whole quick studies of the agreement benchmark, whose study test_study runs;
    # nor the quick study of a user's ONNX model on a folder of PNG images, which
    # test_user_model runs and checks.
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"dataset": "fashion_mnist", "artifacts": [
        {"net": net, "variant": v, "path": str(a.path), "sha256": a.sha256, "precision": a.precision}
        for net, artifacts in quick_variants.items() for v, a in artifacts.items()
        if v in defaults.STUDY_VARIANTS]}))
    absent = [f"{net}-qat_int8-" for net in quick_variants if net not in QAT_NETS]
    out = subprocess.run([sys.executable, "-m", "pytest", "benchmarks", "--benchmark-disable", "-q",
                          "-p", "no:cacheprovider", "-p", "no:randomly",
                          f"--quantlab-artifacts={manifest}",
                          "-k", "not test_counting_two_batch_sizes_of_a_tiny_model_under_valgrind "
                                "and not test_two_quick_studies_in_a_row_agree "
                                "and not test_the_quick_study_of_a_user_onnx_model_on_2000_png_images"
                                + "".join(f" and not {case}" for case in absent)],
                         cwd=REPO, capture_output=True, text=True, env=os.environ)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "passed" in out.stdout and "failed" not in out.stdout
    assert LATENCY not in out.stdout  # nothing was timed


# --- tables from plain records ------------------------------------------------------------------

def _record(variant, batch, total, l1d, llc, instructions, median=None, runtime="litert"):
    return {"net": "medium", "variant": variant, "runtime": runtime, "batch_size": batch, "threads": 1,
            "median": median,
            "per_image": median and median / batch,
            "counters": {"rates": {"total_miss_rate": total, "l1d_miss_rate": l1d, "llc_miss_rate": llc},
                         "per_inference": {"instructions": instructions, "ipc": None}}}


def test_the_miss_rate_table_has_batch_rows_and_net_variant_columns_like_p17():
    records = [_record("float32", 1, 0.34, 0.072, 0.15, 5.2e6), _record("int8", 1, 0.5, 0.0, None, 3e5),
               _record("float32", 16, 0.2, 0.1, 0.3, 8e7)]
    assert tables.miss_rate_table(records).splitlines() == [
        "| batch | medium float32 (litert) | medium int8 (litert) |", "|---|---|---|",
        "| 1 | 34/7.2/15 | 50/0/n/a |", "| 16 | 20/10/30 | – |"]
    assert "| 1 | 5.20M | 300.00k |" in tables.instructions_table(records)


def test_the_latency_table_compares_with_litert_float32_and_with_float32_on_the_same_runtime():
    records = [_record("float32", 16, 0, 0, 0, 0, median=0.004), _record("int8", 16, 0, 0, 0, 0, median=0.002),
               _record("float16", 16, 0, 0, 0, 0, median=0.006),
               _record("float32", 16, 0, 0, 0, 0, median=0.003, runtime="openvino"),
               _record("int8", 16, 0, 0, 0, 0, median=0.0005, runtime="openvino")]
    rows = [row.split(" | ") for row in tables.latency_table(records).splitlines()[2:]]
    assert [(row[2], row[3], row[8], row[9]) for row in rows] == [
        ("float32", "litert", "reference", "reference"), ("int8", "litert", "2.0x faster", "2.0x faster"),
        ("float16", "litert", "1.5x slower", "1.5x slower"),
        ("float32", "openvino", "1.3x faster", "reference"), ("int8", "openvino", "8.0x faster", "6.0x faster")]


def test_describe_turns_a_median_into_per_image_time_mac_rate_and_share_of_peak(tmp_path):
    """The arithmetic of extra_info, with fixed numbers worked out by hand."""
    class Timed:
        class stats:
            median, data = 0.002, [0.001, 0.002, 0.002, 0.004]

    class Predictor:
        input_shape = (28, 28, 1)

        def describe(self):
            return {"runtime_version": "9", "kernels": "k", "precision": "int8", "primitives": {},
                    "sha256": "ab", "format": "tflite", "input_shape": [28, 28, 1]}

    cpu = {"model": "test CPU", "available_cores": 2, "mhz": 2000.0,
           "flags": {flag: flag in ("avx2", "fma", "avx512f", "avx512_vnni") for flag in machine.FLAGS}}
    path = tmp_path / "m.tflite"
    path.write_bytes(b"12345")
    case = latency_suite.Case("medium", "int8", "litert", 16)
    info = latency_suite.describe(case, latency_suite.Model(path), Predictor(), 10, cpu, "d", Timed)
    # medium on 28x28x1: 28*28*25*1*32 + 14*14*25*32*64 + 7*7*64*1024 + 1024*10 = 13 883 904 MACs
    assert info["macs_per_image"] == 13_883_904
    assert info["per_image"] == pytest.approx(0.002 / 16)
    assert info["macs_per_second"] == pytest.approx(13_883_904 * 16 / 0.002)  # 111.07 G
    # AVX-512 VNNI: 128 int8 MAC per cycle, at 2.0 GHz on one thread: 256 G
    assert info["peak_macs_per_second"] == pytest.approx(256e9)
    assert info["peak_fraction"] == pytest.approx(0.43387, rel=1e-4)
    assert (info["p50"], info["model_bytes"]) == (0.002, 5)


def test_a_machine_name_that_is_not_plain_stops_the_benchmarks_before_any_timing():
    """pytest-benchmark reads the name only when it saves the runs, after all the timing."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/test_latency.py", "--collect-only", "-q",
         "-p", "no:cacheprovider"], capture_output=True, text=True,
        cwd=REPO, env={**os.environ, "QUANTLAB_MACHINE": "a\nb"})
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert "ERROR: QUANTLAB_MACHINE 'a b' is not a plain name" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
