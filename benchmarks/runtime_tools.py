"""Each runtime's own benchmark tool, run on a model file, its median (or mean) read back.

These are the yardsticks quantlab's timing is checked against: ``litert-benchmark`` (ships
with ai-edge-litert), ``benchmark_app`` (openvino) and ``onnxruntime_test`` (onnxruntime).
"""

import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np

TIMEOUT = 300


def _run(argv):
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {(done.stderr or done.stdout).strip()[-500:]}")
    return done.stdout + done.stderr


def with_batch(path, batch, folder):
    """A copy of a TFLite file whose input takes ``batch`` images: litert-benchmark runs a
    model at the batch size its file declares and cannot resize it. Only the input tensor's
    shape changes (4 bytes); every weight stays byte for byte the same."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(Path(path).read_bytes(), 0)
    graph = model.subgraphs[0]
    tensor = graph.tensors[graph.inputs[0]]
    tensor.shape = np.array([batch, *tensor.shape[1:]], dtype=np.int32)
    builder = flatbuffers.Builder(Path(path).stat().st_size + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    copy = Path(folder, f"{Path(path).stem}-b{batch}.tflite")
    copy.write_bytes(bytes(builder.Output()))
    return copy


def litert(path, batch, threads, runs=300):
    """Median seconds from litert-benchmark (it prints milliseconds with two decimals)."""
    with tempfile.TemporaryDirectory() as folder:
        model = path if batch == 1 else with_batch(path, batch, folder)
        text = _run(["litert-benchmark", "--model", str(model), "--num_threads", str(threads),
                     "--num_runs", str(runs), "--warmup_runs", "30"])
    return float(re.search(r"Inference \(median\):\s+([\d.]+) ms", text).group(1)) / 1e3


def openvino(path, batch, threads, shape, seconds=5):
    """Median seconds from benchmark_app, synchronous, as its README recommends for latency."""
    dims = ",".join(str(d) for d in (batch, *shape))
    text = _run(["benchmark_app", "-m", str(path), "-d", "CPU", "-api", "sync", "-nthreads",
                 str(threads), "-hint", "none", "-shape", f"[{dims}]", "-t", str(seconds),
                 "-infer_precision", "f32"])
    value, unit = re.search(r"Median:\s+([\d.]+) (ms|us)", text).groups()
    return float(value) / (1e3 if unit == "ms" else 1e6)


def onnxruntime(path, batch, iterations=1000):
    """Mean seconds from onnxruntime_test (it has no thread option: every core, its default)."""
    text = _run(["onnxruntime_test", str(path), str(iterations), "--symbolic_dims", f"batch={batch}"])
    return float(re.search(r"avg latency: ([\d.e-]+) ms", text).group(1)) / 1e3
