"""report.md is a page a person reads and details.md holds every per-case table: checked on
hand-made results shaped as a quick study's (3 nets, batch sizes 1, 16 and 64, 1 and 2
threads, every option of the quick study, perf samples and the runtimes' own profiles)."""

import re

import pytest

from quantlab import latency_suite, report

NETS = ("dense", "medium", "conv")
BATCHES = (1, 16, 64)
THREADS = (1, 2)
# The options of a quick study, with their median at batch 1 in µs (then x12 per step of
# batch size) and their precision. float32 on LiteRT is the reference.
OPTIONS = {("float32", "litert"): 300, ("dynamic_int8", "litert"): 80, ("float16", "litert"): 310,
           ("int8", "litert"): 100, ("qat_int8", "litert"): 95, ("float32", "openvino"): 280,
           ("dynamic_int8", "openvino"): 150, ("float16", "openvino"): 290,
           ("int8", "openvino"): 90, ("qat_int8", "openvino"): 88, ("bf16", "openvino"): 160,
           ("onnx_float32", "openvino"): 285, ("onnx_int8", "openvino"): 92,
           ("onnx_float32", "onnxruntime"): 270, ("onnx_int8", "onnxruntime"): 120,
           ("float32_tf", "tensorflow"): 700}
ROUNDS = (1.00, 0.98, 1.03, 1.01, 0.99, 1.05, 1.00, 0.97, 1.02)
NAMED = {"symbol": "xnn_qs8_qc8w_gemm_minmax_fp32_ukernel_1x16c8__avx512vnni_prfm", "dso": "libxnn",
         "isa": "AVX-512 VNNI", "samples": 80, "share": 0.8}
UNNAMED = {"symbol": "[unknown]", "dso": "[JIT] tid 1", "isa": "unknown", "samples": 90, "share": 0.9}
LAYERS = [{"layer": "fc1", "type": "FullyConnected", "primitive": "brgemm_avx512_I8", "share": 0.6},
          {"layer": "conv1", "type": "Convolution", "primitive": "brgconv_avx512_I8", "share": 0.3}]


def _case(net, variant, runtime, batch, threads, micro):
    median = micro * 1e-6 * 12 ** BATCHES.index(batch) / threads
    case = {"net": net, "variant": variant, "runtime": runtime, "batch_size": batch,
            "threads": threads, "threads_busy": threads, "median": median, "p90": median,
            "per_image": median / batch, "macs_per_image": None, "peak_macs_per_second": None,
            "precision": "int8" if "int8" in variant else "float32",
            "native": {"samples": 100, "kernels": [dict(NAMED if runtime == "litert" else UNNAMED),
                                                   {**UNNAMED, "share": 0.05}]}}
    if runtime == "openvino":
        case["layers"] = LAYERS  # OpenVINO's performance counts; no profile for the others
    if (variant, runtime, batch, threads) in (("float32", "litert", 1, 1), ("int8", "litert", 1, 1)):
        rates = {"total_miss_rate": 0.01, "l1d_miss_rate": 0.1, "llc_miss_rate": 0.0}
        case["counters"] = {"rates": rates, "caveats": ["simulated by valgrind"],
                            "per_inference": {"instructions": 3e6, "cache_misses": 2,
                                              "cache_references": 2e5}}
    else:
        case["not_counted"] = "the quick study counts float32 and int8 on litert at batch 1 only"
    reference = OPTIONS[("float32", "litert")] * 1e-6 * 12 ** BATCHES.index(batch) / threads
    latency_suite.apply_rounds(case, [median * f for f in ROUNDS],
                               {"rounds": len(ROUNDS), "stopped": "converged", "target": 0.05,
                                "widest": 0.03}, [reference * f for f in ROUNDS])
    return case


