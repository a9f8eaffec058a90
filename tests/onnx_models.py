"""Small ONNX image classifiers built with onnx.helper, as a PyTorch export would look.

``classifier`` makes an NCHW model that expects normalized input, ``(x - mean) / std`` with
``x`` in [0, 1], the normalization folded into its first convolution's weights as exporters
fold it. Its last layer is a nearest-class-centroid classifier fitted in closed form from the
images it is given (no training), so its accuracy on images of the same kind is real: well
above chance, and wrong if the images are fed in the wrong layout or normalization.
"""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

FILTERS = 8
KERNEL = 3
POOL = 2


def _features(images, kernels, biases):
    """Conv 3x3 (valid) -> ReLU -> 2x2 average pool -> flatten, in numpy, on NHWC [0,1]
    images: what the ONNX graph computes on the same images once normalized."""
    count, height, width, _ = images.shape
    rows, cols = height - KERNEL + 1, width - KERNEL + 1
    windows = np.lib.stride_tricks.sliding_window_view(images, (KERNEL, KERNEL), axis=(1, 2))
    # windows: N, rows, cols, C, kh, kw; kernels: F, C, kh, kw
    conv = np.einsum("nrcxhw,fxhw->nfrc", windows, kernels) + biases[None, :, None, None]
    relu = np.maximum(conv, 0)
    pooled = relu[:, :, :rows // POOL * POOL, :cols // POOL * POOL]
    pooled = pooled.reshape(count, FILTERS, rows // POOL, POOL, cols // POOL, POOL).mean((3, 5))
    return pooled.reshape(count, -1)


def classifier(images, labels, mean=None, std=None, opset=17, seed=0):
    """An NCHW ONNX classifier of ``images`` (NHWC float32 in [0, 1]) into ``labels``' classes."""
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels)
    channels = images.shape[-1]
    mean = np.asarray(mean if mean is not None else [0.5] * channels, np.float32)
    std = np.asarray(std if std is not None else [0.25] * channels, np.float32)
    rng = np.random.default_rng(seed)
    kernels = rng.normal(0, 1, (FILTERS, channels, KERNEL, KERNEL)).astype(np.float32)
    biases = rng.normal(0, 0.1, FILTERS).astype(np.float32)
    features = _features(images, kernels, biases)
    classes = int(labels.max()) + 1
    centroids = np.stack([features[labels == k].mean(0) for k in range(classes)])
    # argmax of c.f - |c|^2 / 2 is the nearest centroid.
    gemm_weights = centroids.astype(np.float32)
    gemm_bias = (-0.5 * (centroids ** 2).sum(1)).astype(np.float32)
    # Folding: conv(x) = conv(z * std + mean) = conv_{w * std}(z) + sum(w * mean) + b.
    folded_kernels = kernels * std[None, :, None, None]
    folded_biases = biases + (kernels * mean[None, :, None, None]).sum((1, 2, 3))
    height, width = images.shape[1:3]
    nodes = [
        helper.make_node("Conv", ["image", "kernels", "biases"], ["conv"],
                         kernel_shape=[KERNEL, KERNEL]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("AveragePool", ["relu"], ["pooled"], kernel_shape=[POOL, POOL],
                         strides=[POOL, POOL]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "centroids", "offsets"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "classifier",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                       ["batch", channels, height, width])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        initializer=[numpy_helper.from_array(folded_kernels.astype(np.float32), "kernels"),
                     numpy_helper.from_array(folded_biases.astype(np.float32), "biases"),
                     numpy_helper.from_array(gemm_weights, "centroids"),
                     numpy_helper.from_array(gemm_bias, "offsets")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="quantlab-tests")
    model.ir_version = min(model.ir_version, 8)  # what onnxruntime and exporters read today
    return model


def normalized_nchw(images, mean=None, std=None):
    """NHWC [0,1] images as ``classifier``'s input: (x - mean) / std, channels first."""
    images = np.asarray(images, np.float32)
    channels = images.shape[-1]
    mean = np.asarray(mean if mean is not None else [0.5] * channels, np.float32)
    std = np.asarray(std if std is not None else [0.25] * channels, np.float32)
    return ((images - mean) / std).transpose(0, 3, 1, 2).copy()


def write(folder, model, name="model.onnx"):
    """``model`` serialized to ``folder/name``; the path."""
    path = folder / name
    path.write_bytes(model.SerializeToString() if hasattr(model, "SerializeToString") else model)
    return path
