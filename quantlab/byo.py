"""Bring your own model: load a user's saved Keras model safely and export its variants.

Loading must never run code from the file, whatever the file is. Keras picks its loader
from the file name, and its legacy HDF5 loader ignores ``safe_mode``, so quantlab decides
the format from the content instead and checks the model's configuration before Keras sees
it: only Keras's own built-in layers (an allow-list), no serialised Python functions, no
module outside Keras, and for a ``.keras`` archive no member beyond the three Keras writes.
The file is read once; those very bytes are checked, hashed, and copied to a private
temporary file whose suffix sends Keras to the loader that was checked, so the file can
neither be swapped after the check nor be read as the other format.

Nor may a file make Keras allocate more than it holds. Keras stores every weight in the
file, uncompressed, so the weights a model declares cannot outweigh the file: the stored
weight arrays are checked against the file's size before Keras reads them, and the
variables Keras builds from the configuration (a Dense layer of 12 M units declares a 3 GB
kernel in a few bytes) are counted as they are created, and refused before allocation once
they outweigh it. The configuration's JSON nesting is bounded before it is parsed.
"""

import contextlib
import dataclasses
import hashlib
import io
import json
import re
import tempfile
import zipfile
from pathlib import Path

from quantlab import byo_onnx, runtime, safe_text, tensor_budget, training, variants
from quantlab.errors import QuantlabError
from quantlab.keras_names import REBUILD, RESAVE, check_config
# Deeper than any Keras configuration (a functional model nests about 10 levels, each
# nested model a few more), shallow enough for the recursion of parsing and checking it.
MAX_JSON_DEPTH = 64
# What h5py raises, besides OSError, for a damaged file: its C library's errors, and sizes
# it cannot represent.
H5_ERRORS = (OSError, RuntimeError, ValueError, KeyError, OverflowError)
# Variables Keras makes that a file need not store (random layers' seeds): a little room.
UNSTORED_BYTES = 1 << 20

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# What tf_keras's model.save("x.keras") writes for a model without assets (assets belong to
# text and lookup layers, which an image classifier does not use).
KERAS_MEMBERS = frozenset({"metadata.json", "config.json", "model.weights.h5"})

@dataclasses.dataclass(frozen=True)
class KerasFile:
    """A user's Keras model file as it was read, once: ``path`` names it in messages, and
    ``content`` is all that is checked, hashed, loaded and exported from then on (a file
    swapped on disk later changes nothing)."""
    path: Path
    content: bytes
    sha256: str


def read_keras(path):
    """The Keras model file at ``path``, read once (a ``KerasFile``); checked when loaded."""
    content = read_model_file(path)
    return KerasFile(Path(path), content, hashlib.sha256(content).hexdigest())


def _as_read(model):
    """A ``KerasFile``: ``model`` itself, or the file at the path ``model``, read now."""
    return model if isinstance(model, KerasFile) else read_keras(model)


def read_model_file(path):
    """The bytes of the model file at ``path``, or a one-line error saying why not."""
    path = Path(path)
    try:
        runtime.check_regular(path)  # a FIFO would block the read, /dev/zero never end it
        return path.read_bytes()
    except FileNotFoundError:
        raise QuantlabError(f"no model file at {path}; give a model saved with "
                            f"model.save('model.keras')") from None
    except IsADirectoryError:
        raise QuantlabError(f"{path} is a folder, not a model file; give the .keras file "
                            f"written by model.save('model.keras')") from None
    except PermissionError:
        raise QuantlabError(f"cannot read {path}: permission denied; make it readable or "
                            f"copy it somewhere you can read") from None
    except OSError as error:
        raise QuantlabError(f"cannot read {path}: {error.strerror}") from None


# --- format: from the content, never from the name ---------------------------------------

def _zip_members_data(archive, content):
    """(start, end) of each member's stored bytes inside ``content``."""
    spans = []
    for info in archive.infolist():
        header = info.header_offset
        name_length = int.from_bytes(content[header + 26:header + 28], "little")
        extra_length = int.from_bytes(content[header + 28:header + 30], "little")
        start = header + 30 + name_length + extra_length
        spans.append((start, start + info.compress_size))
    return spans


