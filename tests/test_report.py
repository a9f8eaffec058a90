"""report.md is a page a person reads and details.md holds every per-case table: checked on
hand-made results shaped as a quick study's (3 nets, batch sizes 1, 16 and 64, 1 and 2
threads, every option of the quick study, perf samples and the runtimes' own profiles)."""

import re

import pytest

from quantlab import latency_suite, report, variant_table

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


def test_a_net_studied_at_fewer_batch_sizes_is_reported_at_those_alone(tmp_path):
    """The quick study times today's nets at batch 1 alone: no pick, table or thread finding
    of theirs at a batch size they were not timed at, and the others' as before."""
    results = quick_study_results()
    results["cases"] += [_case("vit", variant, runtime, 1, threads, micro)
                         for (variant, runtime), micro in OPTIONS.items() for threads in THREADS]
    results["accuracy"] += [{**row, "net": "vit"} for row in results["accuracy"]
                            if row["net"] == "dense"]
    results["nets"]["vit"] = results["nets"]["dense"]
    results["config"]["batch_sizes_by_net"] = {"vit": [1]}
    results["findings"] = report.findings(results)
    results["recommendations"] = report.recommendations(results)
    report.write(results, tmp_path)
    details = (tmp_path / "details.md").read_text()
    assert "### vit, batch 1\n" in details and "### vit, batch 16" not in details
    assert len(results["recommendations"]) == (len(NETS) * len(BATCHES) + 1) * len(THREADS)
    assert [line for line in results["recommendations"] if line.startswith("vit")] == [
        line for line in results["recommendations"] if line.startswith("vit, batch 1,")]
    assert f"in 0 of {len(NETS) * len(BATCHES) + 1} net x batch cases" in " ".join(
        results["findings"])


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


# A user's ONNX model studied on unlabelled images: no TFLite file, so every ratio is against
# the model's own float32 on ONNX Runtime; agreement stands in for accuracy.
USER_OPTIONS = {("onnx_float32", "onnxruntime"): 300, ("onnx_float32", "openvino"): 280,
                ("onnx_int8", "onnxruntime"): 100, ("onnx_int8", "openvino"): 150,
                ("openvino_int8", "openvino"): 90}
USER_SHA = "ab" * 32


def user_model_results(agreement=0.995, classes_predicted=10):
    cases = []
    for (variant, runtime), micro in USER_OPTIONS.items():
        case = _case("model", variant, runtime, 1, 1, micro)
        reference = USER_OPTIONS[("onnx_float32", "onnxruntime")] * 1e-6
        case["interleaved"]["seconds"] = [reference * f for f in ROUNDS] if (
            variant, runtime) == ("onnx_float32", "onnxruntime") else [micro * 1e-6 * f for f in ROUNDS]
        case.pop("speedup")  # the rounds had no LiteRT float32 to take it against
        cases.append(case)
    sizes = {"onnx_float32": 4_000_000, "onnx_int8": 1_000_000, "openvino_int8": 1_000_000}
    accuracy = [{"net": "model", "variant": v, "runtime": r, "precision": "float32",
                 "reference": "onnx_float32", "reference_runtime": "onnxruntime", "accuracy": None,
                 "delta_points": None, "agreement": 1.0 if v == "onnx_float32" else agreement,
                 "max_abs_diff": 0.01, "size_ratio": 4_000_000 / sizes[v], "bytes": sizes[v],
                 "test_images": 300, "classes_predicted": classes_predicted}
                for v, r in USER_OPTIONS]
    return {**quick_study_results(), "cases": cases, "accuracy": accuracy,
            "config": {"batch_sizes": [1], "quick": True},
            "nets": {"model": {"artifacts": {v: {"bytes": b} for v, b in sizes.items()}}},
            "reference": {"variant": "onnx_float32", "runtime": "onnxruntime"},
            "model": {"file": "model.onnx", "sha256": USER_SHA, "format": "onnx",
                      "input": "pixels", "input_shape": [1, 3, 28, 28]},
            "dataset": {"name": "images", "source": "/data/images", "train": 100, "test": 300,
                        "calibration": 100, "labelled": False, "classes": 10,
                        "input_shape": [3, 28, 28],
                        "preprocessing": {"scale": 1 / 255, "mean": [0.5], "std": [0.25],
                                          "layout": "NCHW"}}}


