"""report.md, the page a person reads (what to ship, the machine, the findings that matter,
the plots, the summary tables), and details.md, which it links: every per-case table."""

from pathlib import Path

import quantlab.report.sentences as said
import quantlab.report.tables as report_tables
import quantlab.report.trade_off as trade_off
from quantlab import deployment, tables
from quantlab.lookups import (batch_sizes, labelled, max_drop, reference, reference_text,
                              thread_counts, threads_text, timed)
from quantlab.safe_text import markdown as literal  # text from files and the environment

DETAILS = "details.md"


def _clock_line(machine):
    clock = machine.get("clock") or {}
    nominal = machine["cpu"].get("mhz")
    nominal = f"{nominal / 1000:.2f} GHz nominal" if nominal else "nominal clock unknown"
    if not clock.get("measured"):
        return f"- Clock: {nominal}; not measured ({clock.get('reason', 'no measurement')})"
    return (f"- Clock: {clock['ghz']:.2f} GHz measured ({clock['method']}), {nominal}; "
            f"% of peak is given against both")


def _bandwidth_line(machine):
    bandwidth = machine.get("bandwidth") or {}
    if not bandwidth.get("measured"):
        return f"- Read bandwidth of one core: not measured ({bandwidth.get('reason', 'no measurement')})"
    levels = ", ".join(f"{name} {level['bytes_per_second'] / 1e9:.0f} GB/s"
                       for name, level in bandwidth["levels"].items())
    return f"- Read bandwidth of one core ({bandwidth['reader']} loads): {levels}"


def _ceilings_lines(machine):
    """The compute peaks as measured, and every ceiling's spread over the measurements."""
    from quantlab import ceiling_spread, peaks

    kept = machine.get("ceilings")
    if not kept or not kept.get("spread"):
        return []
    ghz = (machine.get("clock") or {}).get("ghz")
    peak = peaks.format_peaks(machine["peaks"], ghz) if machine.get("peaks") else "compute peaks: none"
    lines = [f"- {peak[0].upper()}{peak[1:]}",
             f"- Ceilings used for the roofline and % of peak: {kept['used']['rule']}"]
    lines += [f"  - {line}" for line in ceiling_spread.format_spread(kept)]
    if kept.get("moved"):
        lines.append(f"  - **{kept['moved']}**")
    return lines


def machine_section(results):
    """The machine in a few lines: what a reader needs to place the numbers."""
    machine = results["machine"]
    cpu = machine["cpu"]
    flags = ", ".join(name for name, present in cpu.get("flags", {}).items() if present) or "none found"
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    lines = [f"- Machine: {literal(machine.get('name', 'unnamed'))}",
             f"- CPU: {literal(cpu.get('model', 'unknown'))}, {cpu.get('available_cores', '?')} cores "
             f"available; inference timed at {', '.join(map(str, thread_counts(results)))} thread(s)",
             f"- ISA flags that matter for int8: {flags}",
             _clock_line(machine), _bandwidth_line(machine),
             f"- Software: {literal(versions)}",
             f"- Runtimes: {', '.join(results['runtimes'])}"]
    lines += [f"  - left out: {name}: {literal(why)}" for name, why in machine.get("runtimes_skipped", {}).items()]
    backend = machine["counter_backend"]
    lines.append(f"- Counters: {backend}" + (f", simulated cache {machine['cache_geometry']}"
                                             if machine["cache_geometry"] else "")
                 if backend else "- Counters: off")
    return "\n".join(lines)


def _machine_details(results):
    """What the short machine section leaves out: the peaks, the ceilings' spread, the
    counters' caveats."""
    lines = _ceilings_lines(results["machine"])
    caveats = sorted({c for case in tables.counted(results["cases"])
                      for c in case["counters"].get("caveats", [])})
    lines += [f"- Counters' caveat: {c}" for c in caveats]
    return "\n".join(lines)


def _bullets(lines, empty="- none"):
    return "\n".join(f"- {line}" for line in lines) or empty


