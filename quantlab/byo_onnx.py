"""Bring your own ONNX model: a user's float32 image classifier, checked before any runtime
sees it.

The format is decided from the content, never from the name: an ONNX ModelProto starts with
its IR version (byte 0x08, as ``runtime.format_of`` reads it). A file that another loader
would read as something else too (a ZIP archive, which Python's zipfile, and so Keras, finds
from the end of the file whatever its start; an HDF5 superblock, which the HDF5 library looks
for past a user block; a TFLite identifier) is refused whatever its name: no exporter writes
one, and each reader would see another model.

The file is read once; those bytes are parsed (never from the path, so nothing a model
names, such as external data, is ever opened), checked by ``runtime.onnx_check`` (no external
data, standard operators only, no functions, versions onnx knows, declared sizes within the
file, memory bounded), by the allow-list of operators image classifiers are built of and by
the ONNX checker, and hashed. Those same bytes are what a runtime is given.

External data is refused wherever it points, inside the model's folder too: accepting it
would mean opening files the model names (today's runtimes refuse an absolute path, ``..``
or a symlink themselves, but quantlab does not rely on that), while a classifier small
enough to study fits in one file (ONNX's limit is 2 GB) and ``onnx.save_model(model, path,
save_as_external_data=False)`` makes that file.
"""

import dataclasses
import hashlib
import io
import zipfile
from pathlib import Path

from quantlab import cache, runtime
from quantlab.errors import QuantlabError
from quantlab.runtime import onnx_check

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
LAYOUTS = ("NCHW", "NHWC")
CHANNELS = (1, 3)  # grey or colour images
EXPORT = "export the classifier again with one float32 image input (batch, C, H, W) and one output"


@dataclasses.dataclass(frozen=True)
class CheckedOnnx:
    """A user's ONNX classifier that passed every check; ``content`` is what was checked."""

    path: Path
    content: bytes = dataclasses.field(repr=False)  # kilobytes to megabytes: not for messages
    sha256: str
    input_name: str
    input_shape: tuple  # the batch dimension first, always None (variable): (None, 3, 32, 32)
    layout: str  # "NCHW" or "NHWC"
    num_classes: int
    output_name: str
    opset: int

    @property
    def image_shape(self):
        """(height, width, channels), whatever the layout."""
        c, h, w = self.input_shape[1:] if self.layout == "NCHW" else (
            self.input_shape[3], *self.input_shape[1:3])
        return (h, w, c)

    def save(self, destination):
        """Write the checked bytes to ``destination`` under a temporary name, then rename."""
        with cache.atomic_file(destination) as temporary:
            temporary.write_bytes(self.content)
        return Path(destination)


def _hdf5_offsets(content):
    """Where the HDF5 library looks for a superblock: offset 0, 512, 1024, 2048, ..."""
    offset = 0
    while offset + len(HDF5_SIGNATURE) <= len(content):
        if content[offset:offset + len(HDF5_SIGNATURE)] == HDF5_SIGNATURE:
            yield offset
        offset = 512 if offset == 0 else offset * 2


def is_onnx(content, path):
    """Whether ``content`` is an ONNX model; a one-line error if it is one and also another
    format some loader would read it as."""
    if content[:1] != b"\x08":
        return False
    others = []
    if zipfile.is_zipfile(io.BytesIO(content)):
        others.append("a ZIP archive")
    if next(_hdf5_offsets(content), None) is not None:
        others.append("an HDF5 file")
    if runtime.format_of(content) == "tflite":
        others.append("a TFLite model")
    if others:
        raise QuantlabError(f"{path} is an ONNX model and also {' and '.join(others)}, so "
                            f"different loaders would read different models from it; quantlab "
                            f"refuses such a file: export the ONNX model again")
    return True


def load_onnx(path, layout=None):
    """The user's ONNX classifier at ``path``, read once and checked: a ``CheckedOnnx``.

    ``layout``: None to read it from the input's shape, else "NCHW" or "NHWC" (any case).
    """
    path = Path(path)
    content, _ = runtime.read(path)
    return checked(content, path, layout)


