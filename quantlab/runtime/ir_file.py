"""An OpenVINO IR (an XML graph and a .bin of weights) as one file, so that it is hashed,
cached, checked and loaded like every other artifact: the predictor runs exactly the bytes
whose sha256 it reports, never a .bin beside the XML that changed since.

Layout: ``MAGIC``, the XML's length as 8 little-endian bytes, the XML, the weights.

The file is quantlab's own, but it is read from a cache a user can write, so it is checked
before OpenVINO sees it: the lengths fit the file, the XML declares no DTD (no entities to
expand), every constant's slice of the weights lies inside them, and no tensor the graph
declares is larger than the per-image budget of every other model check.
"""

import struct

from quantlab import tensor_budget
from quantlab.errors import QuantlabError

MAGIC = b"QLOVIR1\n"
_LENGTH = struct.Struct("<Q")
_HEADER = len(MAGIC) + _LENGTH.size
FIX = "export it again"


def pack(xml, weights):
    return MAGIC + _LENGTH.pack(len(xml)) + xml + weights


def is_ir(content):
    return content[:len(MAGIC)] == MAGIC


def unpack(path, content):
    """(xml, weights) of the checked file, or a one-line error naming what is wrong."""
    if not is_ir(content) or len(content) < _HEADER:
        raise QuantlabError(f"{path} is not an OpenVINO IR file written by quantlab; {FIX}")
    (xml_length,) = _LENGTH.unpack_from(content, len(MAGIC))
    if xml_length > len(content) - _HEADER:
        raise QuantlabError(f"{path} is truncated: its graph claims {xml_length} bytes, more "
                            f"than the file holds; {FIX}")
    xml = content[_HEADER:_HEADER + xml_length]
    weights = content[_HEADER + xml_length:]
    _check_graph(path, xml, len(weights))
    return xml, weights


def _check_graph(path, xml, weights_bytes):
    import xml.etree.ElementTree as ElementTree

    # OpenVINO writes no DTD; one could declare entities that expand far beyond the file.
    if b"<!DOCTYPE" in xml or b"<!ENTITY" in xml:
        raise QuantlabError(f"{path}: its graph declares a DTD, which OpenVINO never writes; {FIX}")
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as error:
        raise QuantlabError(f"{path}: its graph is not well-formed XML ({error}); {FIX}") from None
    if root.tag != "net":
        raise QuantlabError(f"{path}: its graph is not an OpenVINO IR (<{root.tag}>); {FIX}")
    for layer in root.iter("layer"):
        data = layer.find("data")
        if layer.get("type") == "Const" and data is not None:
            offset, size = _whole(path, data.get("offset")), _whole(path, data.get("size"))
            if offset + size > weights_bytes:
                raise QuantlabError(f"{path}: constant {layer.get('name')!r} lies outside the "
                                    f"{weights_bytes} bytes of weights; {FIX}")
        for port in layer.iter("port"):
            dims = [_whole(path, dim.text, dynamic=True) for dim in port.iter("dim")]
            # A dynamic dimension (-1) is the batch: the budget is per image.
            if 4 * tensor_budget.elements(d for d in dims if d >= 0) > tensor_budget.PER_IMAGE_BYTES:
                raise QuantlabError(f"{path}: layer {layer.get('name')!r} declares a tensor of "
                                    f"{'x'.join(map(str, dims))}, more than the "
                                    f"{tensor_budget.PER_IMAGE_BYTES >> 20} MiB per image quantlab "
                                    f"allows; {FIX}")


def _whole(path, text, dynamic=False):
    try:
        number = int(text)
    except (TypeError, ValueError):
        raise QuantlabError(f"{path}: its graph holds {text!r} where a whole number belongs; "
                            f"{FIX}") from None
    if number < (-1 if dynamic else 0):
        raise QuantlabError(f"{path}: its graph holds the size {number}; {FIX}")
    return number
