"""quantlab's timing of each runtime against the runtime's own benchmark tool, same file.

    pytest benchmarks/test_runtime_tools.py --benchmark-columns=median

One net (dense: its batch-1 latencies are long enough for litert-benchmark's 10 µs
resolution), its float and int8 files, batch 1 and 64. LiteRT and OpenVINO on one thread;
ONNX Runtime on every core, because onnxruntime_test has no thread setting. The ratio is
in each case's extra_info and must stay within 10 %.
"""

import os

import pytest

import runtime_tools
from quantlab import runtime

NET = "dense"
CASES = [(name, variant, batch) for batch in (1, 64) for name, variant in
         (("litert", "float32"), ("litert", "int8"), ("openvino", "float32"), ("openvino", "int8"),
          ("onnxruntime", "onnx_float32"), ("onnxruntime", "onnx_int8"))]


@pytest.mark.parametrize("runtime_name, variant, batch", CASES,
                         ids=[f"{NET}-{v}-{r}-b{b}" for r, v, b in CASES])
def test_quantlab_times_each_runtime_within_10_percent_of_its_own_tool(
        benchmark, quantlab_artifacts, runtime_name, variant, batch):
    model = quantlab_artifacts.model(NET, variant)
    threads = len(os.sched_getaffinity(0)) if runtime_name == "onnxruntime" else 1
    predictor = runtime.load(model.path, runtime=runtime_name, threads=threads, sha256=model.sha256)
    prepared = predictor.prepare(runtime.sample_batch(predictor.input_shape, batch))
    benchmark.group = f"tools-{runtime_name}-b{batch}"
    benchmark(predictor.run, prepared)
    if benchmark.stats is None:  # --benchmark-disable: nothing was timed, nothing to compare
        return
    if runtime_name == "litert":
        tool = runtime_tools.litert(model.path, batch, threads)
    elif runtime_name == "openvino":
        tool = runtime_tools.openvino(model.path, batch, threads, predictor.input_shape)
    else:
        tool = runtime_tools.onnxruntime(model.path, batch)
    ours = benchmark.stats.stats.median
    benchmark.extra_info.update(runtime=runtime_name, variant=variant, batch_size=batch,
                                threads=threads, tool_seconds=tool, ratio=ours / tool)
    assert 0.9 <= ours / tool <= 1.1, f"quantlab {ours * 1e6:.1f} µs, tool {tool * 1e6:.1f} µs"
