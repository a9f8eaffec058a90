"""Compare the variants of one net: bytes on disk, accuracy, agreement with float32."""

import numpy as np

from quantlab import runtime
from quantlab.variants import REFERENCE


def predictions(artifact, data, threads=None, batch_size=256):
    """Class probabilities of ``artifact`` on the whole test split."""
    return runtime.load(artifact.path, threads=threads).predict(data.x_test, batch_size=batch_size)


def compare(artifacts, data, threads=None, batch_size=256, progress=None):
    """One row per variant, measured against the float32 TFLite reference where present.

    ``size_ratio`` is reference bytes / variant bytes (P17's "SN size / QN size"),
    ``delta_points`` the accuracy change in percentage points, ``agreement`` the share of
    test images whose top-1 class matches the reference, ``max_abs_diff`` the largest
    absolute difference of any output probability.
    """
    reference = REFERENCE if REFERENCE in artifacts else next(iter(artifacts))
    probabilities = {}
    for variant, artifact in artifacts.items():
        if progress:
            progress(f"evaluating {variant} on {len(data.x_test)} test images")
        probabilities[variant] = predictions(artifact, data, threads, batch_size)
    ref_probs = probabilities[reference]
    ref_classes = ref_probs.argmax(axis=1)
    ref_accuracy = float(np.mean(ref_classes == data.y_test))
    ref_bytes = artifacts[reference].bytes
    rows = []
    for variant, artifact in artifacts.items():
        probs = probabilities[variant]
        classes = probs.argmax(axis=1)
        accuracy = float(np.mean(classes == data.y_test))
        rows.append({
            "variant": variant,
            "reference": reference,
            "bytes": artifact.bytes,
            "size_ratio": ref_bytes / artifact.bytes,
            "accuracy": accuracy,
            "delta_points": 100.0 * (accuracy - ref_accuracy),
            "agreement": float(np.mean(classes == ref_classes)),
            "max_abs_diff": float(np.max(np.abs(probs - ref_probs))),
            "test_images": int(len(data.y_test)),
        })
    return rows