def _user_report(tmp_path, **options):
    results = user_model_results(**options)
    results["findings"] = report.findings(results)
    results["recommendations"] = report.recommendations(results)
    report.write(results, tmp_path)
    return results, (tmp_path / "report.md").read_text()


def test_a_user_models_report_is_against_its_own_float32_and_says_agreement_stands_in(tmp_path):
    results, text = _user_report(tmp_path)
    assert f"Model **model.onnx** (onnx, sha256 `{USER_SHA}`" in text
    assert "/data/images: 100 for calibration, 300 scored, without labels" in text
    assert "preprocessing: scale 0.00392157, mean 0.5, std 0.25, layout NCHW." in text
    assert "P17" not in text.split("## Findings", 1)[1].split("\n## ", 1)[0]
    assert "float32 on litert" not in text and "faster than onnx_float32 on onnxruntime" in text
    # openvino_int8 is 3.3x faster than the reference and agrees on 99.5 %: shipped
    assert results["recommendations"] == [
        "model, batch 1: openvino_int8 on openvino: 3.3x (3.3-3.3) faster than onnx_float32 on "
        "onnxruntime, 99.5 % top-1 agreement"]
    assert "## Agreement with onnx_float32 on the 300 unlabelled images" in text
    assert "The images have no labels, so there is no accuracy" in text
    assert "## Read first" not in text
    sizes = text.split("## Size", 1)[1].split("\n## ", 1)[0]
    assert "| model | 4.00 MB | 1.00 MB (4.000x) | 1.00 MB (4.000x) |" in sizes.replace("  ", " ")


def test_without_labels_an_option_that_agrees_less_than_99_percent_is_not_shipped(tmp_path):
    results, text = _user_report(tmp_path, agreement=0.98)
    assert results["recommendations"] == [
        "model, batch 1: onnx_float32 on openvino: 1.1x (1.1-1.1) faster than onnx_float32 on "
        "onnxruntime, 100.0 % top-1 agreement"]


def test_a_reference_that_predicts_one_class_for_every_image_is_read_first(tmp_path):
    _, text = _user_report(tmp_path, classes_predicted=1)
    first = text.split("## Read first", 1)[1].split("\n## ", 1)[0]
    assert "model: onnx_float32 on onnxruntime predicts the same class for all 300 images" in first
    assert "check --scale, --mean, --std and --layout" in first
    assert text.index("## Read first") < text.index("## What to ship")