def _plots(results, plots):
    names = list(plots) + ([results["roofline"]["plot"]]
                           if (results.get("roofline") or {}).get("plot") else [])
    return [f"![{name[:-4]}]({name})" for name in names]


def markdown(results, plots):
    """report.md: what a person reads first, in under 250 lines for a quick study."""
    float32 = reference(results)[0]
    parts = [
        "# quantlab report: what 8-bit quantization does to "
        + ("this model" if results.get("model") else "these nets") + " on this CPU",
        f"{studied(results)} Every per-case table (each net and batch size on every runtime, "
        f"latency, deployment, threads, counters, where the time goes, P17): "
        f"[{DETAILS}]({DETAILS}).",
    ]
    doubts = said.read_first(results)
    if doubts:
        parts += ["## Read first", _bullets(f"**{line}**" for line in doubts)]
    parts += [
        "## What to ship", said.what_to_ship(results),
        _bullets(results["recommendations"], "- nothing was timed"), said.rounds_line(results),
        f"Each quantizer at its best, picked or not: on its fastest runtime at the largest "
        f"batch size, times as fast as {reference_text(results)} (95 % interval), its accuracy, "
        f"how many times smaller its file is than {float32}'s, and whether it stays within "
        f"{max_drop(results):g} point (--max-drop):",
        _bullets(said.each_quantizer(results), "- no quantized option was timed"),
        "On the accuracy / speed front of each net and batch size (no option both more "
        "accurate and faster), the fastest within the budget, and what it gives up:",
        _bullets(trade_off.ship_lines(results), "- nothing was both timed and scored"),
        "## Machine", machine_section(results),
        "## Findings", _bullets(results["findings"]),
    ]
    failures = report_tables.not_run_lines(results)
    if failures:
        parts += ["## Could not run", "\n".join(failures)]
    if results.get("sensitivity"):
        parts += ["## Sensitivity",
                  f"Per int8 quantizer, the layers it hurts most on validation images (never "
                  f"the test images scored above), and where it loses more than "
                  f"{max_drop(results):g} point (--max-drop), the layers kept in float until it "
                  f"does not. Every layer and search step: [{DETAILS}]({DETAILS}).",
                  trade_off.section(results)]
    if plots or _plots(results, []):
        parts += ["## Plots", "\n\n".join(_plots(results, plots))]
    parts += ["## Size", f"Each file, and how many times smaller than {float32} it is.",
              report_tables.size_summary(results),
              f"## {accuracy_heading(results)}", accuracy_intro(results),
              report_tables.accuracy_summary(results),
              "## Best float32 and best int8",
              f"At {threads_text(thread_counts(results)[0])}, the median of one batch; ratios "
              f"with their 95 % interval.", report_tables.best_table(results)]
    scaling = report_tables.thread_summary(results)
    if scaling:
        parts += ["## Threads",
                  "How many times faster each option ran with more threads than with "
                  f"{threads_text(thread_counts(results)[0])}, over every net and batch size, "
                  "and the threads seen busy at each count (the pick at each count is under "
                  "What to ship).", scaling]
    return "\n\n".join(parts) + "\n"


def studied(results):
    """What was studied on what: the dataset and training, or the user's model file (its
    sha256), the images' source, how many calibrated and scored it, and their preprocessing."""
    data, model = results["dataset"], results.get("model")
    shape = "x".join(map(str, data["input_shape"]))
    if not model:
        mode = "quick (small training subset)" if results["config"]["quick"] else "full"
        return (f"Dataset **{data['name']}** ({data['train']} training / {data['test']} test "
                f"images, {shape}, from {literal(data['source'])}); training: {mode}.")
    given = (f", input {literal(model['input'])} "
             f"{'x'.join(str(d or 'N') for d in model.get('input_shape') or [])}"
             if model.get("input") else "")  # read from an ONNX graph; Keras's is the images'
    return (f"Model **{literal(model['file'])}** ({model['format']}, sha256 "
            f"`{model['sha256']}`{given}); images from "
            f"{literal(data['source'])}: {data.get('calibration') or '?'} for calibration, "
            f"{data['test']} scored, {'labelled' if labelled(results) else 'without labels'}, "
            f"each {shape}; preprocessing: {literal(preprocessing_text(data))}.")


