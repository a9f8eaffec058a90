"""A frozen GraphDef is checked op by op before TensorFlow imports it.

Each hostile graph is built here with TensorFlow's own graph API and would write a marker
file when its output is computed: quantlab refuses it with one line naming the op, the
marker never appears, and a plain TensorFlow session, given the same graph, writes it.
"""

import numpy as np
import pytest

from quantlab import graph_check, nets, runtime, variants
from quantlab.errors import QuantlabError
from conftest import one_line_error, quantlab, within_3_gib


@pytest.fixture(scope="module")
def tf():
    from quantlab._tf import tf

    return tf()


# The graphs built here, kept alive: TensorFlow holds a py_func's Python callback only as
# long as the graph that made it, and the garbage collector frees that graph at a time of
# its choosing, after which TensorFlow itself could not run the payload either.
BUILT = []


def graph_def_of(tf, build):
    """A frozen-style graph: image placeholder -> build(image) -> 'probabilities'."""
    graph = tf.Graph()
    BUILT.append(graph)
    with graph.as_default():
        image = tf.compat.v1.placeholder(tf.float32, [None, 8, 8, 1], name="image")
        tf.identity(build(image), name="probabilities")
    return graph.as_graph_def()


def classify(tf, image, *after):
    """Softmax over the pixels, computed only once every op in ``after`` has run."""
    with tf.control_dependencies(list(after)):
        return tf.nn.softmax(tf.reshape(image, [-1, 64]))


def writes_file(tf, marker):
    return lambda image: classify(tf, image, tf.raw_ops.WriteFile(filename=str(marker),
                                                                  contents="ran"))


def prints_to_file(tf, marker):
    return lambda image: classify(tf, image, tf.print(tf.reduce_sum(image),
                                                      output_stream=f"file://{marker}"))


def calls_python(tf, marker):
    def payload(x):
        open(marker, "w").close()
        return x

    return lambda image: classify(tf, tf.compat.v1.py_func(payload, [image], tf.float32))


def loops(tf, marker):
    def body(i):
        with tf.control_dependencies([tf.raw_ops.WriteFile(filename=str(marker), contents="ran")]):
            return i + 1

    return lambda image: classify(tf, image, tf.while_loop(lambda i: i < 2, body, [0])[0])


def session_output(tf, graph_def):
    """What TensorFlow computes for the graph, unchecked."""
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        return session.run("probabilities:0", {"image:0": np.zeros((1, 8, 8, 1), np.float32)})


@pytest.mark.parametrize("payload, op", [
    (writes_file, "WriteFile"), (prints_to_file, "StringFormat"), (calls_python, "PyFunc"),
    (loops, "While")], ids=["write-file", "print-to-file", "python-function", "while-loop"])
def test_a_graph_with_an_op_beyond_inference_is_refused_by_name_and_never_runs(
        tf, tmp_path, payload, op):
    marker = tmp_path / "ran"
    graph_def = graph_def_of(tf, payload(tf, marker))
    path = tmp_path / "model.pb"
    path.write_bytes(graph_def.SerializeToString())
    with pytest.raises(QuantlabError) as excinfo:
        runtime.load(path)
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message
    assert f"holds op {op!r}" in message
    assert not marker.exists()
    session_output(tf, graph_def)  # the payload is real: TensorFlow alone runs it
    assert marker.exists()


def test_a_function_library_is_refused_even_when_every_node_is_an_inference_op(tf, tmp_path):
    marker = tmp_path / "ran"
    graph_def = graph_def_of(tf, lambda image: classify(tf, image))
    # The loop's body, with its WriteFile, rides along in the library of a clean graph.
    graph_def.library.CopyFrom(graph_def_of(tf, loops(tf, marker)).library)
    with pytest.raises(QuantlabError) as excinfo:
        graph_check.check_graph_def(graph_def.SerializeToString(), "model.pb")
    assert "defines a function library" in str(excinfo.value)
    assert "while_body" in str(excinfo.value)


