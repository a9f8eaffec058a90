"""Shared fixtures: real data, quick-trained nets and quick studies, built once per session.

Trained models and exported variants are cached on disk keyed by their configuration
(``QUANTLAB_CACHE``), so only the first session on a machine pays for training. The test
cache lives apart from the user's own cache unless ``QUANTLAB_CACHE`` is set. A study costs
tens of seconds even from a warm cache, so each study here serves several test modules.
"""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("QUANTLAB_CACHE", str(Path(tempfile.gettempdir()) / "quantlab-test-cache"))

# Quick training, shared with the benchmark suite so that both use the same cached nets.
from quantlab.defaults import QUICK_TRAINING as QUICK  # noqa: E402


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI (``CI=true``) a skipped test fails: a test skipped where the suite is meant to
    run everything proves nothing, so what it needs (perf, valgrind, binutils, root, a CPU
    feature) must be there. Elsewhere a skip stays a skip, with its reason."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome, report.longrepr = "failed", f"skipped under CI, where it must run: {reason}"


def pytest_collection_modifyitems(items):
    """Every test that needs the real Fashion-MNIST says so (``-m "not fashion_mnist"``
    deselects them on a machine without the Debian package): any test that uses the
    ``fashion`` fixture, directly or through the nets trained on it, gets the marker.
    The groups that cost most run first (see ``GROUPS``)."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "fashion" in names:
            item.add_marker(pytest.mark.fashion_mnist)
        for fixture, group in SHARED.items():
            if fixture in names and _group(item.nodeid) != group:
                raise pytest.UsageError(f"{item.nodeid} uses {fixture}: put its module in "
                                        f"GROUPS[{group!r}] in conftest.py")
    first = {group: rank for rank, group in enumerate(GROUPS)}
    items.sort(key=lambda item: first.get(_group(item.nodeid), len(first)))


# The suite runs on every core (pytest-xdist, ``-n auto`` in setup.cfg), one group of tests
# per worker at a time: a module, or the modules that share a costly session fixture, which
# then is built once. (Two workers that build the same artifact anyway wait for each other:
# the cache is locked while an artifact is made.) Costliest first, so that both workers
# finish together: seconds of one process, cold, beside other work (load 3.5-5 on 2 cores);
# every other group takes under 20 s.
GROUPS = {
    "fashion-nets": ("test_plugin", "test_variants", "test_runtimes", "test_training",
                     "test_runtime"),  # ~90: the quick nets (qat_int8 of medium only), their variants
    # ~105-245 (105-125 s of CPU cold), most of it waiting on its Dask processes; its run
    # without a scheduler reads the quick medium net that "digits-studies" trains, or trains
    # it for it
    "test_fleet": ("test_fleet",),
    # ~140; 180 s of CPU cold, the laptop study 73 of it, the server study about 45
    "digits-studies": ("test_compare", "test_study"),
    # ~15, once the quick nets and variants it shares (as cached files) with "fashion-nets"
    # are made: after that group, it finds them made
    "test_quantizers": ("test_quantizers",),
    "test_reuse": ("test_reuse",),  # ~100 (58 s of CPU cold): three quick studies
    # ~135 cold at load 1.5, ~220 at 4.5 (~135 s of CPU): a quick vit study on digits (60 %),
    # then mobilenet and the vit on digits, the vit and its float32 and int8 made once for both
    "modern-nets": ("test_mixed_study", "test_modern_nets"),
    "test_counters_valgrind": ("test_counters_valgrind",),  # ~70
    "test_cli": ("test_cli",),  # ~70
    "test_user_model": ("test_user_model",),  # ~50
    "test_graph_check": ("test_graph_check",),  # ~30
    "test_byo": ("test_byo",),  # ~20
    "test_hostile_tflite": ("test_hostile_tflite",),  # ~20
    "test_sensitivity": ("test_sensitivity",),  # ~12: a small digits net with a planted outlier
    "test_hostile_onnx": ("test_hostile_onnx",),  # ~15
}
SHARED = {"quick_variants": "fashion-nets", "digits_study": "digits-studies",
          "resumed_study": "digits-studies"}


def _group(nodeid):
    module = Path(nodeid.split("::")[0]).stem
    return next((group for group, modules in GROUPS.items() if module in modules), module)


@pytest.hookimpl(optionalhook=True)  # hooks of pytest-xdist, absent where -p no:xdist
def pytest_xdist_auto_num_workers(config):
    """``-n auto``: a worker per usable core for the tests, none for the benchmarks (which
    must run alone to time anything)."""
    tests = Path(__file__).parent / "tests"
    paths = [Path(str(arg).split("::")[0]).resolve() for arg in config.args]
    if paths and all(path == tests or tests in path.parents for path in paths):
        return len(os.sched_getaffinity(0))
    return 0


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return _group(nodeid)

    config.option.loadscopereorder = False  # in the order of GROUPS, not by number of tests
    return ByGroup(config, log)


def pytest_configure(config):
    """In a pytest-xdist worker, the processes that tests start must not take themselves for
    xdist workers (pytest-benchmark would not time in them)."""
    if hasattr(config, "workerinput"):
        for name in [name for name in os.environ if name.startswith("PYTEST_XDIST_")]:
            del os.environ[name]


@pytest.fixture(scope="session")
def fashion():
    """Real Fashion-MNIST from Debian's dataset-fashion-mnist package (fails with the hint)."""
    from quantlab import datasets

    return datasets.load("fashion_mnist")


@pytest.fixture(scope="session")
def digits():
    from quantlab import datasets

    return datasets.load("digits")


def quick_config(net, dataset="fashion_mnist", **overrides):
    from quantlab.training import TrainConfig

    return TrainConfig(net=net, dataset=dataset, **{**QUICK, **overrides})


