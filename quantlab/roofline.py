"""The roofline model of a study: work per byte moved against achieved MAC/s, under ceilings.

Each timed case is a *point*, a plain dict as the latency suite's ``extra_info`` holds it:
``net``, ``variant``, ``runtime``, ``batch_size``, ``median`` (seconds per batch),
``macs_per_image``, ``arithmetic`` ("float32", "int8" or "bf16"), ``input_shape`` and
``num_classes``; optionally ``kernel_isa``, the instruction set its top kernel uses
(``quantlab.counters.sampling``: "AMX", "AVX-512 VNNI"...), which picks the compute
ceiling among those of its arithmetic. (The latency suite's ``isa`` key, the CPU's flags,
is a different thing and is ignored.)

The *ceilings* come from ``ceilings(clock, bandwidth, peaks=...)``: the multiply-accumulate
peaks one core measured (``quantlab.peaks``; those not measured, e.g. AMX, derived from the
ISA at the measured clock) and the measured read bandwidths (``quantlab.ceilings``). ``bound``
says which of them limits a point: the compute peak, or the bandwidth of the memory level
its working set fits in, whichever is lower at its arithmetic intensity.

Bytes moved per batch are counted from ``nets.layer_plan``, as ``macs.py`` counts MACs:
every weight and bias once per batch (they are reused across the images of a batch), and
every activation tensor once per image (the input, each layer's output and the softmax;
flatten and dropout move nothing at inference), each in the type it has in memory while
the model runs (``STORAGE``).

    >>> traffic("dense", "int8", (28, 28, 1), 10, batch_size=1)["weight_bytes"]
    3752904
"""

from quantlab import machine, macs, modern_sizes, nets
from quantlab.errors import QuantlabError

# (weight type, bytes per weight, bytes per activation) of each variant while it runs.
STORAGE = {
    "float32_tf": ("float32", 4, 4),
    "float32": ("float32", 4, 4),
    # float16 on disk, but XNNPACK unpacks the weights to float32 when it prepares the model,
    # and the kernels that run are its f32 ones: 4 bytes move per weight at inference.
    "float16": ("float32", 4, 4),
    "dynamic_int8": ("int8", 1, 4),  # int8 weights, float32 activations
    "int8": ("int8", 1, 1),
    "qat_int8": ("int8", 1, 1),
    "onnx_float32": ("float32", 4, 4),
    "onnx_int8": ("int8", 1, 1),  # QDQ pairs fuse into int8 kernels (QLinearConv, QGemm)
    "int8_per_tensor": ("int8", 1, 1),
    "onnx_int8_per_tensor": ("int8", 1, 1),
    "openvino_int8": ("int8", 1, 1),  # NNCF's FakeQuantize pairs run as int8 primitives
}
# Not on the roofline: int16x8 runs on LiteRT's reference kernels, with no compute ceiling
# measured for them, and a mixed model (``*_mixed``) moves int8 and float layers at once.
BF16 = ("bf16", 2, 2)
# Biases: int32 in full-integer models (TFLite's int8 scheme), float32 otherwise, bf16 in bf16.
BIAS_BYTES = {"bf16": 2}

MEMORY_NAMES = {"l1d": "L1d", "l2": "L2", "llc": "LLC", "dram": "DRAM"}
_CACHE_KEYS = {"l1d": "l1d", "l2": "l2", "llc": "l3"}  # memory level -> machine.cpu_info cache


def storage(variant, arithmetic=None):
    """(weight type, bytes per weight, bytes per activation) of ``variant`` as it runs."""
    if arithmetic == "bf16":
        return BF16
    if variant not in STORAGE:
        raise QuantlabError(f"no storage types known for variant {variant!r}: "
                            f"choose one of {', '.join(STORAGE)}")
    return STORAGE[variant]


