"""TensorFlow predictor for a frozen GraphDef (P17's float format): one float input, one output."""

import numpy as np

from quantlab.errors import QuantlabError
from quantlab.graph_check import check_graph_def, import_error
from quantlab.runtime.base import Predictor

PACKAGE = "tensorflow"
MODULE = "tensorflow"


class GraphDefPredictor(Predictor):
    runtime = "tensorflow"
    kernels = "tensorflow"
    precision = "float32"

    def __init__(self, path, graph_def, sha256, version, threads=None):
        from quantlab._tf import tf

        tf = tf()
        self.path, self.sha256, self.version, self.threads = path, sha256, version, threads
        if threads:
            _set_tf_threads(tf, threads)
        placeholders = [n for n in graph_def.node if n.op == "Placeholder"]
        consumed = {i.split(":")[0].lstrip("^") for n in graph_def.node for i in n.input}
        outputs = [n for n in graph_def.node if n.name not in consumed and n.op != "NoOp"
                   and n.op != "Placeholder"]
        if len(placeholders) != 1 or len(outputs) != 1:
            raise QuantlabError(
                f"{path} is a GraphDef but not a frozen single-input, single-output model "
                f"({len(placeholders)} inputs, {len(outputs)} outputs)"
            )
        dims = placeholders[0].attr["shape"].shape.dim
        self.input_shape = tuple(int(d.size) for d in dims[1:])

        def imported():
            tf.graph_util.import_graph_def(graph_def, name="")

        try:
            pruned = tf.compat.v1.wrap_function(imported, []).prune(
                placeholders[0].name + ":0", outputs[0].name + ":0"
            )
        except Exception as error:  # TensorFlow's own, with the NodeDef dumped after it
            raise QuantlabError(f"TensorFlow cannot import {path}: {import_error(error)}; export "
                                f"the model again as a frozen graph") from None
        # A pruned function has no structured signature: calling it directly fails to bind,
        # formats the whole input tensor into an error message and falls back, on every
        # call. Wrapping it once in a typed tf.function keeps that out of the timed call.
        spec = tf.TensorSpec([None, *self.input_shape], tf.float32)
        self._function = tf.function(pruned, input_signature=[spec]).get_concrete_function()
        self._tf = tf
        try:  # one image now: an op that TensorFlow has no kernel for fails here, in one line
            self._function(tf.zeros([1, *self.input_shape]))
        except tf.errors.OpError as error:
            raise QuantlabError(f"TensorFlow cannot run {path}: {execution_error(error)}; export "
                                f"the model again as a frozen graph") from None

    def prepare(self, x):
        return self._tf.constant(self.checked_input(x))

    def run(self, prepared):
        return self._function(prepared)

    def finish(self, raw):
        return raw.numpy().astype(np.float32, copy=False)


def execution_error(error):
    """What a TensorFlow execution error says went wrong, and where, without the Python stack
    and node dump that surround it."""
    lines = [line.strip() for line in error.message.splitlines()]
    node = next((line.split()[3] for line in lines if line.startswith("Detected at node ")), None)
    causes = [line for line in lines if line and not line.startswith(
        ("Graph execution error", "Detected at node", "File ", "[["))]
    cause = (causes or [type(error).__name__])[0][:200]
    return f"{cause} (node {node!r:.80})" if node else cause


def _set_tf_threads(tf, threads):
    """TensorFlow fixes its thread pools at first use; later requests cannot take effect."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass


def load(path, content, sha256, version, threads=None, kernels=None, precision=None):
    if precision not in (None, "float32"):
        raise QuantlabError(f"TensorFlow runs {path} in float32 only, not {precision}")
    # Checked op by op before TensorFlow imports it: a GraphDef may hold any op, file I/O too.
    return GraphDefPredictor(path, check_graph_def(content, path), sha256, version, threads)
