"""Each runtime's own benchmark tool, run on a model file, its median (or mean) read back.

These are the yardsticks quantlab's timing is checked against: ``litert-benchmark`` (ships
with ai-edge-litert), ``benchmark_app`` (openvino) and ``onnxruntime_test`` (onnxruntime).
Each is looked for beside the Python that runs quantlab (the environment's ``bin``), then
on ``PATH``.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

TIMEOUT = 300
PACKAGES = {"litert-benchmark": "ai-edge-litert", "benchmark_app": "openvino",
            "onnxruntime_test": "onnxruntime"}


class MissingTool(Exception):
    """A runtime's benchmark tool is not installed where quantlab runs: one line with the fix."""


def find(name):
    """The path of tool ``name``: beside this Python (a venv run without activating it has
    its tools there, not on PATH), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    raise MissingTool(f"{name} not found beside {sys.executable} nor on PATH; it comes with "
                      f"{PACKAGES[name]}: pip install {PACKAGES[name]} into this environment")


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


def litert(path, threads, runs=300):
    """Median seconds from litert-benchmark (it prints milliseconds with two decimals); the
    file's own batch size (see ``with_batch``)."""
    text = _run([find("litert-benchmark"), "--model", str(path), "--num_threads", str(threads),
                 "--num_runs", str(runs), "--warmup_runs", "10"])
    return float(re.search(r"Inference \(median\):\s+([\d.]+) ms", text).group(1)) / 1e3


def openvino(path, batch, threads, shape, runs=300):
    """Median seconds from benchmark_app, synchronous, as its README recommends for latency."""
    dims = ",".join(str(d) for d in (batch, *shape))
    text = _run([find("benchmark_app"), "-m", str(path), "-d", "CPU", "-api", "sync", "-nthreads",
                 str(threads), "-hint", "none", "-shape", f"[{dims}]", "-niter", str(runs),
                 "-infer_precision", "f32"])
    value, unit = re.search(r"Median:\s+([\d.]+) (ms|us)", text).groups()
    return float(value) / (1e3 if unit == "ms" else 1e6)


def onnxruntime(path, batch, runs=300):
    """Mean seconds from onnxruntime_test (it has no thread option: every core, its default)."""
    text = _run([find("onnxruntime_test"), str(path), str(runs), "--symbolic_dims", f"batch={batch}"])
    return float(re.search(r"avg latency: ([\d.e-]+) ms", text).group(1)) / 1e3
