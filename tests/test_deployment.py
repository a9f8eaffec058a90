"""Deployment costs: load time, first inference and resident memory, in fresh processes.

The memory figure is checked against models whose weights are known to take 100 MiB (a
float32 TFLite fully connected layer built with LiteRT's own flatbuffer schema, and the
same layer as ONNX), loaded by the real runtimes; the report's part against records written
out by hand.
"""

import io
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from quantlab import deployment
from quantlab.errors import QuantlabError
from quantlab.progress import Progress
from quantlab.variants import Artifact

INPUTS, UNITS = 1024, 25600
WEIGHT_BYTES = INPUTS * UNITS * 4  # float32: exactly 100 MiB, 104.9 MB


def _weights(inputs=INPUTS, units=UNITS):
    # Random, not zeros: pages of zeros could be left unbacked by a runtime that maps them.
    return np.random.default_rng(0).standard_normal((inputs, units), dtype=np.float32)


def dense_tflite(path, weights):
    """A TFLite model of one FULLY_CONNECTED layer (no bias) with ``weights`` (inputs x units)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    def tensor(name, shape, buffer):
        made = schema.TensorT()
        made.name, made.shape, made.type, made.buffer = name, shape, schema.TensorType.FLOAT32, buffer
        return made

    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.FULLY_CONNECTED
    operator = schema.OperatorT()
    operator.opcodeIndex, operator.inputs, operator.outputs = 0, [0, 1, -1], [2]
    operator.builtinOptionsType = schema.BuiltinOptions.FullyConnectedOptions
    operator.builtinOptions = schema.FullyConnectedOptionsT()
    graph = schema.SubGraphT()
    # TFLite keeps fully connected weights as (outputs, inputs).
    inputs, units = weights.shape
    graph.tensors = [tensor(b"x", [1, inputs], 0), tensor(b"w", [units, inputs], 1),
                     tensor(b"y", [1, units], 0)]
    graph.inputs, graph.outputs, graph.operators = [0], [2], [operator]
    stored = schema.BufferT()
    stored.data = np.ascontiguousarray(weights.T).view(np.uint8).ravel()
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs = 3, [code], [graph]
    model.buffers = [schema.BufferT(), stored]  # buffer 0: empty, by convention
    builder = flatbuffers.Builder(weights.nbytes + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(builder.Output())
    return path


def dense_onnx(path, weights):
    """The same layer as ONNX: a MatMul by ``weights``."""
    from onnx import TensorProto, helper, numpy_helper

    inputs, units = weights.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", inputs])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", units])],
        [numpy_helper.from_array(weights, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture(scope="module")
def big_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big")
    weights = _weights()
    return {"tflite": dense_tflite(folder / "dense.tflite", weights),
            "onnx": dense_onnx(folder / "dense.onnx", weights)}


@pytest.fixture(scope="module")
def measured_big(big_models):
    """The deployment record of a big model on a runtime, measured once per module."""
    records = {}

    def measured(fmt, runtime_name):
        if (fmt, runtime_name) not in records:
            records[(fmt, runtime_name)] = deployment.measure(big_models[fmt], runtime_name, repeats=1)
        return records[(fmt, runtime_name)]
    return measured


def _finite_and_positive(record):
    for figure in ("import_seconds", "load_seconds", "steady_seconds"):
        assert math.isfinite(record[figure]) and record[figure] > 0, figure
    assert math.isfinite(record["first_inference_seconds"]) and record["first_inference_seconds"] >= 0


@pytest.mark.parametrize("fmt, runtime_name", [("tflite", "litert"), ("onnx", "onnxruntime")])
def test_a_model_of_100_mib_of_weights_holds_at_least_that_much_more_than_an_empty_process(
        big_models, measured_big, fmt, runtime_name):
    record = measured_big(fmt, runtime_name)
    assert record["format"] == fmt and record["precision"] == "float32"
    assert record["file_bytes"] == big_models[fmt].stat().st_size > WEIGHT_BYTES
    assert record["rss_after_load_bytes"] >= WEIGHT_BYTES
    # A peak can only grow; and a runtime may hold the weights a few times over (the file's
    # bytes, its packed copy), but not 20 times: a unit slip (kB taken for bytes) would.
    assert WEIGHT_BYTES <= record["rss_after_first_bytes"] <= 20 * WEIGHT_BYTES
    assert record["rss_after_first_bytes"] >= record["rss_after_load_bytes"]
    # The empty process imported the same runtime: tens of MB, never 0, never gigabytes.
    assert 10e6 < record["baseline_rss_bytes"] < 2e9
    _finite_and_positive(record)
    assert record["repeats"] == 1
    assert record["spread"]["load_seconds"] == [record["load_seconds"]] * 2


def test_a_small_model_holds_far_less_than_the_big_one(measured_big, tmp_path):
    """The figure follows the model, not the runtime: the same layer with 1/100 the weights."""
    small = dense_tflite(tmp_path / "small.tflite", _weights(INPUTS, UNITS // 100))
    record = deployment.measure(small, "litert", repeats=2)
    assert record["repeats"] == 2
    big = measured_big("tflite", "litert")
    assert big["rss_after_first_bytes"] - record["rss_after_first_bytes"] >= 0.99 * WEIGHT_BYTES
    for figure in deployment.FIGURES:
        low, high = record["spread"][figure]
        assert low <= record[figure] <= high, figure
    _finite_and_positive(record)


def _artifact(variant, path):
    from quantlab import cache

    return Artifact(variant, path, {"bytes": path.stat().st_size, "sha256": cache.sha256_of(path)})


def test_a_model_that_fails_to_load_is_one_line_naming_it(tmp_path):
    good = dense_tflite(tmp_path / "good.tflite", _weights(64, 10))
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(good.read_bytes()[:200])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is no model")
    fifo = tmp_path / "fifo.tflite"
    os.mkfifo(fifo)  # opening it to read would wait for a writer forever
    for path, runtime_name, reason in [(truncated, "litert", "truncated or corrupt"),
                                       (garbage, "onnxruntime", "is not a TFLite model"),
                                       (tmp_path / "missing.tflite", "litert", "no model file at"),
                                       (fifo, "litert", "is a FIFO, not a model file"),
                                       (tmp_path, "litert", "is a folder, not a model file")]:
        with pytest.raises(QuantlabError) as raised:
            deployment.measure(path, runtime_name, repeats=1)
        message = str(raised.value)
        assert "\n" not in message and reason in message and path.name in message, message
    with pytest.raises(QuantlabError, match="onnxruntime cannot run .*tflite model"):
        deployment.measure(good, "onnxruntime", repeats=1)
    with pytest.raises(QuantlabError, match="unknown runtime 'tflm'"):
        deployment.measure(good, "tflm")
    with pytest.raises(QuantlabError, match="repeats must be at least 1"):
        deployment.measure(good, "litert", repeats=0)


def _with_custom_operator(path):
    """The small ONNX layer with an operator of a custom domain after it, which quantlab's
    check refuses (a runtime would look for it in a library of custom operators)."""
    import onnx
    from onnx import helper

    model = onnx.load_model_from_string(path.read_bytes())
    model.graph.node[0].output[0] = "logits"
    model.graph.node.append(helper.make_node("StealFiles", ["logits"], ["y"],
                                             domain="com.example.ops"))
    model.opset_import.append(helper.make_opsetid("com.example.ops", 1))
    path.write_bytes(model.SerializeToString())
    return path


def _fresh(arguments, show="", cwd=None):
    """Status, stdout and stderr of ``python -m quantlab.deployment ARGUMENTS`` run as main()
    in a fresh process, then ``show`` (Python code) run in it."""
    code = ("import sys\nfrom quantlab import deployment\n"
            f"status = deployment.main({[str(a) for a in arguments]!r})\n{show}\n"
            "sys.exit(status)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=cwd)
    return done.returncode, done.stdout, done.stderr


def test_the_fresh_process_loads_the_checked_bytes_without_quantlabs_checks(tmp_path):
    """The study checks a file once; its fresh processes then load exactly those bytes the
    way a deployment does: no check timed as loading, no onnx package imported with the
    runtime (most of a second of every process)."""
    from quantlab import cache

    small = dense_onnx(tmp_path / "small.onnx", _weights(64, 10))
    digest = cache.sha256_of(small)
    status, out, err = _fresh([small, "--runtime", "onnxruntime", "--format", "onnx",
                               "--sha256", digest, "--checked"],
                              "print('onnx imported:', 'onnx' in sys.modules)", tmp_path)
    assert status == 0, err
    assert "onnx imported: False" in out and '"precision": "float32"' in out
    # A file quantlab refuses is refused by the study's process, before any fresh one loads it.
    crafted = _with_custom_operator(dense_onnx(tmp_path / "crafted.onnx", _weights(64, 10)))
    with pytest.raises(QuantlabError, match="uses operator 'StealFiles' of domain") as raised:
        deployment.measure(crafted, "onnxruntime", repeats=1)
    assert "\n" not in str(raised.value)
    # Vouching covers those bytes only: the crafted file under the good file's digest is not
    # loaded unchecked, and --checked names the bytes it vouches for.
    status, _, err = _fresh([crafted, "--runtime", "onnxruntime", "--format", "onnx",
                             "--sha256", digest, "--checked"], cwd=tmp_path)
    assert status == 2 and "changed since it was exported" in err
    status, _, err = _fresh([crafted, "--runtime", "onnxruntime", "--checked"], cwd=tmp_path)
    assert status == 2 and "--checked needs --sha256" in err


def test_measure_net_gives_a_record_per_pair_and_the_reason_for_one_that_cannot_load(tmp_path):
    good = dense_tflite(tmp_path / "float32.tflite", _weights(64, 10))
    changed = _artifact("int8", dense_tflite(tmp_path / "int8.tflite", _weights(64, 10)))
    changed.path.write_bytes(changed.path.read_bytes()[:-8] + bytes(8))  # after its sha256
    lines = io.StringIO()
    artifacts = {"float32": _artifact("float32", good), "int8": changed}
    pairs = [("float32", "litert"), ("float32", "openvino"), ("int8", "litert")]
    records = deployment.measure_net("tiny", artifacts, pairs, threads=1,
                                     progress=Progress(lines, bars=False), repeats=1)
    assert [(r["net"], r["variant"], r["runtime"]) for r in records] == [
        ("tiny", "float32", "litert"), ("tiny", "float32", "openvino"), ("tiny", "int8", "litert")]
    for record in records[:2]:
        assert record["file_bytes"] == good.stat().st_size and record["threads"] == 1
        _finite_and_positive(record)
    assert "changed since it was exported" in records[2]["not_run"]
    assert "load_seconds" not in records[2]
    assert "tiny: deployment costs" in lines.getvalue()


def test_figures_are_the_median_and_range_of_the_processes_above_the_empty_one():
    samples = [{"import_seconds": i, "load_seconds": load, "first_inference_seconds": first,
                "steady_seconds": steady, "peak_after_load_bytes": after_load,
                "peak_after_first_bytes": after_first, "peak_reset": True, "format": "tflite",
                "precision": "int8", "threads": 1, "batch_size": 1}
               for i, load, first, steady, after_load, after_first in [
                   (0.1, 1.0, 0.5, 0.01, 300e6, 320e6), (0.3, 3.0, 0.4, 0.03, 310e6, 330e6),
                   (0.2, 2.0, 0.6, 0.02, 305e6, 325e6)]]
    record = deployment.summarize(samples, {"peak_bytes": 100e6, "peak_reset": True})
    assert record["load_seconds"] == 2.0 and record["spread"]["load_seconds"] == [1.0, 3.0]
    assert record["first_inference_seconds"] == 0.5 and record["steady_seconds"] == 0.02
    assert record["import_seconds"] == 0.2 and record["spread"]["import_seconds"] == [0.1, 0.3]
    assert record["rss_after_load_bytes"] == 205e6
    assert record["spread"]["rss_after_load_bytes"] == [200e6, 210e6]
    assert record["rss_after_first_bytes"] == 225e6 and record["baseline_rss_bytes"] == 100e6
    assert record["repeats"] == 3 and record["peak_reset"] and record["precision"] == "int8"
    unreset = deployment.summarize(samples, {"peak_bytes": 100e6, "peak_reset": False})
    assert not unreset["peak_reset"]


RECORDS = [
    {"net": "dense", "variant": "int8", "runtime": "litert", "file_bytes": 3_794_600,
     "import_seconds": 0.04, "load_seconds": 0.03, "first_inference_seconds": 0.00027,
     "steady_seconds": 0.00012, "rss_after_load_bytes": 10.2e6, "rss_after_first_bytes": 13.6e6,
     "baseline_rss_bytes": 54.7e6, "repeats": 3, "peak_reset": True, "format": "tflite",
     "spread": {"import_seconds": [0.04, 0.04], "load_seconds": [0.027, 0.033],
                "first_inference_seconds": [0.00025, 0.00035], "steady_seconds": [0.00012, 0.00012],
                "rss_after_load_bytes": [10.0e6, 10.4e6], "rss_after_first_bytes": [13.6e6, 13.6e6]}},
    {"net": "dense", "variant": "float32", "runtime": "openvino", "file_bytes": 14_996_048,
     "import_seconds": 0.36, "load_seconds": 0.81, "first_inference_seconds": 0.0169,
     "steady_seconds": 0.0005, "rss_after_load_bytes": 112.4e6, "rss_after_first_bytes": 120.4e6,
     "baseline_rss_bytes": 81.6e6, "repeats": 1, "peak_reset": True, "format": "tflite",
     "spread": {figure: [0, 0] for figure in deployment.FIGURES}},
    {"net": "dense", "variant": "bf16", "runtime": "openvino", "not_run": "no bf16 here"},
]


def test_the_note_for_what_to_ship():
    note = deployment.deployment_note
    assert note(RECORDS[1]) == "loads in 0.81 s, first inference 17 ms, 120 MB resident"
    assert note(RECORDS[0]) == "loads in 30 ms, first inference 270 µs, 14 MB resident"
    assert note({**RECORDS[1], "load_seconds": 12.3}).startswith("loads in 12 s,")
    assert note(RECORDS[2]) is None


def test_the_table_gives_every_pair_with_its_spread_and_how_memory_was_read():
    text = deployment.deployment_table({"deployment": RECORDS})
    lines = text.splitlines()
    assert lines[0] == ("| network | variant | runtime | file | runtime import | load "
                        "| first inference | steady inference | resident after load "
                        "| after first inference |")
    assert lines[2] == ("| dense | int8 | litert | 3.79 MB | 40.000 ms ±0 % | 30.000 ms ±10 % "
                        "| 270.0 µs ±19 % | 120.0 µs ±0 % | 10.20 MB ±2 % | 13.60 MB ±0 % |")
    assert lines[3] == ("| dense | float32 | openvino | 15.00 MB | 360.000 ms | 810.000 ms "
                        "| 16.900 ms | 500.0 µs | 112.40 MB | 120.40 MB |")
    assert lines[4] == "| dense | bf16 | openvino |" + " failed |" * 7
    assert lines[6] == ("Median of 1/3 fresh processes each, ± half their range. Resident memory "
                        "is the peak since just before loading (VmHWM), above an empty process "
                        "that imported the same runtime: litert 55 MB, openvino 82 MB.")
    unreset = deployment.deployment_table({"deployment": [{**RECORDS[0], "peak_reset": False}]})
    assert "the peak since the process started (resetting it was not permitted)" in unreset
    assert "\n\nOne fresh process each. Resident" in deployment.deployment_table(
        {"deployment": RECORDS[1:]})
    assert deployment.deployment_table({"deployment": RECORDS[2:]}).count("\n") == 2
    onnx = {**RECORDS[1], "variant": "onnx_float32", "format": "onnx", "baseline_rss_bytes": 85.1e6}
    assert deployment.deployment_table({"deployment": RECORDS + [onnx]}).endswith(
        "litert 55 MB, openvino 82 MB (tflite), openvino 85 MB (onnx).")
    other = {**RECORDS[1], "net": "conv"}
    assert deployment.deployment_table({"deployment": RECORDS + [other]}, net="dense") == text
    assert deployment.deployment_table({"deployment": RECORDS + [other]}, net="conv").count("\n") == 4