def layer_sizes(net, input_shape, num_classes):
    """(weights, biases, activation elements per image) of ``net``, from its layer plan.
    Biases are every per-channel vector: a convolution's bias (batch norm folded into it),
    LayerNorm's scale and offset."""
    if net in nets.MODERN:
        weights, biases, activations, features = modern_sizes.sizes(net, input_shape)
        return (weights + features * num_classes, biases + num_classes,
                activations + 2 * num_classes)
    height, width, channels = input_shape
    weights = biases = 0
    activations = height * width * channels  # the input image
    features = None
    for kind, arg in nets.layer_plan(net):
        if kind == "conv":
            kernel, filters = arg
            weights += kernel * kernel * channels * filters
            biases += filters
            channels = filters
            activations += height * width * channels
        elif kind == "pool":  # 2x2, stride 2, valid padding: floor
            height, width = height // 2, width // 2
            activations += height * width * channels
        elif kind == "flatten":  # a reshape: nothing moves
            features = height * width * channels
        elif kind == "fc":
            weights += features * arg
            biases += arg
            features = arg
            activations += features
    weights += features * num_classes
    biases += num_classes
    activations += 2 * num_classes  # logits and softmax probabilities
    return weights, biases, activations


def traffic(net, variant, input_shape, num_classes, batch_size=1, arithmetic=None):
    """Bytes one batch moves, and the arithmetic intensity (MACs per byte) that follows.

    Returns ``weight_bytes`` (weights and biases, once per batch), ``activation_bytes``
    (per image), ``bytes`` (per batch), ``bytes_per_image``, ``macs_per_image``,
    ``intensity`` (MACs per byte) and ``weight_type`` (as the weights move).
    """
    if int(batch_size) < 1:
        raise QuantlabError(f"batch size must be at least 1, got {batch_size}")
    weight_type, weight_size, activation_size = storage(variant, arithmetic)
    bias_size = BIAS_BYTES.get(arithmetic, 4)
    weights, biases, activations = layer_sizes(net, input_shape, num_classes)
    weight_bytes = weights * weight_size + biases * bias_size
    activation_bytes = activations * activation_size
    per_batch = weight_bytes + int(batch_size) * activation_bytes
    work = macs.macs_per_image(net, input_shape, num_classes)
    return {
        "weight_bytes": weight_bytes,
        "activation_bytes": activation_bytes,
        "bytes": per_batch,
        "bytes_per_image": per_batch / int(batch_size),
        "macs_per_image": work,
        "intensity": work * int(batch_size) / per_batch,
        "weight_type": weight_type,
    }


# --- ceilings ---------------------------------------------------------------------------------

# The instruction set sampling reads from a kernel's name (sampling.ISA_NAMES) -> the
# machine.UNITS it multiplies on
_KERNEL_UNITS = {"AMX": ("amx_int8", "amx_bf16"), "AVX-512 VNNI": ("avx512_vnni",),
                 "AVX-VNNI": ("avx_vnni",), "AVX-512 BF16": ("avx512_bf16",),
                 "AVX-512": ("avx512f",), "FMA3": ("avx2_fma",), "AVX2": ("avx2", "avx2_fma")}
_LABELS = {"amx_int8": "int8 AMX", "avx512_vnni": "int8 AVX-512 VNNI", "avx_vnni": "int8 AVX-VNNI",
           "avx2": "int8 AVX2", "amx_bf16": "bf16 AMX",
           "avx512_bf16": "bf16 AVX-512", "avx512f": "fp32 FMA AVX-512", "avx2_fma": "fp32 FMA AVX2"}


def _compute_ceilings(info, ghz, threads, arithmetics, peaks=None):
    """Per arithmetic its widest unit, and where that is a matrix (AMX) unit, the widest vector
    one; each at the rate ``peaks`` measured for it on one core, else derived from the ISA."""
    found = []
    cores = max(1, min(int(threads), info["available_cores"] or 1))
    plural = "s" if cores > 1 else ""
    measured = (peaks or {}).get("units") or {}
    for arithmetic in arithmetics:
        units = machine.compute_units(arithmetic, info["flags"])
        if arithmetic == "bf16" and units[0].name not in ("amx_bf16", "avx512_bf16"):
            continue  # no bf16 arithmetic on this CPU: it would be the float32 line again
        chosen = units[:1] + ([next(u for u in units if not u.name.startswith("amx"))]
                              if units[0].name.startswith("amx") else [])
        for unit in chosen:
            timed = measured.get(unit.name)
            if timed:
                rate, source = timed["macs_per_second"] * cores, "measured"
                description = (f"{timed['instruction']} measured on one core, "
                               f"{timed['macs_per_second'] / 1e9:.1f} GMAC/s x {cores} core{plural}")
            else:
                rate, source = unit.macs_per_cycle_per_core * cores * ghz * 1e9, "derived"
                description = (f"derived from the ISA: {unit.description} x {cores} core{plural} "
                               f"x {ghz:.2f} GHz")
            found.append({"name": _LABELS.get(unit.name, f"{arithmetic} {unit.name}"),
                          "arithmetic": arithmetic, "unit": unit.name, "macs_per_second": rate,
                          "source": source, "description": description})
    return found


