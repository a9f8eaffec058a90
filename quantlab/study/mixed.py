"""The study's sensitivity stage of one net: which layers each int8 quantizer hurts most
(``quantlab.sensitivity``), and where int8 loses more than ``--max-drop`` points, the mixed
model that keeps those layers in float (``quantlab.mixed_precision``), written as a variant
``<quantizer>_mixed`` that the study then scores and times like every other.

The stage's stored result is one row per quantizer: {quantizer, ranking, fallback (the
sentence), search (its steps, or None), mixed (the variant's file and sha256, or None)}, and
a row ``openvino_int8`` with what NNCF's accuracy control reverted, where it ran.
"""

import hashlib

from quantlab import cache, stamps
from quantlab.errors import QuantlabError
from quantlab.variant_table import MIXED, file_name

QUANTIZERS = ("int8", "int8_per_tensor", "onnx_int8", "onnx_int8_per_tensor")
# The quick study ranks layers by the quantizer's own statistic alone (one quantization and
# two evaluations a quantizer): on P17's nets int8 loses at most 0.4 points and no layer is
# kept in float. Only where a fallback is needed are the worst TOP_K layers measured by the
# accuracy they regain, as the full study always does.
QUICK_TOP_K = 0


def folder(net, key):
    """Where the mixed files of one net and stage key are kept (the quantlab cache)."""
    return cache.cache_root() / "mixed" / f"{net}-{cache.config_hash(key)}"


def _quantizers(model, onnx_float, tflite_float, calibration, wanted):
    from quantlab.selective import OnnxInt8, TFLiteInt8
    from quantlab.variants import with_softmax

    def tflite(per_channel):
        # Shared with the per-layer error stage (int8's), and given the float32 variant's
        # file: the same converter made it of the same model, so it need not be made again.
        quantizer = TFLiteInt8.shared(model, calibration, per_channel)
        if tflite_float is not None:
            quantizer.use_float(tflite_float())
        return quantizer

    names = [layer.name for layer in with_softmax(model).layers]
    makers = {"int8": lambda: tflite(True),
              "int8_per_tensor": lambda: tflite(False),
              "onnx_int8": lambda: OnnxInt8(onnx_float(), calibration, names),
              "onnx_int8_per_tensor": lambda: OnnxInt8(onnx_float(), calibration, names,
                                                       per_channel=False)}
    return {name: makers[name] for name in wanted}


def studied_quantizers(artifacts):
    """The quantizers of the variants studied (ONNX Runtime's need the ONNX float32 file)."""
    return [q for q in QUANTIZERS if q in artifacts
            and (not q.startswith("onnx") or "onnx_float32" in artifacts)]


