"""The names and defaults that several parts of quantlab share, in one place.

Cheap to import on purpose (no numpy, no TensorFlow): the pytest plugin, the command line
and the tables read them on every run.
"""

VARIANTS = ("float32_tf", "float32", "dynamic_int8", "float16", "int8", "qat_int8", "bf16",
            "onnx_float32", "onnx_int8")
REFERENCE = "float32"  # every ratio is against this variant ...
REFERENCE_RUNTIME = "litert"  # ... run by this runtime
RUNTIMES = ("litert", "openvino", "onnxruntime", "tensorflow")
KERNELS = ("xnnpack", "builtin")  # LiteRT: XNNPACK, or its reference kernels
BATCH_SIZES = (1, 16, 64)
THREADS = (1,)
CALIBRATION_SIZE = 500  # representative training images for int8 calibration
SEED = 0

# The quick training of `quantlab run --quick`, the tests and the benchmark suite: latency
# and counts do not depend on how well the weights are trained, so all share one cache.
QUICK_TRAINING = dict(limit=6000, epochs=2, qat_epochs=1)

SCHEMA = 2  # of results.json; bumped whenever its layout changes
# A quantized option is recommended only if it loses at most this many accuracy points.
ACCURACY_TOLERANCE = 1.0
