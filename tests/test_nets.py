import pytest

from quantlab import nets
from quantlab.errors import QuantlabError


def _summary(model):
    """(layer kind, key settings) per layer, in order."""
    rows = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            rows.append((kind, layer.kernel_size, layer.filters, layer.strides, layer.padding,
                         layer.activation.__name__))
        elif kind == "MaxPooling2D":
            rows.append((kind, layer.pool_size, layer.strides))
        elif kind == "Dense":
            rows.append((kind, layer.units, layer.activation.__name__))
        elif kind == "Dropout":
            rows.append((kind, layer.rate))
        else:
            rows.append((kind,))
    return rows


CONV = lambda k, f: ("Conv2D", (k, k), f, (1, 1), "same", "relu")  # noqa: E731
POOL = ("MaxPooling2D", (2, 2), (2, 2))
FC = lambda units: ("Dense", units, "relu")  # noqa: E731
LOGITS = ("Dense", 10, "linear")

EXPECTED = {
    "dense": [CONV(5, 32), POOL, ("Flatten",), FC(512), FC(1024), ("Dropout", 0.5), LOGITS],
    "medium": [CONV(5, 32), POOL, CONV(5, 64), POOL, ("Flatten",), FC(1024), ("Dropout", 0.5),
               LOGITS],
    "conv": [CONV(2, 32), POOL, CONV(2, 128), POOL, CONV(2, 256), POOL, ("Flatten",), FC(256),
             ("Dropout", 0.5), LOGITS],
}


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
@pytest.mark.parametrize("name", nets.NAMES)
def test_each_net_has_exactly_the_p17_layer_stack(name, shape):
    model = nets.build(name, shape, 10)
    assert _summary(model) == EXPECTED[name]
    assert model.input_shape == (None, *shape)
    assert model.output_shape == (None, 10)


def _params(name, h, w, c, classes):
    """Parameter count worked out by hand from the P17 definitions."""
    if name == "dense":
        flat = (h // 2) * (w // 2) * 32
        return (5 * 5 * c * 32 + 32) + (flat * 512 + 512) + (512 * 1024 + 1024) + (1024 * classes + classes)
    if name == "medium":
        flat = (h // 4) * (w // 4) * 64
        return ((5 * 5 * c * 32 + 32) + (5 * 5 * 32 * 64 + 64) + (flat * 1024 + 1024)
                + (1024 * classes + classes))
    flat = (h // 8) * (w // 8) * 256
    return ((2 * 2 * c * 32 + 32) + (2 * 2 * 32 * 128 + 128) + (2 * 2 * 128 * 256 + 256)
            + (flat * 256 + 256) + (256 * classes + classes))


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (8, 8, 1)])
@pytest.mark.parametrize("name", nets.NAMES)
def test_parameter_counts_match_the_hand_computed_ones(name, shape):
    assert nets.build(name, shape, 7).count_params() == _params(name, *shape, 7)


def test_the_dense_net_has_by_far_the_most_parameters_and_conv_the_fewest():
    counts = {n: nets.build(n, (32, 32, 3), 10).count_params() for n in nets.NAMES}
    assert counts["dense"] > counts["medium"] > counts["conv"]


def test_an_unknown_net_name_lists_the_valid_ones():
    with pytest.raises(QuantlabError, match="unknown net 'resnet'.*dense, medium, conv, mobilenet, vit"):
        nets.build("resnet", (28, 28, 1), 10)
