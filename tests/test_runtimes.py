"""One set of weights through LiteRT, OpenVINO and ONNX Runtime: real runs on real data."""

import os
import subprocess
import sys

import numpy as np
import pytest

from quantlab import evaluate, machine, nets, runtime
from quantlab.errors import QuantlabError
from conftest import QAT_NETS, one_line_error, quantlab

pytestmark = pytest.mark.fashion_mnist

# Test images, as the quick study scores: a one-in-a-thousand disagreement or a point and a
# half of accuracy shows on these as on all 10 000, at a fifth of the runs of every runtime.
SCORED = 2000


@pytest.fixture(scope="module")
def probabilities(quick_variants, fashion):
    """Class probabilities of (net, variant, runtime) on the first SCORED test images, on
    demand."""
    done = {}

    def get(net, variant, runtime_name):
        key = (net, variant, runtime_name)
        if key not in done:
            done[key] = evaluate.predictions(quick_variants[net][variant], fashion, runtime_name,
                                             images=SCORED)[0]
        return done[key]

    return get


@pytest.mark.parametrize("net, variant", [*((net, "int8") for net in nets.NAMES),
                                          *((net, "qat_int8") for net in QAT_NETS)])
def test_one_int8_file_run_by_litert_and_openvino_agrees_on_at_least_999_in_1000_test_images(
        probabilities, net, variant):
    litert, openvino = probabilities(net, variant, "litert"), probabilities(net, variant, "openvino")
    assert np.mean(litert.argmax(1) == openvino.argmax(1)) >= 0.999
    assert np.max(np.abs(litert - openvino)) <= 8 / 256  # a few output steps of 1/256 at most


@pytest.mark.parametrize("net", nets.NAMES)
def test_the_onnx_export_agrees_with_tflite_float32_to_1e_5(probabilities, net):
    np.testing.assert_allclose(probabilities(net, "onnx_float32", "onnxruntime"),
                               probabilities(net, "float32", "litert"), atol=1e-5)


@pytest.mark.parametrize("net", nets.NAMES)
def test_openvino_runs_float32_in_float32_and_agrees_with_litert(quick_variants, probabilities, net):
    assert runtime.load(quick_variants[net]["float32"].path, runtime="openvino").precision == "float32"
    np.testing.assert_allclose(probabilities(net, "float32", "openvino"),
                               probabilities(net, "float32", "litert"), atol=1e-4)


@pytest.mark.parametrize("net", nets.NAMES)
def test_onnx_runtimes_int8_stays_within_the_tolerance_of_the_tflite_int8(probabilities, fashion, net):
    reference = probabilities(net, "float32", "litert").argmax(1)
    labels = fashion.y_test[:SCORED]
    accuracy = np.mean(reference == labels)
    for variant, runtime_name in (("int8", "litert"), ("onnx_int8", "onnxruntime"), ("onnx_int8", "openvino")):
        probs = probabilities(net, variant, runtime_name)
        delta_points = 100 * (np.mean(probs.argmax(1) == labels) - accuracy)
        assert abs(delta_points) <= 1.5, (variant, runtime_name, delta_points)
        assert np.mean(probs.argmax(1) == reference) >= 0.97
        # really quantized: an int8 file that gave float32's exact outputs would be a mix-up
        assert np.max(np.abs(probs - probabilities(net, "float32", "litert"))) > 1e-3


def test_bf16_runs_the_float32_file_in_bfloat16_on_openvino(quick_variants, probabilities):
    artifact = quick_variants["medium"]["bf16"]
    assert artifact.path == quick_variants["medium"]["float32"].path
    if not machine.has_bf16():  # a CPU without it: refused in one line, never run in float32
        with pytest.raises(QuantlabError, match="no bfloat16 arithmetic"):
            runtime.load(artifact.path, runtime="openvino", precision=artifact.precision)
        return
    predictor = runtime.load(artifact.path, runtime="openvino", precision=artifact.precision)
    assert predictor.precision == "bf16"
    assert all(primitive.endswith("bf16") for primitive in predictor.primitives())
    bf16, float32 = probabilities("medium", "bf16", "openvino"), probabilities("medium", "float32", "litert")
    assert np.mean(bf16.argmax(1) == float32.argmax(1)) >= 0.99
    assert np.max(np.abs(bf16 - float32)) > 1e-4  # bfloat16 keeps 8 bits of mantissa