def quick_study_results():
    cases = [_case(net, variant, runtime, batch, threads, micro) for net in NETS
             for (variant, runtime), micro in OPTIONS.items() for batch in BATCHES for threads in THREADS]
    sizes = {variant: 4_000_000 // (4 if "int8" in variant else 2 if variant == "float16" else 1)
             for variant, _ in OPTIONS}
    accuracy = [{"net": net, "variant": variant, "runtime": runtime,
                 "precision": "int8" if "int8" in variant else "float32", "reference": "float32",
                 "reference_runtime": "litert", "accuracy": 0.83, "delta_points": 0.1 if "int8" in variant else 0.0,
                 "agreement": 0.99, "size_ratio": 4_000_000 / sizes[variant], "max_abs_diff": 0.02,
                 "bytes": sizes[variant]}
                for net in NETS for variant, runtime in OPTIONS]
    artifacts = {v: {"bytes": b} | ({"execute_in": "bf16"} if v == "bf16" else {}) for v, b in sizes.items()}
    return {
        "dataset": {"name": "fashion_mnist", "train": 6000, "test": 10000, "input_shape": [28, 28, 1],
                    "source": "hand-made"},
        "config": {"batch_sizes": list(BATCHES), "quick": True},
        "nets": {net: {"artifacts": artifacts} for net in NETS},
        "runtimes": ["litert", "openvino", "onnxruntime", "tensorflow"],
        "machine": {"name": "hand", "cpu": {"model": "a CPU", "available_cores": 2, "flags": {"avx2": True},
                                            "mhz": 2600}, "threads": 1, "clock": {}, "bandwidth": {},
                    "versions": {"quantlab": "0"}, "counter_backend": "valgrind", "cache_geometry": "host"},
        "cases": cases, "accuracy": accuracy,
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    results = quick_study_results()
    results["findings"] = report.findings(results)
    results["recommendations"] = report.recommendations(results)
    report.write(results, folder)
    return results, (folder / "report.md").read_text(), (folder / "details.md").read_text()


def test_report_md_is_short_and_links_the_details(written):
    results, text, _ = written
    assert len(text.splitlines()) < 250
    assert "[details.md](details.md)" in text
    for heading in ("## What to ship", "## Machine", "## Findings", "## Plots", "## Size",
                    "## Accuracy", "## Best float32 and best int8", "## Threads"):
        assert f"\n{heading}" in text, heading
    assert len(results["recommendations"]) == len(NETS) * len(BATCHES) * len(THREADS)
    assert all(line in text for line in results["recommendations"] + results["findings"])
    assert len(results["findings"]) <= 12
    assert "### dense, batch 16" not in text and "## Latency" not in text  # per case: details


def test_details_md_holds_every_per_case_table(written):
    results, _, details = written
    for net in NETS:
        for batch in BATCHES:
            table = details.split(f"### {net}, batch {batch}\n", 1)[1].split("\n#", 1)[0]
            variants = {variant for variant, _ in OPTIONS}
            assert len([row for row in table.splitlines() if row.startswith("| ")]) == 1 + len(variants)
    for heading in ("## Which runtime", "## Threads", "## Latency",
                    "## Cache behaviour", "## Where the time goes", "### The runtimes' own per-layer times",
                    "## P17 (2018) side by side"):
        assert f"\n{heading}" in details, heading
    # every timed case has its row in the latency tables
    latency = details.split("\n## Latency", 1)[1].split("\n## ", 1)[0]
    assert len(re.findall(r"^\| (dense|medium|conv) \|", latency, re.M)) == len(results["cases"])


def test_rows_that_name_no_kernel_are_replaced_or_left_out_and_said_so(written):
    _, text, details = written
    for page in (text, details):
        assert "[unknown]" not in page and "\\[unknown\\]" not in page and "(unknown)" not in page
    where = details.split("\n## Where the time goes", 1)[1].split("\n#", 1)[0]
    rows = [row for row in where.splitlines() if row.startswith("| ") and "network" not in row]
    # LiteRT names its kernels; OpenVINO's JIT code has none, its own profile stands in;
    # ONNX Runtime and TensorFlow recorded neither: their rows are left out, in one line.
    per_net_and_count = len(BATCHES) * len(THREADS)
    litert = [r for r in rows if " on litert |" in r]
    openvino = [r for r in rows if " on openvino |" in r]
    assert len(litert) == 5 * len(NETS) * per_net_and_count and "(AVX-512 VNNI)" in litert[0]
    assert len(openvino) == 8 * len(NETS) * per_net_and_count
    assert "openvino's own profile: 60 % FullyConnected (brgemm_avx512_I8)" in openvino[0]
    assert len(rows) == len(litert) + len(openvino)
    left_out = 3 * len(NETS) * per_net_and_count
    assert f"Left out: {left_out} case(s) of onnxruntime, tensorflow, whose costliest" in where


@pytest.mark.parametrize("scored, said", [(10000, "the 10000"), (2000, "the first 2000 of 10000")])
def test_the_accuracy_heading_says_how_many_test_images_were_scored(scored, said):
    from quantlab.report.writer import scored_images

    results = {"dataset": {"test": 10000},
               "accuracy": [{"variant": "float32", "test_images": scored},
                            {"variant": "int8", "not_run": "a runtime's reason"}]}
    assert scored_images(results) == said
