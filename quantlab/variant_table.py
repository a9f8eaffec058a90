"""The facts about each variant, in one table that export, the runtimes, evaluation, the
latency suite, the study, the report and compare all read.

Cheap to import on purpose (no numpy, no TensorFlow): the pytest plugin reads it on every
run. The table is part of the export's cache key (``variants.RECIPE``): a file's name and
how it is made follow from it.
"""

import dataclasses
from dataclasses import dataclass

from quantlab import machine

# Which runtimes read each file format, the natural one first.
READERS = {"tflite": ("litert", "openvino"), "onnx": ("onnxruntime", "openvino"),
           "graphdef": ("tensorflow",), "openvino": ("openvino",)}
# An OpenVINO IR is an XML graph and a file of weights: quantlab packs both in one file
# (quantlab.runtime.ir_file), hashed and checked like every other artifact.
SUFFIXES = {"tflite": ".tflite", "onnx": ".onnx", "graphdef": ".pb", "openvino": ".ovir"}


@dataclass(frozen=True)
class Variant:
    format: str  # of its file: tflite, onnx, graphdef (a frozen TensorFlow graph) or openvino
    weights: str  # the precision its weights are computed in ...
    activations: str  # ... and its activations
    # The float32 variant of the same format that it is made from and compared with on one
    # runtime (a float32 file is its own).
    float_counterpart: str
    # Below float32 in what it computes or stores for computing. float16 is not: LiteRT and
    # OpenVINO widen its half-size weights and compute in float32.
    quantized: bool
    # P17's standard or quantized net in its format: counted at every batch size on the
    # reference runtime, and on every runtime at the first batch size.
    p17_pair: bool = False
    counted_quick: bool = False  # counted by the quick study (on the reference, first batch)
    file_of: str | None = None  # the variant whose file it runs (None: a file of its own)
    executed_in: str | None = None  # the precision a runtime is asked to run that file in
    readers: tuple | None = None  # when fewer runtimes than its format's can run it
    needs: str | None = None  # the CPU feature it needs
    # Where it cannot be made: quantlab's nets by name, and any model holding a layer of these
    # Keras kinds (a user's own), with the reason said when it is skipped.
    not_for: tuple = ()
    not_with_layers: tuple = ()
    why_not: str | None = None


