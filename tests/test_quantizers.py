"""The quantizers beside TFLite's per-channel int8 (issues 18 and 19): TFLite per tensor and
16x8, ONNX Runtime per tensor, OpenVINO's NNCF; and the ONNX variants of a user's ONNX model.

Each file is checked for what makes it that variant (one weight scale per tensor, int16
activations, int8 primitives), for its size against its float32 file, and for its accuracy
on real test images; the OpenVINO IR, one file read from a cache a user can write, is
refused when its lengths or constants do not fit.
"""

import struct

import numpy as np
import pytest

from conftest import quick_config
from quantlab import nets, onnx_variants, runtime, variant_table, variants
from quantlab.errors import QuantlabError
from quantlab.runtime import ir_file

NEW = ("int8_per_tensor", "int16x8", "onnx_int8_per_tensor", "openvino_int8")
SCORED = 2000  # test images, as the quick study scores
SCORED_16X8 = 200  # LiteRT runs 16x8 on its reference kernels, ~50 times slower than XNNPACK


@pytest.fixture(scope="module")
def quick(fashion):
    """{net: {variant: Artifact}}: the new variants and the ones they are compared with, of
    the quick-trained nets (the same cached files as the quick_variants fixture)."""
    wanted = ("float32", "onnx_float32", "int8", "onnx_int8", *NEW)
    return {net: variants.export(quick_config(net), variants=wanted, data=fashion)
            for net in nets.NAMES}


def top1(artifact, runtime_name, images):
    return runtime.load(artifact.path, runtime=runtime_name, threads=1,
                        sha256=artifact.sha256).predict(images, batch_size=500).argmax(axis=1)


@pytest.mark.parametrize("net", nets.NAMES)
def test_each_new_variant_is_at_least_3_5_times_smaller_than_its_float32_file(quick, net):
    for variant in NEW:
        counterpart = variant_table.float_counterpart(variant)
        ratio = quick[net][counterpart].bytes / quick[net][variant].bytes
        assert 3.5 <= ratio < 4.1, (variant, ratio)


@pytest.mark.parametrize("net", nets.NAMES)
def test_the_int8_variants_stay_within_a_point_and_a_half_of_float32(quick, fashion, net):
    images, labels = fashion.x_test[:SCORED], fashion.y_test[:SCORED]
    floats = {"litert": top1(quick[net]["float32"], "litert", images),
              "onnxruntime": top1(quick[net]["onnx_float32"], "onnxruntime", images)}
    floats["openvino"] = floats["onnxruntime"]  # the same ONNX file, as NNCF read it
    for variant in ("int8_per_tensor", "onnx_int8_per_tensor", "openvino_int8"):
        reader = variant_table.natural_reader(variant)
        classes = top1(quick[net][variant], reader, images)
        delta = 100 * (np.mean(classes == labels) - np.mean(floats[reader] == labels))
        assert abs(delta) <= 1.5, (variant, delta)
        assert np.mean(classes == floats[reader]) >= 0.96, variant


def test_16x8_computes_int16_activations_on_litert_reference_kernels_and_agrees_with_float32(
        quick, fashion):
    artifact = quick["conv"]["int16x8"]
    predictor = runtime.load(artifact.path, threads=1, sha256=artifact.sha256)
    assert predictor.precision == "int16x8"
    assert "DELEGATE" not in predictor.primitives()  # XNNPACK took none of it
    assert predictor.input_quantization is None  # float32 in, float32 out
    images = fashion.x_test[:SCORED_16X8]
    reference = runtime.load(quick["conv"]["float32"].path).predict(images)
    probabilities = predictor.predict(images)
    assert np.mean(probabilities.argmax(1) == reference.argmax(1)) >= 0.99
    assert 1e-5 < np.abs(probabilities - reference).max() < 0.05  # quantized, finely


def _weight_scales_tflite(artifact):
    """Number of scales of each convolution's or dense layer's weights."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=artifact.path.read_bytes())
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    return [len(details[op["inputs"][1]]["quantization_parameters"]["scales"])
            for op in interpreter._get_ops_details()
            if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED")]


def _weight_scales_onnx(artifact):
    """Number of scales of each int8 weight's DequantizeLinear."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_model_from_string(artifact.path.read_bytes()).graph
    stored = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    return [stored[node.input[1]].size for node in graph.node
            if node.op_type == "DequantizeLinear" and node.input[0] in stored
            and stored[node.input[0]].dtype == np.int8 and stored[node.input[0]].ndim >= 2]


def test_per_tensor_files_have_one_weight_scale_per_tensor_where_per_channel_ones_have_many(quick):
    artifacts = quick["conv"]
    for count, per_tensor, per_channel in ((_weight_scales_tflite, "int8_per_tensor", "int8"),
                                           (_weight_scales_onnx, "onnx_int8_per_tensor", "onnx_int8")):
        assert len(count(artifacts[per_tensor])) == 5  # conv's three convolutions, two dense
        assert set(count(artifacts[per_tensor])) == {1}
        assert min(count(artifacts[per_channel])) > 1


def test_nncf_file_runs_int8_primitives_on_openvino(quick):
    predictor = runtime.load(quick["medium"]["openvino_int8"].path, threads=1)
    assert predictor.precision == "int8"
    assert all(primitive.endswith(("I8", "U8")) for primitive in predictor.primitives()), \
        predictor.primitives()


def _rewritten(content, xml=None, weights=None):
    old_xml, old_weights = ir_file.unpack("x", content)
    return ir_file.pack(old_xml if xml is None else xml, old_weights if weights is None else weights)


