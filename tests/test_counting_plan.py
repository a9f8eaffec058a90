"""Which cases of the full study are counted, by counter backend (no counting runs here)."""

from quantlab.study import StudyConfig
from quantlab.study.counting import counts_into, plan_counts, planned_cases
from quantlab.variant_table import readers

P17_ON_LITERT = {(variant, "litert", batch) for variant in ("float32", "int8")
                 for batch in (1, 16, 64)}
# At batch 1, each variant on the runtime that reads its file natively (bf16: not simulated).
OWN_RUNTIME = {("float32_tf", "tensorflow", 1), ("dynamic_int8", "litert", 1),
               ("float16", "litert", 1), ("qat_int8", "litert", 1),
               ("onnx_float32", "onnxruntime", 1), ("onnx_int8", "onnxruntime", 1)}
OTHER_RUNTIMES = {("float32", "openvino", 1), ("int8", "openvino", 1),
                  ("onnx_float32", "openvino", 1), ("onnx_int8", "openvino", 1)}


VARIANTS = ("float32", "float32_tf", "dynamic_int8", "float16", "int8", "qat_int8", "bf16",
            "onnx_float32", "onnx_int8")


def counted(backend):
    config = StudyConfig(variants=VARIANTS, threads=(1, 2))  # the full study's batch 1, 16, 64
    records = [{"variant": variant, "runtime": runtime, "batch_size": batch, "threads": threads}
               for variant in VARIANTS for runtime in readers(variant)
               for batch in config.batch_sizes for threads in config.threads]
    chosen = plan_counts(config, backend, records)
    assert all(record["not_counted"] for record in records if record not in chosen)
    return records, {(r["variant"], r["runtime"], r["batch_size"]) for r in chosen}


def test_valgrind_counts_the_p17_pair_below_batch_64_and_each_variant_on_its_own_runtime_but_tf():
    records, chosen = counted("valgrind")
    large = {("float32", "litert", 64), ("int8", "litert", 64)}
    assert chosen == P17_ON_LITERT - large | OWN_RUNTIME - {("float32_tf", "tensorflow", 1)}
    openvino = next(r for r in records if r["runtime"] == "openvino" and r["variant"] == "int8"
                    and r["batch_size"] == 1 and r["threads"] == 1)
    assert openvino["not_counted"].startswith(
        "counted under valgrind: float32 and int8 on litert at batch 1 and every batch below 64;")
    graph = next(r for r in records if r["runtime"] == "tensorflow" and r["batch_size"] == 1
                 and r["threads"] == 1)
    assert "TensorFlow's start is most of the 50 s" in graph["not_counted"]


def test_valgrind_counts_a_large_batch_of_the_pair_when_it_is_the_first():
    config = StudyConfig(variants=("float32", "int8"), batch_sizes=(64, 16), threads=(1,))
    records = [{"variant": variant, "runtime": "litert", "batch_size": batch, "threads": 1}
               for variant in ("float32", "int8") for batch in (64, 16)]
    assert len(plan_counts(config, "valgrind", records)) == 4


def test_perf_at_full_speed_counts_float32_and_int8_on_the_other_runtimes_too():
    _, chosen = counted("perf")
    assert chosen == P17_ON_LITERT | OWN_RUNTIME | OTHER_RUNTIMES | {("bf16", "openvino", 1)}


def test_counts_planned_before_timing_reach_the_timed_records_and_a_case_not_run_gets_none():
    config = StudyConfig(variants=("float32", "int8"), threads=(1, 2), batch_sizes=(1, 8))
    planned = planned_cases(config, "medium", [("float32", "litert"), ("int8", "litert"),
                                                ("int8", "openvino")])
    assert len(planned) == 3 * 2 * 2 and {p["net"] for p in planned} == {"medium"}
    chosen = plan_counts(config, "valgrind", planned)
    assert {(c["variant"], c["runtime"], c["batch_size"], c["threads"]) for c in chosen} == {
        ("float32", "litert", 1, 1), ("float32", "litert", 8, 1), ("int8", "litert", 1, 1),
        ("int8", "litert", 8, 1)}
    for case in chosen:  # as Counting.wait puts them in
        case["counters"], case["not_counted"] = {"instructions": case["batch_size"]}, None
    timed = [{"variant": "int8", "runtime": "litert", "batch_size": 8, "threads": 1, "median": 1.0},
             {"variant": "int8", "runtime": "litert", "batch_size": 8, "threads": 2, "median": 0.6},
             {"variant": "int8", "runtime": "openvino", "batch_size": 1, "threads": 1,
              "not_run": "OpenVINO could not compile it"}]
    counts_into(timed, planned)
    assert timed[0]["counters"] == {"instructions": 8} and timed[0]["not_counted"] is None
    assert timed[1]["counters"] is None and timed[1]["not_counted"] == "counted at 1 thread(s) only"
    assert "counters" not in timed[2] and timed[2]["not_run"]
