"""The published results of the 2018 P17 study, for side-by-side comparison.

Transcribed from the P17 slides and its raw pyperf result files (CIFAR-10, TensorFlow 1
graph-transform quantization, Intel Core i7-6500U, whole-process measurements). "SN" is
the standard float network, "QN" the 8-bit quantized one.
"""

NETS = ("dense", "medium", "conv")
BATCH_SIZES = (1, 16, 64)
CPU = "Intel Core i7-6500U (laptop, 2016)"
DATASET = "cifar10"

# Bytes on disk, from "Network size" (MB as printed on the slides).
SIZE_MB = {"dense": (18.1, 4.53), "medium": (16.3, 4.08), "conv": (4.58, 1.17)}

# Top-1 test accuracy (standard, quantized).
ACCURACY = {"dense": (0.6358, 0.6220), "medium": (0.6461, 0.6476), "conv": (0.7345, 0.7348)}

# pyperf mean seconds per benchmark run (standard, quantized), from the raw result files.
SECONDS = {
    "dense": {1: (2.780, 7.918), 16: (0.875, 1.778), 64: (0.675, 1.402)},
    "medium": {1: (2.954, 8.533), 16: (1.398, 2.760), 64: (1.247, 2.377)},
    "conv": {1: (1.437, 4.741), 16: (0.742, 2.780), 64: (0.738, 2.580)},
}

# Cache miss rates in percent: (total, L1, LLC) for (standard, quantized), per batch size.
MISS_RATES = {
    1: {"dense": ((57, 10, 43), (14, 9, 5)), "medium": ((45, 10, 19), (13, 9, 4)),
        "conv": ((34, 9, 30), (14, 6, 12))},
    16: {"dense": ((34, 7, 15), (27, 5, 14)), "medium": ((40, 7, 27), (25, 5, 13)),
         "conv": ((33, 7, 27), (31, 3, 28))},
    64: {"dense": ((42, 6, 35), (39, 4, 24)), "medium": ((44, 6, 41), (36, 5, 22)),
         "conv": ((40, 7, 34), (45, 3, 30))},
}

# Instructions per cycle (standard, quantized), per batch size.
IPC = {
    1: {"dense": (1.22, 1.58), "medium": (1.31, 1.54), "conv": (1.38, 1.43)},
    16: {"dense": (1.28, 1.34), "medium": (1.28, 1.37), "conv": (1.36, 1.25)},
    64: {"dense": (1.39, 1.26), "medium": (1.35, 1.33), "conv": (1.25, 1.18)},
}

# Whole-process perf counts of the medium net (run_bench.py), standard and quantized: the
# quantized run had lower miss *rates* but more misses and ~4.9x the instructions.
MEDIUM_PROCESS_COUNTS = {
    "standard": {"instructions": 1_784_121_078_886, "cache_references": 76_076_451_357,
                 "cache_misses": 34_405_508_776},
    "quantized": {"instructions": 8_668_164_308_907, "cache_references": 390_512_856_755,
                  "cache_misses": 50_577_664_832},
}
