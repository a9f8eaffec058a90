"""`quantlab run` end to end on small real data: report, JSON, plots, resume, your own model.

The studies themselves are shared with test_compare (conftest: ``digits_study``, a quick
study with real valgrind counters, and ``resumed_study``, one interrupted and run again).
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DIGITS_STUDY, FEW_ROUNDS, LAPTOP, one_line_error, quantlab
from quantlab import records, tables


@pytest.fixture(scope="module")
def study(digits_study):
    return digits_study


def test_the_report_has_every_section_filled_from_the_run(study):
    out, _, results = study
    report, details = (out / "report.md").read_text(), (out / "details.md").read_text()
    for heading in ("## What to ship", "## Machine", "## Findings", "## Size", "## Accuracy",
                    "## Best float32 and best int8", "## Plots"):
        assert heading in report, heading
    for heading in ("## Which runtime", "### medium, batch 8", "## Latency", "### Batch size 1",
                    "### Batch size 8", "## Cache behaviour", "### Counts per inference",
                    "## Where the time goes", "### The runtimes' own per-layer times", "## Roofline",
                    "### Not counted", "## Per-layer quantization error of int8",
                    "## P17 (2018) side by side"):
        assert heading in details, heading
    assert "[details.md](details.md)" in report
    assert "measured (dependent add chain" in report and "GB/s" in report  # clock, bandwidth
    assert results["machine"]["cpu"]["model"] in report
    assert "valgrind" in details and "AVX-512" in details  # the simulated-CPU caveat


@pytest.mark.parametrize("which, seed", [("laptop", 0), ("server", 1)])
def test_the_per_layer_error_is_tflites_debugger_on_the_int8_file_the_study_made(
        study, resumed_study, digits, which, seed):
    """Whether computed in the study or read from the cache, the rows are those TFLite's
    quantization debugger gives for the very int8 file the study ran, in graph order: for
    each of two studies of the same net with other weights, sharing one cache."""
    from conftest import quick_config
    from quantlab import layer_error, training, variants

    results = (study[2] if which == "laptop"
               else json.loads((resumed_study["out"] / "results.json").read_text()))
    config = quick_config("conv", dataset="digits", seed=seed)
    int8 = variants.export(config, variants=("int8",), data=digits)["int8"]
    assert int8.sha256 == results["nets"]["conv"]["artifacts"]["int8"]["sha256"]
    rows = layer_error.int8_layer_errors(training.train(config, digits).model, digits, int8.meta)
    stored = results["nets"]["conv"]["layers"]
    assert [(r["layer"], r["op"], r["tensor"]) for r in stored] == [
        (r["layer"], r["op"], r["tensor"]) for r in rows]
    for mine, theirs in zip(stored, rows):
        assert mine["rmse_over_scale"] == pytest.approx(theirs["rmse_over_scale"], rel=1e-6)
    ops = [r["op"] for r in stored]
    assert ops[0] == "CONV_2D" and "FULLY_CONNECTED" in ops
    # The first conv's output is rounded to its step: about 0.29 steps (1 / sqrt(12)) of
    # error (later layers more: this net's logits about 3 steps, their step is fine); every
    # conv and dense layer loses something; a max pool passes its int8 input on unchanged.
    assert 0.15 < stored[0]["rmse_over_scale"] < 0.5
    for row in stored:
        if row["op"] in ("CONV_2D", "FULLY_CONNECTED"):
            assert row["rmse_over_scale"] > 0.05, row
        if row["op"] == "MAX_POOL_2D":
            assert row["rmse_over_scale"] < 0.01, row


def _case(results, net, variant, runtime, batch):
    return next(c for c in results["cases"] if (c["net"], c["variant"], c["runtime"], c["batch_size"])
                == (net, variant, runtime, batch))


def test_the_json_holds_the_numbers_the_markdown_shows(study):
    out, _, results = study
    report = (out / "report.md").read_text() + (out / "details.md").read_text()
    assert results["schema"] == records.SCHEMA
    for net in ("conv", "medium"):
        int8 = next(r for r in results["accuracy"] if (r["net"], r["variant"], r["runtime"]) == (net, "int8", "litert"))
        assert f"| {net} | int8 | litert | int8 | " in report
        assert f"{int8['size_ratio']:.3f}" in report
        assert f"{int8['accuracy']:.4f}" in report
        assert tables.seconds(_case(results, net, "int8", "litert", 8)["median"]) in report
        counted = _case(results, net, "int8", "litert", 1)["counters"]
        assert counted["per_inference"]["instructions"] > 0
        timed = {(c["variant"], c["runtime"]) for c in results["cases"] if c["net"] == net}
        assert {("float32", "litert"), ("int8", "litert"), ("int8", "openvino"), ("dynamic_int8", "openvino")} <= timed
        assert {c["batch_size"] for c in results["cases"] if c["net"] == net} == {1, 8}
    assert results["findings"] and all(line in report for line in results["findings"])
    assert results["recommendations"] and all(line in report for line in results["recommendations"])


def test_every_case_is_counted_or_says_why_not(study):
    _, _, results = study
    for case in results["cases"]:
        if case.get("not_run"):
            continue
        assert bool(case["counters"]) != bool(case["not_counted"]), case
    uncounted = [c for c in results["cases"] if c.get("not_counted")]
    assert uncounted and all(c["not_counted"] == (
        "the quick study counts float32 and int8 on litert at batch 1 only" if c["threads"] == 1
        else "counted at 1 thread(s) only") for c in uncounted)


def test_every_case_is_timed_at_each_thread_count_in_rounds_with_intervals(study):
    out, _, results = study
    timed = [c for c in results["cases"] if c.get("median")]
    assert {c["threads"] for c in timed} == {1, 2} and results["machine"]["thread_counts"] == [1, 2]
    for case in timed:
        rounds = case["interleaved"]
        # A case known within the target left its group's rounds early (after nine at least).
        assert rounds["rounds"] >= len(rounds["seconds"]) >= 9
        assert rounds["group"] == f"{case['net']}-b{case['batch_size']}"
        assert rounds["stopped"] in ("converged", "budget")
        assert rounds["loads_from"] == [0, 4]  # each model loaded anew before round 5
        assert case["threads_busy"] >= 1
        interval = case["speedup"]
        assert interval["low"] <= interval["value"] <= interval["high"]
        assert case["fastest"] == min(rounds["seconds"])
        quartile = sorted(rounds["seconds"])[-(-len(rounds["seconds"]) // 4) - 1]
        assert case["lower_quartile"] == quartile and interval["method"] == "lower quartiles"
    report = (out / "report.md").read_text()
    assert "## Threads" in report and "threads.png" in results["plots"]
    assert "## What a deployment also pays" in (out / "details.md").read_text()
    assert {(r["variant"], r["runtime"]) for r in results["deployment"] if r["net"] == "conv"} == {
        (c["variant"], c["runtime"]) for c in timed if c["net"] == "conv"}
    assert all(r["load_seconds"] > 0 and r["rss_after_first_bytes"] > 0
               for r in results["deployment"] if not r.get("not_run"))


def test_plots_are_written_as_png_files(study):
    out, _, results = study
    assert {"latency.png", "sizes.png", "accuracy.png", "miss_rates.png"} <= set(results["plots"])
    for name in results["plots"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_is_shown_for_every_stage(study):
    _, result, _ = study
    for fragment in ("conv: evaluating 360 test images", "rounds of conv-b1:",
                     "counting int8 on litert, batch 1, with valgrind", "report:"):
        assert fragment in result.stderr or fragment in result.stdout, fragment
    # Both nets in one timing run, so that their rounds are taken in turn.
    timings = {line.split("] ", 1)[1].split(": timing")[0]
               for line in result.stderr.splitlines() if ": timing " in line}
    assert len(timings) == 1 and set(timings.pop().split(", ")) == {"conv", "medium"}


def test_a_second_run_redoes_only_a_stored_result_that_cannot_be_read_with_a_notice(study,
                                                                                   tmp_path):
    # One rerun shows both: what is stored whole is reused, what cannot be read is redone.
    out = tmp_path / "report"
    shutil.copytree(study[0], out)  # the shared study stays as the other modules read it
    damaged = sorted((out / ".state").glob("eval-*.json"))[0]
    damaged.write_text(damaged.read_text()[:30])
    again = quantlab(*DIGITS_STUDY, "--out", str(out), env=LAPTOP)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"stored result {damaged.name} is unreadable; measuring again" in again.stderr
    assert json.loads(damaged.read_text())  # stored whole again
    assert "epoch" not in again.stderr and "exporting" not in again.stderr
    assert not [line for line in again.stderr.splitlines() if "with valgrind" in line]  # nothing counted
    # accuracy, layers, latency per net, but the one accuracy made again
    assert again.stderr.count("done earlier") >= 2 * 3 - 1


def test_an_interrupted_run_continues_where_it_stopped(resumed_study):
    status, reported = resumed_study["interrupted"]
    assert status != 0 and not reported
    first, second = resumed_study["nets"]
    rerun = resumed_study["rerun"].stderr
    for done in (f"{first}: accuracy", f"{first}: latency", f"{second}: latency",
                 f"{first}: deployment costs"):
        assert f"{done}: done earlier" in rerun
    assert f"{first} float epoch" not in rerun and "timing" not in rerun  # done before
    assert f"{second}: deployment costs, " in rerun  # measured again: it was cut short
    assert (resumed_study["out"] / "report.md").is_file()


def save_models(folder, models):
    """Save each of ``models`` ({file name: its layers, as code}) as a user would, briefly
    trained on digits, in one process: TensorFlow is imported once."""
    code = """
