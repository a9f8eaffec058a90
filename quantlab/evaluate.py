"""Compare the (variant, runtime) pairs of one net: bytes on disk, accuracy, agreement.

Every pair is scored on the test split (the quick study: its first images) against the
study's reference (TFLite float32 on LiteRT; a user's ONNX model on ONNX Runtime): a quantized
file run by two runtimes is two answers, and both are shown. Images without labels have no
accuracy: agreement with the reference and the largest probability difference stand alone.
"""

import warnings

import numpy as np

from quantlab import runtime
from quantlab.defaults import REFERENCE, REFERENCE_RUNTIME
from quantlab.errors import QuantlabError
from quantlab.variant_table import natural_reader

EVALUATION_BATCH = 500  # large batches: evaluation is not timed, so throughput is what counts
# One thread: in a study the previous net's counting runs beside it, and on a busy machine the
# runtimes' thread pools spent more CPU spinning and waiting than they saved (a vit's 13 pairs
# at a load of 5-9 on 2 cores: 26 CPU-s instead of 30; the ONNX Runtime pairs 0.9-1.5 instead
# of 1.6-2.9); the probabilities of every pair of the vit and the mobilenet were
# bit-identical to those of the runtimes' default thread counts.
EVALUATION_THREADS = 1


def predictions(artifact, data, runtime_name, threads=EVALUATION_THREADS,
                batch_size=EVALUATION_BATCH, images=None):
    """Class probabilities of ``artifact`` run by ``runtime_name`` on the test split (its
    first ``images``, if given)."""
    from quantlab.runtime.base import PixelRangeWarning

    x = data.x_test[:images]
    # Loaded for the batch it runs first: OpenVINO compiles a model per batch size, and the
    # batch-1 compilation a load makes otherwise was thrown away here (seconds for an int8 vit).
    predictor = runtime.load(artifact.path, runtime=runtime_name, threads=threads,
                             precision=artifact.precision, sha256=artifact.sha256,
                             batch=max(1, min(batch_size, len(x))))
    with warnings.catch_warnings():
        if getattr(data, "record", None):  # the user's own preprocessing, explicit and
            # recorded: normalized pixels are what the model takes, not a mistake in [0, 1]
            warnings.simplefilter("ignore", PixelRangeWarning)
        return predictor.predict(x, batch_size=batch_size), predictor.precision


def accuracies(artifacts, data, pairs=None, threads=EVALUATION_THREADS,
               batch_size=EVALUATION_BATCH, progress=None, label="evaluating", images=None,
               reference=(REFERENCE, REFERENCE_RUNTIME)):
    """Size, accuracy and agreement: one row per (variant, runtime) pair, measured against
    ``reference`` (variant, runtime).

    ``pairs`` defaults to each variant on its natural runtime. ``size_ratio`` is reference
    bytes / variant bytes (P17's "SN size / QN size"), ``delta_points`` the accuracy change
    in percentage points, ``agreement`` the share of test images whose top-1 class matches
    the reference, ``max_abs_diff`` the largest absolute difference of any probability.
    Without labels (``data.y_test`` None) ``accuracy`` and ``delta_points`` are None.
    ``images``: score the first this many test images only (``test_images`` says how many).
    """
    labels = None if data.y_test is None else data.y_test[:images]
    scored = len(data.x_test[:images])
    pairs = list(pairs or [(v, natural_reader(v)) for v in artifacts])
    if reference[0] in artifacts and reference not in pairs:
        pairs.insert(0, reference)
    probabilities, failed = {}, []
    steps = getattr(progress, "steps", None)  # a bar on a terminal, where there is one
    for variant, name in steps(pairs, f"{label} {scored} test images") if steps else pairs:
        if progress and not steps:
            progress(f"{label} {variant} on {name}, {scored} test images")
        try:
            probabilities[(variant, name)] = predictions(artifacts[variant], data, name, threads,
                                                         batch_size, images)
        except QuantlabError as error:  # a runtime that cannot run this file: said, not fatal
            failed.append({"variant": variant, "runtime": name, "not_run": str(error)})
    if reference not in probabilities:  # a user's selection without float32: the first pair
        reference = pairs[0]
    ref_probs = probabilities[reference][0]
    ref_classes = ref_probs.argmax(axis=1)
    ref_accuracy = None if labels is None else float(np.mean(ref_classes == labels))
    ref_bytes = artifacts[reference[0]].bytes
    rows = []
    for (variant, name), (probs, precision) in probabilities.items():
        classes = probs.argmax(axis=1)
        accuracy = None if labels is None else float(np.mean(classes == labels))
        rows.append({
            "variant": variant,
            "runtime": name,
            "precision": precision,
            "reference": reference[0],
            "reference_runtime": reference[1],
            "bytes": artifacts[variant].bytes,
            "size_ratio": ref_bytes / artifacts[variant].bytes,
            "accuracy": accuracy,
            "delta_points": None if labels is None else 100.0 * (accuracy - ref_accuracy),
            "agreement": float(np.mean(classes == ref_classes)),
            "max_abs_diff": float(np.max(np.abs(probs - ref_probs))),
            "test_images": scored,
            # one class for every image, or for most: a model fed other pixels than it was
            # trained on (report.sentences.read_first)
            **dominance(classes, labels),
        })
    return rows + failed


def dominance(classes, labels):
    """How many classes the top-1 answers name, the share of the most named one and, with
    labels, that class's share among the labels."""
    counts = np.bincount(classes)
    top = int(counts.argmax())
    found = {"classes_predicted": int(np.count_nonzero(counts)),
             "top_class_share": float(counts[top] / len(classes))}
    if labels is not None:
        found["top_class_label_share"] = float(np.mean(labels == top))
    return found
