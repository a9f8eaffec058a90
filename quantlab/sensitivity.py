"""Which layers int8 hurts: per-layer sensitivity of one quantizer, ranked.

Two measures per layer, named as the user's Keras model names it:

- the quantizer's own cheap statistic, for every layer at once (TFLite: RMSE / scale of its
  output; ONNX Runtime: the quantization noise it adds, see ``quantlab.selective``);
- the accuracy regained when that layer alone is kept in float, on validation images. It
  costs a quantization and an evaluation per layer, so only the ``top_k`` layers worst by
  the cheap statistic are measured; the others say ``None``.

Calibration, validation and test images never overlap (``splits``): a layer is chosen on
validation images, and what it costs or regains is reported on the test images.
"""

from dataclasses import dataclass

from quantlab.defaults import CALIBRATION_SIZE, SEED
from quantlab.errors import QuantlabError

VALIDATION_SIZE = 500  # training images (never calibration ones) that choose the layers
TOP_K = 4  # layers measured by accuracy, worst first by the cheap statistic
STATISTICS = {"TFLiteInt8": "rmse_over_scale", "OnnxInt8": "noise_added"}  # higher: worse


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays with == is not a bool
class Splits:
    """Images and labels of the three uses; the indices say which training images."""

    # numpy arrays (numpy is imported where they are made: --max-drop's default is read here
    # by the option table, which must stay cheap to import)
    calibration: object
    calibration_indices: object
    validation_x: object
    validation_y: object
    validation_indices: object
    test_x: object
    test_y: object


def splits(data, calibration_size=CALIBRATION_SIZE, validation_size=VALIDATION_SIZE, seed=SEED,
           test_images=None):
    """Calibration images exactly as the int8 variants' (``variants.calibration_images``),
    validation images drawn from the other training images, test images from the test split
    (its first ``test_images``). A user's images come with their own validation split
    (``quantlab.datasets.user``), and their training images are the calibration images."""
    import numpy as np

    count = len(data.x_train)
    if data.x_val is not None:  # a user's images: split once, disjointly, when they were read
        return Splits(data.x_train, np.arange(count), data.x_val[:validation_size],
                      data.y_val[:validation_size], None, data.x_test[:test_images],
                      data.y_test[:test_images])
    calibration = np.sort(np.random.default_rng(seed).choice(
        count, min(calibration_size, count), replace=False))
    rest = np.setdiff1d(np.arange(count), calibration)
    if len(rest) < 1 or validation_size < 1:
        raise QuantlabError(f"no training images left for validation after {len(calibration)} "
                            f"calibration images: give a smaller --calibration-size")
    validation = np.sort(np.random.default_rng(seed + 1).choice(
        rest, min(validation_size, len(rest)), replace=False))
    # By construction; said again because a choice made on calibration or test images would
    # pass every check downstream and report an accuracy nobody can reproduce.
    assert not np.intersect1d(calibration, validation).size
    return Splits(data.x_train[calibration], calibration, data.x_train[validation],
                  data.y_train[validation], validation, data.x_test[:test_images],
                  data.y_test[:test_images])


def within(drop_points, max_drop):
    """Whether a drop meets the budget: accuracies are counts over images, so 0.834 - 0.832
    is 0.2000000000000002 points, which must meet a budget of 0.2."""
    return drop_points <= max_drop + 1e-9


def validation_accuracy(quantizer, content, splits):
    """The accuracy of model ``content`` on the validation images, scored once per model and
    images (kept by the quantizer): a search asks again for full int8, which ranking scored,
    and for the layer it tries first, which ``measure_worst`` scored."""
    import hashlib

    from quantlab.selective import accuracy

    digest = hashlib.sha256(content)
    for array in (splits.validation_x, splits.validation_y):
        digest.update(array.tobytes())
    key, scores = digest.digest(), quantizer.validation_scores
    if key not in scores:
        scores[key] = accuracy(content, quantizer.suffix, splits.validation_x,
                               splits.validation_y)
    return scores[key]


def rank(quantizer, splits, top_k=TOP_K, name=None):
    """{quantizer, statistic, top_k, float_accuracy, int8_accuracy, drop_points, layers}:
    ``layers`` most sensitive first, each {layer, nodes, ops, <statistic>, points_regained}.

    Ranked by the points regained where measured, then by the statistic: a layer whose
    float copy regains nothing is no reason to give up speed, however noisy its output."""
    statistic = STATISTICS[type(quantizer).__name__]
    layers = quantizer.layers(splits.validation_x)
    float_accuracy = validation_accuracy(quantizer, quantizer.float_content(), splits)
    int8_accuracy = validation_accuracy(quantizer, quantizer.quantize(), splits)
    for row in layers:
        row["points_regained"] = None
    ranking = {"quantizer": name or type(quantizer).__name__, "statistic": statistic,
               "top_k": 0, "validation_images": int(len(splits.validation_y)),
               "float_accuracy": float_accuracy, "int8_accuracy": int8_accuracy,
               "drop_points": 100.0 * (float_accuracy - int8_accuracy), "layers": layers}
    return measure_worst(quantizer, splits, ranking, top_k)


def measure_worst(quantizer, splits, ranking, top_k=TOP_K):
    """``ranking`` with the accuracy regained measured for its ``top_k`` layers worst by the
    statistic, ranked again: what ``rank`` with that ``top_k`` returns, without measuring the
    statistic and the float and int8 accuracies a second time (on a transformer, the
    statistic alone costs seconds and the float model a conversion)."""
    statistic, int8_accuracy = ranking["statistic"], ranking["int8_accuracy"]
    layers = [dict(row) for row in ranking["layers"]]
    worst = sorted(layers, key=lambda row: -(row[statistic] or 0.0))
    for row in worst[:top_k]:
        if row["points_regained"] is None:
            mixed = validation_accuracy(quantizer, quantizer.quantize(row["nodes"]), splits)
            row["points_regained"] = 100.0 * (mixed - int8_accuracy)
    ranked = sorted(layers, key=lambda row: (row["points_regained"] is None,
                                             -(row["points_regained"] or 0.0),
                                             -(row[statistic] or 0.0)))
    return {**ranking, "top_k": max(top_k, ranking["top_k"]), "layers": ranked}


def fallback_needed(ranking, max_drop):
    """(needed, why) in words: nothing to keep in float when int8 is within ``max_drop``."""
    if within(ranking["drop_points"], max_drop):
        worst = ranking["layers"][0] if ranking["layers"] else None
        named = (f"; the most sensitive layer, {worst['layer']}, has "
                 f"{ranking['statistic']} {_number(worst[ranking['statistic']])}" if worst else "")
        return False, (f"no fallback needed: {ranking['quantizer']} loses "
                       f"{ranking['drop_points']:.2f} points on {ranking['validation_images']} "
                       f"validation images, within {max_drop:g}{named}")
    return True, (f"{ranking['quantizer']} loses {ranking['drop_points']:.2f} points, more than "
                  f"{max_drop:g}: layers are kept in float, most sensitive first")


def _number(value):
    return "-" if value is None else f"{value:.3g}"
