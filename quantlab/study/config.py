"""What a study is asked to do, checked when it is made."""

import math
from dataclasses import dataclass
from pathlib import Path

from quantlab import datasets, defaults, mixed_precision, nets, options, variants
from quantlab.errors import QuantlabError


@dataclass
class StudyConfig:
    dataset: str = datasets.DEFAULT
    nets: tuple = nets.ALL  # P17's three and today's two
    variants: tuple | None = None  # None: defaults.STUDY_VARIANTS (quick: QUICK_VARIANTS)
    runtimes: tuple | None = None  # None: every runtime that loads here
    batch_sizes: tuple | None = None  # None: defaults.BATCH_SIZES (or QUICK_BATCH_SIZES)
    # Inference thread counts: every case is timed at each; the first is the one counted,
    # measured for deployment and drawn on the roofline. None: 1 and every usable core.
    threads: tuple | None = None
    counters: str = defaults.COUNTERS
    cache_geometry: str = defaults.CACHE
    quick: bool = False
    out: Path = Path("quantlab-report")
    model: Path | None = None
    data_dir: str | None = None
    seed: int = defaults.SEED
    force: bool = False
    scheduler: str | None = None  # a Dask scheduler's address: the study runs on its workers
    grace: int = defaults.GRACE  # seconds a machine of the fleet may be without a worker
    # The user's own images (a folder or an .npz) for the user's --model; a built-in dataset's
    # name given here moves to ``dataset``. Their preprocessing, None where not given: scale
    # 1/255, mean 0, std 1, the layout the model's input has (see quantlab.datasets.user).
    data: Path | None = None
    scale: float | None = None
    mean: tuple | None = None
    std: tuple | None = None
    layout: str | None = None
    calibration_size: int = defaults.CALIBRATION_SIZE  # images int8 ranges are computed from
    # Accuracy points a quantized model may lose: the mixed-precision search's budget and
    # What to ship's.
    max_drop: float = mixed_precision.MAX_DROP
    # The nets timed at other batch sizes than ``batch_sizes``: {net: batch sizes}. None: the
    # quick study's modern nets at defaults.QUICK_MODERN_BATCH_SIZES, unless batch sizes are given.
    batch_sizes_by_net: dict | None = None
    # Seconds of interleaved rounds per net and batch size (None: defaults.QUICK_ROUNDS or
    # FULL_ROUNDS); every ratio needs its rounds, so never 0.
    rounds: float | None = None

    def __post_init__(self):
        self._check_data()
        for net in self.nets:
            nets.check_name(net)
        if self.variants is None:
            self.variants = defaults.QUICK_VARIANTS if self.quick else defaults.STUDY_VARIANTS
        if self.batch_sizes_by_net is None:
            fewer = self.quick and self.batch_sizes is None  # none given: the quick defaults
            self.batch_sizes_by_net = {net: defaults.QUICK_MODERN_BATCH_SIZES for net in self.nets
                                       if fewer and net in nets.MODERN}
        if self.batch_sizes is None:
            self.batch_sizes = defaults.QUICK_BATCH_SIZES if self.quick else defaults.BATCH_SIZES
        variants.check_variants(self.variants)
        if defaults.REFERENCE not in self.variants:
            self.variants = (defaults.REFERENCE, *self.variants)
        self.threads = threads_to_time(self.threads)
        if not 0 <= self.seed <= options.MAX_SEED:
            raise QuantlabError(f"seed {self.seed} is out of range: give 0 to {options.MAX_SEED}")
        self.out = Path(self.out)
        if not (isinstance(self.max_drop, (int, float)) and math.isfinite(self.max_drop)
                and self.max_drop >= 0):
            raise QuantlabError(f"max drop {self.max_drop!r} is not accuracy points from 0 up: "
                                "give --max-drop 0 or more (1 is one point of top-1 accuracy)")
        if self.rounds is not None and not (math.isfinite(self.rounds) and self.rounds > 0):
            raise QuantlabError(f"--rounds {self.rounds!r}: a study needs its interleaved rounds "
                                "for every ratio's interval; give seconds above 0 (any gets at "
                                "least 9 rounds)")

    def batch_sizes_of(self, net):
        """The batch sizes ``net`` is timed (and counted) at."""
        return self.batch_sizes_by_net.get(net, self.batch_sizes)

    def _check_data(self):
        from quantlab.datasets import image_folder, user

        # A name, not a path: the path ./digits is the folder of that name.
        if isinstance(self.data, str) and self.data in datasets.NAMES:
            if self.dataset not in (datasets.DEFAULT, self.data):
                raise QuantlabError(f"both --data {self.data} and --dataset {self.dataset} given; "
                                    "name the dataset once")
            self.dataset, self.data = self.data, None
        if self.data is not None:
            self.data = Path(self.data).expanduser()
            if not self.data.exists():
                raise QuantlabError(f"--data {self.data} does not exist; give a folder of class "
                                    "subfolders of images, an .npz with x (and y), or one of "
                                    f"{', '.join(datasets.NAMES)}")
            if self.model is None:
                raise QuantlabError(f"--data {self.data} needs --model: quantlab trains its own "
                                    "nets only on the built-in datasets; give the model to study")
            if self.scheduler is not None:
                raise QuantlabError(f"--data {self.data} with --scheduler: the fleet's machines "
                                    "study the built-in datasets only; run without --scheduler")
            if self.data_dir is not None:
                raise QuantlabError(f"--data-dir finds built-in datasets; with --data {self.data} "
                                    "leave it out")
            if self.data.is_dir():  # a bad file is named now, not after the model is read
                image_folder.list_files(self.data)
        given = [n for n in ("scale", "mean", "std", "layout") if getattr(self, n) is not None]
        if given and self.data is None:
            raise QuantlabError(f"--{given[0]} applies to your own --data images (built-in datasets "
                                "are scaled to 0..1); give --data, or leave it out")
        if self.scale is not None:
            user.check_scale(self.scale)
        if self.layout is not None:
            self.layout = user.check_layout(self.layout)
        mean, std = (None if v is None else tuple(v) for v in (self.mean, self.std))
        if mean and std and 1 not in (len(mean), len(std)) and len(mean) != len(std):
            raise QuantlabError(f"{len(mean)} mean values but {len(std)} std values; give one "
                                "value, or one per channel, of each")
        # Finite, std positive; their count against the model's channels once it is read.
        user.normalization(mean, std, max(len(mean or ()), len(std or ()), 1))
        if self.calibration_size < 1:
            raise QuantlabError(f"calibration size {self.calibration_size} must be at least 1")


