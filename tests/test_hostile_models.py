"""ONNX models crafted to read files they were not given or to take all memory are refused
with one line, before any runtime sees them.

Each model is built here with onnx.helper: a small classifier (8x8x1 image -> 10
probabilities) with the hostile part attached. Where a hostile part is real, plain ONNX
Runtime shows it: it reads the planted file, or fails to allocate within 3 GiB.
"""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantlab import runtime
from quantlab.errors import QuantlabError
from quantlab.runtime import onnx_check
from conftest import one_line_error, quantlab, within_3_gib

SIDE = 34000  # a SIDE x SIDE float32 tensor takes 4.3 GiB


def const(name, values, dtype=np.int64):
    return numpy_helper.from_array(np.asarray(values, dtype), name)


def classifier(*extra_nodes, initializers=(), add=None, sparse=()):
    """image -> flatten -> MatMul -> (+ ``add``) -> softmax; ``extra_nodes`` run before the add."""
    nodes = [helper.make_node("Reshape", ["image", "flat_shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "weights"], ["logits"]), *extra_nodes]
    if add:
        nodes.append(helper.make_node("Add", ["logits", add], ["scores"]))
    nodes.append(helper.make_node("Softmax", ["scores" if add else "logits"], ["probabilities"]))
    graph = helper.make_graph(
        nodes, "classifier",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 8, 8, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        initializer=[const("flat_shape", [-1, 64]),
                     const("weights", np.zeros((64, 10)), np.float32), *initializers],
        sparse_initializer=list(sparse))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def ten_of(big):
    """Nodes that reduce ``big`` (2-D) to the 10 values named "ten", and their constants."""
    return ([helper.make_node("ReduceSum", [big, "axis0"], ["column"], keepdims=0),
             helper.make_node("Slice", ["column", "start", "stop"], ["ten"])],
            [const("axis0", [0]), const("start", [0]), const("stop", [10])])


def filled(shape_name):
    """ConstantOfShape(``shape_name``) of ones, reduced to "ten"."""
    reduce, constants = ten_of("big")
    fill = helper.make_node("ConstantOfShape", [shape_name], ["big"],
                            value=numpy_helper.from_array(np.ones(1, np.float32)))
    return [fill, *reduce], constants


def write(tmp_path, model, name="model.onnx"):
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    return path


def refusal(path, runtime_name="onnxruntime"):
    with pytest.raises(QuantlabError) as excinfo:
        runtime.load(path, runtime=runtime_name)
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message
    return message


# --- data in other files ------------------------------------------------------------------

def external(tensor, location):
    """``tensor`` with its values moved out to ``location`` (relative to the model's folder)."""
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.ClearField("int64_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    return tensor


def sparse_ten(values_location=None, indices_location=None):
    values, indices = const("secret", np.zeros(10), np.float32), const("where", np.arange(10))
    if values_location:
        external(values, values_location)
    if indices_location:
        external(indices, indices_location)
    return helper.make_sparse_tensor(values, indices, [10])


def test_a_sparse_initializer_with_its_values_in_another_file_is_refused_though_ort_reads_it(
        tmp_path, monkeypatch):
    secret = np.array([0, 0, 0, 50, 0, 0, 0, 0, 0, 0], np.float32)
    (tmp_path / ".secret").mkdir()
    (tmp_path / ".secret" / "credentials").write_bytes(secret.tobytes())
    model = classifier(add="secret", sparse=[sparse_ten(values_location=".secret/credentials")])
    path = write(tmp_path, model)
    monkeypatch.chdir(tmp_path)
    for name in ("onnxruntime", "openvino"):
        assert "refers to tensor 'secret' stored in another file" in refusal(path, name)
    # Unchecked, ONNX Runtime reads the file from the current folder and its prediction
    # follows the file's content.
    import onnxruntime

    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    probabilities = session.run(None, {"image": np.zeros((1, 8, 8, 1), np.float32)})[0]
    assert probabilities.argmax() == 3 and probabilities.max() > 0.99


def constant_node(tensor):
    return helper.make_node("Constant", [], ["ten"], value=tensor)


def sparse_constant_node(sparse):
    return helper.make_node("Constant", [], ["ten"], sparse_value=sparse)


def in_a_branch(tensor):
    """An If whose then-branch holds ``tensor`` as a Constant: a tensor inside a subgraph."""
    branch = helper.make_graph([constant_node(tensor)], "then", [],
                               [helper.make_tensor_value_info("ten", TensorProto.FLOAT, [10])])
    return helper.make_node("If", ["always"], ["ten"], then_branch=branch, else_branch=branch)


@pytest.mark.parametrize("place", ["initializer", "sparse-indices", "constant-node",
                                   "sparse-constant-node", "subgraph"])
def test_external_data_is_refused_wherever_the_model_keeps_a_tensor(tmp_path, place):
    ten = lambda: const("ten", np.zeros(10), np.float32)  # noqa: E731
    model = {
        "initializer": lambda: classifier(add="ten", initializers=[external(ten(), "w.bin")]),
        "sparse-indices": lambda: classifier(add="secret",
                                             sparse=[sparse_ten(indices_location="i.bin")]),
        "constant-node": lambda: classifier(constant_node(external(ten(), "w.bin")), add="ten"),
        "sparse-constant-node": lambda: classifier(
            sparse_constant_node(sparse_ten(values_location="w.bin")), add="ten"),
        "subgraph": lambda: classifier(in_a_branch(external(ten(), "w.bin")), add="ten",
                                       initializers=[const("always", True, np.bool_)]),
    }[place]()
    assert "stored in another file (external data)" in refusal(write(tmp_path, model))


# --- memory -------------------------------------------------------------------------------

LOAD_AND_PREDICT = """
import sys
import numpy as np
path, name = sys.argv[1:]
if name == "unchecked":
    import onnxruntime
    session = onnxruntime.InferenceSession(open(path, "rb").read(),
                                           providers=["CPUExecutionProvider"])
    session.run(None, {"image": np.zeros((1, 8, 8, 1), np.float32)})
    sys.exit(0)
from quantlab import runtime
from quantlab.errors import QuantlabError
try:
    predictor = runtime.load(path, runtime=name)
    predictor.predict(np.zeros((1, *predictor.input_shape), np.float32))
except QuantlabError as error:
    sys.exit(f"quantlab: {error}")
"""


def load_within_3_gib(path, runtime_name):
    """runtime.load and one predict in a process that cannot take more than 3 GiB."""
    return within_3_gib(LOAD_AND_PREDICT, path, runtime_name)


def fill_from_constants():
    nodes, constants = filled("dims")
    return classifier(*nodes, add="ten", initializers=[const("dims", [SIDE, SIDE]), *constants])


def fill_from_the_input():
    """The fill's side is the image's height times 4250: the shape is computed from the input."""
    nodes, constants = filled("dims")
    side = [helper.make_node("Shape", ["image"], ["shape"]),
            helper.make_node("Gather", ["shape", "one"], ["height"]),
            helper.make_node("Mul", ["height", "factor"], ["side"]),
            helper.make_node("Concat", ["side", "side"], ["dims"], axis=0)]
    return classifier(*side, *nodes, add="ten",
                      initializers=[const("one", [1]), const("factor", [SIDE // 8]), *constants])


@pytest.mark.parametrize("build, runtime_name, message", [
    (fill_from_constants, "onnxruntime", "MiB of tensors besides the batch (the largest: 'big' of "
                                         "shape [34000, 34000]), over quantlab's limit of 512 MiB"),
    (fill_from_the_input, "openvino", "computes with its input's shape (Mul node"),
], ids=["from-constants", "from-the-input"])
def test_a_constant_of_shape_of_34000_by_34000_is_refused_in_one_line_within_3_gib(
        tmp_path, build, runtime_name, message):
    path = write(tmp_path, build())
    result = load_within_3_gib(path, runtime_name)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    line, = result.stderr.splitlines()
    assert line.startswith(f"quantlab: {path}") and message in line
    # The fill is real: ONNX Runtime alone cannot allocate it within the same limit.
    unchecked = load_within_3_gib(path, "unchecked")
    assert unchecked.returncode != 0 and "alloc" in unchecked.stderr.lower()


def tensor_ops(op, *inputs, **attributes):
    reduce, constants = ten_of("big")
    return [helper.make_node(op, list(inputs), ["big"], **attributes), *reduce], constants


def broadcast():
    nodes, constants = tensor_ops("Add", "column_vector", "row_vector")
    return nodes, [const("column_vector", np.zeros((SIDE, 1)), np.float32),
                   const("row_vector", np.zeros((1, SIDE)), np.float32), *constants]


def expand():
    nodes, constants = tensor_ops("Expand", "cell", "dims")
    return nodes, [const("cell", np.zeros((1, 1)), np.float32), const("dims", [SIDE, SIDE]),
                   *constants]


def tile():
    nodes, constants = tensor_ops("Tile", "cell", "repeats")
    return nodes, [const("cell", np.zeros((1, 10)), np.float32), const("repeats", [SIDE, SIDE]),
                   *constants]


def pad():
    nodes, constants = tensor_ops("Pad", "cell", "pads")
    return nodes, [const("cell", np.zeros((1, 10)), np.float32),
                   const("pads", [SIDE, 0, SIDE, SIDE]), *constants]


def resize():
    nodes, constants = tensor_ops("Resize", "cell", "", "", "sizes")
    return nodes, [const("cell", np.zeros((1, 10)), np.float32), const("sizes", [SIDE, SIDE]),
                   *constants]


def value_range():
    return ([helper.make_node("Range", ["zero", "many", "step"], ["long"]),
             helper.make_node("Slice", ["long", "start", "stop"], ["ten"])],
            [const("zero", 0, np.float32), const("many", 2e9, np.float32),
             const("step", 1, np.float32), const("start", [0]), const("stop", [10])])


def sparse_made_dense():
    reduce, constants = ten_of("sparse_big")
    values = helper.make_sparse_tensor(const("sparse_big", [1.0], np.float32), const("at", [0]),
                                       [SIDE, SIDE])
    return reduce, constants, [values]


@pytest.mark.parametrize("build, message", [
    (broadcast, "the largest: 'big' of shape [34000, 34000]"),
    (expand, "the largest: 'big' of shape [34000, 34000]"),
    (tile, "the largest: 'big' of shape [34000, 340000]"),
    (pad, "the largest: 'big' of shape [68001, 34010]"),
    (resize, "the largest: 'big' of shape [34000, 34000]"),
    (value_range, "the largest: 'long' of shape [2000000000]"),
], ids=["broadcast", "expand", "tile", "pad", "resize", "range"])
def test_every_op_that_allocates_from_a_shape_is_bounded_by_what_it_computes(build, message):
    nodes, constants = build()
    with pytest.raises(QuantlabError, match="over quantlab's limit of 512 MiB") as excinfo:
        onnx_check.check_onnx("model.onnx", classifier(*nodes, add="ten", initializers=constants)
                              .SerializeToString())
    assert message in str(excinfo.value)


def test_a_sparse_tensor_is_counted_at_its_dense_size(tmp_path):
    nodes, constants, sparse = sparse_made_dense()
    model = classifier(*nodes, add="ten", initializers=constants, sparse=sparse)
    assert "declares sparse tensors of 4,410 MiB once made dense" in refusal(write(tmp_path, model))


def test_a_tensor_that_grows_with_the_square_of_the_batch_is_refused():
    # [1, batch, 10] + [batch, 1, 10]: small at any batch a test would try, 4 GiB at 10 000.
    square = [helper.make_node("Unsqueeze", ["logits", "axis0"], ["row"]),
              helper.make_node("Unsqueeze", ["logits", "axis1"], ["column"]),
              helper.make_node("Add", ["row", "column"], ["square"]),
              helper.make_node("ReduceSum", ["square", "axis0"], ["summed"], keepdims=0)]
    model = classifier(*square, add="summed",
                       initializers=[const("axis0", [0]), const("axis1", [1])])
    with pytest.raises(QuantlabError) as excinfo:
        onnx_check.check_onnx("model.onnx", model.SerializeToString())
    assert ("tensor 'square' (Add node) changes with the batch other than in proportion to it "
            "(shape [1, 1, 10] at batch 1, [2, 2, 10] at 2)") in str(excinfo.value)


@pytest.mark.parametrize("nodes, message", [
    ([helper.make_node("NonZero", ["logits"], ["where"]),
      helper.make_node("Cast", ["where"], ["counted"], to=TensorProto.FLOAT),
      helper.make_node("ReduceSum", ["counted"], ["ten"], keepdims=1)],
     "the size of tensor 'where' (NonZero node) depends on the data it computes"),
    ([helper.make_node("ReduceMax", ["logits"], ["top"], keepdims=0),
      helper.make_node("Cast", ["top"], ["side"], to=TensorProto.INT64),
      helper.make_node("Unsqueeze", ["side", "axis0"], ["dims"]),
      helper.make_node("ConstantOfShape", ["dims"], ["ten"],
                       value=numpy_helper.from_array(np.ones(1, np.float32)))],
     "the size of tensor 'ten' (ConstantOfShape node) depends on the data it computes"),
    ([helper.make_node("Softmax", ["late"], ["ten"]),
      helper.make_node("Identity", ["logits"], ["late"])],
     "uses 'late' before any node makes it"),
], ids=["non-zero", "shape-from-pixels", "not-in-topological-order"])
def test_a_size_only_the_data_decides_is_refused(nodes, message):
    model = classifier(*nodes, add="ten", initializers=[const("axis0", [0])])
    with pytest.raises(QuantlabError) as excinfo:
        onnx_check.check_onnx("model.onnx", model.SerializeToString())
    assert message in str(excinfo.value)


def test_control_flow_is_refused_since_no_shape_shows_how_often_it_runs():
    model = classifier(in_a_branch(const("ten", np.zeros(10), np.float32)), add="ten",
                       initializers=[const("always", True, np.bool_)])
    with pytest.raises(QuantlabError, match=r"holds control flow \(If node"):
        onnx_check.check_onnx("model.onnx", model.SerializeToString())


def test_a_batch_read_from_the_input_and_passed_to_reshape_is_accepted_and_runs(tmp_path):
    # The flatten of a dynamic batch as exporters write it: Reshape(x, [Shape(x)[0], -1]).
    flatten = [helper.make_node("Shape", ["image"], ["shape"]),
               helper.make_node("Gather", ["shape", "zero"], ["batch"]),
               helper.make_node("Concat", ["batch", "minus_one"], ["dims"], axis=0),
               helper.make_node("Reshape", ["image", "dims"], ["rows"]),
               helper.make_node("ReduceSum", ["rows", "axis1"], ["total"], keepdims=1)]
    model = classifier(*flatten, add="total", initializers=[
        const("zero", [0]), const("minus_one", [-1]), const("axis1", [1])])
    path = write(tmp_path, model)
    for name in ("onnxruntime", "openvino"):
        probabilities = runtime.load(path, runtime=name).predict(np.ones((5, 8, 8, 1), np.float32))
        np.testing.assert_allclose(probabilities, 0.1, atol=1e-6)


def test_counting_a_hostile_onnx_model_from_the_command_line_is_a_one_line_error(tmp_path):
    path = write(tmp_path, fill_from_constants())
    one_line_error(quantlab("counters", str(path), "--batch-size", "1", "--backend", "valgrind"),
                   str(path), "over quantlab's limit of 512 MiB")