def _hdf5_offsets(content):
    """Where the HDF5 library would find a superblock: offset 0, 512, 1024, 2048, ..."""
    offset, found = 0, []
    while offset + len(HDF5_SIGNATURE) <= len(content):
        if content[offset:offset + len(HDF5_SIGNATURE)] == HDF5_SIGNATURE:
            found.append(offset)
        offset = 512 if offset == 0 else offset * 2
    return found


def model_format(content, path):
    """``"onnx"``, ``"keras"`` (a ZIP archive) or ``"h5"`` (legacy HDF5), decided from
    ``content``. ONNX first: a file that is ONNX and also a ZIP or HDF5 file is refused there."""
    if byo_onnx.is_onnx(content, path):
        return "onnx"
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except zipfile.BadZipFile:
        archive = None
    hdf5 = _hdf5_offsets(content)
    if archive is not None:
        # A .keras archive stores its weights as an HDF5 file, uncompressed: a signature in
        # there is that file, not a second reading of the whole.
        spans = _zip_members_data(archive, content)
        hdf5 = [o for o in hdf5 if not any(start <= o < end for start, end in spans)]
        if hdf5:
            raise QuantlabError(f"{path} is both an HDF5 file and a ZIP archive, so Keras could "
                                f"load it as either; quantlab refuses such a file: {RESAVE}")
        return "keras"
    if hdf5:
        return "h5"
    raise QuantlabError(f"{path} is neither a .keras archive nor an HDF5 model, nor ONNX; "
                        f"{RESAVE}, or export it with torch.onnx.export or tf2onnx")


def _keras_config(content, path):
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        names = [info.filename for info in archive.infolist()]
        for info in archive.infolist():
            if info.filename not in KERAS_MEMBERS:
                raise QuantlabError(f"{path} holds {info.filename!r}, which Keras does not write "
                                    f"in a .keras archive; {RESAVE}")
            if info.compress_type != zipfile.ZIP_STORED:
                # Keras stores members uncompressed; refusing others also refuses zip bombs.
                raise QuantlabError(f"{path} member {info.filename} is compressed, which Keras "
                                    f"never does; {RESAVE}")
        if len(set(names)) != len(names) or set(names) != KERAS_MEMBERS:
            raise QuantlabError(f"{path} is a ZIP archive but not a saved Keras model (it holds "
                                f"{', '.join(sorted(names)) or 'nothing'}); {RESAVE}")
    config = _parse_json(_member(content, "config.json", path), path)
    if isinstance(config, dict):
        # Keras drops the training setup when it loads with compile=False, as quantlab does.
        config = {key: value for key, value in config.items() if key != "compile_config"}
    return config


def _member(content, name, path):
    """The bytes of one member of the archive, or a one-line error if they are damaged."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            return archive.read(name)
    except (zipfile.BadZipFile, ValueError, EOFError, OSError):  # a bad CRC, header, offset
        raise QuantlabError(f"{path} is a damaged ZIP archive (its member {name} cannot be "
                            f"read back whole); {RESAVE}") from None


def _h5_config(content, path):
    import h5py

    try:
        with h5py.File(io.BytesIO(content), "r") as h5:
            text = h5.attrs.get("model_config")
    except H5_ERRORS as error:
        raise QuantlabError(f"{path} is a corrupt HDF5 file ({error}); {RESAVE}") from None
    if text is None:
        raise QuantlabError(f"{path} is an HDF5 file but not a saved Keras model (no "
                            f"model_config, perhaps weights only); {RESAVE}")
    if not isinstance(text, (str, bytes)):  # Keras writes one string; h5py reads any attribute
        raise QuantlabError(f"{path} has a model_config that is not text (it is "
                            f"{type(text).__name__}), which Keras never writes; {RESAVE}")
    return _parse_json(text, path)


_JSON_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _json_depth(text):
    """How deeply ``text`` nests arrays and objects (brackets inside strings do not count)."""
    depth = deepest = 0
    for match in _JSON_STRING_OR_BRACKET.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif token in "]}":
            depth -= 1
    return deepest


def _parse_json(text, path):
    try:
        text = text.decode() if isinstance(text, bytes) else text
        if _json_depth(text) > MAX_JSON_DEPTH:
            raise QuantlabError(f"{path} holds a model configuration nested more than "
                                f"{MAX_JSON_DEPTH} levels deep, which Keras never writes; {RESAVE}")
        return json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise QuantlabError(f"{path} holds a model configuration that is not valid JSON; "
                            f"{RESAVE}") from None


def _stored_weights(content, fmt, path):
    """The HDF5 file that holds the weights: the archive's member, or the file itself."""
    return _member(content, "model.weights.h5", path) if fmt == "keras" else content


