import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from quantlab import machine
from quantlab.counters import sampling
from quantlab.errors import QuantlabError

DATA = Path(__file__).parent / "data" / "perf"
RECORDED = DATA / "record_litert_medium_digits.txt"  # perf script of a real 2-window run here

# --- kernel names -> instruction sets ------------------------------------------------------------


@pytest.mark.parametrize("symbol, isa", [
    ("xnn_qs8_qc8w_igemm_minmax_fp32_ukernel_16x64c4__avx512amx", "AMX"),
    ("xnn_qs8_qc8w_igemm_minmax_fp32_ukernel_7x16c8__avx512vnni_prfm", "AVX-512 VNNI"),
    ("xnn_qd8_f32_qc8w_gemm_minmax_ukernel_5x64c4__asm_amd64_avx512vnni", "AVX-512 VNNI"),
    ("xnn_f32_gemm_minmax_ukernel_7x32__avx512f_broadcast", "AVX-512"),
    ("xnn_x8_lut_ukernel__avx512skx_vpshufb_u64", "AVX-512"),
    ("xnn_qs8_vadd_minmax_ukernel__avxvnni_u16", "AVX-VNNI"),
    ("xnn_f32_igemm_minmax_ukernel_4x8__fma3_broadcast", "FMA3"),
    ("xnn_qs8_dwconv_minmax_fp32_ukernel_25p16c__avx2_mul32", "AVX2"),
    ("xnn_s8_maxpool_minmax_ukernel_9p__sse41_u16", "SSE4.1"),
    ("xnn_f32_maxpool_minmax_ukernel_9p__sse2_u4", "SSE2"),
])
def test_an_xnnpack_kernels_instruction_set_is_read_from_its_name(symbol, isa):
    assert sampling.isa_of(symbol) == isa


@pytest.mark.parametrize("symbol", [
    "xnn_compute_igemm",                                   # XNNPACK, but not a microkernel
    "pthreadpool_parallelize_4d_tile_2d_dynamic",
    "tflite::optimized_ops::Softmax<signed char, signed char>",
    "dnnl::impl::cpu::x64::brgemm_amx_kernel",             # another library: no guessing
    "_PyEval_EvalFrameDefault", "[unknown]",
])
def test_other_functions_have_an_unknown_instruction_set(symbol):
    assert sampling.isa_of(symbol) == "unknown"


# --- perf script output ------------------------------------------------------------------------------

def test_every_sample_of_a_recorded_perf_script_output_is_parsed():
    text = RECORDED.read_text()
    samples = sampling.parse_script(text)
    assert len(samples) == len(text.splitlines()) == 295
    assert [s[0] for s in samples] == sorted(s[0] for s in samples)
    first = samples[0]
    assert first[0] == 1211_448_658_087  # "1211.448658087:" in nanoseconds
    symbols = {(symbol, dso) for _, symbol, dso in samples}
    assert ("tflite::optimized_ops::Softmax<signed char, signed char>",
            "/work/main/.venv/lib/python3.11/site-packages/ai_edge_litert/libpywrap_litert_common.so") in symbols
    assert ("exc_page_fault", "[kernel.kallsyms]") in symbols
    assert ("[unknown]", "/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0") in symbols


def test_recorded_windows_name_the_float32_and_the_int8_kernels_that_ran():
    windows = json.loads((DATA / "record_litert_medium_digits.windows.json").read_text())
    samples = sampling.parse_script(RECORDED.read_text())
    float32, int8 = sampling.attribute(samples, [windows["float32"], windows["int8"]])
    assert float32["samples"] == 143 and int8["samples"] == 152
    assert float32["kernels"][0] == {
        "symbol": "xnn_f32_igemm_minmax_ukernel_7x32__avx512f_broadcast",
        "dso": "/work/main/.venv/lib/python3.11/site-packages/ai_edge_litert/libpywrap_litert_common.so",
        "samples": 100, "share": 100 / 143, "isa": "AVX-512"}
    assert int8["kernels"][0]["symbol"] == "xnn_qs8_qc8w_igemm_minmax_fp32_ukernel_7x16c8__avx512vnni_prfm"
    assert int8["kernels"][0]["share"] == pytest.approx(0.70, abs=0.01)
    assert int8["isa_shares"]["AVX-512 VNNI"] == pytest.approx(0.88, abs=0.01)
    assert sum(int8["isa_shares"].values()) == pytest.approx(1.0)
    assert len(int8["kernels"]) == sampling.TOP
    assert [k["samples"] for k in int8["kernels"]] == sorted((k["samples"] for k in int8["kernels"]), reverse=True)


