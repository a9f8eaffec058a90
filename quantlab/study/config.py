"""What a study is asked to do, checked when it is made."""

from dataclasses import dataclass
from pathlib import Path

from quantlab import datasets, defaults, nets, options, variants
from quantlab.errors import QuantlabError


@dataclass
class StudyConfig:
    dataset: str = datasets.DEFAULT
    nets: tuple = nets.NAMES
    variants: tuple | None = None  # None: all (the quick study: defaults.QUICK_VARIANTS)
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

    def __post_init__(self):
        for net in self.nets:
            nets.check_name(net)
        if self.variants is None:
            self.variants = defaults.QUICK_VARIANTS if self.quick else defaults.VARIANTS
        if self.batch_sizes is None:
            self.batch_sizes = defaults.QUICK_BATCH_SIZES if self.quick else defaults.BATCH_SIZES
        variants.check_variants(self.variants)
        if defaults.REFERENCE not in self.variants:
            self.variants = (defaults.REFERENCE, *self.variants)
        self.threads = threads_to_time(self.threads)
        if not 0 <= self.seed <= options.MAX_SEED:
            raise QuantlabError(f"seed {self.seed} is out of range: give 0 to {options.MAX_SEED}")
        self.out = Path(self.out)


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


def train_config(config, net):
    from quantlab.training import TrainConfig

    extra = defaults.QUICK_TRAINING if config.quick else {}
    return TrainConfig(net=net, dataset=config.dataset, seed=config.seed, **extra)


def test_images(config):
    """The test images scored: all (None), or the quick study's first ones."""
    return defaults.QUICK_TEST_IMAGES if config.quick else None
