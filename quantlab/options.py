"""The study's options, declared once for ``quantlab run`` and the pytest plugin.

As pytest-benchmark's ``add_display_options(addoption, prefix="benchmark-")`` serves its
plugin and its command line, ``add_study_options(addoption, prefix)`` declares each option of
``STUDY`` with argparse's ``add_argument`` (prefix "") or pytest's ``group.addoption`` (prefix
"quantlab-"), and ``to_argv`` writes chosen values back as command-line strings (the study's
timing child). Each parser raises ``argparse.ArgumentTypeError`` with one line naming the
valid choices.

Cheap to import (the plugin loads in every pytest run): a list of valid names may be given as
"module:ATTRIBUTE", imported only when an option is actually given, and a default is never
parsed (argparse would run a string default through its type at every run).
"""

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path

from quantlab import defaults, mixed_precision, nets, rounds, variant_table

CLI, PLUGIN = "", "quantlab-"  # the prefixes of the two surfaces
LAYOUTS = ("NCHW", "NHWC")  # as quantlab.datasets.user.LAYOUTS, which imports numpy
# numpy's and Python's generators, which Keras seeds from one number, take seeds below 2**32.
MAX_SEED = 2**32 - 1


# --- parsers ----------------------------------------------------------------------------------

def _choices(valid):
    if isinstance(valid, str):  # "module:ATTRIBUTE", imported only when the option is given
        module, _, attribute = valid.partition(":")
        valid = getattr(__import__(module, fromlist=[attribute]), attribute)
    return valid


def names(valid, what):
    def parse(text):
        given = tuple(n.strip() for n in text.split(",") if n.strip())
        choices = _choices(valid)
        unknown = [n for n in given if n not in choices]
        if unknown or not given:
            problem = f"unknown {what} {unknown[0]!r}" if unknown else f"no {what} given"
            raise argparse.ArgumentTypeError(f"{problem}: choose from {','.join(choices)}")
        return tuple(dict.fromkeys(given))
    return parse


def name(valid, what):
    def parse(text):
        choices = _choices(valid)
        if text not in choices:
            raise argparse.ArgumentTypeError(f"unknown {what} {text!r}: choose one of {', '.join(choices)}")
        return text
    return parse


def seed(text):
    """A random seed: a whole number from 0 to ``MAX_SEED``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed {text!r} is not a whole number") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"seed {value} is out of range: give 0 to {MAX_SEED}")
    return value


def points(text):
    """Accuracy points: a finite number, at least 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of accuracy points") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give accuracy points from 0 up (1 is one "
                                         "percentage point of top-1 accuracy)")
    return value


def positive_ints(text):
    try:
        values = tuple(dict.fromkeys(int(v) for v in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be at least 1")
    return values


# More inference threads than any machine of this kind has cores (runtimes take a 32-bit
# count; a count of 2**31 reached LiteRT as an error about the model file).
MAX_THREADS = 1024


def thread_counts(text):
    """Comma-separated thread counts; ``all`` means every core this process may use."""
    import os

    counts = []
    for item in text.split(","):
        item = item.strip()
        if item == "all":
            counts.append(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                          else os.cpu_count() or 1)
            continue
        try:
            counts.append(int(item))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: give thread counts as whole numbers or 'all' (e.g. 1,all)") from None
        if not 1 <= counts[-1] <= MAX_THREADS:
            raise argparse.ArgumentTypeError(f"{text!r}: give thread counts from 1 to {MAX_THREADS}")
    return tuple(dict.fromkeys(counts))


def folder(text):
    """An existing folder (``--data-dir``): a mistyped one would otherwise go unnoticed."""
    if not Path(text).expanduser().is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder; give the folder that holds "
                                         "the dataset files")
    return text


def seconds(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds from 0 to 3600, got {text!r}")
    return value


def data_source(text):
    """--data: a built-in dataset's name (as --dataset), else the path of the user's images
    (a folder of class subfolders, or an .npz), checked when the study is made. A folder that
    shares a built-in name is given as ./NAME."""
    from quantlab.datasets.names import NAMES

    return text if text in NAMES else Path(text).expanduser()


def _number(text, what):
    try:
        if "/" in text:  # a fraction such as 1/255
            numerator, _, denominator = text.partition("/")
            value = float(numerator) / float(denominator)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{what} {text!r} is not a number (e.g. 0.5 or 1/255)") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{what} {text!r} is not a finite number")
    return value


def scale(text):
    value = _number(text, "scale")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"scale {text!r} must be positive (pixels are multiplied by it)")
    return value


def per_channel(what):
    """One number, or one per channel, comma-separated (--mean 0.485,0.456,0.406)."""
    def parse(text):
        values = tuple(_number(v.strip(), what) for v in text.split(","))
        if what == "std" and any(v <= 0 for v in values):
            raise argparse.ArgumentTypeError(f"std {text!r}: every value must be positive (pixels "
                                             "are divided by it)")
        return values
    return parse