def checked(content, path, layout=None):
    """``content``, the bytes read from ``path``, as a ``CheckedOnnx`` once they pass every
    check (``path`` only names the file in messages)."""
    import onnx

    path = Path(path)
    if not is_onnx(content, path):
        raise QuantlabError(f"{path} is not an ONNX model (an ONNX file starts with its IR "
                            f"version); export it with torch.onnx.export or tf2onnx")
    model = onnx_check.check_onnx(path, content, classifier=True)
    try:
        onnx.checker.check_model(model)  # after check_onnx: external data is refused by then
    except onnx.checker.ValidationError as error:
        line = (str(error).strip().splitlines() or ["invalid"])[0][:200]
        raise QuantlabError(f"{path} is not a valid ONNX model ({line}); export it "
                            f"again") from None
    image = _image_input(path, model)
    shape = _input_shape(path, image)
    output, classes = _classes(path, model)
    opset = next(entry.version for entry in model.opset_import
                 if entry.domain in onnx_check.DOMAINS)
    return CheckedOnnx(path, content, hashlib.sha256(content).hexdigest(), image.name, shape,
                       _layout(path, shape, layout), classes, output, opset)


def _image_input(path, model):
    import onnx

    inputs = onnx_check.fed_inputs(model)
    if len(inputs) != 1:
        names = ", ".join(repr(value.name)[:40] for value in inputs[:4])
        raise QuantlabError(f"{path} has {len(inputs)} inputs ({names}) where quantlab feeds one "
                            f"image tensor; {EXPORT}")
    value, = inputs
    kind = value.type.tensor_type
    if kind.elem_type != onnx.TensorProto.FLOAT or len(kind.shape.dim) != 4:
        try:
            type_name = onnx.helper.tensor_dtype_to_np_dtype(kind.elem_type).name
        except (KeyError, ValueError, TypeError):  # an undefined or unnumbered type
            type_name = "unknown type"
        raise QuantlabError(f"{path} input {value.name!r:.80} is a tensor of {type_name} of rank "
                            f"{len(kind.shape.dim)}, where quantlab feeds a batch of float32 "
                            f"images (rank 4); {EXPORT}")
    return value


def _input_shape(path, value):
    """The input's shape, None for the batch, which must not be fixed: the study feeds
    batches of several sizes (check_onnx saw every other dimension fixed)."""
    batch, *image = value.type.tensor_type.shape.dim
    if batch.HasField("dim_value"):
        raise QuantlabError(f"{path} takes a fixed batch of {batch.dim_value} (its input's first "
                            f"dimension); export it with a variable batch (torch.onnx.export(..., "
                            f"dynamic_axes={{{value.name!r:.40}: {{0: 'batch'}}}}))")
    return (None, *(d.dim_value for d in image))


def _layout(path, shape, asked):
    """NCHW if the channels (1 or 3) come first, NHWC if last; ``asked`` settles a tie."""
    fits = [name for name, channels in zip(LAYOUTS, (shape[1], shape[3])) if channels in CHANNELS]
    if asked is not None:
        asked = str(asked).upper()
        if asked not in LAYOUTS:
            raise QuantlabError(f"unknown layout {asked!r:.20}: choose NCHW or NHWC")
        if asked not in fits:
            raise QuantlabError(f"{path} takes inputs of shape {list(shape)}, which in layout "
                                f"{asked} do not have 1 or 3 channels; choose the other layout")
        return asked
    if not fits:
        raise QuantlabError(f"{path} takes inputs of shape {list(shape)}: neither the second nor "
                            f"the last dimension is 1 or 3 channels, so it is not an image "
                            f"classifier quantlab can feed; {EXPORT}")
    if len(fits) > 1:
        raise QuantlabError(f"{path} takes inputs of shape {list(shape)}, which could be NCHW or "
                            f"NHWC; say which with --layout NCHW or --layout NHWC")
    return fits[0]


def _classes(path, model):
    """(output name, number of classes) of the one output, [batch, classes] once inferred."""
    import onnx

    outputs = model.graph.output
    if len(outputs) != 1:
        raise QuantlabError(f"{path} has {len(outputs)} outputs where quantlab reads one, the "
                            f"class scores; {EXPORT}")
    output, = outputs
    dims = onnx_check.shapes_at(path, model, 1).get(output.name)
    if (output.type.tensor_type.elem_type != onnx.TensorProto.FLOAT or dims is None
            or len(dims) != 2 or dims[1] < 2):
        raise QuantlabError(f"{path} output {output.name!r:.80} has shape {dims}, not float32 "
                            f"[batch, classes] with at least 2 classes; {EXPORT}")
    return output.name, dims[1]
