"""Cache misses, instructions and IPC per inference, from perf or valgrind, behind one call.

    >>> from quantlab import counters
    >>> result = counters.measure("medium_int8.tflite", batch_size=16)   # doctest: +SKIP
    >>> print(counters.format_result(result))                           # doctest: +SKIP
    >>> by_batch = counters.measure_many("medium_int8.tflite", [1, 16, 64])  # doctest: +SKIP

``measure`` runs the model in a separate worker process under ``perf stat`` (where the CPU
exposes hardware counters) or under valgrind's cache simulator (where it does not), counts
exactly the inference calls and nothing around them (imports, interpreter creation, input
conversion), and returns the counts per inference, i.e. per ``run`` of one batch. ``measure_many`` counts
several batch sizes of one model; under valgrind it does so in one worker, which pays
valgrind's start and the imports once instead of once per batch size.
Importing this package is cheap: it imports neither TensorFlow nor LiteRT.
"""

import time

from quantlab.defaults import KERNELS, RUNTIMES
from quantlab.errors import QuantlabError
from quantlab.counters import perf, valgrind
from quantlab.counters.geometry import CACHE_GEOMETRIES, parse_cache_geometry
from quantlab.counters.result import assemble, format_result

__all__ = ["BACKENDS", "CACHE_GEOMETRIES", "measure", "measure_many", "resolve_backend",
           "parse_cache_geometry", "format_result"]

BACKENDS = ("auto", "perf", "valgrind", "off")


def resolve_backend(name):
    """``auto`` -> ``perf`` where hardware counters work, else ``valgrind``; check the others.

    Raises a one-line QuantlabError for an unknown name or a backend that cannot run here.
    """
    if name not in BACKENDS:
        raise QuantlabError(f"unknown counters backend {name!r}: choose one of {', '.join(BACKENDS)}")
    if name == "off":
        return name
    if name == "auto":
        name = "perf" if perf.hardware_status()[0] == "ok" else "valgrind"
    if name == "perf":
        perf.require()
    else:
        valgrind.require()
    return name


def measure(artifact, batch_size, backend="auto", threads=1, kernels="xnnpack", cache="host",
            iterations=None, runtime=None, precision=None):
    """Count one (model, batch size) case; None when ``backend`` is ``off``.

    ``cache`` (valgrind only) is a name from CACHE_GEOMETRIES or a spec
    ``I1=size,assoc,line:D1=...:LL=...``. ``iterations`` (the measured runs) defaults to the
    backend's choice (``valgrind.plan``, ``perf.ITERATIONS``). ``runtime`` (default: the file's
    natural one) and ``precision`` (``bf16``: a float model in bfloat16, on OpenVINO) say how
    the model is run, as ``quantlab.runtime.load`` takes them. The result's keys are listed
    in ``quantlab.counters.result``.
    """
    results = measure_many(artifact, [batch_size], backend, threads, kernels, cache, iterations,
                           runtime, precision)
    return None if results is None else results[int(batch_size)]


def _check_model_file(artifact, batch_sizes):
    """A one-line error for a missing, unreadable, special or folder path, for a TFLite
    file, ONNX model or GraphDef the worker would refuse, and for a TFLite file's batch the
    worker could not make: here, in seconds, not after valgrind has started and imported
    TensorFlow (see quantlab.runtime.tflite_check, onnx_check, quantlab.graph_check)."""
    from quantlab import graph_check, runtime
    from quantlab.runtime import onnx_check, tflite_check

    content, _ = runtime.read(artifact)
    fmt = runtime.format_of(content)
    if fmt == "tflite":
        image_shape = tflite_check.check(artifact, content)["input_shape"][1:]
        for batch_size in batch_sizes:
            runtime.check_sample_size(image_shape, batch_size)
    elif fmt == "onnx":
        onnx_check.check_onnx(artifact, content)
    elif fmt == "graphdef":
        graph_check.check_graph_def(content, str(artifact))


def measure_many(artifact, batch_sizes, backend="auto", threads=1, kernels="xnnpack",
                 cache="host", iterations=None, runtime=None, precision=None):
    """Count several batch sizes of one model: {batch size: result}; None when ``off``.

    Under valgrind one worker counts them all in the order given (smallest first is
    cheapest: see ``valgrind.plan``), each in windows of its own that start from cold
    simulated caches, so each result matches what ``measure`` gives for that batch size
    alone. Each result's ``seconds`` is the wall time of that whole worker. Under perf each
    batch size gets a worker of its own: perf stat reports one total per process.
    """
    if backend == "off":
        return None
    backend = resolve_backend(backend)
    if backend == "off":
        return None
    cache = parse_cache_geometry(cache)  # fail fast, before any process is started
    batch_sizes = _batch_sizes(batch_sizes)
    if kernels not in KERNELS:
        raise QuantlabError(f"unknown kernel choice {kernels!r}: choose one of {', '.join(KERNELS)}")
    if threads is not None and int(threads) < 1:
        raise QuantlabError(f"threads must be at least 1, got {threads}")
    _check_model_file(artifact, batch_sizes)
    if runtime is not None and runtime not in RUNTIMES:
        raise QuantlabError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    if iterations is not None and int(iterations) < 1:
        raise QuantlabError(f"iterations must be at least 1, got {iterations}")
    if backend == "valgrind":
        start = time.perf_counter()
        parts = valgrind.count_many(artifact, batch_sizes, iterations, threads=threads,
                                    kernels=kernels, cache=cache, runtime=runtime,
                                    precision=precision)
        seconds = time.perf_counter() - start
        return {b: assemble(backend, part, artifact=artifact, batch_size=b, threads=threads,
                            kernels=kernels, seconds=seconds)
                for b, part in parts.items()}
    iterations = perf.ITERATIONS if iterations is None else int(iterations)
    results = {}
    for b in batch_sizes:
        start = time.perf_counter()
        part = perf.count(artifact, b, iterations, perf.WARMUP, threads, kernels,
                          runtime=runtime, precision=precision)
        results[b] = assemble(backend, {**part, "warmup": perf.WARMUP, "iterations": iterations},
                              artifact=artifact, batch_size=b, threads=threads, kernels=kernels,
                              seconds=time.perf_counter() - start)
    return results


def _batch_sizes(batch_sizes):
    """Whole numbers of at least 1, each once, in the order given."""
    checked = []
    for batch_size in batch_sizes:
        if int(batch_size) != batch_size or int(batch_size) < 1:
            raise QuantlabError(f"batch size must be a whole number of at least 1, got {batch_size}")
        if int(batch_size) not in checked:
            checked.append(int(batch_size))
    if not checked:
        raise QuantlabError("no batch size to count: give at least one")
    return checked
