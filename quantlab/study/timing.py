"""Latency: every case of the nets timed by the latency suite (pytest-benchmark) in one child
process, and the suite's report read back into one record per case."""

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from quantlab import defaults, options
from quantlab.errors import QuantlabError
from quantlab.orphans import dying_with_parent
from quantlab.variant_table import readers_on

QUICK_TIMING = ["--benchmark-max-time=0.05", "--benchmark-min-rounds=5",
                "--benchmark-warmup-iterations=10"]
# A tenth of a second per case is still 14 rounds of the slowest one (float32 medium at batch
# 64, ~7 ms) and hundreds of the fast ones; the rounds after it give each case's median and
# every ratio's interval.
FULL_TIMING = ["--benchmark-max-time=0.1", "--benchmark-min-rounds=10"]
# Then every net and batch size again in interleaved rounds: defaults.QUICK_ROUNDS, FULL_ROUNDS.


def pairs(artifacts, runtimes, cpu):
    """Every (variant, runtime) the study runs: each variant on each chosen runtime that can."""
    return [(v, r) for v in artifacts for r in runtimes if r in readers_on(v, cpu)]


def _manifest(config, artifacts_by_net, folder):
    path = folder / "manifest.json"
    path.write_text(json.dumps({
        "dataset": config.dataset,
        "artifacts": [{"net": net, "variant": v, "path": str(a.path), "sha256": a.sha256,
                       "precision": a.precision, "batch_sizes": list(config.batch_sizes_of(net))}
                      for net, artifacts in artifacts_by_net.items() for v, a in artifacts.items()],
    }))
    return path


def time_net(config, net, artifacts, runtimes, progress):
    """Every case of one net timed (see time_nets); its records."""
    return time_nets(config, {net: artifacts}, runtimes, progress)[net]


def time_nets(config, artifacts_by_net, runtimes, progress):
    """Every case of the nets ({net: {variant: Artifact}}) timed by the latency suite
    (pytest-benchmark) in one child process, so that nothing of this process (TensorFlow,
    its threads) runs beside it, and so that the rounds of every net and batch size are
    taken in turn (quantlab.rounds.run_groups); {net: records}."""
    from quantlab import machine

    nets = list(artifacts_by_net)
    cpu = machine.cpu_info()
    cases = sum(len(pairs(artifacts, runtimes, cpu)) * len(config.batch_sizes_of(net))
                for net, artifacts in artifacts_by_net.items()) * len(config.threads)
    who = ", ".join(nets)
    label = f"{who}: timing {cases} cases on {', '.join(runtimes)} with pytest-benchmark"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        report = tmp / "benchmark.json"
        # A settings file of its own, empty: no project's pytest settings (addopts such as
        # pytest-xdist's -n) reach the timing run from a setup.cfg above quantlab's source.
        (tmp / "pytest.ini").write_text("[pytest]\n")
        batch_sizes = sorted({b for net in nets for b in config.batch_sizes_of(net)})
        command = dying_with_parent([
            # By module name, not file path: the child imports quantlab the way it finds it,
            # which need not be this process's copy (a source checkout in the working
            # directory beside an installed package, under tox).
            sys.executable, "-m", "pytest", "--pyargs", "quantlab.latency_suite", "-v",
            "-c", str(tmp / "pytest.ini"), "-p", "no:cacheprovider",
            # The two plugins the suite needs and no other (PYTEST_DISABLE_PLUGIN_AUTOLOAD
            # below): a plugin installed beside them (xdist, randomly, hypothesis, whose
            # header alone imports it: 0.3 s) would run in the timed process too, and an
            # entry-point plugin has every module of its package assertion-rewritten.
            "-p", "pytest_benchmark.plugin", "-p", "quantlab.pytest_plugin",
            f"--benchmark-json={report}",
            *options.to_argv(dict(
                artifacts=_manifest(config, artifacts_by_net, tmp), runtimes=runtimes,
                batch_sizes=tuple(batch_sizes), threads=config.threads, counters="off",
                profile="native", rounds=rounds_budget(config))),
            "--benchmark-columns=median,iqr,rounds", "--benchmark-sort=name",
            *(QUICK_TIMING if config.quick else FULL_TIMING),
        ])
        lines = []
        # Exactly these options: none from PYTEST_ADDOPTS, and no sign of an xdist worker
        # (when the study runs inside one), on which pytest-benchmark would time nothing.
        # Unbuffered: the lines of the rounds, printed as they go, reach the progress now.
        env = {**{k: v for k, v in os.environ.items()
                  if k != "PYTEST_ADDOPTS" and not k.startswith("PYTEST_XDIST_")},
               "PYTHONUNBUFFERED": "1", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
        with subprocess.Popen(command, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=env) as child:
            def results():  # one line per case in pytest's verbose output
                for line in child.stdout:
                    lines.append(line)
                    rounds = re.search(r"quantlab: (rounds\b.*)", line)
                    if rounds:  # may share its line with the result of the group's last case
                        progress(rounds.group(1).strip())
                    if re.search(r"::test_latency\[.*\] (PASSED|SKIPPED|FAILED|ERROR)", line):
                        yield line
            for _ in progress.steps(results(), label, total=cases):
                pass
            for _ in results():  # the summary after the last case
                pass
        if child.returncode != 0 or not report.is_file():
            raise QuantlabError(f"the timing run for {who} failed: {suite_error(lines)}")
        records = timed_cases(json.loads(report.read_text()))
    return {net: [r for r in records if r.get("net") == net] for net in nets}


def rounds_budget(config):
    """Seconds of interleaved rounds per net and batch size: --rounds, else the defaults."""
    if config.rounds is not None:
        return config.rounds
    return defaults.QUICK_ROUNDS if config.quick else defaults.FULL_ROUNDS


def suite_error(lines):
    """The latency suite's own error in pytest's output: a usage error's reason (a manifest
    the suite refused), else the exception the first failed case raised, else the last lines."""
    lines = [line.strip() for line in lines if line.strip()]
    for line in lines:
        if re.match(r"\S+( -m pytest)?: error: ", line):  # argparse: "pytest: error: argument ..."
            return line.split(": error: ", 1)[1]
    raised = [line[1:].strip() for line in lines if re.match(r"E +[\w.]*(Error|Exception): ", line)]
    return re.sub(r"^[\w.]*\.", "", raised[0]) if raised else " | ".join(lines[-3:])


def timed_cases(benchmark_json):
    """One record per case from a pytest-benchmark JSON report: its extra_info, and the
    cases a runtime could not run, each with its reason (``not_run``)."""
    records = []
    for bench in benchmark_json["benchmarks"]:
        record = dict(bench["extra_info"])
        record["rounds"] = bench["stats"]["rounds"]
        records.append(record)
    return records + benchmark_json.get("quantlab", {}).get("not_run", [])

