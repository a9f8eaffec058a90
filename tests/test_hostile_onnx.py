"""A user's ONNX classifier is checked from the bytes read, before any runtime sees it, and a
crafted file is refused in one line that names the problem and the fix.

Models are built with onnx.helper (tests/onnx_models.py): an NCHW classifier of 8x8 digits
that expects normalized input, each hostile part attached to it. No training.
"""

import hashlib
import io
import os
import subprocess
import sys
import zipfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantlab import byo_onnx
from quantlab.errors import QuantlabError
from conftest import one_line_error, quantlab
from onnx_models import classifier, normalized_nchw, write


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.images / 16.0)[..., None].astype(np.float32), data.target


@pytest.fixture
def model(digits):
    images, labels = digits
    return classifier(images[:300], labels[:300])


def refusal(path, *fragments, layout=None):
    with pytest.raises(QuantlabError) as excinfo:
        byo_onnx.load_onnx(path, layout=layout)
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message, message
    for fragment in fragments:
        assert fragment in message
    return message


def tiny(input_dims, *, inputs=(), first="GlobalAveragePool"):
    """input -> ``first`` -> Flatten -> Gemm -> 10 logits: a classifier of any input shape."""
    features = input_dims[1]
    nodes = [helper.make_node(first, ["image"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Gemm", ["flat", "weights"], ["logits"])]
    if first == "Identity":
        features = int(np.prod(input_dims[1:]))
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, input_dims), *inputs],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializer=[numpy_helper.from_array(np.ones((features, 10), np.float32), "weights")])
    built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    built.ir_version = 8
    return built


# --- what is accepted ---------------------------------------------------------------------

def test_a_pytorch_style_classifier_is_read_from_its_checked_bytes(tmp_path, digits, model):
    import onnxruntime

    path = write(tmp_path, model, "exported.model")  # the content decides, not the name
    checked = byo_onnx.load_onnx(path)
    content = path.read_bytes()
    assert checked.content == content
    assert checked.sha256 == hashlib.sha256(content).hexdigest()
    assert (checked.input_name, checked.input_shape, checked.layout) == ("image", (None, 1, 8, 8),
                                                                         "NCHW")
    assert (checked.image_shape, checked.num_classes, checked.output_name, checked.opset) == (
        (8, 8, 1), 10, "logits", 17)
    assert checked.save(tmp_path / "private" / "copy.onnx").read_bytes() == content
    # The classifier is real: right on held-out digits fed as it expects, wrong otherwise.
    images, labels = digits[0][1000:], digits[1][1000:]
    session = onnxruntime.InferenceSession(checked.content, providers=["CPUExecutionProvider"])
    right = session.run(None, {"image": normalized_nchw(images)})[0].argmax(1)
    raw = session.run(None, {"image": images.transpose(0, 3, 1, 2).copy()})[0].argmax(1)
    assert (right == labels).mean() > 0.7 > 0.4 > (raw == labels).mean()


def test_the_layout_is_read_from_the_input_and_an_ambiguous_one_must_be_named(tmp_path):
    nhwc = byo_onnx.load_onnx(write(tmp_path, tiny(["batch", 32, 32, 3], first="Identity")))
    assert (nhwc.layout, nhwc.image_shape) == ("NHWC", (32, 32, 3))
    path = write(tmp_path, tiny(["batch", 3, 8, 3]), "either.onnx")
    refusal(path, "could be NCHW or NHWC", "--layout NCHW or --layout NHWC")
    either = byo_onnx.load_onnx(path, layout="nhwc")
    assert (either.layout, either.image_shape, either.input_shape) == ("NHWC", (3, 8, 3),
                                                                      (None, 3, 8, 3))
    refusal(write(tmp_path, tiny(["batch", 3, 8, 8]), "nchw.onnx"), "do not have 1 or 3 channels",
            layout="NHWC")