def preprocessing_text(data):
    """``x * 0.00392 then (x - mean) / std, mean 0.485,0.456,0.406, std ..., NCHW``."""
    applied = data.get("preprocessing") or {}
    if not applied:
        return "not recorded"
    def shown(value):
        if isinstance(value, list):
            return ",".join(map(shown, value))
        return f"{value:.6g}" if isinstance(value, float) else str(value)

    return ", ".join(f"{key} {shown(value)}" for key, value in applied.items() if value is not None)


def accuracy_heading(results):
    if labelled(results):
        return f"Accuracy on {scored_images(results)} test images"
    return f"Agreement with {reference(results)[0]} on {scored_images(results)} unlabelled images"


def accuracy_intro(results):
    float32 = reference(results)[0]
    if not labelled(results):
        return (f"The images have no labels, so there is no accuracy: instead, each option's "
                f"top-1 agreement with {reference_text(results)} and the largest difference of "
                f"any class probability (Δp) (the full table: [{DETAILS}]({DETAILS})).")
    return (f"{reference_text(results)}: its top-1 accuracy; every other option: the change in "
            f"points and its top-1 agreement with {float32} (the full table: "
            f"[{DETAILS}]({DETAILS})).")


def scored_images(results):
    """How many test images the accuracy is on: the whole split, or (the quick study) its
    first ones."""
    test = results["dataset"]["test"]
    scored = {row.get("test_images") for row in results["accuracy"] if row.get("test_images")}
    return f"the {test}" if scored <= {test} else f"the first {min(scored)} of {test}"


