"""The mobilenet and vit nets: their layers, their MACs, their training and their exports,
on the 8x8 digits (real data, quick training: a few seconds each), through every runtime."""

import numpy as np
import pytest

from conftest import quick_config
from quantlab import evaluate, macs, nets, runtime, variants

TFLITE = ("float32", "int8", "dynamic_int8", "float16")
EXPORTED = {"mobilenet": (*TFLITE, "qat_int8", "float32_tf", "onnx_float32", "onnx_int8"),
            "vit": TFLITE}


def _kinds(model):
    return [type(layer).__name__ for layer in model.layers]


def test_mobilenet_is_inverted_residual_blocks_of_builtin_layers_with_batch_norm_and_relu6():
    model = nets.build("mobilenet", (28, 28, 1), 10)
    kinds = _kinds(model)
    # the stem, 6 expansions (the first block has expansion 1), 7 projections, the head
    assert kinds.count("Conv2D") == 1 + 6 + 7 + 1
    assert kinds.count("DepthwiseConv2D") == 7
    assert kinds.count("BatchNormalization") == 22  # after every convolution
    # ReLU6 after every convolution but the projections (linear bottlenecks)
    assert kinds.count("ReLU") == 22 - 7
    assert all(layer.max_value == 6 for layer in model.layers if type(layer).__name__ == "ReLU")
    assert all(not layer.use_bias for layer in model.layers
               if type(layer).__name__ in ("Conv2D", "DepthwiseConv2D"))
    # a residual add exactly where a block keeps its shape: 28 -> 14 -> 7 -> 4
    blocks = nets.layer_plan("mobilenet", (28, 28, 1))[1:-2]
    assert [stride for _, (_, _, stride) in blocks] == [1, 2, 1, 2, 1, 2, 1]
    assert kinds.count("Add") == 4
    assert kinds[-2:] == ["GlobalAveragePooling2D", "Dense"]
    assert 50_000 <= model.count_params() <= 100_000


def test_vit_is_patches_attention_layer_norm_and_gelu_mlp_of_builtin_layers():
    model = nets.build("vit", (28, 28, 1), 10)
    kinds = _kinds(model)
    heads, blocks = 4, 3
    assert kinds.count("Softmax") == heads * blocks
    assert kinds.count("Dot") == 2 * heads * blocks  # scores and the mix of the values
    assert kinds.count("LayerNormalization") == 2 * blocks + 1
    assert kinds.count("Add") == 2 * blocks + 1  # two residuals per block, the position
    gelus = [layer for layer in model.layers if getattr(layer, "activation", None) is not None
             and layer.activation.__name__ == "gelu"]
    assert len(gelus) == blocks
    patches = model.get_layer("patches")
    assert patches.kernel_size == patches.strides == (4, 4)
    assert model.get_layer("block1_head1_query_tokens").output_shape == (None, 49, 16)
    assert 90_000 <= model.count_params() <= 110_000


@pytest.mark.parametrize("shape, side, tokens", [((28, 28, 1), 4, 49), ((32, 32, 3), 4, 64),
                                                  ((8, 8, 1), 2, 16)])
def test_vit_picks_a_patch_side_per_input(shape, side, tokens):
    model = nets.build("vit", shape, 7)
    assert nets.patch_size(shape) == side
    assert model.get_layer("block1_head1_query_tokens").output_shape == (None, tokens, 16)
    assert model.output_shape == (None, 7)


@pytest.mark.parametrize("name", nets.MODERN)
@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (8, 8, 1)])
def test_macs_count_what_the_built_model_computes(name, shape):
    assert macs.macs_per_image(name, shape, 10) == _macs_of_model(nets.build(name, shape, 10))


def _macs_of_model(model):
    """MACs read from the built Keras model's layers and shapes (not from the plan)."""
    total = 0
    for layer in model.layers:
        kind, out = type(layer).__name__, layer.output_shape
        if kind == "Conv2D":
            k1, k2 = layer.kernel_size
            total += out[1] * out[2] * k1 * k2 * layer.input_shape[-1] * out[3]
        elif kind == "DepthwiseConv2D":
            k1, k2 = layer.kernel_size
            total += out[1] * out[2] * k1 * k2 * out[3]
        elif kind == "Dense":
            total += layer.input_shape[-1] * out[-1]
        elif kind == "Dot":  # (N, a) . (M, a) or (N, M) . (M, a): one MAC per shared index
            first, second = layer.input_shape
            shared = first[layer.axes[0]] if isinstance(layer.axes, (list, tuple)) else first[-1]
            total += out[1] * out[2] * shared
    return total