def test_parsing_skips_what_is_not_a_sample_and_reads_microsecond_timestamps():
    text = "\n".join([
        "Warning:",
        "Processed 120 events and lost 1 chunks!",
        "   12.345678:      7f00aa xnn_f32_vadd_ukernel__avx512f_u32 (/lib/x.so)",  # no --ns
        "   12.345679001:  ffffffff81000000 do_syscall_64 ([kernel.kallsyms])",
        "   12.345680001:      7f00ab  (/lib/x.so)",                              # no symbol
        "   12.3456:  garbage",
        "",
    ])
    assert sampling.parse_script(text) == [
        (12_345_678_000, "xnn_f32_vadd_ukernel__avx512f_u32", "/lib/x.so"),
        (12_345_679_001, "do_syscall_64", "[kernel.kallsyms]"),
        (12_345_680_001, "[unknown]", "/lib/x.so"),
    ]


def test_an_empty_window_has_no_kernels_and_says_so():
    samples = sampling.parse_script(RECORDED.read_text())
    empty = sampling.attribute(samples, [(0, 1)])[0]
    assert empty == {"begin": 0, "end": 1, "samples": 0, "kernels": [], "isa_shares": {}}
    assert sampling.format_window(empty, "int8 b16") == "int8 b16: no samples in this window"


def test_a_recorded_refusal_becomes_one_line_naming_the_paranoid_setting():
    # perf record -p 1 run as user nobody, here (kernel.perf_event_paranoid=2)
    message = sampling.refusal((DATA / "record_not_permitted.txt").read_text(), 1)
    assert "\n" not in message
    assert message.startswith("perf may not sample process 1 (kernel.perf_event_paranoid=")
    assert message.endswith("no native kernel attribution")


def test_perfs_error_reason_is_taken_from_the_line_after_its_error_heading():
    text = ("Error:\nThe sys_perf_event_open() syscall returned with 22 (Invalid argument) for "
            "event (cpu-clock).\n/bin/dmesg | grep -i perf may provide additional information.\n")
    assert sampling.refusal(text, 7) == (
        "perf record could not sample cpu-clock of process 7 (The sys_perf_event_open() syscall "
        "returned with 22 (Invalid argument) for event (cpu-clock).); no native kernel attribution")
    assert "(no output)" in sampling.refusal("", 7)


# --- live: perf record on this process ---------------------------------------------------------------

def test_without_perf_on_the_path_there_is_one_line_and_no_sampler(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    sampler, why = sampling.try_start()
    assert sampler is None
    assert why.startswith("perf not found") and "\n" not in why


needs_perf = pytest.mark.skipif(shutil.which("perf") is None, reason="perf is not installed")


@needs_perf
def test_a_process_that_does_not_exist_cannot_be_sampled_and_perfs_reason_is_given():
    with pytest.raises(QuantlabError) as caught:
        sampling.Sampler(pid=2 ** 22 + 1).start()  # above the kernel's pid_max limit
    message = str(caught.value)
    assert "process 4194305" in message and "No such process" in message and "\n" not in message


class _UnknownClock(sampling.Sampler):
    def command(self, *args):
        return [("99" if arg == "CLOCK_MONOTONIC" else arg) for arg in super().command(*args)]


@needs_perf
def test_a_perf_that_fails_to_start_is_reported_in_one_line_with_its_last_words():
    with pytest.raises(QuantlabError) as caught:
        _UnknownClock().start()  # no clock 99: perf gives up before it samples anything
    message = str(caught.value)
    assert message.startswith(f"perf record could not sample cpu-clock of process {os.getpid()} (")
    assert "clock" in message.split("(", 1)[1] and "\n" not in message


class _AsNobody(sampling.Sampler):
    def command(self, *args):
        return ["runuser", "-u", "nobody", "--", *super().command(*args)]


@needs_perf
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None,
                    reason="needs root to run perf as another user")
def test_perf_run_by_a_user_without_permission_is_refused_in_one_line():
    with pytest.raises(QuantlabError) as caught:
        _AsNobody().start()
    message = str(caught.value)
    assert "\n" not in message and f"process {os.getpid()}" in message
    if int(Path("/proc/sys/kernel/perf_event_paranoid").read_text()) >= 2:
        assert "perf_event_paranoid" in message


def _busy_for(cpu_ns, work=lambda: None):
    """Call ``work`` until this thread has spent ``cpu_ns`` of CPU time: cpu-clock samples
    count CPU time, so a window of CPU time holds as many samples on a busy machine as on an
    idle one, where a window of wall-clock time holds fewer the busier it is."""
    start = time.thread_time_ns()
    while time.thread_time_ns() - start < cpu_ns:
        work()


@needs_perf
def test_the_window_that_starts_right_after_start_is_sampled_from_its_beginning():
    sampler = sampling.Sampler().start()
    begin = sampling.now()
    _busy_for(200_000_000)
    end = sampling.now()
    sampler.stop()
    window = sampler.attribute([(begin, end)])[0]
    # One sample per millisecond of this thread's CPU time: ~200, however long other
    # processes kept it waiting; the first must come in the first tenth of the window.
    assert window["samples"] > 50
    inside = [t for t, _, _ in sampler.samples if begin <= t <= end]
    assert inside[0] - begin < (end - begin) / 10
    assert window["kernels"][0]["dso"].startswith(("/", "["))
    assert set(sampler.seconds) == {"start", "stop", "script"}


