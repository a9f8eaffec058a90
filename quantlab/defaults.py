"""The names and defaults that several parts of quantlab share, in one place.

Cheap to import on purpose (no numpy, no TensorFlow): the pytest plugin, the command line
and the tables read them on every run.
"""

from quantlab.variant_table import VARIANTS  # noqa: F401  (the table of variants is their home)

# What a full study (and the benchmark suite) makes when no variants are named: every one but
# int16x8, which LiteRT runs on its reference kernels, 11-33x slower than float32 (minutes of
# scoring and timing a net); `--variants ...,int16x8` asks for it.
STUDY_VARIANTS = tuple(v for v in VARIANTS if v != "int16x8")

REFERENCE = "float32"  # every ratio is against this variant ...
REFERENCE_RUNTIME = "litert"  # ... run by this runtime
RUNTIMES = ("litert", "openvino", "onnxruntime", "tensorflow")
KERNELS = ("xnnpack", "builtin")  # LiteRT: XNNPACK (the default), or its reference kernels
BATCH_SIZES = (1, 16, 64)
BENCHMARK_THREADS = (1,)  # of `pytest benchmarks/`; a study times 1 and every core
DATASET = "fashion_mnist"
COUNTERS = "auto"  # perf where the CPU exposes counters, else valgrind
CACHE = "host"  # the caches valgrind simulates: this machine's
# Most epochs of the standard training; early stopping may end sooner. P17 trained for 5.
# In the last 5-epoch full study, validation accuracy after epoch 3 was that of the weights
# kept for dense (its best epoch: it early-stopped after 4) and 0.7 (medium) and 1.1 (conv)
# points below the 5th epoch's; the two epochs more cost 40-50 s each a net, a quarter of
# the full study's 15-minute budget on 2 cores.
EPOCHS = 3
# QAT fine-tunes the float weights for one epoch on the first this many training images (a
# fifth of Fashion-MNIST's, 9600 after the validation split): 300 steps at its learning rate
# of 1e-6 move the weights little; what matters is that the fake-quantization ranges start
# from the data's (training.calibrate_ranges). On all 60 000 it took 45-86 s a net.
QAT_IMAGES = 12000
# Seconds a machine of the fleet may be without a worker before its tasks are given up: a
# nanny restarts a killed worker within a few.
GRACE = 15
CALIBRATION_SIZE = 500  # representative training images for int8 calibration
SEED = 0

# The quick training of `quantlab run --quick`, the tests and the benchmark suite: latency
# and counts do not depend on how well the weights are trained, so all share one cache.
QUICK_TRAINING = dict(limit=6000, epochs=2, qat_epochs=1)
# ... and the quick study scores accuracy on the first this many test images (a fifth of
# Fashion-MNIST's): quantized and float32 are compared on the same images, so their
# difference is known far better than either accuracy alone.
QUICK_TEST_IMAGES = 2000
# ... and times P17's pair, the same weights through ONNX, and bf16 where the CPU has it, at
# the smallest and largest batch. The full study adds batch 16, TensorFlow's frozen graph,
# LiteRT's dynamic-range and float16 files, and qat_int8: its file runs the int8 kernels
# (as fast as int8), and what sets it apart, accuracy, one quick QAT epoch cannot show; its
# fine-tune was a third of the quick study's training.
QUICK_VARIANTS = ("float32", "int8", "bf16", "onnx_float32", "onnx_int8")
QUICK_BATCH_SIZES = (1, 64)
# ... but today's nets (nets.MODERN) at batch 1 alone: a vit or a mobilenet call at batch 64
# takes ten times a P17 net's, and in a quick study of the two their batch-64 cases took
# more than half of their timing. The full study times them at every batch size.
QUICK_MODERN_BATCH_SIZES = (1,)

# Then every net and batch size again in interleaved rounds (quantlab.rounds), the groups in
# turn, until every speed-up is known within +-5 % or this many seconds per group are spent
# (a case known that well leaves the rounds: the time goes to the wide ones). The full
# study's 15 s per group gave 22-34 rounds (widest interval +-6 % to +-15 %) and a third of
# its timing; 8 s gives about 12-18 rounds, intervals about a third wider. The quick study:
# the b1 cases of its five nets, three runs in one process on the Zen 4 host, each ratio's
# median moved (max/min over the runs) 17.6 % (median over ratios) with the minimum of 9
# rounds, 5.5 % with 4 s per group (11-21 rounds), 10.1 % with 36 rounds everywhere (in a
# quieter hour: 8.0 % with 9 rounds, 2.1 % with 36); 4 s cost 20 s where 9 rounds cost 15.
QUICK_ROUNDS, FULL_ROUNDS = 4, 8  # --rounds

# Counting (quantlab.counters): uncounted warm-up runs before the windows, then the measured
# runs. perf counts at full speed, so many runs average out the noise. Valgrind simulates at
# a few million instructions a second, and its counts are deterministic, so few suffice: the
# instrumented warm run already packs weights and fills caches, and two measured runs give
# the difference. The warm-up is there for Python: 3.11 quickens a function on about its 8th
# call, and that one-off work (about 1 500 instructions) must not land in one window and not
# the other; uninstrumented runs of a small batch cost little. Not every one does: valgrind
# runs the FMA of float32 kernels through a helper call per lane, so one uncounted run of
# float32 medium at batch 1 took 0.5 s, its 10 warm-up runs 5 of a 13 s count. So warm-up stops
# once its runs took COUNT_WARMUP_SECONDS, after two at least: that one-off work was then
# measured at about 4 500 instructions (+0.08 % on float32 medium's 5.2 million an inference;
# an inference that slow under valgrind runs a million instructions or more).
COUNT_WARMUP = 10
COUNT_WARMUP_SECONDS = 1.0
PERF_ITERATIONS, VALGRIND_ITERATIONS = 50, 2

# A quantized option is recommended only if it loses at most this many accuracy points.
ACCURACY_TOLERANCE = 1.0
