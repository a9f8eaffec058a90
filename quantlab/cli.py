"""The ``quantlab`` command line: argument parsing and printing, nothing else.

Expected user errors (``QuantlabError``) print one line and exit with status 2; progress
goes to stderr so that ``--json`` output on stdout stays machine-readable.
"""

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

import quantlab
from quantlab import datasets, defaults, nets, options, safe_text
from quantlab.errors import QuantlabError

EXIT_USER_ERROR = 2
_NET = options.name(nets.ALL, "net")


def _progress(message):
    print(message, file=sys.stderr, flush=True)


def _whole(least):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"expected a number of at least {least}, got {value}")
        return value
    return parse


_positive = _whole(1)


def _threads(text):
    counts = options.thread_counts(text)
    if len(counts) != 1:
        raise argparse.ArgumentTypeError(f"give one thread count or 'all', got {text!r}")
    return counts[0]


def _add_training_options(parser):
    parser.add_argument("net", type=_NET, metavar="NET", help=f"one of {', '.join(nets.ALL)}")
    options.add_options(parser.add_argument, [options.BY_DEST["dataset"]], options.CLI)
    parser.add_argument("--data-dir", metavar="DIR", type=options.folder,
                        help="folder with the dataset files")
    parser.add_argument("--epochs", type=_positive, default=defaults.EPOCHS, metavar="N",
                        help="most epochs; early stopping may end sooner (default: %(default)s)")
    parser.add_argument("--limit", type=_positive, metavar="N",
                        help="train on the first N training images only (default: all)")
    _add_seed(parser)


def _add_seed(parser):
    parser.add_argument("--seed", type=options.seed, default=defaults.SEED, metavar="S",
                        help=f"random seed, 0 to {options.MAX_SEED} (default: %(default)s)")


def _add_calibration_size(parser):
    parser.add_argument("--calibration-size", type=_positive, default=defaults.CALIBRATION_SIZE,
                        metavar="N", help="representative images for int8 calibration; of your "
                        "own --data, at most a quarter (default: %(default)s)")


def _train_config(args):
    from quantlab.training import TrainConfig

    return TrainConfig(net=args.net, dataset=args.dataset, epochs=args.epochs,
                       limit=args.limit, seed=args.seed)


def _cache_writable():
    from quantlab import cache

    cache.check_writable(cache.cache_root(), "cache folder",
                         "set QUANTLAB_CACHE to a folder you can write")


def cmd_train(args):
    from quantlab import training

    config = _train_config(args)
    data = datasets.load(config.dataset, args.data_dir)
    _cache_writable()  # before the minutes of training whose model goes there
    step = training.train_qat if args.qat else training.train
    trained = step(config, data, progress=_progress)
    print(f"test accuracy: {trained.info['test_accuracy']:.4f}")
    print(f"model: {trained.path}")


def cmd_datasets(args):
    survey = datasets.survey(args.data_dir)
    if args.json:
        print(json.dumps(survey, indent=2))
        return
    for entry in survey:
        if entry["available"]:
            shape = "x".join(str(d) for d in entry["input_shape"])
            print(f"{entry['name']:14} {entry['train']:>6} train {entry['test']:>6} test  "
                  f"{shape:8} {entry['classes']} classes  {entry['source']}")
        else:
            print(f"{entry['name']:14} not available: {entry['reason']}")


def cmd_quantize(args):
    from quantlab import evaluate, report, variants

    config = _train_config(args)
    data = datasets.load(config.dataset, args.data_dir)
    _cache_writable()
    artifacts = variants.export(config, data=data, calibration_size=args.calibration_size,
                                progress=_progress)
    comparison = evaluate.accuracies(artifacts, data, progress=_progress)
    if args.json:
        print(json.dumps({"net": config.net, "dataset": data.name,
                          "artifacts": {v: str(a.path) for v, a in artifacts.items()},
                          "variants": comparison}, indent=2))
        return
    results = {"nets": {config.net: {"artifacts": {v: {"bytes": a.bytes, "execute_in": a.precision}
                                                   for v, a in artifacts.items()}}},
               "accuracy": [{"net": config.net, **row} for row in comparison]}
    print(f"## Size ({data.name})\n\n{report.size_table(results)}\n")
    print(f"## Accuracy on {comparison[0]['test_images']} test images\n\n{report.accuracy_table(results)}")