def ceilings(clock, bandwidth, info=None, threads=1, arithmetics=("float32", "int8", "bf16"),
             peaks=None):
    """The roofline's ceilings from ``ceilings.measure_clock()``, ``measure_bandwidth()`` and
    ``peaks.measure_peaks()`` (or the ``used`` values of ``ceiling_spread.record``).

    Compute peaks count ``threads`` cores, each at the rate ``peaks`` measured on one core
    for its unit (``source`` "measured"); a unit not measured (AMX, or no ``peaks``) gets
    the peak derived from the ISA at the clock (``source`` "derived"). The bandwidths are
    those one core measured.

    Returns ``ghz`` and ``clock`` ("measured", or "nominal" when the clock could not be
    measured), ``peaks`` ("measured", "derived", or "measured and derived"), ``compute`` (a
    list of ``name``, ``arithmetic``, ``unit``, ``macs_per_second``, ``source``,
    ``description``) and ``memory`` (a list of ``level``, ``name``, ``bytes_per_second``,
    ``capacity`` in bytes, None for DRAM), fastest first.
    """
    info = info or machine.cpu_info()
    if clock and clock.get("measured"):
        ghz, source = clock["ghz"], "measured"
    elif info["mhz"]:
        ghz, source = info["mhz"] / 1000, "nominal"
    else:
        raise QuantlabError("no clock to compute peaks with: neither measured nor reported by the CPU")
    memory = []
    for level, entry in ((bandwidth or {}).get("levels") or {}).items():
        capacity = info["caches"].get(_CACHE_KEYS[level]) if level in _CACHE_KEYS else None
        memory.append({"level": level, "name": MEMORY_NAMES.get(level, level),
                       "bytes_per_second": entry["bytes_per_second"], "capacity": capacity})
    compute = _compute_ceilings(info, ghz, threads, arithmetics, peaks)
    sources = list(dict.fromkeys(c["source"] for c in compute))
    return {"ghz": ghz, "clock": source, "peaks": " and ".join(sources),
            "compute": compute, "memory": memory}


# --- which ceiling bounds a point -------------------------------------------------------------

def _compute_ceiling(point, found):
    mine = [c for c in found["compute"] if c["arithmetic"] == point["arithmetic"]]
    if not mine:  # e.g. bf16 on a CPU without bf16 arithmetic: runs as float32
        mine = [c for c in found["compute"] if c["arithmetic"] == "float32"]
    from_kernel = _KERNEL_UNITS.get(point.get("kernel_isa") or "", ())
    return next((c for c in mine if c["unit"] in from_kernel), mine[0])


def memory_level(working_set, memory):
    """The fastest level whose capacity holds ``working_set`` bytes (DRAM holds everything).

    None when no bandwidth was measured.
    """
    for level in memory:
        if level["capacity"] is None or working_set <= level["capacity"]:
            return level
    return memory[-1] if memory else None


def achieved(point):
    """MAC/s the case reached: MACs of its batch over its median seconds per batch."""
    return point["macs_per_image"] * point["batch_size"] / point["median"]


def bound(point, found):
    """Which ceiling limits ``point`` under the ceilings ``found``, with the numbers behind it.

    Returns ``bound`` ("compute", or the memory level: "l1d", "l2", "llc", "dram"), the
    ``ceiling`` it names, ``attainable`` MAC/s (the lower of the compute peak and intensity
    x bandwidth), ``achieved`` MAC/s, ``fraction`` (achieved / attainable), the ``traffic``
    of the case, and the ``compute`` and ``memory`` ceilings it was compared with (``memory``
    None when no bandwidth was measured: then only the compute peak bounds it).
    """
    moved = traffic(point["net"], point["variant"], point["input_shape"], point["num_classes"],
                    point["batch_size"], point["arithmetic"])
    compute = _compute_ceiling(point, found)
    memory = memory_level(moved["bytes"], found["memory"])
    streaming = moved["intensity"] * memory["bytes_per_second"] if memory else float("inf")
    limited_by_memory = streaming < compute["macs_per_second"]
    attainable = min(streaming, compute["macs_per_second"])
    reached = achieved(point)
    return {
        "bound": memory["level"] if limited_by_memory else "compute",
        "ceiling": (f"{memory['name']} bandwidth" if limited_by_memory
                    else f"{compute['name']} peak"),
        "attainable": attainable,
        "achieved": reached,
        "fraction": reached / attainable,
        "traffic": moved,
        "compute": compute,
        "memory": memory,
    }


