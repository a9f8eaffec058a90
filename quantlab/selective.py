"""Int8 quantizers that can keep chosen layers in float: TFLite and ONNX Runtime.

Each quantizer calibrates once, then makes any number of models that differ only in the
layers left in float, and measures each layer's own error against float:

- ``TFLiteInt8``: TFLite's quantization debugger. Its statistic is RMSE / scale of each
  op's output, the op run in int8 and in float on the same quantized inputs (about 0.29 is
  the floor of uniform rounding). Layers stay float through ``denylisted_nodes``.
- ``OnnxInt8``: ONNX Runtime's static QDQ quantization. Its statistic is the quantization
  noise a layer adds (as a share of the signal's power) between its inputs and its output,
  from the signal-to-quantization-noise ratios of ``qdq_loss_debug``, float model against
  QDQ model on the same images. Nodes stay float through ``nodes_to_exclude``.

Layers are named as the user's Keras model names them (``layer``) beside the node or tensor
the tool names (``node``), which is what the tool is given back.
"""

import math
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from quantlab.onnx_int8 import fixed_batch, input_batches
from quantlab.variants import saved_model, tflite_converter, with_softmax

EVALUATION_BATCH = 500
SQNR_CHUNK = 100  # images per run of the instrumented ONNX models (OnnxInt8.layer_errors)


class Recent(OrderedDict):
    """The models a quantizer made last, by the nodes kept float. A search asks again for what
    the ranking made just before it (full int8, the worst layers measured alone); keeping
    every step's model would hold a search's worth of copies of a user's large model."""

    KEEP = 8  # full int8 and the top layers measured (sensitivity.TOP_K), with room

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        while len(self) > self.KEEP:
            self.popitem(last=False)


def keras_layer(node, layer_names):
    """The Keras layer a converter's node or tensor name belongs to (``None``: none of them).

    Converters build names from the Keras scopes, ``model/conv2d_1/BiasAdd;...``: the layer
    is the scope component that is a layer's name; the longest wins, so ``conv2d_1`` is not
    taken for ``conv2d``."""
    parts = {part for name in node.split(";") for part in name.replace(":", "/").split("/")}
    found = [layer for layer in layer_names if layer in parts]
    return max(found, key=len) if found else None


def accuracy(content, suffix, x, y, runtime=None):
    """Top-1 accuracy of model ``content`` on images ``x`` with labels ``y``, run by
    quantlab's own loader (which checks the bytes as it checks any file)."""
    from quantlab import runtime as runtimes

    with tempfile.TemporaryDirectory(prefix="quantlab-selective-") as folder:
        path = Path(folder, f"model{suffix}")
        path.write_bytes(content)
        predictor = runtimes.load(path, runtime=runtime, threads=None)
        classes = predictor.predict(x, batch_size=EVALUATION_BATCH).argmax(axis=1)
    return float(np.mean(classes == y))


