"""Malformed, crafted and oversized .tflite files, and special files given as models: each
ends in one line naming the problem (a QuantlabError; exit status 2 from the command line),
never in another exception, a crash, gigabytes allocated or a read that blocks.

The crafted files are made here from a real tiny model: decoded with LiteRT's own schema
classes, changed in one place, and written back; the fuzz test mutates its bytes.
"""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import one_line_error, quantlab
from quantlab import counters, runtime
from quantlab.counters import valgrind
from quantlab.errors import QuantlabError
from quantlab.runtime import tflite_check

# --- files made by hand from a real model ------------------------------------------------


def rewritten(path, change, folder, name):
    """``path``'s model, changed by ``change(model)`` (LiteRT's object API), as a new file."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    change(model)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    out = folder / name
    out.write_bytes(bytes(builder.Output()))
    return out


def _graph(model):
    return model.subgraphs[0]


def _input(model):
    return _graph(model).tensors[_graph(model).inputs[0]]


def _second_subgraph(model):
    model.subgraphs.append(model.subgraphs[0])


def _custom_operator(model):
    model.operatorCodes[0].builtinCode = model.operatorCodes[0].deprecatedBuiltinCode = 32
    model.operatorCodes[0].customCode = "FlexWriteFile"


def _while_loop(model):
    model.operatorCodes[0].builtinCode = model.operatorCodes[0].deprecatedBuiltinCode = 119


def _buffer_beyond_the_file(model):
    constant = next(i for i, b in enumerate(model.buffers) if b.data is not None and len(b.data))
    model.buffers[constant].data, model.buffers[constant].offset = None, 1 << 40
    model.buffers[constant].size = 1 << 20


HAND_MADE = {  # name -> (change, what the error line says)
    "no inputs": (lambda m: setattr(_graph(m), "inputs", []), "lists 0 inputs"),
    "no outputs": (lambda m: setattr(_graph(m), "outputs", []), "lists 0 outputs"),
    "two inputs": (lambda m: setattr(_graph(m), "inputs", [0, 1]), "lists 2 inputs"),
    "input out of range": (lambda m: setattr(_graph(m), "inputs", [999]), "is number 999, of"),
    "tensor name not UTF-8": (lambda m: setattr(_input(m), "name", b"\xff\xfe\xfa"),
                              "name is not UTF-8 text"),
    "bool input": (lambda m: setattr(_input(m), "type", 6), "has type BOOL"),
    "string tensor": (lambda m: setattr(_graph(m).tensors[-1], "type", 5), "has type STRING"),
    "schema version": (lambda m: setattr(m, "version", 16777219), "schema version 16777219"),
    "negative dimension": (lambda m: setattr(_input(m), "shape", [1, -8, 8, 1]),
                           "has the shape [1, -8, 8, 1]"),
    "30000 x 30000 input": (lambda m: setattr(_input(m), "shape", [1, 30000, 30000, 1]),
                            "declares 1x30000x30000x1 values (3433 MiB)"),
    "two subgraphs": (_second_subgraph, "2 subgraphs"),
    "custom operator": (_custom_operator, "custom operator 'FlexWriteFile'"),
    "control flow": (_while_loop, "is WHILE: control flow"),
    "buffer beyond the file": (_buffer_beyond_the_file, "points to bytes 1099511627776"),
    "operator code out of range": (lambda m: setattr(_graph(m).operators[0], "opcodeIndex", 77),
                                   "code is number 77"),
}


@pytest.mark.parametrize("runtime_name", ["litert", "openvino"])
@pytest.mark.parametrize("case", HAND_MADE)
def test_a_hand_made_malformed_tflite_is_refused_in_one_line_before_any_runtime_reads_it(
        tiny_models, tmp_path, case, runtime_name):
    change, message = HAND_MADE[case]
    path = rewritten(tiny_models["float32"], change, tmp_path, "crafted.tflite")
    with pytest.raises(QuantlabError) as caught:
        runtime.load(path, runtime=runtime_name).predict(np.zeros((1, 8, 8, 1), np.float32))
    assert message in str(caught.value) and str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("case", ["tensor name not UTF-8", "schema version", "input out of range"])
def test_counters_on_a_malformed_tflite_says_what_is_wrong_with_the_file_not_valgrinds_last_line(
        tiny_models, tmp_path, case):
    change, message = HAND_MADE[case]
    path = rewritten(tiny_models["int8"], change, tmp_path, "crafted.tflite")
    result = quantlab("counters", str(path), "--backend", "valgrind")
    one_line_error(result, str(path), message)
    assert "==" not in result.stderr  # nothing of valgrind's


def test_the_unchanged_rewrite_still_loads_and_predicts_as_the_original(tiny_models, tmp_path):
    """The control: rewriting alone breaks nothing, so each refusal above is the change's."""
    images = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
    for variant in ("float32", "int8"):
        same = rewritten(tiny_models[variant], lambda model: None, tmp_path, f"{variant}.tflite")
        for name in ("litert", "openvino"):
            np.testing.assert_allclose(runtime.load(same, runtime=name).predict(images),
                                       runtime.load(tiny_models[variant]).predict(images), atol=0.02)