def threads_to_time(threads):
    """The thread counts a study times, each once, in the order given; a single count may be
    given as a number. None: one thread and every core this process may use."""
    if threads is None:
        threads = options.thread_counts("1,all")
    elif isinstance(threads, int):
        threads = (threads,)
    counts = tuple(dict.fromkeys(int(t) for t in threads))
    if not counts or min(counts) < 1:
        raise QuantlabError(f"thread counts must be at least 1, got {threads}")
    return counts


def load_data(config, image_shape=None, layout=None, num_classes=None):
    """The study's data: the built-in dataset, or the user's --data as the user's model takes
    it (``image_shape`` (H, W, C), ``layout`` and ``num_classes`` are read from the model;
    --layout, when given, wins over ``layout``)."""
    if config.data is None:
        return datasets.load(config.dataset, config.data_dir)
    if image_shape is None or num_classes is None:  # the caller has not read the model
        raise QuantlabError(f"--data {config.data}: the images are made to {config.model}'s input "
                            "image shape and class count, which quantlab could not read from it; "
                            "give a model with a fixed input image size")
    return datasets.load_user(config.data, image_shape, config.layout or layout, num_classes,
                              scale=config.scale, mean=config.mean, std=config.std,
                              calibration_size=config.calibration_size, seed=config.seed)


def train_config(config, net):
    from quantlab.training import TrainConfig

    extra = defaults.QUICK_TRAINING if config.quick else {}
    return TrainConfig(net=net, dataset=config.dataset, seed=config.seed, **extra)


def test_images(config):
    """The test images scored: all (None), or the quick study's first ones."""
    return defaults.QUICK_TEST_IMAGES if config.quick else None