def test_the_flatten_pytorch_writes_for_a_variable_batch_is_accepted(tmp_path, digits, model):
    """x.view(x.size(0), -1) exports as Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), -1))."""
    import onnxruntime

    flatten, = [node for node in model.graph.node if node.op_type == "Flatten"]
    at = list(model.graph.node).index(flatten)
    viewed = onnx.ModelProto()
    viewed.CopyFrom(model)
    del viewed.graph.node[at]
    for offset, node in enumerate([
            helper.make_node("Shape", ["pooled"], ["shape"]),
            helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
            helper.make_node("Unsqueeze", ["batch", "zeros"], ["batch_1d"]),
            helper.make_node("Concat", ["batch_1d", "minus_one"], ["dims"], axis=0),
            helper.make_node("Reshape", ["pooled", "dims"], ["flat"])]):
        viewed.graph.node.insert(at + offset, node)
    viewed.graph.initializer.extend([numpy_helper.from_array(np.array(v, np.int64), name)
                                     for name, v in (("zero", 0), ("zeros", [0]),
                                                     ("minus_one", [-1]))])
    checked = byo_onnx.load_onnx(write(tmp_path, viewed))
    assert (checked.input_shape, checked.num_classes) == ((None, 1, 8, 8), 10)
    images = normalized_nchw(digits[0][:5])
    outputs = [onnxruntime.InferenceSession(m.SerializeToString(),
                                            providers=["CPUExecutionProvider"]).run(
        None, {"image": images})[0] for m in (model, viewed)]
    np.testing.assert_allclose(*outputs, rtol=1e-6)

# --- files outside the model: never opened --------------------------------------------------

def external(tensor, location):
    """``tensor`` with its values said to be in ``location`` (relative to the model's folder)."""
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    return tensor


def pointing_at(model, location):
    """``model`` with its Gemm weights stored at ``location``."""
    weights, = [t for t in model.graph.initializer if t.name == "centroids"]
    external(weights, location)
    return model


OPEN_AND_REPORT = """
import sys
opened = []
sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" else None)
from quantlab import byo_onnx
from quantlab.errors import QuantlabError
for path in sys.argv[1:]:
    try:
        byo_onnx.load_onnx(path)
        print("loaded", path)
    except QuantlabError as error:
        print("refused", error)
print("opened", *opened, sep="\\n")
"""


def test_external_data_is_refused_and_nothing_outside_the_model_is_opened(tmp_path, model):
    # The target is a FIFO: anything that opened it to read, in Python or in a runtime's
    # C++, would wait for a writer until the timeout fails the test.
    (tmp_path / "outside").mkdir()
    secret = tmp_path / "outside" / "secret"
    os.mkfifo(secret)
    folder = tmp_path / "user" / "models"
    folder.mkdir(parents=True)
    (folder / "link.bin").symlink_to(secret)
    locations = {"parent": "../../outside/secret", "absolute": str(secret), "symlink": "link.bin",
                 "root": "../" * 40 + "etc/passwd"}
    paths = []
    for name, location in locations.items():
        built = onnx.ModelProto()
        built.CopyFrom(model)
        paths.append(write(folder, pointing_at(built, location), f"{name}.onnx"))
        refusal(paths[-1], "stored in another file (external data), which quantlab never opens",
                "save_as_external_data=False")
    result = subprocess.run([sys.executable, "-c", OPEN_AND_REPORT, *map(str, paths)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[:4]] == ["refused"] * 4
    opened = lines[lines.index("opened") + 1:]
    assert all(str(path) in opened for path in paths)  # the hook saw the models opened
    assert not [name for name in opened if any(
        part in name for part in ("outside", "link.bin", "etc/passwd"))]


# --- what a file declares -----------------------------------------------------------------

def with_node(model, op_type, domain="", opset=None):
    """``model`` with its Relu replaced by ``op_type`` of ``domain``."""
    relu, = [node for node in model.graph.node if node.op_type == "Relu"]
    relu.op_type, relu.domain = op_type, domain
    if opset:
        model.opset_import.append(helper.make_opsetid(domain, opset))
    return model


def hidden_in_a_function(model):
    """The Relu replaced by a call to a model-local function that holds the Relu."""
    body = helper.make_function("local.functions", "Activate", ["x"], ["y"],
                                [helper.make_node("Relu", ["x"], ["y"])],
                                [helper.make_opsetid("", 17)])
    model.functions.append(body)
    return with_node(model, "Activate", "local.functions", 1)


def with_opset(model, version):
    model.opset_import[0].version = version
    return model


def with_huge_initializer(model):
    """A tensor of 10^10 floats declared with no data: 40 GB asked for in a 4 kB file."""
    huge = TensorProto(name="huge", data_type=TensorProto.FLOAT, dims=[10**10])
    model.graph.initializer.append(huge)
    return model


def with_many_initializers(model):
    """200 tensors of 2 million floats declared with no data, 1.6 GB in all, in a file padded
    to 1 MB: each alone fits the file's size, together they do not (OpenVINO allocates them)."""
    for index in range(200):
        model.graph.initializer.append(TensorProto(name=f"empty{index}", data_type=TensorProto.FLOAT,
                                                   dims=[2_000_000]))
    model.doc_string = "padding " * 125_000
    return model


def with_second_input(model):
    model.graph.input.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT,
                                                           ["batch", 8]))
    return model