# --- findings ---------------------------------------------------------------------------------

_SOURCES = {"measured": "measured", "derived": "derived from the ISA"}

def _megabytes(n):
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


def _giga(n):
    return f"{n / 1e9:.0f}" if n >= 10e9 else f"{n / 1e9:.1f}"


def describe(point, found):
    """One clause for one case, phrased from its numbers."""
    result = bound(point, found)
    moved = result["traffic"]
    weights = moved["weight_bytes"] / point["batch_size"]
    what = (f"{point['variant']} ({point['runtime']}) streams {_megabytes(weights)} of "
            f"{moved['weight_type']} weights per image ({moved['intensity']:.2f} MAC/B)")
    if result["bound"] == "compute":
        source = _SOURCES.get(result["compute"].get("source"))  # hand-made ceilings may not say
        how = (f"bound by the {result['ceiling']} ({_giga(result['attainable'])} GMAC/s"
               f"{', ' + source if source else ''})")
    else:
        how = (f"bound by {result['ceiling']} ({result['memory']['bytes_per_second'] / 1e9:.0f} GB/s, "
               f"ceiling {_giga(result['attainable'])} GMAC/s)")
    return f"{what}: {how}, achieved {_giga(result['achieved'])} GMAC/s ({result['fraction']:.0%})"


def findings(points, found, variants=("float32", "int8"), runtime=None):
    """{net: one line} on what bounds each net at its smallest and largest batch.

    Covers ``variants`` (those present) on ``runtime`` (default: the runtime of the first
    point), so that the line stays readable; call it per runtime for the others.
    """
    timed = [p for p in points if p.get("median") and p.get("macs_per_image")]
    if not timed:
        return {}
    runtime = runtime or timed[0]["runtime"]
    lines = {}
    for net in dict.fromkeys(p["net"] for p in timed):
        mine = [p for p in timed if p["net"] == net and p["runtime"] == runtime
                and p["variant"] in variants]
        if not mine:
            continue
        batches = sorted({p["batch_size"] for p in mine})
        parts = []
        for batch in dict.fromkeys((batches[0], batches[-1])):
            cases = sorted((p for p in mine if p["batch_size"] == batch),
                           key=lambda p: variants.index(p["variant"]))
            parts.append(f"batch {batch}: " + "; ".join(describe(p, found) for p in cases))
        lines[net] = f"{net}, " + " | ".join(parts)
    return lines


# --- the plot ---------------------------------------------------------------------------------