def test_the_checker_reads_every_exported_variant_and_returns_what_the_runtime_sees(tiny_models):
    for variant in ("float32", "int8"):
        content = tiny_models[variant].read_bytes()
        found = tflite_check.check(tiny_models[variant], content)
        predictor = runtime.load(tiny_models[variant])
        assert found["input_shape"] == (1, *predictor.input_shape)
        assert found["quantization"] == (predictor.input_quantization, predictor.output_quantization)
    assert found["quantization"][0] is not None  # the int8 file's input is quantized


# --- a valid model whose input is 30000 x 30000 -----------------------------------------------

@pytest.fixture(scope="module")
def huge_input_model(tmp_path_factory):
    """A real, valid .tflite (average pooling and a dense layer) that takes 30000 x 30000
    images: converting it costs nothing, running it would take 3.4 GB per image."""
    from quantlab import variants
    from quantlab._tf import keras

    keras = keras()
    model = keras.Sequential([keras.layers.Input((30000, 30000, 1)),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    path = tmp_path_factory.mktemp("huge") / "huge_input.tflite"
    path.write_bytes(variants.tflite_converter(model, "float32", None).convert())
    return path


def load_in_a_process(path, runtime_name):
    """(the error line, peak resident KiB) of ``runtime.load(path)`` and one prediction, in a
    fresh process. The peak is VmHWM, which starts anew with the program: ru_maxrss would
    carry this test process's own peak over into the child."""
    code = ("import json, sys, numpy as np\n"
            "from quantlab import runtime\n"
            "try:\n"
            "    p = runtime.load(sys.argv[1], runtime=sys.argv[2])\n"
            "    p.predict(np.zeros((1, *p.input_shape), np.float32))\n"
            "    error = None\n"
            "except Exception as e:\n"
            "    error = f'{type(e).__name__}: {e}'\n"
            "peak = next(line for line in open('/proc/self/status') if line.startswith('VmHWM'))\n"
            "print(json.dumps([error, int(peak.split()[1])]))\n")
    child = subprocess.run([sys.executable, "-c", code, str(path), runtime_name], capture_output=True,
                           text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-2000:]
    return tuple(json.loads(child.stdout.splitlines()[-1]))


def test_a_valid_model_with_a_30000_by_30000_input_is_refused_before_any_allocation(huge_input_model):
    for name in ("litert", "openvino"):
        error, peak = load_in_a_process(huge_input_model, name)
        assert error.startswith(f"QuantlabError: {huge_input_model} is not a TFLite model quantlab runs")
        assert "declares 1x30000x30000x1 values (3433 MiB)" in error
        assert peak < 512 << 10  # KiB: running it would take 3.4 GB


def fill_model(path, rows, dims_from_input=False):
    """A valid model that declares [1, 10] everywhere but adds its input to FILL([rows, 10], 1):
    the real shapes, which LiteRT and OpenVINO work out from the constants, are rows x 10.
    ``dims_from_input``: FILL's dims are the first two pixels, cast to integers, instead."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    def tensor(name, shape, buffer, kind=schema.TensorType.FLOAT32):
        made = schema.TensorT()
        made.name, made.shape, made.type, made.buffer = name, shape, kind, buffer
        return made

    def operator(code, inputs, outputs, options_type, options):
        made = schema.OperatorT()
        made.opcodeIndex, made.inputs, made.outputs = code, inputs, outputs
        made.builtinOptionsType, made.builtinOptions = options_type, options
        return made

    codes = []
    for builtin in (schema.BuiltinOperator.FILL, schema.BuiltinOperator.ADD, schema.BuiltinOperator.CAST,
                    schema.BuiltinOperator.SLICE, schema.BuiltinOperator.RESHAPE):
        codes.append(schema.OperatorCodeT())
        codes[-1].builtinCode = codes[-1].deprecatedBuiltinCode = builtin
    graph = schema.SubGraphT()
    graph.tensors = [tensor(b"x", [1, 10], 0), tensor(b"dims", [2], 1, schema.TensorType.INT32),
                     tensor(b"one", [], 2), tensor(b"filled", [1, 10], 0), tensor(b"y", [1, 10], 0)]
    graph.inputs, graph.outputs = [0], [4]
    graph.operators = [
        operator(0, [1, 2], [3], schema.BuiltinOptions.FillOptions, schema.FillOptionsT()),
        operator(1, [0, 3], [4], schema.BuiltinOptions.AddOptions, schema.AddOptionsT())]
    buffers = [schema.BufferT(), schema.BufferT(), schema.BufferT()]
    buffers[1].data = np.array([rows, 10], np.int32).view(np.uint8)
    buffers[2].data = np.array([1.0], np.float32).view(np.uint8)
    if dims_from_input:  # dims = int(x[0, :2]): two pixels, cast and flattened
        int32 = schema.TensorType.INT32
        graph.tensors[1].buffer = 0
        graph.tensors += [tensor(b"begin", [2], 3, int32), tensor(b"size", [2], 4, int32),
                          tensor(b"pixels", [1, 2], 0), tensor(b"integers", [1, 2], 0, int32),
                          tensor(b"flat", [1], 5, int32)]
        buffers += [schema.BufferT(), schema.BufferT(), schema.BufferT()]
        for index, values in ((3, [0, 0]), (4, [1, 2]), (5, [2])):
            buffers[index].data = np.array(values, np.int32).view(np.uint8)
        graph.operators[:0] = [
            operator(3, [0, 5, 6], [7], schema.BuiltinOptions.SliceOptions, schema.SliceOptionsT()),
            operator(2, [7], [8], schema.BuiltinOptions.CastOptions, schema.CastOptionsT()),
            operator(4, [8, 9], [1], schema.BuiltinOptions.ReshapeOptions, schema.ReshapeOptionsT())]
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, codes, [graph], buffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path


def test_a_shape_taken_from_the_pixels_is_refused_since_nothing_bounds_it_before_running(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    path = fill_model(tmp_path / "from_pixels.tflite", 1, dims_from_input=True)
    bare = Interpreter(model_path=str(path))  # the control: LiteRT alone runs it
    bare.allocate_tensors()
    pixels = np.zeros((1, 10), np.float32)
    pixels[0, :2] = 3, 10
    bare.set_tensor(bare.get_input_details()[0]["index"], pixels)
    bare.invoke()
    assert bare.get_tensor(bare.get_output_details()[0]["index"]).shape == (3, 10)  # 30000: 3.6 GB
    with pytest.raises(QuantlabError, match=r"\(FILL\) takes its output's shape from values computed "
                                            r"while the model runs"):
        runtime.load(path)


def test_shapes_made_from_constants_are_bounded_before_any_runtime_fills_them(tmp_path):
    small = fill_model(tmp_path / "small.tflite", 1)
    np.testing.assert_array_equal(runtime.load(small).predict(np.zeros((1, 10), np.float32)),
                                  np.ones((1, 10)))  # the control: the model is valid and runs
    big = fill_model(tmp_path / "big.tflite", 10_000_000)  # 400 MB per tensor, 1 KB of file
    for name in ("litert", "openvino"):
        error, peak = load_in_a_process(big, name)
        assert error.startswith(f"QuantlabError: {big} takes 762 MiB for its activations at batch 1 "
                                f"once LiteRT has worked out their shapes")
        assert peak < 256 << 10  # KiB; the runtimes took 1.2 GB before


def test_counters_on_the_30000_by_30000_model_is_one_line_before_any_worker_starts(huge_input_model):
    result = quantlab("counters", str(huge_input_model), "--backend", "valgrind")
    one_line_error(result, str(huge_input_model), "more than the 256 MiB quantlab allows a tensor")


# --- the counting worker says why it failed -----------------------------------------------------

def test_counting_an_absurd_batch_is_one_line_naming_the_batch_not_numpys_memory_error(tiny_models,
                                                                                        monkeypatch):
    # refused by quantlab before valgrind starts (a TFLite file's input shape is read there) ...
    result = quantlab("counters", str(tiny_models["int8"]), "--backend", "valgrind",
                      "--batch-size", str(10 ** 12))
    one_line_error(result, "a batch of 1000000000000 images of shape 8x8x1 takes", "smaller batch")
    # (the same call in process, with valgrind's start made to fail the test)
    def started(*args, **kwargs):
        raise AssertionError("valgrind was started for a batch the file's shape rules out")

    monkeypatch.setattr(valgrind, "count_many", started)
    with pytest.raises(QuantlabError, match="a batch of 1000000000000 images"):
        counters.measure_many(tiny_models["int8"], [1, 10 ** 12], backend="valgrind")
    # ... and by the worker, where the shape is known only once the model is loaded
    with pytest.raises(QuantlabError, match="a batch of 1000000000000 images of shape 8x8x1 "
                                            "takes 2.38e[+]05 GiB, more than the 1 GiB"):
        runtime.sample_batch((8, 8, 1), 10 ** 12)


def test_a_worker_error_that_is_no_quantlab_error_still_comes_out_as_its_one_marked_line(tiny_models):
    """perf's control channel closed under the worker: an OSError, not a QuantlabError."""
    from quantlab.counters import _process, protocol

    closed = os.open(os.devnull, os.O_WRONLY)
    os.close(closed)  # a descriptor number that is no longer open
    worker = _process.worker_argv(tiny_models["int8"], batch_size=1, warmup=1, iterations=1,
                                  mode="perf", threads=1, ctl_fd=closed, ack_fd=closed)
    child = subprocess.run(worker, capture_output=True, text=True, env=_process.worker_env(),
                           timeout=300)
    assert child.returncode == protocol.ERROR_STATUS, child.stderr
    assert "Traceback" not in child.stderr
    error = _process.failure("perf", child.returncode, child.stderr, "==12== LL miss rate: 0.0%")
    assert str(error) == (f"counting {tiny_models['int8']} failed in the worker: "
                          f"OSError: [Errno 9] Bad file descriptor")


def test_an_unmarked_worker_failure_shows_the_workers_last_line_not_the_tools():
    stderr = ('Traceback (most recent call last):\n  File "x.py", line 1\n'
              'IndexError: list index out of range\n')
    log = "==3399== LL refs: 10\n==3399== LL miss rate: 0.0%\n"
    assert str(_failure(stderr, log)) == ("counting under valgrind failed (exit status 1): "
                                          "IndexError: list index out of range")
    assert str(_failure("", log)).endswith("==3399== LL miss rate: 0.0%")  # the worker said nothing


def test_a_worker_killed_from_outside_is_said_to_be_killed_not_the_logs_last_line():
    log = "==28313== For interactive control, run 'callgrind_control -h'.\n"  # valgrind's banner
    assert str(_failure("", log, status=-9)) == (
        "counting under valgrind failed: it was killed (signal SIGKILL); run it again")
    # a crash is not a kill: what the process said last is still the clue
    crashed = "==3399== Process terminating with default action of signal 11 (SIGSEGV)\n"
    assert str(_failure("", crashed, status=-11)) == (
        "counting under valgrind failed (signal SIGSEGV): ==3399== Process terminating with "
        "default action of signal 11 (SIGSEGV)")


def _failure(stderr, log, status=1):
    from quantlab.counters import _process

    return _process.failure("valgrind", status, stderr, log)


# --- the timing child says why it failed ------------------------------------------------------

def test_a_failed_timing_run_names_the_suites_own_reason_not_pytests_last_lines(tmp_path):
    import io
    from types import SimpleNamespace

    from quantlab import study
    from quantlab.progress import Progress

    config = study.StudyConfig(dataset="digits", nets=("conv",), variants=("float32",),
                               runtimes=("litert",), batch_sizes=(1,), quick=True, out=tmp_path / "out")
    gone = tmp_path / "gone" / "float32.tflite"  # removed after export, say
    artifacts = {"float32": SimpleNamespace(path=gone, sha256=None, precision=None)}
    with pytest.raises(QuantlabError) as caught:
        study.time_net(config, "conv", artifacts, ("litert",), Progress(io.StringIO(), bars=False))
    assert str(caught.value).startswith("the timing run for conv failed: argument --quantlab-artifacts")
    assert str(caught.value).endswith(f"no model file at {gone}")
    assert "rootdir" not in str(caught.value) and "\n" not in str(caught.value)


# --- special files in place of a model ---------------------------------------------------------

def special_files(folder):
    fifo = folder / "fifo.tflite"
    os.mkfifo(fifo)  # no writer: an open for reading would wait for one forever
    zero = folder / "zero.tflite"
    zero.symlink_to("/dev/zero")  # endless
    return {"a FIFO": fifo, "a device": zero, "empty (or a /proc file": Path("/proc/self/status")}


def test_special_files_are_refused_before_they_are_opened(tmp_path):
    for kind, path in special_files(tmp_path).items():
        with pytest.raises(QuantlabError, match=rf"{path} is {kind.replace('(', '.')}"):
            runtime.load(path)


def test_counters_on_a_fifo_or_dev_zero_is_one_line_and_never_blocks(tmp_path):
    for kind, path in special_files(tmp_path).items():
        result = quantlab("counters", str(path), "--backend", "valgrind")
        one_line_error(result, f"{path} is {kind}")


def test_run_with_model_on_a_fifo_or_dev_zero_is_one_line_and_never_blocks(tmp_path):
    files = special_files(tmp_path)
    for kind in ("a FIFO", "a device"):
        result = quantlab("run", "--model", str(files[kind]), "--dataset", "digits", "--quick",
                          "--out", str(tmp_path / "out"), "--counters", "off")
        one_line_error(result, f"{files[kind]} is {kind}, not a model file")


# --- mutation fuzzing ---------------------------------------------------------------------------

MUTANTS = 300  # seeded byte mutations of the tiny float32 and int8 models
OPENVINO_EVERY = 5  # every fifth mutant is also loaded by OpenVINO, whose compile costs more


def mutate(content, rng):
    """A few bytes changed the ways that break parsers: random bytes, a 32-bit field set
    to an extreme value, or a cut."""
    data = bytearray(content)
    kind = rng.random()
    if kind < 0.1:
        return bytes(data[:rng.randrange(8, len(data))])
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(data) - 4)
        if kind < 0.55:
            data[at] = rng.randrange(256)
        else:
            value = rng.choice([0, 1, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 30000])
            data[at:at + 4] = value.to_bytes(4, "little")
    return bytes(data)


def fuzz(models, folder, seed, count):
    """Run in a process of its own (see __main__ below): load and predict with each mutant,
    printing a line before it and its outcome after it, so a crash names its mutant."""
    rng = random.Random(seed)
    images = np.random.default_rng(seed).random((1, 8, 8, 1), dtype=np.float32)
    originals = [Path(m).read_bytes() for m in models]
    for case in range(count):
        content = mutate(originals[case % len(originals)], rng)
        path = Path(folder, f"mutant_{case}.tflite")
        path.write_bytes(content)
        for name in ("litert", "openvino") if case % OPENVINO_EVERY == 0 else ("litert",):
            print(json.dumps({"case": case, "runtime": name, "started": True}), flush=True)
            try:
                probabilities = runtime.load(path, runtime=name).predict(images)
                outcome = "predicted" if probabilities.shape[0] == 1 else f"shape {probabilities.shape}"
            except QuantlabError as error:
                outcome = "refused" if "\n" not in str(error) else f"multi-line: {error}"
            except Exception as error:  # the finding this test looks for
                outcome = f"{type(error).__name__}: {error}"
            print(json.dumps({"case": case, "runtime": name, "outcome": outcome}), flush=True)
        path.unlink()


def test_a_few_hundred_mutated_models_end_in_a_prediction_or_one_line_never_a_crash(tiny_models, tmp_path):
    models = [str(tiny_models["float32"]), str(tiny_models["int8"])]
    seed = 20260
    root = str(Path(__file__).parents[1])  # where conftest.py, which this module imports, is
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
    child = subprocess.run([sys.executable, __file__, str(seed), str(MUTANTS), str(tmp_path), *models],
                           capture_output=True, text=True, timeout=600, env=env)
    records = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
    last = records[-1] if records else {}
    assert child.returncode == 0, (f"the fuzzing process died (status {child.returncode}) on mutant "
                                   f"{last.get('case')} of seed {seed} on {last.get('runtime')}: "
                                   f"{child.stderr[-2000:]}")
    outcomes = [r for r in records if "outcome" in r]
    assert len(outcomes) == MUTANTS + MUTANTS // OPENVINO_EVERY
    wrong = [r for r in outcomes if r["outcome"] not in ("predicted", "refused")]
    assert not wrong, f"seed {seed}: {wrong[:5]}"
    counts = {kind: sum(r["outcome"] == kind for r in outcomes) for kind in ("predicted", "refused")}
    assert counts["predicted"] > 10 and counts["refused"] > 10, counts  # the mutants do both


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    fuzz(sys.argv[4:], sys.argv[3], int(sys.argv[1]), int(sys.argv[2]))