@pytest.mark.parametrize("craft, fragments", [
    (lambda m: with_node(m, "StealFiles", "com.example.ops", 1),
     ["uses operator 'StealFiles' of domain 'com.example.ops', outside the standard ONNX "
      "operators"]),
    (hidden_in_a_function, ["defines its own functions ('Activate'), which can hide any operator",
                            "inline them (onnx.inliner.inline_local_functions)"]),
    (lambda m: with_node(m, "Bernoulli"),
     ["uses operator 'Bernoulli'", "not one an image classifier is built of"]),
    (lambda m: with_node(m, "DequantizeLinear"),
     ["is quantized already (DequantizeLinear node", "give quantlab the float32 model"]),
    (lambda m: with_opset(m, onnx.defs.onnx_opset_version() + 1),
     [f"operator set {onnx.defs.onnx_opset_version() + 1}", "export it again with opset in"]),
    (lambda m: with_opset(m, 6), ["operator set 6 of ONNX; quantlab reads operator sets 7 to"]),
    (with_huge_initializer, ["tensor 'huge' of shape [10000000000], more data than the whole "
                             "file holds"]),
    (with_many_initializers, ["tensor 'empty0' of shape [2000000] and 203 others, more data "
                              "than the whole file holds"]),
    (with_second_input, ["has 2 inputs ('image', 'mask') where quantlab feeds one image tensor"]),
], ids=["custom-domain", "function", "not-a-classifier-op", "quantized", "opset-too-new",
        "opset-too-old", "huge-initializer", "many-initializers", "two-inputs"])
def test_a_crafted_model_is_refused_in_one_line(tmp_path, model, craft, fragments):
    path = write(tmp_path, craft(model))
    assert path.stat().st_size < 1_020_000
    refusal(path, *fragments)


def test_functions_inlined_as_the_refusal_says_leave_a_model_that_is_accepted(tmp_path, model):
    from onnx import inliner

    inlined = inliner.inline_local_functions(hidden_in_a_function(model))
    assert not inlined.functions
    assert byo_onnx.load_onnx(write(tmp_path, inlined)).num_classes == 10

@pytest.mark.parametrize("built, fragments", [
    (lambda: tiny(["batch", 64], first="Identity"),
     ["input 'image' is a tensor of float32 of rank 2, where quantlab feeds a batch of float32 "
      "images (rank 4)"]),
    (lambda: tiny(["batch", 3, 100000, 100000]),
     ["MiB of tensors per image (the largest: 'image' of shape [1, 3, 100000, 100000])"]),
    (lambda: tiny(["batch", 16, 8, 8]), ["neither the second nor the last dimension is 1 or 3"]),
    (lambda: tiny([1, 3, 8, 8]), ["takes a fixed batch of 1", "dynamic_axes={'image': {0: 'batch'}}"]),
], ids=["not-an-image", "a-huge-image", "sixteen-channels", "fixed-batch"])
def test_an_input_that_is_not_an_image_quantlab_can_feed_is_refused(tmp_path, built, fragments):
    refusal(write(tmp_path, built()), *fragments)


