"""The study's options: one table behind `quantlab run`, the pytest plugin, the timing child's
command line and the counting worker's."""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import one_line_error, quantlab
from quantlab import cli, defaults, options

pytest_plugins = ["pytester"]

# Chosen values other than every default, in the parsed form.
CHOSEN = {"dataset": "mnist", "nets": ("medium", "dense"), "variants": ("int8", "float32"),
          "runtimes": ("litert",), "batch_sizes": (16, 1), "threads": (2, 1),
          "counters": "valgrind", "cache": "i7-6500u", "data": Path("/srv/my images"),
          "scale": 1 / 127.5, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
          "layout": "NCHW", "max_drop": 0.5, "rounds": 2.5}


def _run_parser(*argv):
    """`quantlab run`'s options as its real parser reads them."""
    return cli.parser().parse_args(["run", *argv])


def test_the_plugin_and_quantlab_run_declare_the_study_options_of_one_table_with_one_default(pytester):
    cli_args = _run_parser()
    plugin = pytester.parseconfig()  # the plugin as its entry point registers it
    differ = set()
    for option in options.STUDY:
        assert getattr(cli_args, option.dest) == option.on(options.CLI)[0]
        assert plugin.getoption(f"quantlab_{option.dest}") == option.on(options.PLUGIN)[0]
        if getattr(cli_args, option.dest) != plugin.getoption(f"quantlab_{option.dest}"):
            differ.add(option.dest)
    assert {o.dest for o in options.STUDY} == set(CHOSEN)
    # The only defaults that differ, each a named entry of the table: a benchmark run times
    # one thread count, counts nothing and takes no rounds unless asked; the study times 1 and
    # every core, counts, and takes its rounds (as long as --quick says).
    differing = ("threads", "counters", "rounds")
    assert differ == {o.dest for o in options.STUDY if o.differs} == set(differing)
    assert plugin.getoption("quantlab_counters") == "off" and cli_args.counters == "auto"
    assert plugin.getoption("quantlab_rounds") == 0 and cli_args.rounds is None
    # Each surface's help says its own default.
    assert [options.BY_DEST[d].on(options.PLUGIN)[1] for d in differing] == ["1", "off", "0 (off)"]
    assert [options.BY_DEST[d].on(options.CLI)[1] for d in differing] == [
        "1,all", "auto", "4 in the quick study, 8 in the full"]


def test_to_argv_round_trips_through_both_parsers(pytester):
    cli_args = _run_parser(*options.to_argv(CHOSEN, options.CLI))
    plugin = pytester.parseconfig(*options.to_argv(
        {**CHOSEN, "kernels": "builtin", "profile": "native", "training": "full"}))
    for dest, value in CHOSEN.items():
        assert getattr(cli_args, dest) == value
        assert plugin.getoption(f"quantlab_{dest}") == value
    assert [plugin.getoption(f"quantlab_{d}") for d in ("kernels", "profile", "rounds", "training")] == [
        "builtin", "native", 2.5, "full"]
    assert options.to_argv({"nets": None, "threads": (1, 4)}) == ["--quantlab-threads=1,4"]
    with pytest.raises(ValueError, match="no option 'thread'"):
        options.to_argv({"thread": 1})


@pytest.mark.parametrize("argv, fragments", [
    (("--nets", "medium,resnet"), ("unknown net 'resnet'", "choose from dense,medium,conv,mobilenet,vit")),
    (("--max-drop", "-0.1"), ("--max-drop", "'-0.1': give accuracy points from 0 up")),
    (("--counters", "papi"), ("unknown counters backend 'papi'", "auto, perf, valgrind, off")),
    (("--dataset", "imagenet"), ("unknown dataset 'imagenet'", "fashion_mnist")),
    (("--layout", "CHW"), ("unknown layout 'CHW'", "NCHW", "NHWC")),
])
def test_an_unknown_value_of_quantlab_run_is_a_one_line_error(argv, fragments):
    one_line_error(quantlab("run", *argv), *fragments)