def details_markdown(results):
    """details.md: every per-case table and the long lists behind report.md's summary."""
    cases = timed(results)
    counted = tables.counted(results["cases"])
    parts = ["# quantlab report: the details",
             "The per-case tables behind [report.md](report.md).",
             "## Machine", _machine_details(results) or "- nothing beyond report.md",
             "## Size", report_tables.size_table(results),
             f"## {accuracy_heading(results)}",
             report_tables.accuracy_table(results),
             "## Which runtime",
             f"Median latency of one batch per variant and runtime at "
             f"{threads_text(thread_counts(results)[0])} (x: times faster than "
             f"{reference_text(results)}, with its 95 % interval; n/a: the runtime cannot run that "
             f"file). {said.rounds_line(results)}", _bullets(said.speed_lines(results))]
    for net in results["nets"]:
        for batch in batch_sizes(results, net):
            parts += [f"### {net}, batch {batch}", report_tables.runtime_table(results, net, batch)]
    if results.get("deployment"):
        parts += ["## What a deployment also pays",
                  "Each (variant, runtime) loaded in a fresh process: the runtime's import, the "
                  "load (read, compile or interpreter creation, tensor allocation), the first "
                  "inference against the steady one (batch 1), and the peak resident memory "
                  "above an empty process that imported the same runtime.",
                  deployment.deployment_table(results)]
    scaling = report_tables.thread_scaling_table(results)
    if scaling:
        parts += ["## Threads",
                  "Every case at each thread count, timed in the same rounds, so each speed-up "
                  "over the first count is paired by round; 'threads busy': the threads of the "
                  "process that worked while the case ran (read from the kernel's per-thread "
                  "run time), at each count.", scaling,
                  _bullets(said.thread_findings(results), "- The pick is the same at every thread count.")]
    parts += ["## Latency",
              "Only the inference call on a prepared batch is timed (pytest-benchmark); "
              "'executed in' is the arithmetic the runtime reports it ran; GMAC/s is the "
              "arithmetic achieved, 'of peak' its share of the nominal peak of that arithmetic "
              "on this CPU."]
    for batch in results["config"]["batch_sizes"]:
        parts += [f"### Batch size {batch}",
                  tables.latency_table([c for c in cases if c["batch_size"] == batch],
                                       reference(results))]
    if counted:
        parts += ["## Cache behaviour",
                  "Miss rates in %, total / L1d / LLC, as P17 reported them (total = last-level "
                  "references that missed).", tables.miss_rate_table(counted),
                  "### Instructions per inference", tables.instructions_table(counted),
                  "### Counts per inference", report_tables.counts_table(counted)]
    missing = report_tables.not_counted_lines(results["cases"])
    if missing:
        parts += ["### Not counted", "\n".join(missing)]
    attributed = [c for c in cases if c.get("native") or c.get("counters")]
    if attributed:
        table, left_out = report_tables.attribution_table(attributed)
        parts += ["## Where the time goes",
                  "Native: perf record (cpu-clock) samples of each timed loop, the kernels that "
                  "really ran on this CPU and the instruction set their names say; where the "
                  "costliest samples fell in code without symbol names, the runtime's own "
                  "per-layer profile instead. Simulated: valgrind's instruction counts of the "
                  "counted cases, whose virtual CPU has no AVX-512 or AMX, so XNNPACK runs its "
                  "AVX2 kernels there.", table] + ([left_out] if left_out else [])
    native_missing = next((c["native_missing"] for c in cases if c.get("native_missing")), None)
    if native_missing and not any(c.get("native") for c in cases):
        parts += [f"Native attribution: none, {native_missing}"]
    if any(c.get("layers") for c in cases):
        parts += ["### The runtimes' own per-layer times",
                  "The runtimes that report one (OpenVINO's performance counts): the primitive "
                  "each layer ran and its share of the inference.",
                  report_tables.layers_by_runtime_table(cases)]
    roofline = results.get("roofline") or {}
    if roofline.get("cases"):
        lines = [line for by_net in roofline["findings"].values() for line in by_net.values()]
        parts += ["## Roofline",
                  "MACs per byte moved (weights once per batch, activations per image) against "
                  "the MAC/s achieved, under the compute peaks at the measured clock and the "
                  "measured read bandwidth of each cache level; each case is bound by the lower "
                  "roof at its intensity, memory taken from the level its working set fits in.",
                  _bullets(lines)] + ([f"![roofline]({roofline['plot']})"] if roofline.get("plot") else [])
    if any(entry.get("layers") for entry in results["nets"].values()):
        parts += ["## Per-layer quantization error of int8",
                  "Error of each layer's int8 output against float on the same inputs, in "
                  "quantization steps (uniform rounding alone gives about 0.29).",
                  report_tables.layers_table(results)]
    if results.get("sensitivity"):
        parts += ["## Sensitivity and mixed-precision search",
                  "Each quantizer's layers on validation images, and each step of the search "
                  "that keeps the worst in float (a step stays only if accuracy rose).",
                  trade_off.details(results)]
    sizes, accuracy, speed, misses, ipc = report_tables.p17_tables()
    parts += ["## P17 (2018) side by side",
              "P17 quantized CIFAR-10 nets with TensorFlow 1 graph transforms and timed whole "
              "processes on an Intel Core i7-6500U.",
              "### P17 size", sizes, "### P17 accuracy", accuracy,
              "### P17 speed of the quantized nets", speed,
              "### P17 miss rates (total / L1 / LLC, %)", misses, "### P17 IPC", ipc]
    return "\n\n".join(parts) + "\n"


def write(results, folder):
    """Write report.md, details.md, results.json and the PNG plots into ``folder``."""
    from quantlab import cache, plots

    folder = Path(folder)
    names = plots.all_plots(results, folder)
    results["plots"] = names + trade_off.plot_all(results, folder)  # linked from What to ship
    cache.write_json(folder / "results.json", results)
    for name, text in ((DETAILS, details_markdown(results)), ("report.md", markdown(results, names))):
        with cache.atomic_file(folder / name) as tmp:
            tmp.write_text(text)