import os
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import tf_keras as k
from quantlab import datasets
data = datasets.load("digits")
"""
    for name, layers in models.items():
        code += f"""
model = k.Sequential({layers})
model.compile("adam", k.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
model.fit(data.x_train, data.y_train, epochs=3, verbose=0)
model.save({str(folder / name)!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=300)
    return {name: folder / name for name in models}


@pytest.fixture(scope="module")
def own_models(tmp_path_factory):
    """Users' own models: a good one, one with a Lambda that writes ``marker`` when it runs,
    and one whose input does not fit the datasets used here."""
    folder = tmp_path_factory.mktemp("own")
    marker = folder / "ran"
    models = save_models(folder, {
        "mine.keras": "[k.layers.Input((8, 8, 1)), k.layers.Conv2D(8, 3, activation='relu'), "
                      "k.layers.Flatten(), k.layers.Dense(10, activation='softmax')]",
        "lambda.keras": f"[k.layers.Input((8, 8, 1)), k.layers.Lambda(lambda x: (open({str(marker)!r}, "
                        "'w'), x)[1]), k.layers.Flatten(), k.layers.Dense(10)]",
        "wrong.keras": "[k.layers.Input((8, 8, 1)), k.layers.Flatten(), k.layers.Dense(10)]"})
    marker.unlink()  # written while the model was built and saved
    return {**models, "marker": marker}


def test_your_own_keras_model_goes_through_the_whole_study(tmp_path, own_models):
    out = tmp_path / "report"
    result = quantlab("run", "--model", str(own_models["mine.keras"]), "--dataset", "digits", "--quick",
                      "--counters", "off", "--variants", "float32,int8,qat_int8", "--batch-sizes", "1",
                      "--threads", "1", "--runtimes", "litert",  # the runtime the test reads
                      *FEW_ROUNDS, "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert list(results["nets"]) == ["mine"]  # named after its file
    accuracy = {(r["variant"], r["runtime"]): r for r in results["accuracy"]}
    assert accuracy[("float32", "litert")]["accuracy"] > 0.5
    assert abs(accuracy[("int8", "litert")]["delta_points"]) < 5 and accuracy[("int8", "litert")]["size_ratio"] > 2
    assert any(line.startswith("mine, batch 1: ") for line in results["recommendations"])


def test_a_model_with_a_lambda_layer_is_refused_without_running_it(tmp_path, own_models):
    line = one_line_error(quantlab("run", "--model", str(own_models["lambda.keras"]), "--dataset", "digits",
                                   "--quick", "--out", str(tmp_path / "out")), "Lambda")
    assert "will not run" in line and not own_models["marker"].exists()


@pytest.mark.fashion_mnist
def test_a_model_whose_input_shape_does_not_match_the_dataset_is_refused(tmp_path, own_models):
    one_line_error(quantlab("run", "--model", str(own_models["wrong.keras"]), "--dataset", "fashion_mnist",
                            "--quick", "--out", str(tmp_path / "out")), "8x8x1", "28x28x1")


def test_a_folder_of_the_users_own_files_is_refused_as_output_unless_forced(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.md").write_text("my own notes")
    (out / ".write-test").write_text("mine too")
    line = one_line_error(quantlab("run", "--dataset", "digits", "--quick", "--out", str(out)),
                          "holds files that quantlab did not write")
    assert "--force" in line
    assert (out / "report.md").read_text() == "my own notes"
    assert sorted(p.name for p in out.iterdir()) == [".write-test", "report.md"]


def test_a_cache_that_cannot_be_written_is_refused_before_any_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = quantlab("run", "--dataset", "digits", "--quick", "--out", str(tmp_path / "out"),
                      env={"QUANTLAB_CACHE": str(blocker / "cache")})
    one_line_error(result, "cannot write to cache folder", "QUANTLAB_CACHE")
    assert "epoch" not in result.stderr
    assert not (tmp_path / "out").exists()  # refused before the report folder is made


def test_a_report_folder_in_the_cache_is_refused(tmp_path):
    result = quantlab("run", "--dataset", "digits", "--quick", "--out", str(tmp_path / "c" / "r"),
                      env={"QUANTLAB_CACHE": str(tmp_path / "c")})
    one_line_error(result, "is quantlab's cache folder or inside it", "choose another with --out")
    assert not (tmp_path / "c" / "r").exists()


@pytest.mark.parametrize("threads", ["0", "1025", "2147483648"])
def test_a_thread_count_no_machine_has_is_refused_before_any_work(threads):
    one_line_error(quantlab("run", "--threads", f"1,{threads}"), "give thread counts from 1 to 1024")


def test_a_data_folder_that_is_not_there_is_refused_not_ignored(tmp_path):
    one_line_error(quantlab("train", "conv", "--dataset", "digits", "--data-dir", str(tmp_path / "x")),
                   "is not a folder")


def test_a_negative_seed_is_a_one_line_usage_error():
    one_line_error(quantlab("run", "--seed", "-1"), "seed -1 is out of range: give 0 to 4294967295")


def test_an_unwritable_output_folder_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    one_line_error(quantlab("run", "--dataset", "digits", "--quick", "--out", str(blocker / "report")),
                   "cannot write to output folder")


@pytest.mark.parametrize("args, fragment", [
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["--nets", "medium,resnet"], "unknown net 'resnet'"),
    (["--variants", "int4"], "unknown variant 'int4'"),
    (["--batch-sizes", "0"], "at least 1"),
    (["--cache", "L9=1"], ""),
    (["--rounds", "0"], "give seconds above 0"),
    (["--rounds", "-1"], "expected seconds from 0 to 3600"),
])
def test_bad_run_options_are_one_line_errors(args, fragment):
    one_line_error(quantlab("run", *args), fragment)


def _two_nets(out, seed, temporary, **popen):
    """A quick study of two nets, whose preparing takes two worker processes, started with
    its stderr to read, its temporary files in the folder ``temporary``."""
    import os

    temporary.mkdir()
    return subprocess.Popen(
        [sys.executable, "-m", "quantlab.cli", "run", "--dataset", "digits", "--quick", "--seed", str(seed),
         "--nets", "conv,medium", "--variants", "float32,int8", "--runtimes", "litert",
         "--counters", "off", "--out", str(out)],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(temporary)}, **popen)


def _workers(process):
    """The pids of ``process``'s children but multiprocessing's resource tracker."""
    import os

    return [int(pid) for pid in os.listdir("/proc") if pid.isdigit()
            and f"PPid:\t{process.pid}\n" in _status(pid)
            and "resource_tracker" not in _status(pid, "cmdline")]


def test_ctrl_c_while_two_nets_are_made_ready_stops_both_workers_and_says_how_to_resume(tmp_path):
    """Several nets are made ready two at a time in worker processes (quantlab.study.parallel):
    Ctrl-C in the middle leaves none of them running, and the study says what it says
    without workers."""
    import signal
    import time

    # Ctrl-C as at a terminal, even where this session ignores SIGINT (a background job).
    process = _two_nets(tmp_path / "out", 7, tmp_path / "tmp",
                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    started = set()
    for line in process.stderr:
        if "] == " in line:
            started.add(line.split("== ")[1].split()[0])
        if started == {"conv", "medium"}:
            break
    workers = _workers(process)
    assert len(workers) == 2  # the nets' two workers
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    assert process.wait(timeout=60) == 130, rest
    assert "interrupted; finished artifacts are cached, run again to resume" in rest
    assert "Traceback" not in rest
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_status(pid) for pid in workers):
        time.sleep(0.1)
    assert not any(_status(pid) for pid in workers)  # gone, not left training
    assert not list((tmp_path / "tmp").iterdir())  # nor their temporary files


def test_a_worker_killed_while_it_makes_a_net_ready_is_one_line_not_a_hang(tmp_path):
    """The kernel may kill a worker (each holds a TensorFlow): the study stops with one line
    and status 2, its other worker stopped, instead of waiting for an answer forever."""
    import os
    import signal

    process = _two_nets(tmp_path / "out", 8, tmp_path / "tmp")
    for line in process.stderr:
        if "] == " in line:  # a worker started on a net
            break
    workers = _workers(process)
    os.kill(workers[0], signal.SIGKILL)
    rest = process.stderr.read()
    assert process.wait(timeout=120) == 2, rest
    assert "a process preparing the nets died" in rest and "Traceback" not in rest
    assert not any(_status(pid) for pid in workers)
    assert not list((tmp_path / "tmp").iterdir())  # the killed one's temporary files too


def _status(pid, name="status"):
    """A live process's /proc/PID/status, or another file of it ("" once it is gone or a
    zombie)."""
    try:
        status = open(f"/proc/{pid}/status").read()
        text = status if name == "status" else open(f"/proc/{pid}/{name}").read()
    except OSError:
        return ""
    return "" if "State:\tZ" in status else text


def test_a_cache_that_cannot_be_made_is_refused_before_training(tmp_path):
    result = quantlab("train", "conv", "--dataset", "digits", "--epochs", "1", "--limit", "10",
                      env={"QUANTLAB_CACHE": "/proc/quantlab-cache"})
    one_line_error(result, "cannot write to cache folder /proc/quantlab-cache", "QUANTLAB_CACHE")
    assert "epoch" not in result.stderr


def test_an_argument_with_a_line_break_or_an_escape_is_named_on_one_line():
    result = quantlab("datasets", "x\x1b[31m\nquantlab: error: forged")
    one_line_error(result, "unrecognized arguments: x")
    assert len(result.stderr.strip().splitlines()) == 1 and "\x1b" not in result.stderr


def test_a_second_run_into_a_folder_another_run_writes_is_refused(tmp_path):
    from quantlab.output import prepare_output, writing

    out = tmp_path / "out"
    prepare_output(out)
    with writing(out):  # as a study or a comparison holds it while it writes
        result = quantlab("run", "--dataset", "digits", "--quick", "--nets", "conv",
                          "--counters", "off", "--out", str(out))
        stored = Path(__file__).parent / "data" / "results" / "v6.json"
        compared = quantlab("compare", str(stored), "--out", str(out))
    one_line_error(result, "is being written by another quantlab run")
    assert "epoch" not in result.stderr and sorted(p.name for p in out.iterdir()) == [".quantlab-report"]
    one_line_error(compared, "is being written by another quantlab run")


def test_sigterm_stops_a_run_as_ctrl_c_does_in_one_line(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "quantlab.cli", *DIGITS_STUDY[:4], "--nets",
                                "conv", "--counters", "off", "--seed", "11", "--out",
                                str(tmp_path / "out")], stderr=subprocess.PIPE, text=True)
    said = process.stderr.readline()  # the study has begun
    process.terminate()
    said += process.stderr.read()
    assert process.wait(timeout=120) == 143, said
    assert "quantlab: terminated; finished artifacts are cached, run again to resume" in said
    assert "Traceback" not in said