def check_stored_weights(content, fmt, path):
    """Refuse weight arrays that declare more bytes than the file holds.

    An HDF5 dataset may declare any shape and store nothing (its chunks unwritten): reading
    it, as Keras does, would allocate all of it.
    """
    import h5py

    declared = []

    def add(name, item):
        if isinstance(item, h5py.Dataset):
            declared.append((item.size * item.dtype.itemsize, name, item.shape))

    weights = _stored_weights(content, fmt, path)
    try:
        with h5py.File(io.BytesIO(weights), "r") as h5:
            h5.visititems(add)
    except H5_ERRORS:
        raise QuantlabError(f"{path} holds damaged weights (the HDF5 library cannot list them); "
                            f"{RESAVE}") from None
    total = sum(size for size, _, _ in declared)
    if total > len(content):
        size, name, shape = max(declared)
        raise QuantlabError(f"{path} declares {total / 2**20:,.0f} MiB of weights (the largest: "
                            f"{name!r:.80} of shape {shape}) in a file of "
                            f"{len(content) / 2**20:,.1f} MiB, which cannot hold them; {RESAVE}")


def checked(content, path):
    """The format of ``content`` (``"keras"`` or ``"h5"``) once it passed every check."""
    fmt = model_format(content, path)
    if fmt == "onnx":  # the study reads an ONNX model through open_model, never as Keras
        raise QuantlabError(f"{path} is an ONNX model, not a Keras one; study it with "
                            f"quantlab run --model {path.name} --data IMAGES")
    check_config(_keras_config(content, path) if fmt == "keras" else _h5_config(content, path),
                 path)
    check_stored_weights(content, fmt, path)
    return fmt


# --- loading --------------------------------------------------------------------------------

@contextlib.contextmanager
def _variables_within(limit, path, refused):
    """Refuse, before it is allocated, each variable that takes the total past ``limit`` bytes.

    The refusal is put in ``refused`` too, since Keras may wrap the error it raises.
    """
    from quantlab._tf import tf

    tf = tf()
    total = 0

    def creator(next_creator, **settings):
        nonlocal total
        shape = settings.get("shape")
        if shape is not None and tf.TensorShape(shape).is_fully_defined():
            dtype = tf.as_dtype(settings.get("dtype") or tf.float32)
            total += tf.TensorShape(shape).num_elements() * max(dtype.size, 1)
        if total > limit:
            refused.append(f"{path} declares {total / 2**20:,.0f} MiB of weights by its variable "
                           f"{settings.get('name')!r:.80} of shape {tf.TensorShape(shape)}, more "
                           f"than the {limit / 2**20:,.1f} MiB file can hold; {RESAVE}")
            raise QuantlabError(refused[-1])
        return next_creator(**settings)

    with tf.variable_creator_scope(creator):
        yield


def _keras_model(content, fmt, path):
    """Keras loads the checked bytes from a private copy whose suffix picks the checked loader."""
    from quantlab._tf import keras

    refused = []
    with tempfile.TemporaryDirectory(prefix="quantlab-model-") as folder:
        copy = Path(folder) / f"model.{fmt}"
        copy.write_bytes(content)
        try:
            with _variables_within(len(content) + UNSTORED_BYTES, path, refused):
                return keras().models.load_model(copy, compile=False, safe_mode=True)
        except Exception as error:  # Keras raises many types for unloadable files
            if refused:
                raise QuantlabError(refused[0]) from None
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise QuantlabError(f"cannot load {path} as a Keras model: {first}") from None