@needs_perf
def test_a_sampler_must_be_stopped_before_attributing_and_cannot_stop_twice():
    with sampling.Sampler().start() as sampler:
        with pytest.raises(RuntimeError, match="stop the sampler"):
            sampler.attribute([(0, 1)])
    assert sampler.samples is not None  # stopped by the with block
    with pytest.raises(RuntimeError, match="not started"):
        sampler.stop()


# --- live: LiteRT natively, on real quantlab models ----------------------------------------------------

# XNNPACK's name for the int8 unit that machine.compute_units lists first
XNNPACK_TOKENS = {"amx_int8": "avx512amx", "avx512_vnni": "avx512vnni", "avx_vnni": "avxvnni",
                  "avx2": "avx2"}


@pytest.fixture(scope="module")
def medium_digits():
    """float32 and full-int8 .tflite of quantlab's medium net, one epoch on real digits."""
    from quantlab import variants
    from quantlab.training import TrainConfig

    exported = variants.export(TrainConfig("medium", "digits", epochs=1), variants=("float32", "int8"))
    return {variant: artifact.path for variant, artifact in exported.items()}


def _interpreter(path, batch=16):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(path), num_threads=1)
    entry = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(entry["index"], [batch, *entry["shape"][1:]])
    interpreter.allocate_tensors()
    images = np.random.default_rng(0).random((batch, *entry["shape"][1:]), dtype=np.float32)
    if entry["dtype"] == np.int8:
        scale, zero = entry["quantization"]
        images = np.clip(np.round(images / scale + zero), -128, 127)
    interpreter.set_tensor(entry["index"], images.astype(entry["dtype"]))
    interpreter.invoke()
    return interpreter


@pytest.fixture(scope="module")
def litert_windows(medium_digits):
    """The attribution of one float32 and one int8 window of 0.3 s of CPU time of LiteRT invokes."""
    interpreters = {variant: _interpreter(path) for variant, path in medium_digits.items()}
    sampler, why = sampling.try_start()
    assert sampler is not None, why
    windows = {}
    for variant, interpreter in interpreters.items():
        begin = sampling.now()
        _busy_for(300_000_000, interpreter.invoke)  # one thread: LiteRT runs in this one
        windows[variant] = (begin, sampling.now())
    sampler.stop()
    return dict(zip(windows, sampler.attribute(windows.values())))


@needs_perf
def test_litert_int8s_top_kernel_uses_the_widest_int8_unit_this_cpu_reports(litert_windows):
    unit = machine.compute_units("int8", machine.cpu_info()["flags"])[0].name
    top = litert_windows["int8"]["kernels"][0]
    assert XNNPACK_TOKENS[unit] in top["symbol"]
    assert top["isa"] == sampling.ISA_NAMES[XNNPACK_TOKENS[unit]]
    assert top["symbol"].startswith("xnn_qs8_") and "ai_edge_litert" in top["dso"]
    assert top["share"] > 0.3


@needs_perf
def test_the_float32_and_the_int8_window_name_different_kernels(litert_windows):
    float32, int8 = litert_windows["float32"], litert_windows["int8"]
    assert float32["samples"] > 50 and int8["samples"] > 50
    assert float32["kernels"][0]["symbol"].startswith("xnn_f32_")
    assert {k["symbol"] for k in float32["kernels"][:2]}.isdisjoint(k["symbol"] for k in int8["kernels"][:2])
    print(sampling.format_window(float32, "float32"), sampling.format_window(int8, "int8"), sep="\n")


def test_importing_the_sampling_module_imports_neither_tensorflow_nor_numpy():
    code = ("import sys, quantlab.counters.sampling, quantlab.ceilings, quantlab.roofline; "
            "print([m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'numpy', 'matplotlib')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


_SAMPLE_THEN_WAIT = """
import sys, time
from quantlab.counters import sampling
sampler = sampling.Sampler().start()
print(sampler._folder, flush=True)
time.sleep(600)
"""


@needs_perf
def test_a_sampled_process_killed_before_its_stop_leaves_no_perf_files_behind():
    # perf runs in a session of its own and outlives a killed process; its perf.data must not.
    child = subprocess.Popen([sys.executable, "-c", _SAMPLE_THEN_WAIT], stdout=subprocess.PIPE,
                             text=True)
    folder = Path(child.stdout.readline().strip())
    assert folder.is_dir() and folder.name.startswith("quantlab-sampling-")
    child.kill()
    child.wait()
    deadline = time.monotonic() + 30
    while folder.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not folder.exists()