class TFLiteInt8:
    """Full-integer TFLite quantization of a Keras model, per-channel weights unless told.

        >>> q = TFLiteInt8(model, calibration)                          # doctest: +SKIP
        >>> rows = q.layer_errors(validation_images)                    # doctest: +SKIP
        >>> mixed = q.quantize(excluded=[rows[0]["node"]])              # doctest: +SKIP
    """

    suffix = ".tflite"
    runtime = "litert"

    def __init__(self, model, calibration, per_channel=True):
        from quantlab._tf import tf, without_native_noise

        self._tf = tf()
        self._float_content = None
        self._models = Recent()  # {excluded nodes: model bytes}
        self.validation_scores = {}  # sensitivity.validation_accuracy's, by model and images
        self.float_model = with_softmax(model)
        self.layer_names = [layer.name for layer in self.float_model.layers]
        # Converted from one lean SavedModel of the net, as the export converts its variants:
        # from_keras_model saves and loads Keras's own, tracing every layer (making the vit's
        # quantizer took 12 CPU-s that way, 5 this way), for the same bytes. The debugger
        # converts once, here, the float model (unless given) later: the folder lives as
        # long as the quantizer.
        self._folder = tempfile.TemporaryDirectory(prefix="quantlab-tflite-selective-")
        with without_native_noise():
            self._saved = saved_model(self.float_model, Path(self._folder.name, "net"))
        # The int8 variants' own recipes; the debugger reads the per-tensor switch back from
        # the converter whenever it re-quantizes, so every model made here shares it.
        converter = tflite_converter(self._saved,
                                     "int8" if per_channel else "int8_per_tensor", calibration)
        self._debug_images = None
        with without_native_noise():
            self._debugger = self._tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=self._images)

    def _images(self):
        for image in self._debug_images if self._debug_images is not None else ():
            yield [image[None]]

    @classmethod
    def shared(cls, model, calibration, per_channel=True):
        """The quantizer of these weights and calibration images made in this process (for
        the last model asked about), or a new one: a study's sensitivity and per-layer error
        stages both need it, and making one converts the model (5 CPU-s for the vit)."""
        import hashlib

        digest = hashlib.sha256(model.to_json().encode())
        for array in [*model.get_weights(), np.ascontiguousarray(calibration)]:
            digest.update(np.ascontiguousarray(array).tobytes())
        if _SHARED_TFLITE.get("digest") != digest.hexdigest():  # another model: let it go
            _SHARED_TFLITE.clear()
            _SHARED_TFLITE["digest"] = digest.hexdigest()
        if per_channel not in _SHARED_TFLITE:
            _SHARED_TFLITE[per_channel] = cls(model, calibration, per_channel)
        return _SHARED_TFLITE[per_channel]

    def float_content(self):
        """The float model's bytes: those given to ``use_float``, else converted once."""
        from quantlab._tf import without_native_noise

        if self._float_content is None:
            with without_native_noise():
                self._float_content = tflite_converter(self._saved, "float32", None).convert()
        return self._float_content

    def use_float(self, content):
        """Take ``content`` as the float model (the float32 variant exported of the same
        model by the same converter) instead of converting it again."""
        self._float_content = content

    def layer_errors(self, images):
        """Rows {layer, node, op, elements, rmse_over_scale, max_abs_error, scale}, one per
        quantized op output, in graph order."""
        import csv
        import io

        from quantlab._tf import without_native_noise

        self._debug_images = images
        with without_native_noise():
            # Every layer in int8: a model made by ``quantize`` left its layers out.
            self._debugger.options = self._tf.lite.experimental.QuantizationDebugOptions()
            # Only the statistics read below, each as the debugger defines it (per image,
            # averaged over images): its default five, std and mean error too, cost 5 numpy
            # calls per op and image (10 s of CPU for the vit's 200 ops on 700 images).
            self._debugger._layer_debug_metrics = _LAYER_METRICS
            self._debugger.run()
        dump = io.StringIO()
        self._debugger.layer_statistics_dump(dump)
        rows = []
        for row in csv.DictReader(io.StringIO(dump.getvalue())):
            scale = float(row["scale"])
            rows.append({
                "layer": keras_layer(row["tensor_name"], self.layer_names),
                "node": row["tensor_name"],
                "op": row["op_name"],
                "elements": int(float(row["num_elements"])),
                "rmse_over_scale": (math.sqrt(float(row["mean_squared_error"])) / scale
                                    if scale else None),
                "max_abs_error": float(row["max_abs_error"]),
                "scale": scale,
            })
        return rows

    def layers(self, images):
        """The statistic per Keras layer: rows {layer, nodes, ops, rmse_over_scale} in graph
        order, ``rmse_over_scale`` the worst of its ops'."""
        layers = {}
        for row in self.layer_errors(images):
            name = row["layer"] or row["op"].lower()
            entry = layers.setdefault(name, {"layer": name, "nodes": [], "ops": [],
                                             "rmse_over_scale": None})
            entry["nodes"].append(row["node"])
            entry["ops"].append(row["op"])
            if row["rmse_over_scale"] is not None:
                entry["rmse_over_scale"] = max(entry["rmse_over_scale"] or 0.0,
                                               row["rmse_over_scale"])
        return list(layers.values())

    def quantize(self, excluded=()):
        """Model bytes with int8 inputs, outputs and ops, but the ops whose output tensors
        are ``excluded`` (names from ``layer_errors``' ``node``) run in float."""
        from quantlab._tf import without_native_noise

        key = tuple(excluded)
        if key not in self._models:  # a search asks again for what ranking made
            options = self._tf.lite.experimental.QuantizationDebugOptions(
                denylisted_nodes=list(excluded) or None, fully_quantize=True)
            with without_native_noise():
                # Not the ``options`` setter: it also re-makes and loads the instrumented
                # debug model (a second quantization of the vit, 1 s), which only
                # ``layer_errors`` reads, and which it makes anew through the setter.
                self._debugger._debug_options = options
                self._models[key] = self._debugger.get_nondebug_quantized_model()
        return self._models[key]