def test_macs_against_a_hand_count_on_digits():
    # mobilenet on 8x8x1: stem 3x3x1x16; blocks (1,16,1) (4,24,2) (4,24,1) (4,32,1) (4,32,1)
    # (4,48,1) (4,48,1), the map halving once (8 -> 4); head 1x1 to 128; logits 128 x 10
    def block(hw_in, hw_out, c_in, t, c_out):
        wide = c_in * t
        expand = hw_in * c_in * wide if t != 1 else 0
        return expand + hw_out * 9 * wide + hw_out * wide * c_out

    mobilenet = (64 * 9 * 1 * 16 + block(64, 64, 16, 1, 16) + block(64, 16, 16, 4, 24)
                 + block(16, 16, 24, 4, 24) + block(16, 16, 24, 4, 32) + block(16, 16, 32, 4, 32)
                 + block(16, 16, 32, 4, 48) + block(16, 16, 48, 4, 48) + 16 * 48 * 128 + 128 * 10)
    assert macs.macs_per_image("mobilenet", (8, 8, 1), 10) == mobilenet == 1_075_456
    # vit on 8x8x1: 2x2 patches -> 16 tokens of 64; position 3x3 depthwise; 3 blocks
    n, d, m = 16, 64, 128
    block_macs = 3 * n * d * d + n * n * d + n * n * d + n * d * d + 2 * n * d * m
    vit = n * 2 * 2 * 1 * d + n * 9 * d + 3 * block_macs + d * 10
    assert macs.macs_per_image("vit", (8, 8, 1), 10) == vit == 1_685_120


def test_vit_cannot_be_quantization_aware_trained_and_says_why():
    from quantlab._tf import tfmot

    with pytest.raises(RuntimeError, match="LayerNormalization"):
        tfmot().quantization.keras.quantize_model(nets.build("vit", (8, 8, 1), 10))


@pytest.fixture(scope="module")
def trained(digits):
    """{net: (Trained, {variant: Artifact})}, quick-trained on digits."""
    from quantlab import training

    done = {}
    for name in nets.MODERN:
        config = quick_config(name, "digits")
        done[name] = (training.train(config, digits),
                      variants.export(config, EXPORTED[name], data=digits))
    return done


@pytest.mark.parametrize("name", nets.MODERN)
def test_inference_scores_as_training_did(trained, digits, name):
    """Batch norm's moving statistics must have caught up with the weights: in inference
    mode, the training images score at least as well as the last epoch did while training."""
    model = trained[name][0].model
    info = trained[name][0].info
    last_epoch = info["history"]["accuracy"][-1]
    train = digits.subset(quick_config(name, "digits").limit)
    _, inference = model.evaluate(train.x_train, train.y_train, batch_size=256, verbose=0)
    assert inference >= last_epoch - 0.03, (inference, last_epoch)
    assert info["test_accuracy"] >= 0.7


@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_batch_norm_is_folded_into_the_convolutions_of_the_exported_mobilenet(trained, variant):
    ops = runtime.load(trained["mobilenet"][1][variant].path, runtime="litert",
                       kernels="builtin").primitives()
    assert "MUL" not in ops and "SUB" not in ops and "RSQRT" not in ops, ops
    assert ops.get("ADD") == 4, ops  # the residual adds, and no batch norm's
    assert ops["CONV_2D"] + ops["DEPTHWISE_CONV_2D"] == 22  # one op per convolution


# Full-integer vit files score far below the float net (digits 78.6 -> 68.9 %, Fashion-MNIST
# 74.7 -> 56.7 % after quick training; LiteRT and ONNX Runtime alike; dynamic-range loses
# nothing): open, to be found layer by layer (quantlab.layer_error).
VIT_INT8 = pytest.mark.xfail(strict=True, reason="full-int8 vit loses 10-18 points: open")


def _runs(name):
    for variant in EXPORTED[name]:
        for reader in variants.variant_table.readers(variant):
            marks = VIT_INT8 if (name, variant) == ("vit", "int8") else ()
            yield pytest.param(name, variant, reader, marks=marks)


@pytest.mark.parametrize("name, variant, reader", [case for name in nets.MODERN
                                                    for case in _runs(name)])
def test_every_export_runs_and_agrees_with_the_float_net(trained, digits, name, variant, reader):
    model, artifact = trained[name][0].model, trained[name][1][variant]
    keras = model.predict(digits.x_test, batch_size=256, verbose=0)
    expected = np.exp(keras - keras.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    probabilities, _ = evaluate.predictions(artifact, digits, reader)
    agreement = np.mean(probabilities.argmax(1) == expected.argmax(1))
    accuracy = np.mean(probabilities.argmax(1) == digits.y_test)
    if variant in ("float32", "float32_tf", "onnx_float32"):
        assert agreement >= 0.999 and np.max(np.abs(probabilities - expected)) <= 1e-4
    elif variant == "qat_int8":  # fine-tuned weights: as accurate, not the same outputs
        assert agreement >= 0.9 and accuracy >= np.mean(expected.argmax(1) == digits.y_test) - 0.03
    else:
        assert agreement >= 0.95, agreement
        assert np.max(np.abs(probabilities - expected)) <= (0.02 if variant == "float16" else 0.3)


@pytest.mark.parametrize("variant", ["float32_tf", "onnx_float32"])
def test_the_vit_exports_to_a_frozen_graph_and_onnx(trained, digits, variant):
    config = quick_config("vit", "digits")
    artifact = variants.export(config, [variant], data=digits)[variant]
    for reader in variants.variant_table.readers(variant):
        probabilities, _ = evaluate.predictions(artifact, digits, reader)
        reference, _ = evaluate.predictions(trained["vit"][1]["float32"], digits, "litert")
        assert np.mean(probabilities.argmax(1) == reference.argmax(1)) >= 0.95