def analyse(config, data, net, model, artifacts, out, progress):
    """The stage's rows; each mixed model is written to ``out`` under its variant's file name."""
    from quantlab import mixed_precision, sensitivity
    from quantlab.study.config import test_images

    unmeasurable = why_not_measured(config, data)
    if unmeasurable:
        progress(f"{net}: no per-layer sensitivity: {unmeasurable}")
        return []
    splits = sensitivity.splits(data, config.calibration_size, seed=config.seed,
                                test_images=test_images(config))
    onnx_path = artifacts["onnx_float32"].path if "onnx_float32" in artifacts else None

    def exported(variant):  # the bytes checked against the export's sha256, then used
        path = artifacts[variant].path
        content = path.read_bytes()
        if hashlib.sha256(content).hexdigest() != artifacts[variant].sha256:
            raise QuantlabError(f"{path} changed since it was exported; run the study "
                                "again to export it anew")
        return content

    tflite_float = (lambda: exported("float32")) if "float32" in artifacts else None
    rows = []
    for name, make in _quantizers(model, lambda: exported("onnx_float32"), tflite_float,
                                  splits.calibration, studied_quantizers(artifacts)).items():
        progress(f"{net}: per-layer sensitivity of {name}")
        quantizer = make()
        top_k = QUICK_TOP_K if config.quick else sensitivity.TOP_K
        ranking = sensitivity.rank(quantizer, splits, top_k=top_k, name=name)
        needed, why = sensitivity.fallback_needed(ranking, config.max_drop)
        if needed and top_k < sensitivity.TOP_K:  # worth measuring what the worst regain
            ranking = sensitivity.measure_worst(quantizer, splits, ranking)
        row = {"quantizer": name, "ranking": ranking, "fallback": why, "search": None,
               "mixed": None}
        if needed:
            progress(f"{net}: {why}")
            found = mixed_precision.search(quantizer, splits, ranking, config.max_drop)
            variant = f"{name}_mixed"
            path = out / file_name(variant)
            cache.write_bytes(path, found["content"])
            row["mixed"] = {"variant": variant, "file": path.name,
                            "sha256": hashlib.sha256(found["content"]).hexdigest(),
                            "bytes": len(found["content"])}
            row["search"] = {k: v for k, v in found.items() if k not in ("content", "models")}
        rows.append(row)
    # NNCF's accuracy control evaluates the model again for every group it reverts: 8-43 s
    # on P17's nets, 130 s on the vit, whose int8 needs it; the quick study has no
    # openvino_int8 variant to compare it with and leaves it to the full study.
    if onnx_path is not None and not config.quick:
        progress(f"{net}: OpenVINO's accuracy-controlled int8 (NNCF)")
        control = mixed_precision.openvino_accuracy_control(onnx_path, splits, config.max_drop)
        rows.append({"quantizer": "openvino_int8", "accuracy_control": {
            k: v for k, v in control.items() if k not in ("model", "log")}})
    return rows


def why_not_measured(config, data):
    """Why no layer's sensitivity can be measured on ``data`` (None: it can): accuracy needs
    labels, and validation images that neither calibrate nor are scored."""
    if not data.labelled:
        return "the images have no labels to measure accuracy with"
    if data.x_val is None and len(data.x_train) <= config.calibration_size:
        return (f"all {len(data.x_train)} training images calibrate int8 and none is left to "
                "choose layers on (give a smaller --calibration-size)")
    return None


def recall_or_analyse(out, analyse):
    """The rows kept in ``out`` beside their mixed files when every file is as recorded (a
    search costs seconds to minutes, and a study's ``OUT/.state`` is only its own), else
    ``analyse()``'s, kept there: the rows last, so files without their rows are never
    trusted."""
    kept = out / "sensitivity.json"
    if kept.is_file():
        try:
            rows = stamps.read_stamped(kept, "state")
            if isinstance(rows, list) and artifacts_of(rows, out) is not None:
                return rows
        except (stamps.Stale, AttributeError, KeyError, TypeError):
            pass  # rows of another shape: analysed again
    rows = analyse()
    cache.write_json(kept, stamps.stamp("state", rows))
    return rows


def artifacts_of(rows, out):
    """{variant: Artifact} of the stage's mixed models, each checked against its recorded
    sha256; None when one is missing or changed (the stage is then computed again)."""
    from quantlab.variants import Artifact

    found = {}
    for row in rows:
        mixed = row.get("mixed")
        if not mixed:
            continue
        variant = mixed["variant"]
        if variant not in MIXED:
            return None
        path = out / file_name(variant)
        if not path.is_file() or cache.sha256_of(path) != mixed["sha256"]:
            return None
        found[variant] = Artifact(variant, path, {
            "format": MIXED[variant].format, "bytes": mixed["bytes"], "sha256": mixed["sha256"],
            "execute_in": None, "file": path.name})
    return found


def by_quantizer(rows):
    """results.json's ``sensitivity[net]``: each row by its quantizer."""
    return {row["quantizer"]: {k: v for k, v in row.items() if k != "quantizer"} for row in rows}


def off_the_roofline(cases):
    """The timed cases, a mixed model's without MACs per image: the roofline counts the bytes
    a variant moves from its one storage type (``roofline.STORAGE``), which a model of int8
    and float layers does not have; its latency, accuracy and place on the front stand."""
    return [{**case, "macs_per_image": None} if case.get("variant") in MIXED else case
            for case in cases]