@pytest.mark.parametrize("damage, message", [
    (lambda c: c[:len(ir_file.MAGIC) + 8] + c[-100:], "truncated"),
    (lambda c: _rewritten(c, weights=ir_file.unpack("x", c)[1][:1000]), "outside the"),
    (lambda c: _rewritten(c, xml=b'<?xml version="1.0"?><!DOCTYPE net [<!ENTITY a "aaaa">]>'
                                 + ir_file.unpack("x", c)[0].split(b"?>", 1)[1]), "DTD"),
    (lambda c: _rewritten(c, xml=ir_file.unpack("x", c)[0].replace(b"<dim>28</dim>",
                                                                   b"<dim>28000000</dim>", 1)),
     "MiB per image"),
    (lambda c: _rewritten(c, xml=ir_file.unpack("x", c)[0][:-50]), "not well-formed"),
])
def test_a_damaged_openvino_ir_is_refused_in_one_line_before_openvino_reads_it(quick, tmp_path,
                                                                               damage, message):
    path = tmp_path / "openvino_int8.ovir"
    path.write_bytes(damage(quick["conv"]["openvino_int8"].path.read_bytes()))
    with pytest.raises(QuantlabError, match=message) as raised:
        runtime.load(path)
    assert "\n" not in str(raised.value) and "export it again" in str(raised.value)


# --- a user's ONNX model --------------------------------------------------------------------

@pytest.fixture(scope="module")
def user_onnx(digits):
    """A user's ONNX model as PyTorch writes them: the digits conv net's ONNX export behind a
    Transpose, so that it takes NCHW images; and the same model with a fixed batch of 1."""
    import onnx
    from onnx import helper

    exported = variants.export(quick_config("conv", dataset="digits"), variants=("onnx_float32",),
                               data=digits)["onnx_float32"]
    model = onnx.load_model_from_string(exported.path.read_bytes())
    old = model.graph.input[0]
    nchw = helper.make_tensor_value_info("pixels", onnx.TensorProto.FLOAT, ["batch", 1, 8, 8])
    model.graph.node.insert(0, helper.make_node("Transpose", ["pixels"], [old.name], perm=[0, 2, 3, 1]))
    model.graph.input.remove(old)
    model.graph.input.append(nchw)
    dynamic = model.SerializeToString()
    for value in (model.graph.input[0], *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    calibration = variants.calibration_images(digits, 100, 0).transpose(0, 3, 1, 2)
    return dynamic, model.SerializeToString(), calibration


def test_a_users_nchw_onnx_model_gets_every_onnx_variant_each_agreeing_with_its_float32(
        user_onnx, digits):
    dynamic, _, calibration = user_onnx
    artifacts = onnx_variants.export(dynamic, calibration, name="user model/../x")
    assert set(artifacts) == set(onnx_variants.VARIANTS)
    assert artifacts["onnx_float32"].path.read_bytes() == dynamic
    assert artifacts["onnx_float32"].path.parent.parent.name == "onnx-variants"
    assert artifacts["onnx_float32"].path.parent.name.startswith("user_model_.._x-")
    images = digits.x_test[:300].transpose(0, 3, 1, 2)
    reference = top1(artifacts["onnx_float32"], "onnxruntime", images)
    for variant, artifact in artifacts.items():
        assert artifact.meta["input_shape"] == [1, 8, 8]
        assert artifact.meta["calibration_size"] == (None if variant == "onnx_float32" else 100)
        reader = variant_table.natural_reader(variant)
        assert np.mean(top1(artifact, reader, images) == reference) >= 0.95, variant


def test_a_users_onnx_variants_are_reused_unless_the_calibration_images_differ(user_onnx):
    dynamic, _, calibration = user_onnx
    said = []
    first = onnx_variants.export(dynamic, calibration, variants=("onnx_int8",), progress=said.append)
    said.clear()
    again = onnx_variants.export(dynamic, calibration, variants=("onnx_int8",), progress=said.append)
    assert said == [] and again["onnx_int8"].meta == first["onnx_int8"].meta
    other = onnx_variants.export(dynamic, calibration[:99], variants=("onnx_int8",))
    assert other["onnx_int8"].path.parent != first["onnx_int8"].path.parent


def test_a_model_with_a_fixed_batch_is_calibrated_in_batches_of_that_size(user_onnx, digits):
    _, fixed, calibration = user_onnx
    artifacts = onnx_variants.export(fixed, calibration, variants=("onnx_int8_per_tensor", "openvino_int8"))
    for artifact in artifacts.values():
        predictor = runtime.load(artifact.path, runtime=variant_table.natural_reader(artifact.variant))
        assert predictor.predict(digits.x_test[:3].transpose(0, 3, 1, 2), batch_size=1).shape == (3, 10)


def test_calibration_images_not_in_the_models_layout_are_refused_in_one_line(user_onnx):
    dynamic, _, calibration = user_onnx
    with pytest.raises(QuantlabError, match="takes images of shape 1x8x8, the calibration images "
                                            "are 8x8x1; give them in the model's layout"):
        onnx_variants.export(dynamic, calibration.transpose(0, 2, 3, 1))
    with pytest.raises(QuantlabError, match="not made from an ONNX model"):
        onnx_variants.export(dynamic, calibration, variants=("int8",))


def test_the_ir_layout_is_magic_length_graph_weights():
    packed = ir_file.pack(b"<net/>", b"\x01\x02")
    assert packed == ir_file.MAGIC + struct.pack("<Q", 6) + b"<net/>\x01\x02"
    assert ir_file.unpack("x", packed) == (b"<net/>", b"\x01\x02")