def _load_content(content, path, data):
    fmt = checked(content, path)
    model = _keras_model(content, fmt, path)
    expected = tuple(data.input_shape)
    got = tuple(model.input_shape[1:])
    if got != expected:
        raise QuantlabError(
            f"{path.name} takes inputs of shape {'x'.join(map(str, got))} but {data.name} images are "
            f"{'x'.join(map(str, expected))}; choose the dataset the model was trained on")
    if model.output_shape[-1] != data.num_classes:
        raise QuantlabError(f"{path.name} has {model.output_shape[-1]} outputs but {data.name} has "
                            f"{data.num_classes} classes")
    tensor_budget.check(path, _activations(model), REBUILD)
    if _ends_in_softmax(model):
        model = _strip_softmax(model)
    info = {"stage": "float", "source": str(path), "sha256": hashlib.sha256(content).hexdigest()}
    return training.Trained(model, path, info, from_cache=True)


def _activations(model):
    """(name, layer, shape at batch 1, at batch 2, bytes per element) of every layer's output.

    Weights are bounded by the file; what a layer computes is not (an UpSampling2D of
    5000 x 5000 turns an 8 x 8 image into 6 GB), so it goes through the same budget as the
    graphs of other formats, from the shapes Keras inferred when it built the model.
    """
    for layer in model.layers:
        if hasattr(layer, "layers"):  # a model nested in the model
            yield from _activations(layer)
        for index in range(len(layer.inbound_nodes)):
            shapes = layer.get_output_shape_at(index)
            for shape in shapes if isinstance(shapes, list) else [shapes]:
                known = all(d is not None for d in shape[1:])
                yield (layer.name, type(layer).__name__,
                       [1, *shape[1:]] if known else None, [2, *shape[1:]] if known else None, 4)


def open_model(path, layout=None):
    """The user's model at ``path``, read once, its format decided from its content: an ONNX
    model checked now (a ``byo_onnx.CheckedOnnx``) or a ``KerasFile``, which ``export``
    checks and loads; from then on only those bytes are used."""
    read = read_keras(path)
    if model_format(read.content, read.path) != "onnx":
        return read
    model = byo_onnx.load_onnx(read.path, layout)
    if model.sha256 != read.sha256:
        raise QuantlabError(f"{path} changed while quantlab read it; give a file nothing "
                            f"else is writing")
    return model


def keras_input(model):
    """(image shape (H, W, C), classes) of the user's Keras model (a ``KerasFile`` or a path),
    checked and loaded as ``export`` does: the shape the user's own images are read in."""
    read = _as_read(model)
    loaded = _keras_model(read.content, checked(read.content, read.path), read.path)
    return tuple(loaded.input_shape[1:]), int(loaded.output_shape[-1])


def load(model, data):
    """The user's model (a ``KerasFile`` or a path), checked against ``data``; returns a
    ``training.Trained``."""
    read = _as_read(model)
    return _load_content(read.content, read.path, data)


def _ends_in_softmax(model):
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    return type(last).__name__ == "Softmax" or getattr(activation, "__name__", "") == "softmax"


def _strip_softmax(model):
    """Logits from a model that ends in softmax: variants add their own softmax layer."""
    from quantlab._tf import keras

    last = model.layers[-1]
    if type(last).__name__ == "Softmax":
        return keras().Model(model.input, last.input)
    last.activation = keras().activations.linear
    return model


def export(model, data, config, wanted=variants.VARIANTS, progress=None):
    """Export ``wanted`` variants of the user's model (a ``KerasFile`` or a path); ``config``
    sets the QAT fine-tune.

    The bytes are checked even when every variant is cached; the cache key is their sha256,
    and the model, if needed, is loaded from the same bytes.
    """
    read = _as_read(model)
    checked(read.content, read.path)
    config = dataclasses.replace(config, net=safe_text.net_name(read.path), dataset=data.name)
    return variants.export_model(lambda: _load_content(read.content, read.path, data), config,
                                 data, wanted, progress=progress,
                                 base_key=f"user-model-{read.sha256[:16]}")