def test_a_truncated_file_is_refused(tmp_path, model):
    content = model.SerializeToString()
    for cut in (len(content) // 2, len(content) - 3):
        refusal(write(tmp_path, content[:cut]), "is not a readable ONNX model")


# --- what else the bytes could be -----------------------------------------------------------

def varint(number):
    encoded = bytearray()
    while True:
        encoded.append(number & 0x7F | (0x80 if number > 0x7F else 0))
        number >>= 7
        if not number:
            return bytes(encoded)


def unknown_field(length):
    """The start of a field ONNX does not know (number 1000, bytes): onnx keeps it, unread."""
    return varint(1000 << 3 | 2) + varint(length)


def with_zip_appended(model):
    """The model's bytes, then a ZIP archive in an unknown field: a valid ONNX model that
    ZIP readers, which start from the end, open as an archive."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as writer:
        writer.writestr("config.json", '{"class_name": "Sequential"}')
    content = model.SerializeToString() + unknown_field(len(archive.getvalue()))
    assert zipfile.ZipFile(io.BytesIO(content + archive.getvalue())).read("config.json")
    return content + archive.getvalue()


def in_an_hdf5_user_block(model):
    """An HDF5 file whose user block (the 4 kB before its superblock, left to the user) holds
    the model, and an unknown field that spans the rest: ONNX to onnx, HDF5 to h5py."""
    import h5py

    stored = io.BytesIO()
    with h5py.File(stored, "w", userblock_size=4096) as h5:
        h5["model_config"] = np.arange(3)
    hdf5 = stored.getvalue()
    body = model.SerializeToString()
    width = len(unknown_field(len(hdf5)))  # the field's tag and length, at most this long
    header = body + unknown_field(len(hdf5) - len(body) - width)
    assert len(header) == len(body) + width < 4096
    content = header + hdf5[len(header):]
    with h5py.File(io.BytesIO(content), "r") as h5:
        assert list(h5["model_config"]) == [0, 1, 2]
    return content


def named_tfl3(model):
    """The producer's name at byte 4, where a TFLite flatbuffer has its identifier."""
    model.producer_name = "TFL3"
    content = model.SerializeToString()
    from quantlab import runtime

    assert runtime.format_of(content) == "tflite"  # what runtime.load would read it as
    return content


@pytest.mark.parametrize("craft, other", [
    (with_zip_appended, "a ZIP archive"), (in_an_hdf5_user_block, "an HDF5 file"),
    (named_tfl3, "a TFLite model"),
], ids=["zip", "hdf5", "tflite"])
def test_an_onnx_model_that_is_also_another_format_is_refused_whatever_its_name(
        tmp_path, model, craft, other):
    content = craft(model)
    assert len(onnx.load_model_from_string(content).graph.node) == 5  # onnx reads the model
    for name in ("model.onnx", "model.keras"):
        refusal(write(tmp_path, content, name), f"is an ONNX model and also {other}",
                "export the ONNX model again")


def test_only_content_that_starts_as_onnx_does_is_taken_for_onnx(model):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as writer:
        writer.writestr("config.json", "{}")
    assert byo_onnx.is_onnx(model.SerializeToString(), "model.h5")
    assert not byo_onnx.is_onnx(archive.getvalue(), "model.onnx")  # left to Keras's checks


# --- from the command line ------------------------------------------------------------------

def test_hostile_onnx_models_are_refused_by_quantlab_run_with_exit_2(tmp_path, model):
    built = onnx.ModelProto()
    built.CopyFrom(model)
    custom = write(tmp_path, with_node(built, "StealFiles", "com.example.ops", 1), "custom.onnx")
    (tmp_path / "a" / "b").mkdir(parents=True)
    passwd = write(tmp_path / "a" / "b", pointing_at(model, "../" * 40 + "etc/passwd"))
    for path, fragment in ((custom, "of domain 'com.example.ops'"),
                           (passwd, "stored in another file (external data)")):
        one_line_error(quantlab("run", "--model", str(path), "--quick", "--counters", "off",
                                "--out", str(tmp_path / f"report-{path.stem}")),
                       str(path), fragment)
        assert not (tmp_path / f"report-{path.stem}").exists()  # nothing written for it


def test_two_nodes_of_one_name_are_refused_before_onnx_runtime_sees_them(tmp_path):
    built = tiny(["batch", 1, 8, 8])
    for node in built.graph.node[:2]:
        node.name = "dup"  # the ONNX checker lets it pass; ONNX Runtime refuses the file
    refusal(write(tmp_path, built), "two nodes named 'dup'", "unique node names")
