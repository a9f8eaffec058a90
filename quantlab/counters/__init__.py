"""Cache misses, instructions and IPC per inference, from perf or valgrind, behind one call.

    >>> from quantlab import counters
    >>> result = counters.measure("medium_int8.tflite", batch_size=16)   # doctest: +SKIP
    >>> print(counters.format_result(result))                           # doctest: +SKIP

``measure`` runs the model in a separate worker process under ``perf stat`` (where the CPU
exposes hardware counters) or under valgrind's cache simulator (where it does not), counts
exactly the inference calls and nothing around them (imports, interpreter creation, input
conversion), and returns the counts per inference, i.e. per ``run`` of one batch.
Importing this package is cheap: it imports neither TensorFlow nor LiteRT.
"""

import time
from pathlib import Path

from quantlab.errors import QuantlabError
from quantlab.counters import perf, valgrind
from quantlab.counters.geometry import CACHE_GEOMETRIES, parse_cache_geometry
from quantlab.counters.result import assemble, format_result

__all__ = ["BACKENDS", "CACHE_GEOMETRIES", "measure", "resolve_backend",
           "parse_cache_geometry", "format_result"]

BACKENDS = ("auto", "perf", "valgrind", "off")
KERNELS = ("xnnpack", "builtin")  # as quantlab.runtime.KERNELS, which imports numpy


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
            iterations=None):
    """Count one (model, batch size) case; None when ``backend`` is ``off``.

    ``cache`` (valgrind only) is a name from CACHE_GEOMETRIES or a spec
    ``I1=size,assoc,line:D1=...:LL=...``. ``iterations`` defaults to 5 under valgrind and
    50 under perf. The result's keys are listed in ``quantlab.counters.result``.
    """
    if backend == "off":
        return None
    backend = resolve_backend(backend)
    if backend == "off":
        return None
    cache = parse_cache_geometry(cache)  # fail fast, before any process is started
    if int(batch_size) < 1:
        raise QuantlabError(f"batch size must be at least 1, got {batch_size}")
    if kernels not in KERNELS:
        raise QuantlabError(f"unknown kernel choice {kernels!r}: choose one of {', '.join(KERNELS)}")
    if threads is not None and int(threads) < 1:
        raise QuantlabError(f"threads must be at least 1, got {threads}")
    if not Path(artifact).is_file():
        raise QuantlabError(f"no model file at {artifact}")
    module = perf if backend == "perf" else valgrind
    iterations = module.ITERATIONS if iterations is None else int(iterations)
    if iterations < 1:
        raise QuantlabError(f"iterations must be at least 1, got {iterations}")
    options = dict(artifact=artifact, batch_size=int(batch_size), iterations=iterations,
                   warmup=module.WARMUP, threads=threads, kernels=kernels)
    start = time.perf_counter()
    if backend == "perf":
        part = perf.count(**options)
    else:
        part = valgrind.count(**options, cache=cache)
    seconds = time.perf_counter() - start
    return assemble(backend, part, seconds=seconds, **options)
