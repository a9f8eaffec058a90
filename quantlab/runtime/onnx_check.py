"""Refuse ONNX models that would make a runtime read other files or load other code.

ONNX operators compute, they do no I/O, but a model can point at tensors stored in other
files (external data: any path, relative to wherever the model is read from) and use
operators from other domains, which a runtime resolves by loading custom-op libraries. A
quantlab artifact needs neither, so a model that uses them is refused before any runtime
sees it.
"""

from quantlab.errors import QuantlabError

DOMAINS = ("", "ai.onnx")  # the standard operator set


def _tensors(graph):
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _tensors(subgraph)


def check_onnx(path, content):
    """The parsed ModelProto, or a one-line QuantlabError naming what is refused."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model_from_string(content)
    except (DecodeError, ValueError, RuntimeError):
        raise QuantlabError(f"{path} is not a readable ONNX model; export it again") from None
    external = [t.name for t in _tensors(model.graph)
                if t.data_location == onnx.TensorProto.EXTERNAL or t.external_data]
    if external:
        raise QuantlabError(f"{path} refers to tensor {external[0]!r} stored in another file "
                            f"(external data); quantlab runs only self-contained models")
    for node in model.graph.node:
        if node.domain not in DOMAINS:
            raise QuantlabError(f"{path} uses operator {node.op_type!r} of domain {node.domain!r}, "
                                f"outside the standard ONNX operators; quantlab will not load it")
    if model.functions:
        raise QuantlabError(f"{path} defines its own functions ({model.functions[0].name!r}); "
                            f"quantlab runs only models of standard operators")
    return model