# The nets whose quick_variants include qat_int8. A QAT fine-tune costs about as much as the
# net's quick training (20-25 CPU-seconds each); medium's conv and dense layers are the two
# kinds tfmot wraps, so its qat_int8 stands for the other two nets'.
QAT_NETS = ("medium",)


def quick_variant_names(net):
    """The variants quick_variants exports for ``net``: every one, qat_int8 only on QAT_NETS."""
    from quantlab import variants

    return tuple(v for v in variants.VARIANTS if v != "qat_int8" or net in QAT_NETS)


@pytest.fixture(scope="session")
def quick_variants(fashion):
    """{net: {variant: Artifact}} for all three nets, quick-trained on Fashion-MNIST: every
    variant, qat_int8 only of the QAT_NETS."""
    from quantlab import nets, variants

    return {net: variants.export(quick_config(net), variants=quick_variant_names(net), data=fashion)
            for net in nets.NAMES}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """A float32 and a full-int8 .tflite of one tiny net (8x8x1 -> conv 4 -> dense 10)."""
    import numpy as np

    from quantlab import variants
    from quantlab._tf import keras

    keras = keras()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.layers.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    samples = np.random.default_rng(1).random((32, 8, 8, 1), dtype=np.float32)
    folder = tmp_path_factory.mktemp("tiny_models")
    paths = {}
    for variant in ("float32", "int8"):
        paths[variant] = folder / f"tiny_{variant}.tflite"
        paths[variant].write_bytes(variants.tflite_converter(model, variant, samples).convert())
    return paths


# --- the command line, as users run it ------------------------------------------------------

def quantlab(*args, env=None):
    """``quantlab ARGS`` in a process of its own: real exit status, stdout and stderr."""
    environment = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "quantlab.cli", *args], capture_output=True,
                          text=True, env=environment, timeout=900)


def within_3_gib(script, *args, env=None):
    """Run ``script`` (Python source) with ``args`` (and ``env`` added to the environment) in
    a process that cannot take more than 3 GiB: a memory bomb fails there instead of taking
    the machine."""
    limit = "import resource\nresource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"
    return subprocess.run([sys.executable, "-c", limit + script, *map(str, args)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def one_line_error(result, *fragments):
    """The one error line of a process that failed as a user error should: status 2, no
    traceback, each fragment in that line."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("quantlab")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


# --- quick studies on digits, each shared by the modules that read one ------------------------

# The tests check what a study computes and writes, not how sure its ratios are (the rounds
# and intervals have tests of their own): the fewest interleaved rounds (9 per net and batch
# size), where the quick study's 4 s per group took 20 of a digits study's 45 s.
FEW_ROUNDS = ("--rounds", "0.5")

# conv and medium, float32 against two int8 variants, counted with valgrind, as machine
# "laptop": test_study checks the study itself, test_compare puts it beside other machines.
# The second int8 variant is only one that "server" does not run: dynamic_int8, a conversion
# of the same float net, where qat_int8 cost a QAT fine-tune of each net (a fifth of the
# study's CPU time); QAT is studied on a user's model (test_study) and exported of medium in
# "fashion-nets".
DIGITS_STUDY = ("run", "--dataset", "digits", "--quick", "--nets", "conv,medium",
                "--variants", "float32,int8,dynamic_int8", "--batch-sizes", "1,8", "--threads", "1,2",
                "--counters", "valgrind", *FEW_ROUNDS)
LAPTOP = {"QUANTLAB_MACHINE": "laptop"}
# Other weights (seed 1, so other bytes), fewer variants and other batch sizes, as machine
# "server"; interrupted once on its way (test_study), compared (test_compare).
SERVER_STUDY = ("run", "--dataset", "digits", "--quick", "--seed", "1", "--nets", "conv,medium",
                "--variants", "float32,int8", "--runtimes", "litert,openvino", "--batch-sizes", "1,4",
                "--threads", "1", "--counters", "off", *FEW_ROUNDS)
SERVER = {"QUANTLAB_MACHINE": "server"}


@pytest.fixture(scope="session")
def digits_study(tmp_path_factory):
    """(report folder, the finished process, results.json) of ``DIGITS_STUDY``."""
    out = tmp_path_factory.mktemp("laptop") / "report"
    result = quantlab(*DIGITS_STUDY, "--out", str(out), env=LAPTOP)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result, json.loads((out / "results.json").read_text())


@pytest.fixture(scope="session")
def resumed_study(tmp_path_factory):
    """``SERVER_STUDY`` interrupted with SIGINT as soon as its second net's deployment costs
    are measured (both nets are timed by then, and the first net's costs are in), then run
    again with the same --out: {"out", "nets": the two in the order their deployment costs
    were measured, "interrupted": (status, whether a report was written), "rerun": the
    finished process}."""
    out = tmp_path_factory.mktemp("server") / "report"
    # Ctrl-C as at a terminal, even where this session ignores SIGINT (a background job).
    process = subprocess.Popen([sys.executable, "-m", "quantlab.cli", *SERVER_STUDY, "--out", str(out)],
                               stderr=subprocess.PIPE, text=True, env={**os.environ, **SERVER},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    nets = []
    for line in process.stderr:
        measured = re.search(r"\] (\w+): deployment costs", line)
        if measured and measured.group(1) not in nets:
            nets.append(measured.group(1))
        if len(nets) == 2:
            process.send_signal(signal.SIGINT)
            break
    process.wait(timeout=120)
    process.stderr.close()
    interrupted = (process.returncode, (out / "report.md").exists())
    rerun = quantlab(*SERVER_STUDY, "--out", str(out), env=SERVER)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    return {"out": out, "nets": nets, "interrupted": interrupted, "rerun": rerun}