TABLE = {
    # A frozen TensorFlow GraphDef: P17's float format.
    "float32_tf": Variant("graphdef", "float32", "float32", "float32_tf", quantized=False),
    # TFLite float32: the reference of every ratio.
    "float32": Variant("tflite", "float32", "float32", "float32", quantized=False,
                       p17_pair=True, counted_quick=True),
    "dynamic_int8": Variant("tflite", "int8", "float32", "float32", quantized=True),
    "float16": Variant("tflite", "float16", "float32", "float32", quantized=False),
    # Full-integer post-training quantization (the TFLite converter's): int8 weights with a
    # scale per output channel, int8 activations with one per tensor.
    "int8": Variant("tflite", "int8", "int8", "float32", quantized=True, p17_pair=True,
                    counted_quick=True),
    # The same with one scale per weight tensor (the converter's setting for older kernels):
    # a channel of small weights shares the range of the largest.
    "int8_per_tensor": Variant("tflite", "int8", "int8", "float32", quantized=True),
    # int16 activations, int8 weights (float32 input and output). LiteRT runs it on its
    # reference kernels (XNNPACK has none); OpenVINO reads the file but computes it in float32,
    # which is not this variant's arithmetic.
    "int16x8": Variant("tflite", "int8", "int16", "float32", quantized=True,
                       readers=("litert",)),
    # A fake-quantization fine-tune of the float weights, then full-integer. tfmot's
    # quantize_model refuses a model with LayerNormalization (the vit's).
    "qat_int8": Variant("tflite", "int8", "int8", "float32", quantized=True, not_for=("vit",),
                        not_with_layers=("LayerNormalization",),
                        why_not="tfmot's quantization-aware training has no 8-bit scheme for "
                                "LayerNormalization layers"),
    # The float32 file executed in bfloat16: only OpenVINO does that, and only where the CPU
    # multiplies bfloat16.
    "bf16": Variant("tflite", "bf16", "bf16", "float32", quantized=True, file_of="float32",
                    executed_in="bf16", readers=("openvino",), needs="bf16"),
    # The float net exported to ONNX (tf2onnx).
    "onnx_float32": Variant("onnx", "float32", "float32", "onnx_float32", quantized=False,
                            p17_pair=True),
    # ONNX Runtime's static int8 quantization (QDQ), weights per channel ...
    "onnx_int8": Variant("onnx", "int8", "int8", "onnx_float32", quantized=True, p17_pair=True),
    # ... and per tensor (quantize_static's default, which collapses some nets).
    "onnx_int8_per_tensor": Variant("onnx", "int8", "int8", "onnx_float32", quantized=True),
    # OpenVINO's own quantizer (NNCF, its default preset) on the ONNX float32 file read by
    # OpenVINO, saved as OpenVINO IR: compared with that ONNX file on OpenVINO.
    "openvino_int8": Variant("openvino", "int8", "int8", "onnx_float32", quantized=True),
}
VARIANTS = tuple(TABLE)  # what export makes
# Made by the study's mixed-precision search (quantlab.mixed_precision), not by export: the
# quantizer's own file with its most sensitive layers kept in float, read by the same
# runtimes and compared with the same float32 file as the variant it starts from.
MIXED = {f"{base}_mixed": dataclasses.replace(TABLE[base], p17_pair=False, counted_quick=False)
         for base in ("int8", "int8_per_tensor", "onnx_int8", "onnx_int8_per_tensor")}
TABLE.update(MIXED)


def file_format(variant):
    return TABLE[variant].format


def source_variant(variant):
    """The variant whose file ``variant`` runs: itself, but for a way of running another's."""
    return TABLE[variant].file_of or variant


def file_name(variant):
    return source_variant(variant) + SUFFIXES[file_format(variant)]


def executed_in(variant):
    """The precision a runtime is asked to run the file in (None: the file's own)."""
    return TABLE[variant].executed_in


def calibrated(variant):
    """Whether its integer activations take their ranges from calibration images."""
    return TABLE[variant].activations in ("int8", "int16")


# These two also read the variants of stored results, which may name one this table does
# not know (written by another version): it is never taken for a float baseline.
def quantized(variant):
    return TABLE[variant].quantized if variant in TABLE else True


def float_counterpart(variant):
    """The float32 variant that ``variant`` is compared with on one runtime (None: unknown)."""
    return TABLE[variant].float_counterpart if variant in TABLE else None


def p17_pair(variant):
    return TABLE[variant].p17_pair


def counted_quick(variant):
    return TABLE[variant].counted_quick


def runtimes_reading(fmt):
    """The runtimes that read a file of format ``fmt``, the natural one first."""
    return READERS.get(fmt, ())


def readers(variant):
    """The runtimes that can run ``variant`` on some CPU, the natural one first."""
    return TABLE[variant].readers or runtimes_reading(file_format(variant))


def natural_reader(variant):
    return readers(variant)[0]


def not_applicable(variant, net, layer_kinds=()):
    """Why ``variant`` cannot be made of net ``net`` whose layers are of ``layer_kinds``
    (Keras class names; empty: unknown yet), or None where it can."""
    fact = TABLE[variant]
    held = [kind for kind in fact.not_with_layers if kind in layer_kinds]
    if net in fact.not_for or held:
        return f"{variant} does not apply to {net}: {fact.why_not}"
    return None


def readers_on(variant, cpu):
    """The runtimes that can run ``variant`` on the CPU ``cpu`` (``machine.cpu_info()``)."""
    needs = TABLE[variant].needs
    if needs == "bf16" and not machine.has_bf16(cpu):
        return ()
    return readers(variant)
