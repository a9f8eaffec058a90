"""A frozen GraphDef is checked op by op before TensorFlow imports it.

Each hostile graph is built here with TensorFlow's own graph API and would write a marker
file when its output is computed: quantlab refuses it with one line naming the op, the
marker never appears, and a plain TensorFlow session, given the same graph, writes it.
"""

import numpy as np
import pytest

from quantlab import graph_check, nets, runtime, variants
from quantlab.errors import QuantlabError
from conftest import one_line_error, quantlab


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