def plot(points, found, path):
    """A PNG at ``path``: MACs per byte (log) against achieved MAC/s (log), under the ceilings.

    One panel per runtime; one marker per (net, variant, batch): colour by variant, shape by
    net, size by batch. Returns the path, or None when no point was timed.
    """
    from quantlab.plots import plt, save

    timed = [p for p in points if p.get("median") and p.get("macs_per_image")]
    if not timed:
        return None
    placed = [(p, bound(p, found)) for p in timed]
    runtimes = list(dict.fromkeys(p["runtime"] for p in timed))
    variants = list(dict.fromkeys(p["variant"] for p in timed))
    net_names = list(dict.fromkeys(p["net"] for p in timed))
    batches = sorted({p["batch_size"] for p in timed})
    colours = {v: plt.get_cmap("tab10")(i % 10) for i, v in enumerate(variants)}
    shapes = {n: "osD^v<>pP*"[i % 10] for i, n in enumerate(net_names)}
    sizes = {b: 25 + 55 * i for i, b in enumerate(batches)}

    # the compute ceilings of the arithmetic types that ran (float32 always, as the yardstick)
    shown = {"float32", *(p["arithmetic"] for p in timed)}
    compute = [c for c in found["compute"] if c["arithmetic"] in shown]
    intensities = [r["traffic"]["intensity"] for _, r in placed]
    peaks = [c["macs_per_second"] for c in compute]
    low, high = min(intensities) / 3, max(max(intensities) * 3, 1.0)
    for level in found["memory"]:  # show every ridge point (where bandwidth meets a peak)
        high = max(high, min(max(peaks) / level["bytes_per_second"] * 2, 1e5))
    xs = [low * (high / low) ** (i / 200) for i in range(201)]

    figure, axes = plt.subplots(1, len(runtimes), figsize=(7.5 * len(runtimes), 5.6),
                                squeeze=False, sharey=True)
    for axis, runtime in zip(axes[0], runtimes):
        for level in found["memory"]:
            axis.plot(xs, [min(x * level["bytes_per_second"], max(peaks)) for x in xs],
                      color="0.55", linewidth=0.9, linestyle="--")
            axis.annotate(f"{level['name']} {level['bytes_per_second'] / 1e9:.0f} GB/s",
                          (xs[0], xs[0] * level["bytes_per_second"]), fontsize=7, color="0.3",
                          xytext=(2, 3), textcoords="offset points")
        for ceiling in compute:
            axis.axhline(ceiling["macs_per_second"], color="0.35", linewidth=0.9)
            axis.annotate(f"{ceiling['name']} {_giga(ceiling['macs_per_second'])} GMAC/s",
                          (xs[-1], ceiling["macs_per_second"]), fontsize=7, color="0.2",
                          ha="right", va="bottom", xytext=(-2, 2), textcoords="offset points")
        for point, result in placed:
            if point["runtime"] == runtime:
                axis.scatter(result["traffic"]["intensity"], result["achieved"],
                             color=colours[point["variant"]], marker=shapes[point["net"]],
                             s=sizes[point["batch_size"]], edgecolor="black", linewidth=0.4,
                             zorder=3)
        axis.set(xscale="log", yscale="log", xlim=(low, high), title=runtime,
                 xlabel="MACs per byte moved (weights + activations)")
        axis.grid(True, which="major", alpha=0.3)
    peak_source = f"{found['peaks']} peaks, " if found.get("peaks") else ""
    axes[0][0].set_ylabel(f"achieved MAC/s ({peak_source}{found['clock']} clock {found['ghz']:.2f} GHz)")
    handles = ([axes[0][0].scatter([], [], color=colours[v], marker="s", label=v) for v in variants]
               + [axes[0][0].scatter([], [], color="white", edgecolor="black", marker=shapes[n],
                                     label=n) for n in net_names]
               + [axes[0][0].scatter([], [], color="white", edgecolor="black", marker="o",
                                     s=sizes[b], label=f"batch {b}") for b in batches])
    axes[0][-1].legend(handles=handles, fontsize=7, loc="lower right", ncol=2)
    save(figure, path)
    return path


# --- everything a study records -------------------------------------------------------------------

def summarize(points, clock, bandwidth, folder, info=None, threads=1, peaks=None):
    """The roofline part of a study's results, JSON-able, with its plot written to ``folder``.

    ``points`` are the timed cases (quantlab's own nets; others are left out: no layer plan
    to count bytes from), ``clock`` and ``bandwidth`` what ``quantlab.ceilings`` measured,
    ``peaks`` what ``quantlab.peaks`` measured (see ``ceilings``).
    Returns ``ceilings``, ``cases`` (per point: its keys, ``intensity``, ``bytes``,
    ``achieved``, ``attainable``, ``fraction``, ``bound``, ``ceiling``), ``findings``
    ({runtime: {net: line}}) and ``plot`` (the PNG's file name, or None).
    """
    from pathlib import Path

    found = ceilings(clock, bandwidth, info, threads, peaks=peaks)
    timed = [p for p in points if p.get("median") and p.get("macs_per_image")
             and p.get("net") in nets.ALL
             and (p.get("variant") in STORAGE or p.get("arithmetic") == "bf16")]
    cases = []
    for point in timed:
        result = bound(point, found)
        cases.append({key: point[key] for key in ("net", "variant", "runtime", "batch_size")}
                     | {"intensity": result["traffic"]["intensity"],
                        "bytes": result["traffic"]["bytes"], "achieved": result["achieved"],
                        "attainable": result["attainable"], "fraction": result["fraction"],
                        "bound": result["bound"], "ceiling": result["ceiling"]})
    runtimes = dict.fromkeys(p["runtime"] for p in timed)
    written = plot(timed, found, Path(folder) / "roofline.png") if timed else None
    return {"ceilings": found, "cases": cases,
            "findings": {runtime: findings(timed, found, runtime=runtime) for runtime in runtimes},
            "plot": written.name if written else None}