def test_an_attribute_that_names_a_function_is_refused(tf):
    graph_def = graph_def_of(tf, lambda image: classify(tf, image))
    node = next(n for n in graph_def.node if n.op == "Softmax")
    node.attr["then_branch"].func.name = "elsewhere"
    with pytest.raises(QuantlabError) as excinfo:
        graph_check.check_graph_def(graph_def.SerializeToString(), "model.pb")
    assert "refers to a function in attribute 'then_branch'" in str(excinfo.value)


def test_counting_a_hostile_graph_from_the_command_line_is_a_one_line_error(tf, tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "model.pb"
    path.write_bytes(graph_def_of(tf, writes_file(tf, marker)).SerializeToString())
    line = one_line_error(quantlab("counters", str(path), "--batch-size", "1",
                                   "--backend", "valgrind"), "holds op 'WriteFile'")
    assert str(path) in line and not marker.exists()


@pytest.mark.parametrize("net", nets.NAMES)
def test_quantlab_s_own_frozen_graphs_pass_and_hold_only_the_ops_it_knows(tf, tmp_path, digits, net):
    model = variants.with_softmax(nets.build(net, digits.input_shape, digits.num_classes))
    content = variants._frozen_graph(model, digits)
    graph_def = graph_check.check_graph_def(content)
    assert {n.op for n in graph_def.node} <= graph_check.QUANTLAB_OPS
    path = tmp_path / "model.pb"
    path.write_bytes(content)
    images = digits.x_test[:4]
    np.testing.assert_allclose(runtime.load(path).predict(images),
                               model.predict(images, verbose=0), atol=1e-5)


# --- memory and malformed graphs ---------------------------------------------------------------

SIDE = 34000  # a SIDE x SIDE float32 tensor takes 4.3 GiB


def fills_a_square(tf):
    """A constant fill of SIDE x SIDE, reduced to one number added to the image: allowed ops."""
    return lambda image: classify(tf, image + tf.reduce_sum(tf.fill([SIDE, SIDE], 1.0)))


def shapes_from_a_square(tf):
    """A Reshape whose shape TensorFlow computes, on import, from a SIDE x SIDE fill."""
    def build(image):
        one = tf.reduce_sum(tf.slice(tf.fill([SIDE, SIDE], 1), [0, 0], [1, 1]))
        return tf.nn.softmax(tf.reshape(image, tf.stack([-1, 64 * one])))
    return build


LOAD_AND_PREDICT = """
import sys
import numpy as np
from quantlab import graph_check, runtime
from quantlab._tf import tf
from quantlab.errors import QuantlabError
checked, paths = sys.argv[1] == "checked", sys.argv[2:]
if not checked:  # plain TensorFlow: import the graph and run it once
    tf = tf()
    graph_def = tf.compat.v1.GraphDef.FromString(open(paths[0], "rb").read())
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(graph_def, name="")
        # Grappler off: its constant folding would spend a minute failing to fold the fill
        # first; the run itself then asks for the 34000 x 34000 tensor at once.
        config = tf.compat.v1.ConfigProto()
        config.graph_options.rewrite_options.disable_meta_optimizer = True
        with tf.compat.v1.Session(graph=graph, config=config) as session:
            session.run("probabilities:0", {"image:0": np.zeros((1, 8, 8, 1), np.float32)})
    sys.exit(0)
failed = False
for path in paths:  # each graph in turn, in the one process (TensorFlow imports once)
    try:
        predictor = runtime.load(path)
        predictor.predict(np.zeros((1, *predictor.input_shape), np.float32))
    except QuantlabError as error:
        print(f"quantlab: {error}", file=sys.stderr)
        failed = True
sys.exit(1 if failed else 0)
"""

SQUARES = {"fill": fills_a_square, "shape-computed-from-a-fill": shapes_from_a_square}


@pytest.fixture(scope="module")
def squares(tf, tmp_path_factory):
    """{name: (path, stderr line)}: each graph of ``SQUARES`` saved and loaded by quantlab,
    all in one process within 3 GiB (which must fail, each graph with one line)."""
    folder = tmp_path_factory.mktemp("squares")
    paths = {name: folder / f"{name}.pb" for name in SQUARES}
    for name, build in SQUARES.items():
        paths[name].write_bytes(graph_def_of(tf, build(tf)).SerializeToString())
    result = within_3_gib(LOAD_AND_PREDICT, "checked", *paths.values())
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == len(paths), result.stderr
    return {name: (path, line) for (name, path), line in zip(paths.items(), lines)}


@pytest.mark.parametrize("name, message", [
    ("fill", "computes 4,410 MiB of tensors besides the batch (the largest: 'Fill:0' of "
             "shape [34000, 34000]), over quantlab's limit of 512 MiB"),
    ("shape-computed-from-a-fill", "node 'Reshape' (Reshape) takes a shape computed by Mul "
                                   "node 'mul'"),
], ids=list(SQUARES))
def test_a_graph_of_allowed_ops_that_fills_34000_by_34000_is_refused_in_one_line_within_3_gib(
        squares, name, message):
    path, line = squares[name]
    assert line.startswith(f"quantlab: {path}") and message in line


def test_the_fill_is_real_tensorflow_alone_fails_on_it_within_3_gib(squares):
    # Shown on the first graph only: the second holds the same fill. On TensorFlow's plain
    # CPU allocator: oneDNN's (the default) fails the same way, after 20 s of retrying.
    path, _ = squares["fill"]
    plain = within_3_gib(LOAD_AND_PREDICT, "plain", path, env={"TF_ENABLE_ONEDNN_OPTS": "0"})
    assert plain.returncode != 0 and "OOM when allocating tensor with shape[34000,34000]" \
        in plain.stderr, plain.stderr[-2000:]


@pytest.mark.parametrize("build, message", [
    (lambda tf: lambda image: classify(tf, image + tf.reduce_sum(
        tf.fill([SIDE, 1], 1.0) + tf.fill([1, SIDE], 1.0))),
     "the largest: 'add:0' of shape [34000, 34000]"),
    (lambda tf: lambda image: classify(tf, tf.pad(image, [[0, 0], [SIDE, SIDE], [SIDE, SIDE],
                                                          [0, 0]])),
     "of tensors per image (the largest: 'Pad:0' of shape [1, 68008, 68008, 1])"),
    (lambda tf: lambda image: classify(tf, tf.compat.v1.image.resize_nearest_neighbor(
        image, [SIDE, SIDE])),
     "(the largest: 'ResizeNearestNeighbor:0' of shape [1, 34000, 34000, 1])"),
    (lambda tf: lambda image: tf.nn.softmax(tf.reduce_sum(
        tf.expand_dims(tf.reshape(image, [-1, 64]), 0)
        + tf.expand_dims(tf.reshape(image, [-1, 64]), 1), 0)),
     "tensor 'add:0' (AddV2 node) changes with the batch other than in proportion to it "
     "(shape [1, 1, 64] at batch 1, [2, 2, 64] at 2)"),
    (lambda tf: lambda image: classify(tf, image + tf.reduce_sum(
        tf.fill(tf.stack([tf.shape(image)[0] * SIDE, SIDE]), 1.0))),
     "node 'Fill' (Fill) takes a shape computed by Mul node 'mul'"),
], ids=["broadcast", "pad", "resize", "square-of-the-batch", "shape-arithmetic"])
def test_every_allowed_op_that_allocates_from_a_shape_is_bounded(tf, tmp_path, build, message):
    with pytest.raises(QuantlabError) as excinfo:
        graph_check.check_graph_def(graph_def_of(tf, build(tf)).SerializeToString(), "model.pb")
    assert message in str(excinfo.value) and "\n" not in str(excinfo.value)


def plain_classifier(tf):
    return graph_def_of(tf, lambda image: classify(tf, image))


def missing_control_input(graph_def):
    next(n for n in graph_def.node if n.op == "Softmax").input.append("^ghost")


def missing_input(graph_def):
    next(n for n in graph_def.node if n.op == "Softmax").input[0] = "ghost:0"


def string_matmul(graph_def):
    # A float MatMul whose type attribute says string: TensorFlow refuses it on import.
    from quantlab._tf import tf

    image = next(n for n in graph_def.node if n.op == "Reshape").name
    node = graph_def.node.add(name="strings", op="MatMul", input=[image, image])
    node.attr["T"].type = tf().string.as_datatype_enum
    next(n for n in graph_def.node if n.op == "Softmax").input.append("^strings")


def wrong_output_index(graph_def):
    next(n for n in graph_def.node if n.op == "Softmax").input[0] = "image:3"


def cycle(graph_def):
    reshape = next(n for n in graph_def.node if n.op == "Reshape")
    reshape.input[0] = next(n for n in graph_def.node if n.op == "Softmax").name


@pytest.mark.parametrize("damage, message", [
    (missing_control_input, "node 'Softmax' (Softmax) takes a control input from 'ghost', which "
                            "the graph does not have"),
    (missing_input, "node 'Softmax' (Softmax) takes input from 'ghost', which the graph does "
                    "not have"),
    (string_matmul, "TensorFlow cannot import {path}: Value for attr 'T' of string is not in the "
                    "list of allowed values"),
    (wrong_output_index, "Connecting to invalid output 3 of source node image"),
    (cycle, "TensorFlow cannot import {path}: 3 nodes in a cycle"),
], ids=["missing-control-input", "missing-input", "string-matmul", "wrong-output-index", "cycle"])
def test_a_malformed_graph_is_one_line_without_tensorflow_s_node_dump(tf, tmp_path, damage,
                                                                      message):
    graph_def = plain_classifier(tf)
    damage(graph_def)
    path = tmp_path / "model.pb"
    path.write_bytes(graph_def.SerializeToString())
    with pytest.raises(QuantlabError) as excinfo:
        runtime.load(path)
    line = str(excinfo.value)
    assert "\n" not in line and "NodeDef" not in line and str(path) in line
    assert message.format(path=path) in line
    with pytest.raises(ValueError):  # unchecked, TensorFlow's error and its node dump
        session_output(tf, graph_def)


def test_counting_a_graph_with_a_missing_control_input_from_the_command_line_is_one_line(
        tf, tmp_path):
    graph_def = plain_classifier(tf)
    missing_control_input(graph_def)
    path = tmp_path / "model.pb"
    path.write_bytes(graph_def.SerializeToString())
    one_line_error(quantlab("counters", str(path), "--batch-size", "1", "--backend", "valgrind"),
                   str(path), "takes a control input from 'ghost'")


def test_an_op_tensorflow_has_no_kernel_for_is_one_line_when_loaded(tf, tmp_path):
    def integer_matmul(image):
        # A valid graph of allowed ops, but TensorFlow has no CPU kernel for a uint8 MatMul.
        rows = tf.cast(tf.reshape(image, [-1, 64]), tf.uint8)
        product = tf.raw_ops.MatMul(a=rows, b=tf.ones([64, 10], tf.uint8))
        return tf.nn.softmax(tf.cast(product, tf.float32))

    graph_def = graph_def_of(tf, integer_matmul)
    path = tmp_path / "model.pb"
    path.write_bytes(graph_def.SerializeToString())
    with pytest.raises(QuantlabError) as excinfo:
        runtime.load(path)
    message = str(excinfo.value)
    assert message.startswith(f"TensorFlow cannot run {path}: ") and "\n" not in message
    assert "MatMul" in message and message.endswith("export the model again as a frozen graph")
    with pytest.raises(tf.errors.OpError):  # unchecked: TensorFlow's own error
        session_output(tf, graph_def)


def test_a_shape_constant_that_declares_a_billion_copies_of_one_value_is_refused(tf):
    # A TensorProto may store one value and declare any shape: TensorFlow, reading the
    # Reshape's shape on import, would build all 4 GiB of it.
    graph_def = graph_def_of(tf, lambda image: tf.nn.softmax(tf.reshape(image, [-1, 64])))
    shape = next(n for n in graph_def.node if n.op == "Const").attr["value"].tensor
    shape.ClearField("tensor_content")
    shape.int_val[:] = [1]
    shape.tensor_shape.dim[0].size = 1 << 30
    with pytest.raises(QuantlabError) as excinfo:
        graph_check.check_graph_def(graph_def.SerializeToString(), "model.pb")
    assert str(excinfo.value).startswith(
        "model.pb node 'Reshape' (Reshape) takes a shape from constant 'Reshape/shape' of "
        "1,073,741,824 values, where a shape has a few")