_LAYER_METRICS = {"num_elements": lambda diffs: diffs.size,
                  "max_abs_error": lambda diffs: np.abs(diffs).max(),
                  "mean_squared_error": lambda diffs: np.square(diffs).mean()}
# TFLiteInt8.shared's quantizers (per channel and per tensor) of the last model's weights
_SHARED_TFLITE = {}


class OnnxInt8:
    """ONNX Runtime's static QDQ quantization (int8 weights and activations, min/max) of an
    ONNX float model, per-channel weights unless told, as ``quantlab.onnx_int8`` makes the
    onnx_int8 variants (a fixed batch dimension is calibrated in batches of that size).

        >>> q = OnnxInt8(float_onnx_bytes, calibration, layer_names)    # doctest: +SKIP
        >>> rows = q.layer_errors(validation_images)                    # doctest: +SKIP
        >>> mixed = q.quantize(excluded=[rows[0]["node"]])              # doctest: +SKIP
    """

    suffix = ".onnx"
    runtime = "onnxruntime"

    def __init__(self, float_content, calibration, layer_names=(), per_channel=True):
        import onnxruntime
        from onnxruntime.quantization.shape_inference import quant_pre_process

        self._folder = tempfile.TemporaryDirectory(prefix="quantlab-onnx-selective-")
        folder = Path(self._folder.name)
        source, self._prepared = folder / "float.onnx", folder / "prepared.onnx"
        source.write_bytes(float_content)
        # As the onnx_int8 variant: fold and fuse first, so that nodes are the ones the
        # kernels run and the names given back to nodes_to_exclude are those of this graph.
        quant_pre_process(str(source), str(self._prepared), skip_symbolic_shape=True)
        first = onnxruntime.InferenceSession(float_content).get_inputs()[0]
        self._input, self._batch = first.name, fixed_batch(first.shape[0])
        self.calibration = calibration
        self.per_channel = per_channel
        self.layer_names = list(layer_names)
        # The calibration ranges do not depend on the nodes excluded: computed by the first
        # quantization, kept here and read back by the others (ONNX Runtime's own cache, which
        # stores float32 ranges exactly), instead of the vit's calibration of 2-3 s each time.
        self._ranges = folder / "calibration.json"
        self._models = Recent()  # {excluded nodes: model bytes}
        self.validation_scores = {}  # sensitivity.validation_accuracy's, by model and images

    def float_content(self):
        return self._prepared.read_bytes()

    def _reader(self, images):
        from onnxruntime.quantization import CalibrationDataReader

        name, batch = self._input, self._batch

        class Images(CalibrationDataReader):
            def __init__(self):
                self.batches = iter(input_batches(images, batch))

            def get_next(self):
                batch = next(self.batches, None)
                return None if batch is None else {name: np.ascontiguousarray(batch)}

        return Images()

    def quantize(self, excluded=()):
        """QDQ model bytes with the nodes named in ``excluded`` left in float."""
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        key = tuple(excluded)
        if key not in self._models:  # a search asks again for what ranking made
            target = Path(self._folder.name, "int8.onnx")
            quantize_static(self._prepared, target, self._reader(self.calibration),
                            quant_format=QuantFormat.QDQ, per_channel=self.per_channel,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=list(excluded), calibration_cache_path=self._ranges)
            self._models[key] = target.read_bytes()
        return self._models[key]

    def layer_errors(self, images):
        """Rows {layer, node, op, sqnr_db, entering_db}, one per node whose output the QDQ
        model quantizes, in graph order: the SQNR of that output in the QDQ model against the
        float model, and the SQNR of the signal entering the node (the difference is the
        node's own share of the error)."""
        import onnx
        from onnxruntime.quantization import qdq_loss_debug as debug

        folder = Path(self._folder.name)
        qdq = folder / "debug_int8.onnx"
        qdq.write_bytes(self.quantize())  # full int8, which ranking scores next
        augmented = {kind: folder / f"augmented_{kind}.onnx" for kind in ("float", "qdq")}
        for kind, path in (("float", self._prepared), ("qdq", qdq)):
            debug.modify_model_output_intermediate_tensors(str(path), str(augmented[kind]))
        # ONNX Runtime's SQNR of the QDQ model's output against float's ("xmodel_err" of its
        # compute_activation_error: 20 log10 of the norms' ratio over all images), summed
        # chunk by chunk: its collect_activations keeps every intermediate tensor of every
        # image, which for the vit's attention on 500 images took 17 s where chunks of 100
        # take 8, for the same sums.
        powers = {}  # tensor: [signal, noise] (sums of squares)
        chunk = SQNR_CHUNK if self._batch is None else max(1, SQNR_CHUNK // self._batch) * self._batch
        for start in range(0, len(images), chunk):
            part = images[start:start + chunk]
            if self._batch is not None and len(part) < self._batch:
                break  # a fixed batch takes no other: the few left over are not used
            activations = {kind: debug.collect_activations(str(path), self._reader(part))
                           for kind, path in augmented.items()}
            matched = debug.create_activation_matching(activations["qdq"], activations["float"])
            for name, match in matched.items():
                if match.get("float"):
                    sums = powers.setdefault(name, [0.0, 0.0])
                    for x, y in zip(match["float"], match["post_qdq"]):
                        x, error = x.ravel(), (x - y).ravel()
                        sums[0] += float(np.dot(x, x))
                        sums[1] += float(np.dot(error, error))
        epsilon = np.finfo("float").eps  # as ONNX Runtime's: neither norm below it
        sqnr = {name: 20 * math.log10(max(math.sqrt(s), epsilon) / max(math.sqrt(n), epsilon))
                for name, (s, n) in powers.items()}
        graph = onnx.load(str(self._prepared)).graph
        producer = {out: node for node in graph.node for out in node.output}
        constants = {init.name for init in graph.initializer}

        def upstream(tensor, seen=()):
            """SQNR of the float signal reaching ``tensor``: its own where it is matched, else
            the worst of what its producer read (a fused op's output has no QDQ of its own)."""
            if tensor in sqnr:
                return sqnr[tensor]
            node = producer.get(tensor)
            if node is None or tensor in seen:
                return math.inf  # a graph input: as sent
            found = [upstream(i, (*seen, tensor)) for i in node.input if i and i not in constants]
            return min(found, default=math.inf)

        rows = []
        for node in graph.node:
            if not node.output or node.output[0] not in sqnr:
                continue
            entering = [upstream(i) for i in node.input if i and i not in constants]
            before = min(entering, default=math.inf)
            layer = (keras_layer(node.name, self.layer_names)
                     or keras_layer(node.output[0], self.layer_names) or node.name)
            rows.append({"layer": layer, "node": node.name, "op": node.op_type,
                         "sqnr_db": sqnr[node.output[0]], "entering_db": before})
        return rows

    def layers(self, images):
        """The statistic per Keras layer: rows {layer, nodes, ops, sqnr_db, noise_added} in
        graph order: ``sqnr_db`` of the layer's last output; ``noise_added`` the noise power,
        as a share of the signal's, that its nodes add to what enters them (summed). A share,
        not a difference of dB: after an exactly quantized input (pixels of k/255 are), any
        layer would lose a hundred dB."""
        layers = {}
        for row in self.layer_errors(images):
            entry = layers.setdefault(row["layer"], {"layer": row["layer"], "nodes": [],
                                                     "ops": [], "noise_added": 0.0})
            entry["nodes"].append(row["node"])
            entry["ops"].append(row["op"])
            entry["sqnr_db"] = _finite(row["sqnr_db"])
            entry["noise_added"] += _noise(row["sqnr_db"]) - _noise(row["entering_db"])
        graph_nodes = self._all_nodes_by_layer()
        for entry in layers.values():  # a layer is kept float whole: every node it made
            entry["nodes"] = graph_nodes.get(entry["layer"], entry["nodes"])
        return list(layers.values())

    def _all_nodes_by_layer(self):
        import onnx

        found = {}
        for node in onnx.load(str(self._prepared)).graph.node:
            layer = keras_layer(node.name, self.layer_names)
            if layer:
                found.setdefault(layer, []).append(node.name)
        return found


def _noise(sqnr_db):
    """Noise power over signal power for an SQNR in dB (an exact tensor's infinity: 0)."""
    return 10.0 ** (-sqnr_db / 10.0)


def _finite(value):
    """A number results.json can hold (an exact match has infinite SQNR: None)."""
    return float(value) if value is not None and math.isfinite(value) else None
