"""The table of variants against the files export really writes: each file is in the format
the table says (read from its own bytes), and runs on every runtime the table names for it
and on no other."""

import numpy as np
import pytest

from conftest import quick_config
from quantlab import machine, runtime, variant_table, variants
from quantlab.defaults import RUNTIMES
from quantlab.errors import QuantlabError


@pytest.fixture(scope="module")
def exported(digits):
    """Every variant of the conv net on digits (the net test_recipes and test_reuse train)."""
    return variants.export(quick_config("conv", dataset="digits"), data=digits)


def format_from_bytes(content):
    """The format, told apart by parsing rather than by the first bytes alone (an ONNX
    ModelProto and a GraphDef are both protobufs)."""
    if content[4:8] == b"TFL3":  # a TFLite flatbuffer's file identifier
        return "tflite"
    if content.startswith(b"QLOVIR1\n"):  # an OpenVINO IR: its XML, then its weights
        import struct
        import xml.etree.ElementTree as ElementTree

        (length,) = struct.unpack_from("<Q", content, 8)
        return "openvino" if ElementTree.fromstring(content[16:16 + length]).tag == "net" else None
    import onnx

    from quantlab._tf import tf

    try:
        model = onnx.load_model_from_string(content)
        if model.ir_version and model.graph.node:
            return "onnx"
    except Exception:  # not an ONNX model: one of the protobufs that fail to parse as one
        pass
    graph = tf().compat.v1.GraphDef.FromString(content)
    return "graphdef" if graph.node else None


@pytest.mark.parametrize("variant", variant_table.VARIANTS)
def test_each_file_is_in_the_format_and_under_the_name_the_table_gives(exported, variant):
    artifact = exported[variant]
    assert artifact.path.name == variant_table.file_name(variant)
    assert format_from_bytes(artifact.path.read_bytes()) == variant_table.file_format(variant)
    assert artifact.precision == variant_table.executed_in(variant)


@pytest.mark.parametrize("variant", variant_table.VARIANTS)
def test_each_file_runs_on_the_runtimes_the_table_names_and_on_no_other(exported, digits, variant):
    artifact = exported[variant]
    cpu = machine.cpu_info()
    readers = variant_table.readers_on(variant, cpu)
    if variant_table.TABLE[variant].needs is None:
        assert readers == variant_table.readers(variant)
    for name in readers:
        predictor = runtime.load(artifact.path, runtime=name, precision=artifact.precision,
                                 sha256=artifact.sha256)
        probabilities = predictor.predict(digits.x_test[:8])
        assert probabilities.shape == (8, digits.num_classes)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=0.02)
        if artifact.precision:
            assert predictor.precision == artifact.precision
    if variant_table.source_variant(variant) == variant:  # a file of its own: others refuse it
        for name in set(RUNTIMES) - set(variant_table.runtimes_reading(artifact.meta["format"])):
            with pytest.raises(QuantlabError, match=f"{name} cannot run"):
                runtime.load(artifact.path, runtime=name)


def test_a_runtime_given_no_name_is_the_natural_reader_of_the_format():
    for variant in variant_table.VARIANTS:
        assert variant_table.natural_reader(variant) in variant_table.runtimes_reading(
            variant_table.file_format(variant))
    assert variant_table.runtimes_reading("safetensors") == ()


@pytest.mark.parametrize("variant", variant_table.VARIANTS)
def test_each_variant_is_compared_with_a_float32_file_of_its_format_on_each_of_its_runtimes(variant):
    counterpart = variant_table.float_counterpart(variant)
    assert not variant_table.quantized(counterpart)
    assert variant_table.TABLE[counterpart].weights == "float32"
    # NNCF quantizes the ONNX float32 file as OpenVINO reads it: that file is its counterpart.
    own = variant_table.file_format(variant)
    made_from = "onnx" if own == "openvino" else own
    assert variant_table.file_format(counterpart) == made_from
    assert set(variant_table.readers(variant)) <= set(variant_table.readers(counterpart))


def test_bf16_runs_only_where_the_cpu_multiplies_bfloat16():
    cpu = machine.cpu_info()
    with_bf16 = {**cpu, "flags": {**cpu["flags"], "avx512_bf16": True, "avx512f": True}}
    without = {**cpu, "flags": {flag: False for flag in cpu["flags"]}}
    assert variant_table.readers_on("bf16", with_bf16) == ("openvino",)
    assert variant_table.readers_on("bf16", without) == ()
    assert variant_table.readers_on("float32", without) == ("litert", "openvino")


def test_the_new_quantizers_are_calibrated_and_run_where_their_arithmetic_runs():
    for variant in ("int8_per_tensor", "int16x8", "onnx_int8_per_tensor", "openvino_int8"):
        assert variant_table.calibrated(variant) and variant_table.quantized(variant)
    # OpenVINO reads a 16x8 file but computes it in float32: not the variant's arithmetic.
    assert variant_table.readers("int16x8") == ("litert",)
    assert variant_table.readers("openvino_int8") == ("openvino",)
    assert variant_table.file_name("openvino_int8") == "openvino_int8.ovir"
    assert not variant_table.calibrated("dynamic_int8")


def test_an_openvino_ir_is_one_file_read_only_by_openvino(exported, digits):
    artifact = exported["openvino_int8"]
    content = artifact.path.read_bytes()
    assert runtime.format_of(content) == "openvino"
    predictor = runtime.load(artifact.path, sha256=artifact.sha256)
    assert predictor.runtime == "openvino" and predictor.precision == "int8"
    float_predictor = runtime.load(exported["onnx_float32"].path, runtime="openvino")
    agreement = np.mean(predictor.predict(digits.x_test[:200]).argmax(1)
                        == float_predictor.predict(digits.x_test[:200]).argmax(1))
    assert agreement >= 0.95