def test_each_runtime_names_the_precision_and_the_kernels_it_chose(quick_variants):
    medium = quick_variants["medium"]
    openvino = runtime.load(medium["int8"].path, runtime="openvino")
    assert openvino.precision == "int8"
    assert any(name.lower().endswith("_i8") for name in openvino.primitives())
    onnx = runtime.load(medium["onnx_int8"].path)
    assert onnx.runtime == "onnxruntime" and onnx.precision == "int8"
    assert {"QLinearConv", "QLinearMatMul"} & set(onnx.primitives())
    assert runtime.load(medium["onnx_float32"].path).precision == "float32"
    assert runtime.load(medium["int8"].path).precision == "int8"


def test_openvino_and_onnx_runtime_report_their_own_per_layer_times(quick_variants):
    medium = quick_variants["medium"]
    for path, runtime_name, profile in ((medium["int8"].path, "openvino", "layer_profile"),
                                        (medium["onnx_int8"].path, "onnxruntime", "node_profile")):
        predictor = runtime.load(path, runtime=runtime_name, threads=1)
        prepared = predictor.prepare(runtime.sample_batch(predictor.input_shape, 4))
        rows = getattr(predictor, profile)(prepared, runs=5)
        assert rows and sum(row["share"] for row in rows) == pytest.approx(1.0)
        assert all(row["seconds"] >= 0 for row in rows)
        assert any(row["type"] in ("Convolution", "QLinearConv", "Conv") for row in rows)


def test_a_runtime_asked_for_a_format_it_does_not_read_says_which_ones_do(quick_variants):
    with pytest.raises(QuantlabError, match="litert cannot run .*onnx model: use onnxruntime or openvino"):
        runtime.load(quick_variants["medium"]["onnx_int8"].path, runtime="litert")
    with pytest.raises(QuantlabError, match="onnxruntime cannot run .*tflite model"):
        runtime.load(quick_variants["medium"]["int8"].path, runtime="onnxruntime")


def test_an_onnx_model_that_points_at_another_file_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(4, dtype=np.float32).tobytes())
    weights = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4])
    weights.data_location = TensorProto.EXTERNAL
    weights.external_data.add(key="location", value=str(secret))
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [weights])
    path = tmp_path / "external.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    for name in ("onnxruntime", "openvino"):
        with pytest.raises(QuantlabError, match="stored in another file"):
            runtime.load(path, runtime=name)
    custom = helper.make_graph([helper.make_node("Evil", ["x"], ["y"], domain="com.example")], "g",
                               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    path.write_bytes(helper.make_model(custom).SerializeToString())
    with pytest.raises(QuantlabError, match="domain 'com.example'"):
        runtime.load(path)
    assert onnx.load(str(path)).graph.node[0].op_type == "Evil"  # the file itself was fine ONNX


def test_a_runtime_that_cannot_load_here_is_one_line_and_exit_status_2(tmp_path):
    broken = tmp_path / "openvino"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('libopenvino.so.2631: cannot open shared object file')\n")
    result = quantlab("run", "--runtimes", "openvino,litert", "--dataset", "digits", "--quick",
                      "--out", str(tmp_path / "out"),
                      env={"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])})
    line = one_line_error(result, "runtime openvino cannot load on this machine", "libopenvino.so")
    assert "--runtimes" in line
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_onnx_runtime_and_openvino_run_under_the_benchmark_suite_with_their_runtime_in_the_id(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "quantlab.latency_suite", "-q",
                          "--collect-only", "--quantlab-nets=medium", "--quantlab-variants=int8,onnx_int8",
                          "--quantlab-batch-sizes=1", "-p", "no:cacheprovider"],
                         cwd=tmp_path, capture_output=True, text=True)
    ids = sorted(line.split("[")[1].rstrip("]") for line in out.stdout.splitlines() if "[" in line)
    assert ids == ["medium-int8-litert-b1", "medium-int8-openvino-b1", "medium-onnx_int8-onnxruntime-b1",
                   "medium-onnx_int8-openvino-b1"], out.stdout + out.stderr
