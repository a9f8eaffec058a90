"""What scoring accuracy and measuring deployments cost, without changing what they give:
evaluation loads each model for the batch it runs (OpenVINO compiles per batch size) and runs
it on one thread, and the deployment baseline is read in the first measuring process, not in
a process of its own."""

import hashlib
from types import SimpleNamespace

import numpy as np
import pytest

from quantlab import deployment, evaluate, runtime
from quantlab.variants import Artifact


def small_onnx(path):
    """A 4x4x1 image classifier of 3 classes: Flatten, MatMul, Softmax (random weights)."""
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).standard_normal((16, 3), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["l"]),
         helper.make_node("Softmax", ["l"], ["y"])], "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 4, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(weights, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    content = path.read_bytes()
    return Artifact("onnx_float32", path, {"format": "onnx", "bytes": len(content),
                                           "sha256": hashlib.sha256(content).hexdigest(),
                                           "execute_in": None, "file": path.name})


@pytest.mark.parametrize("runtime_name", ["openvino", "onnxruntime"])
def test_evaluation_scores_what_a_default_load_predicts(tmp_path, runtime_name):
    """Loaded for the evaluation batch and run on one thread, the probabilities are those of
    a model loaded for batch 1 on the runtime's default threads, bit for bit."""
    artifact = small_onnx(tmp_path / "small.onnx")
    x = np.random.default_rng(1).random((10, 4, 4, 1), dtype=np.float32)
    data = SimpleNamespace(x_test=x, y_test=None, record=None)
    # Batches of 4, 4 and 2: the last one is a second compiled shape, as before.
    scored, _ = evaluate.predictions(artifact, data, runtime_name, batch_size=4)
    default = runtime.load(artifact.path, runtime=runtime_name).predict(x, batch_size=4)
    assert np.array_equal(scored, default)
    assert scored.shape == (10, 3) and np.allclose(scored.sum(axis=1), 1, atol=1e-5)


def test_the_baseline_read_before_loading_is_what_an_empty_process_reads(tmp_path):
    artifact = small_onnx(tmp_path / "small.onnx")
    sample = deployment._fresh_process(
        [str(artifact.path), "--runtime", "onnxruntime", "--format", "onnx"], "measuring")
    reading = sample["empty"]  # read in the measuring process, just before it loads
    assert reading["runtime"] == "onnxruntime" and reading["format"] == "onnx"
    assert reading["import_seconds"] == sample["import_seconds"]
    assert reading["peak_bytes"] <= sample["peak_after_load_bytes"]
    deployment._baselines.clear()
    empty = deployment.baseline("onnxruntime", "onnx")  # a fresh empty process of its own
    # Both imported the same runtime and nothing else: the same tens of MB, within 3 MB.
    assert 10e6 < empty["peak_bytes"] < 2e9
    assert abs(empty["peak_bytes"] - reading["peak_bytes"]) < 3e6
    deployment._baselines.clear()
    record = deployment.measure(artifact.path, "onnxruntime", repeats=1)
    kept = deployment._baselines[("onnxruntime", "onnx")]
    assert record["baseline_rss_bytes"] == kept["peak_bytes"]
    assert abs(kept["peak_bytes"] - reading["peak_bytes"]) < 3e6
    deployment._baselines.clear()