def layout(text):
    if text.upper() not in LAYOUTS:
        raise argparse.ArgumentTypeError(f"unknown layout {text!r}: choose NCHW (channels first, as "
                                         "PyTorch) or NHWC (channels last, as Keras)")
    return text.upper()


def cache_geometry(text):
    from quantlab.counters import parse_cache_geometry

    return parse_cache_geometry(text)


def manifest(text):
    """--quantlab-artifacts: a JSON file of model files, read into {dataset, artifacts}."""
    from quantlab import latency_suite

    try:
        dataset, found = latency_suite.read_manifest(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    for _, variant in found:  # any net name: a manifest may list a user's own model
        # A study's manifest lists its mixed-precision variants beside the exported ones.
        name(tuple(variant_table.TABLE), "variant")(variant)
    return {"dataset": dataset, "artifacts": found}


# --- the tables -------------------------------------------------------------------------------

def _text(value):
    """A chosen value as its parser reads it back."""
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


@dataclass(frozen=True)
class Option:
    name: str  # as `quantlab run` spells it, without dashes
    parse: object  # text -> value, or ArgumentTypeError with one line
    default: object
    metavar: str
    help: str  # a sentence; the default is added to it in words
    shown: str = None  # the default in words, where _text(default) would not say it
    # What one surface declares differently, by prefix: {prefix: {"default": ..., "shown": ...}}.
    # Each entry says in a comment why the surfaces cannot share the value.
    differs: dict = field(default_factory=dict)

    @property
    def dest(self):
        return self.name.replace("-", "_")

    def on(self, prefix):
        """(default, default in words) on the surface of ``prefix``."""
        given = self.differs.get(prefix, {"default": self.default, "shown": self.shown})
        return given["default"], given.get("shown") or _text(given["default"])


STUDY = (
    Option("dataset", name("quantlab.datasets:NAMES", "dataset"), defaults.DATASET, "NAME",
           "Dataset to train the nets on (list them with `quantlab datasets`)."),
    # The user's own images for the user's own model (--model); preprocessing applies to them
    # only (built-in datasets are scaled to 0..1). None: not given.
    Option("data", data_source, None, "DATA",
           "Images to study your --model on: a folder with one subfolder of PNG/JPEG images per "
           "class (class names sorted, as Keras' image_dataset_from_directory and torchvision's "
           "ImageFolder read it), an .npz with x (N images) and optionally y (N labels), or a "
           "built-in dataset's name (as --dataset).", shown="--dataset"),
    Option("scale", scale, None, "S", "Your --data pixels (0-255) are multiplied by S first.",
           shown="1/255"),
    Option("mean", per_channel("mean"), None, "M[,M...]",
           "Subtracted from the scaled pixels, one value or one per channel (torchvision's "
           "Normalize: 0.485,0.456,0.406).", shown="0"),
    Option("std", per_channel("std"), None, "S[,S...]",
           "The scaled pixels less the mean are divided by it, one value or one per channel "
           "(torchvision's Normalize: 0.229,0.224,0.225).", shown="1"),
    Option("layout", layout, None, "NCHW|NHWC",
           "Layout of the model's input, for your --data.", shown="read from the model's input"),
    # Defaults of None mean "all": with --quantlab-artifacts, all that the file lists.
    Option("nets", names(nets.ALL, "net"), None, "LIST",
           f"Comma-separated nets, of {','.join(nets.ALL)}.",
           shown=f"all {len(nets.ALL)} (a benchmark run: P17's {','.join(nets.NAMES)})"),
    Option("variants", names(defaults.VARIANTS, "variant"), None, "LIST",
           f"Comma-separated variants, of {','.join(defaults.VARIANTS)}.",
           shown=f"all but int16x8 (quantlab run --quick: {','.join(defaults.QUICK_VARIANTS)})"),
    Option("runtimes", names(defaults.RUNTIMES, "runtime"), None, "LIST",
           f"Comma-separated runtimes, of {','.join(defaults.RUNTIMES)}; each runs every "
           "variant whose file it reads.", shown="every one installed and working here"),
    Option("batch-sizes", positive_ints, None, "LIST", "Comma-separated batch sizes.",
           shown=f"{','.join(map(str, defaults.BATCH_SIZES))} (quantlab run --quick: "
                 f"{','.join(map(str, defaults.QUICK_BATCH_SIZES))})"),
    Option("threads", thread_counts, None, "N[,N...]",
           "Inference thread counts to time every case at ('all': every core); `quantlab run` "
           "also counts the first and measures deployment at it.", shown="1,all",
           # A benchmark run times one count unless asked: each count multiplies its cases.
           differs={PLUGIN: {"default": defaults.BENCHMARK_THREADS}}),
    Option("counters", name("quantlab.counters:BACKENDS", "counters backend"), defaults.COUNTERS,
           "BACKEND", "Cache/instruction counters: auto (perf where the CPU exposes them, "
           "valgrind's simulation otherwise), perf, valgrind or off; valgrind takes 5-30 s a case.",
           # The plugin loads in every pytest run: a benchmark run times only, unless asked.
           differs={PLUGIN: {"default": "off"}}),
    # The study's accuracy budget; the plugin declares it as every study option, unused.
    Option("max-drop", points, mixed_precision.MAX_DROP, "POINTS",
           "Accuracy points a quantized model may lose against float32 (on validation images): "
           "beyond it, the study keeps int8's most sensitive layers in float until it is "
           "within, and What to ship recommends only options within it."),
    Option("rounds", seconds, None, "SECONDS",
           "After pytest-benchmark's window, time the cases of each net and batch size again "
           "in interleaved rounds (every case once per round, in a shuffled order) until "
           "every speed-up against LiteRT float32 is known within +-5 %% (95 %% interval) "
           f"or SECONDS are spent (at least {rounds.MIN_ROUNDS} rounds); each case's median is "
           "then the median over rounds, and its speed-up the ratio of the lower quartiles of "
           "the rounds, with its interval.",
           shown=f"{defaults.QUICK_ROUNDS:g} in the quick study, {defaults.FULL_ROUNDS:g} in the full",
           # A study's every ratio needs its rounds; a benchmark run times only, unless asked.
           differs={PLUGIN: {"default": 0.0, "shown": "0 (off)"}}),
    Option("cache", cache_geometry, defaults.CACHE, "GEOMETRY",
           "Caches valgrind simulates: host, i7-6500u (the P17 laptop) or a spec "
           "I1=size,assoc,line:D1=...:LL=..."),
)

# The pytest plugin's own: how the latency suite times, profiles and finds its models.
TRAININGS = ("quick", "full")  # as quantlab.latency_suite.TRAININGS, which imports numpy
PROFILES = ("off", "native")
BENCHMARK = (
    Option("kernels", name(defaults.KERNELS, "kernel library"), defaults.KERNELS[0], "KIND",
           "LiteRT kernels: xnnpack (LiteRT's default delegate) or builtin (reference kernels, "
           "no XNNPACK)."),
    Option("profile", name(PROFILES, "profile"), "off", "KIND",
           "native: sample each timed case with perf record (cpu-clock) to name the kernels "
           "that ran and their instruction set, and record OpenVINO's and ONNX Runtime's own "
           "per-layer times; costs about 1 %% of the timed speed."),
    Option("artifacts", manifest, None, "FILE",
           'Benchmark these model files: JSON {"dataset": ..., "artifacts": [{"net", '
           '"variant", "path"}, ...]}; its dataset, nets and variants are then the defaults.',
           shown="export them (cached) by training each net"),
    Option("training", name(TRAININGS, "training"), "quick", "KIND",
           "Training of self-exported artifacts: quick ({limit} images, {epochs} epochs, cached "
           "with the tests) or full (the P17 schedule). Latency does not depend on how well the "
           "weights are trained, only on the net and variant.".format(**defaults.QUICK_TRAINING)),
)
BY_DEST = {option.dest: option for option in (*STUDY, *BENCHMARK)}


def _unless_default(parse, default):
    """``parse``, except that the default comes back as it is: argparse runs a string default
    through its type at every run, which would import what the type needs."""
    def checked(text):
        return default if text == default else parse(text)
    return checked


def add_options(addoption, table, prefix):
    """Declare ``table``'s options through ``addoption`` (argparse's ``add_argument``, or
    pytest's ``group.addoption``), each spelled ``--PREFIXNAME``."""
    for option in table:
        default, shown = option.on(prefix)
        addoption(f"--{prefix}{option.name}", dest=f"{prefix}{option.name}".replace("-", "_"),
                  type=_unless_default(option.parse, default), default=default,
                  metavar=option.metavar, help=f"{option.help} Default: {shown}.")


def add_study_options(addoption, prefix=CLI):
    add_options(addoption, STUDY, prefix)


def to_argv(values, prefix=PLUGIN):
    """Chosen values ({dest: value}, None: the default) as command-line strings of the
    options that ``add_options`` declared with ``prefix``."""
    unknown = [dest for dest in values if dest not in BY_DEST]
    if unknown:
        raise ValueError(f"no option {unknown[0]!r}")
    return [f"--{prefix}{BY_DEST[dest].name}={_text(value)}"
            for dest, value in values.items() if value is not None]