def cmd_counters(args):
    from quantlab import counters

    result = counters.measure(args.artifact, args.batch_size, backend=args.backend,
                              threads=args.threads, cache=args.cache, runtime=args.runtime,
                              precision="bf16" if args.bf16 else None)
    print(json.dumps(result, indent=2) if args.json else counters.format_result(result))


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line like every other quantlab error."""

    def error(self, message):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {safe_text.one_line(message)} "
                                   f"(see {self.prog} --help)\n")


def cmd_run(args):
    from quantlab import machine, study

    machine.identity()  # a QUANTLAB_MACHINE that is no plain name is refused before any work

    # The study's options left at None take StudyConfig's own: all nets, 1 and every core, ...
    chosen = {o.dest: getattr(args, o.dest) for o in options.STUDY if getattr(args, o.dest) is not None}
    chosen["cache_geometry"] = chosen.pop("cache")
    config = study.StudyConfig(
        **chosen, quick=args.quick, out=args.out, model=args.model, data_dir=args.data_dir,
        seed=args.seed, force=args.force, scheduler=args.scheduler, grace=args.grace,
        calibration_size=args.calibration_size)
    if config.scheduler is None:
        study.run(config)
        print(config.out / "report.md")
        return
    from quantlab import fleet  # imports Dask: only for a study on a cluster

    for report in fleet.run(config):
        print(report)


def cmd_compare(args):
    from quantlab import compare

    results = compare.load(args.results)
    compare.compare(results, args.out, progress=_progress, force=args.force)
    print(args.out / "compare.md")


def parser():
    top = _Parser(
        prog="quantlab",
        description="What does 8-bit quantization do to this neural network on this CPU?")
    top.add_argument("--version", action="version", version=f"quantlab {quantlab.__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                   parser_class=_Parser)

    train = commands.add_parser("train", help="train a net (cached) and print its test accuracy")
    _add_training_options(train)
    train.add_argument("--qat", action="store_true",
                       help="also fine-tune it with fake quantization (QAT)")
    train.set_defaults(run=cmd_train)

    listing = commands.add_parser("datasets", help="list datasets and where they are found")
    listing.add_argument("--data-dir", metavar="DIR", type=options.folder,
                         help="folder with the dataset files")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(run=cmd_datasets)

    quantize = commands.add_parser("quantize", help="export all variants; size and accuracy tables")
    _add_training_options(quantize)
    _add_calibration_size(quantize)
    quantize.add_argument("--json", action="store_true", help="machine-readable output")
    quantize.set_defaults(run=cmd_quantize)

    from quantlab import counters

    run = commands.add_parser("run", help="the whole study: train, export, evaluate, time, count, report")
    options.add_study_options(run.add_argument, options.CLI)
    run.add_argument("--data-dir", metavar="DIR", type=options.folder,
                     help="folder with the dataset files")
    run.add_argument("--quick", action="store_true",
                     help="a quick training ({limit} images, {epochs} epochs; cached with the tests), "
                          "accuracy on {images} test images, variants {variants} at batch sizes "
                          "{batches} unless given, short timing, counters at one batch size".format(
                              **defaults.QUICK_TRAINING, images=defaults.QUICK_TEST_IMAGES,
                              variants=",".join(defaults.QUICK_VARIANTS),
                              batches=",".join(map(str, defaults.QUICK_BATCH_SIZES))))
    run.add_argument("--out", type=Path, default=Path("quantlab-report"), metavar="DIR",
                     help="where report.md, results.json and the plots go (default: %(default)s)")
    run.add_argument("--model", type=Path, metavar="PATH",
                     help="study your own saved model instead of training the nets (on a built-in "
                          "dataset, or on your images with --data)")
    _add_calibration_size(run)
    _add_seed(run)
    run.add_argument("--force", action="store_true",
                     help="write into an --out folder that holds files quantlab did not write")
    run.add_argument("--scheduler", metavar="ADDRESS",
                     help="run the study on the workers of this Dask scheduler (e.g. "
                          "tcp://10.0.0.5:8786): every machine among them is timed and counted, "
                          "each gets its own report in OUT/machines/ (default: this machine alone)")
    run.add_argument("--grace", type=_positive, default=defaults.GRACE, metavar="SECONDS",
                     help="with --scheduler: how long a machine may be without workers before "
                          "its tasks are given up and reported missing (default: %(default)s)")
    run.set_defaults(run=cmd_run)

    side = commands.add_parser("compare", help="put the results of several machines side by side")
    side.add_argument("results", nargs="+", metavar="RESULTS",
                      help="results.json files, or the report folders that hold them, one per machine")
    side.add_argument("--out", type=Path, default=Path("quantlab-compare"), metavar="DIR",
                      help="where compare.md, compare.json and the plot go (default: %(default)s)")
    side.add_argument("--force", action="store_true",
                      help="write into an --out folder that holds files quantlab did not write")
    side.set_defaults(run=cmd_compare)

    count = commands.add_parser("counters", help="count cache misses and instructions of one model")
    count.add_argument("artifact", metavar="ARTIFACT", help="a .tflite, .onnx or frozen-graph .pb file")
    count.add_argument("--runtime", type=options.name(defaults.RUNTIMES, "runtime"), metavar="NAME",
                       help=f"one of {', '.join(defaults.RUNTIMES)} (default: the file's natural one)")
    count.add_argument("--bf16", action="store_true",
                       help="run a float model in bfloat16 (OpenVINO, where the CPU has it)")
    count.add_argument("--batch-size", type=_positive, default=1, metavar="N",
                       help="default: %(default)s")
    count.add_argument("--threads", type=_threads, default=1, metavar="N",
                       help="default: %(default)s")
    count.add_argument("--backend", choices=[b for b in counters.BACKENDS if b != "off"],
                       default=defaults.COUNTERS, help="default: %(default)s")
    options.add_options(count.add_argument, [options.BY_DEST["cache"]], options.CLI)
    count.add_argument("--json", action="store_true", help="machine-readable output")
    count.set_defaults(run=cmd_counters)
    return top


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: what is running stops, cleans up and says so."""


def _terminated(signum, frame):
    raise _Terminated()


def main(argv=None):
    args = parser().parse_args(argv)
    if threading.current_thread() is not threading.main_thread():  # signals reach only that one
        return _main(args)
    before = signal.signal(signal.SIGTERM, _terminated)
    try:
        return _main(args)
    finally:
        signal.signal(signal.SIGTERM, before)


def _main(args):
    try:
        args.run(args)
    except QuantlabError as error:
        # One line whatever the error quotes (a path may hold a newline or an escape sequence).
        print(f"quantlab: error: {safe_text.one_line(error)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # output piped into head and the like: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        return 0
    except KeyboardInterrupt as stopped:
        how = "terminated" if isinstance(stopped, _Terminated) else "interrupted"
        print(f"quantlab: {how}; finished artifacts are cached, run again to resume",
              file=sys.stderr)
        return 143 if isinstance(stopped, _Terminated) else 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