def test_a_keras_models_report_names_its_file_without_an_input_it_did_not_read(tmp_path):
    results = user_model_results()
    results["model"] = {"file": "m.keras", "sha256": USER_SHA, "format": "keras"}
    results["findings"], results["recommendations"] = [], []
    report.write(results, tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert f"Model **m.keras** (keras, sha256 `{USER_SHA}`); images from /data/images" in text


def _with_a_fallback(results, mixed_delta):
    """conv's quantized options lose 3 points; its int8_mixed (scored and timed on LiteRT) loses
    ``mixed_delta`` and runs at 150 µs at batch 1, between int8's 100 and float32's 300."""
    for row in results["accuracy"]:
        if row["net"] == "conv" and variant_table.quantized(row["variant"]):
            row["delta_points"] = -3.0
    int8 = next(row for row in results["accuracy"]
                if (row["net"], row["variant"], row["runtime"]) == ("conv", "int8", "litert"))
    results["accuracy"].append({**int8, "variant": "int8_mixed", "delta_points": mixed_delta,
                                "bytes": 1_200_000, "size_ratio": 4 / 1.2})
    results["cases"] += [_case("conv", "int8_mixed", "litert", batch, threads, 150)
                         for batch in BATCHES for threads in THREADS]
    results["nets"]["conv"]["artifacts"]["int8_mixed"] = {"bytes": 1_200_000}
    steps = [{"step": 0, "tried": None, "accuracy": 0.80, "drop_points": 3.0, "kept": True,
              "float_layers": []},
             {"step": 1, "tried": "conv1", "accuracy": 0.825, "drop_points": 0.5, "kept": True,
              "float_layers": ["conv1"]}]
    layers = [{"layer": "conv1", "nodes": ["n1"], "ops": ["CONV_2D"], "rmse_over_scale": 2.5,
               "points_regained": 2.5},
              {"layer": "dense", "nodes": ["n2"], "ops": ["FULLY_CONNECTED"],
               "rmse_over_scale": 0.4, "points_regained": None}]
    results["sensitivity"] = {"conv": {"int8": {
        "ranking": {"quantizer": "int8", "statistic": "rmse_over_scale", "top_k": 1,
                    "validation_images": 500, "float_accuracy": 0.83, "int8_accuracy": 0.80,
                    "drop_points": 3.0, "layers": layers},
        "fallback": "int8 loses 3.00 points, more than 1: layers are kept in float, most "
                    "sensitive first",
        "search": {"kept_float": ["conv1"], "accuracy": 0.825, "drop_points": 0.5, "met": True,
                   "steps": steps, "max_drop": 1.0},
        "mixed": {"variant": "int8_mixed", "file": "int8_mixed.tflite", "sha256": "a" * 64,
                  "bytes": 1_200_000}}}}
    results["findings"] = report.findings(results)
    results["recommendations"] = report.recommendations(results)
    return results


def test_the_sensitivity_section_and_the_front_name_the_float_layers_and_their_cost(tmp_path):
    results = _with_a_fallback(quick_study_results(), mixed_delta=-0.5)
    report.write(results, tmp_path)
    text, details = (tmp_path / "report.md").read_text(), (tmp_path / "details.md").read_text()
    assert len(text.splitlines()) < 250
    section = text.split("## Sensitivity", 1)[1].split("\n## ", 1)[0]
    assert "conv1 (rmse_over_scale 2.5, +2.50 points kept float)" in section
    assert "int8_mixed: layers kept in float: conv1; 0.50 points lost" in section
    assert "batch 1 on litert: 0.15 ms against int8 0.1 ms and float32 0.3 ms" in section
    # conv at batch 1: int8 options lose 3 points; the mixed model is the fastest within 1.
    ship = next(line for line in text.splitlines()
                if line.startswith("- on the front of conv at batch 1: ship"))
    assert "ship int8_mixed on litert: 0.15 ms, -0.50 points" in ship
    assert "layers kept in float: conv1" in ship and "[plot](pareto_conv_b1.png)" in ship
    assert "x the time of the fastest" in ship  # the speed given up
    assert len(list(tmp_path.glob("pareto_*_b*.png"))) == len(NETS) * len(BATCHES)
    assert "| 1 | conv1 | conv1 | 82.50 % | 0.50 | yes |" in details


def test_where_nothing_quantized_meets_the_budget_the_best_float_option_is_named(tmp_path):
    results = _with_a_fallback(quick_study_results(), mixed_delta=-1.5)
    report.write(results, tmp_path)
    text = (tmp_path / "report.md").read_text()
    ship = next(line for line in text.splitlines()
                if line.startswith("- on the front of conv at batch 1: "))
    assert "no quantized option loses at most 1 points; the best float option: " in ship


def test_the_rounds_line_says_which_cases_ran_on_a_second_load():
    from quantlab.report import sentences

    results = quick_study_results()
    assert "loaded a second time" not in sentences.rounds_line(results)  # one load each
    timed = [case for case in results["cases"] if case.get("interleaved")]
    for case in timed:
        case["interleaved"]["loads_from"] = [0, 4]
    assert "Every case's model was loaded a second time before round 5" in sentences.rounds_line(results)
    timed[0]["interleaved"]["loads_from"] = [0]  # its second load failed
    assert (f"{len(timed) - 1} of {len(timed)} cases' model was loaded a second time before round 5"
            in sentences.rounds_line(results))


def test_latency_axes_are_labelled_in_plain_numbers_not_powers_of_ten():
    from quantlab.plots import plain_numbers, plt

    figure, (microseconds, milliseconds) = plt.subplots(1, 2)
    microseconds.plot([1, 8], [4.2, 38.0])
    milliseconds.plot([0.0095, 0.032], [0, 1])
    microseconds.set_yscale("log")
    milliseconds.set_xscale("log")
    plain_numbers(microseconds.yaxis)
    plain_numbers(milliseconds.xaxis)
    figure.canvas.draw()
    shown = [[label.get_text() for label in labels if label.get_text()]
             for labels in (microseconds.get_yticklabels(which="both"),
                            milliseconds.get_xticklabels(which="both"))]
    plt.close(figure)
    assert {"10", "20", "30"} <= set(shown[0]) and {"0.01", "0.02", "0.03"} <= set(shown[1])
    for label in shown[0] + shown[1]:
        float(label)  # "10", not "$\mathdefault{10^{1}}$"