def test_data_names_a_built_in_dataset_or_a_path_and_preprocessing_reads_fractions():
    args = _run_parser("--data", "digits", "--scale", "1/255", "--layout", "nhwc")
    assert (args.data, args.scale, args.layout) == ("digits", 1 / 255, "NHWC")
    assert _run_parser("--data", "./digits").data == Path("digits")  # a folder of that name
    assert _run_parser("--mean", "0.5").mean == (0.5,)
    for parse, text, fragment in ((options.per_channel("mean"), "0.5,x", "mean 'x' is not a number"),
                                  (options.per_channel("std"), "0.2,0", "must be positive"),
                                  (options.scale, "1/0", "scale '1/0' is not a number"),
                                  (options.scale, "-2", "scale '-2' must be positive")):
        with pytest.raises(argparse.ArgumentTypeError, match=fragment):
            parse(text)


@pytest.mark.parametrize("argv, fragment", [
    (("--quantlab-data", "/srv/images"), "--quantlab-data /srv/images: the latency suite times"),
    (("--quantlab-std", "0.25"), "--quantlab-std: the latency suite times"),
])
def test_the_plugin_refuses_a_users_images_in_one_line(pytester, argv, fragment):
    result = pytester.runpytest_subprocess(*argv)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert fragment in result.stderr.str() and "Traceback" not in result.stderr.str()


def test_the_plugin_takes_a_built_in_data_name_as_its_dataset(pytester):
    config = pytester.parseconfigure("--quantlab-data", "digits")
    assert config.pluginmanager.get_plugin("quantlab_session").dataset == "digits"


def test_parsing_no_option_imports_nothing_the_option_types_need():
    """The plugin parses its options at every pytest run: the defaults are not run through the
    types (dataset names live beside numpy, the counters' names in their package)."""
    code = ("import argparse, sys; from quantlab import options; p = argparse.ArgumentParser(); "
            "options.add_study_options(p.add_argument, options.PLUGIN); "
            "options.add_options(p.add_argument, options.BENCHMARK, options.PLUGIN); "
            "a = p.parse_args([]); print(a.quantlab_dataset, a.quantlab_cache, sorted(m for m in "
            "sys.modules if m.split('.')[0] == 'numpy' or m in ('quantlab.datasets', 'quantlab.counters')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["fashion_mnist", "host", "[]"]


def test_the_counting_worker_parses_what_its_command_line_was_built_from(tmp_path):
    from quantlab.counters import _process, worker

    chosen = dict(batch_size=(1, 64), warmup=(10, 1), iterations=(2, 1), mode="valgrind",
                  threads=2, kernels="builtin", short_runs=(1, 0), runtime="openvino",
                  precision="bf16")
    argv = _process.worker_argv(tmp_path / "model.tflite", **chosen)
    assert argv[1:3] == ["-m", "quantlab.counters.worker"]
    args = worker._arguments(argv[3:])
    assert args.artifact == str((tmp_path / "model.tflite").resolve())
    for dest, value in chosen.items():
        assert getattr(args, dest) == (list(value) if isinstance(value, tuple) else value)
    left_out = worker._arguments(_process.worker_argv("m", batch_size=1, iterations=5,
                                                      mode="perf", threads=None)[3:])
    assert (left_out.threads, left_out.warmup, left_out.kernels) == (None, [defaults.COUNT_WARMUP], "xnnpack")
    with pytest.raises(ValueError, match="no option 'thread'"):
        _process.worker_argv("m", thread=1)
    assert Path(argv[3]).name == "model.tflite"


def test_a_study_takes_all_five_nets_and_a_benchmark_run_p17s():
    from quantlab import nets
    from quantlab.study import StudyConfig

    assert _run_parser("--nets", "vit,medium").nets == ("vit", "medium")
    assert _run_parser().nets is None  # StudyConfig's own default then: all five
    assert StudyConfig().nets == nets.ALL == (*nets.NAMES, *nets.MODERN)
    assert options.BY_DEST["max_drop"].on(options.CLI) == (1.0, "1.0")
