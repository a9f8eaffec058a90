"""The machine's ceilings measured several times during a study, with their spread.

One measurement of the clock, the read bandwidths and the compute peaks
(``quantlab.ceilings``, ``quantlab.peaks``) says what the core did in that half second; on
a shared host the neighbours, the frequency and the cache pressure move it. A study
therefore measures them before and after its timing (``measure``), keeps every value with
its min, median and max (``record``), names any ceiling that moved more than 10 % in
between (``moved``), and hands the roofline and "% of peak" one value per ceiling: the
highest measured (``record(...)["used"]``), since interruptions only ever lower a ceiling,
so the highest is the closest to what the core can do.

    >>> before = measure("before timing")                       # doctest: +SKIP
    >>> ...  # time the cases
    >>> ceilings = record([before, measure("after timing")])    # doctest: +SKIP
    >>> ceilings["moved"]       # None, or "clock 3.68 -> 3.10 GHz (...)"  # doctest: +SKIP
"""

import statistics
import time

from quantlab import ceilings, machine, peaks

MOVED = 0.10  # a ceiling whose highest value is more than this above its lowest has moved
_LEVEL_NAMES = {"l1d": "L1d", "l2": "L2", "llc": "LLC", "dram": "DRAM"}


def measure(label, info=None):
    """Every ceiling of this core once: ``label`` (when: "before timing"), ``at`` (Unix
    time), ``clock``, ``bandwidth`` and ``peaks`` as their measuring functions return them."""
    info = info or machine.cpu_info()
    return {"label": label, "at": time.time(), "clock": ceilings.measure_clock(),
            "bandwidth": ceilings.measure_bandwidth(info["caches"], flags=info["flags"]),
            "peaks": peaks.measure_peaks(info["flags"])}


def _values(measurement):
    """{key: (name, unit, scale, value)} of every ceiling one measurement found."""
    found = {}
    clock = measurement["clock"]
    if clock.get("measured"):
        found["clock"] = ("clock", "GHz", 1, clock["ghz"])
    for level, entry in (measurement["bandwidth"].get("levels") or {}).items():
        found[f"bandwidth {level}"] = (f"{_LEVEL_NAMES.get(level, level)} read bandwidth", "GB/s",
                                       1e9, entry["bytes_per_second"])
    for unit, entry in (measurement["peaks"].get("units") or {}).items():
        found[f"peak {unit}"] = (f"{entry['dtype']} {entry['instruction']} peak", "GMAC/s", 1e9,
                                 entry["macs_per_second"])
    return found


def spread(measurements):
    """{key: ``name``, ``unit``, ``scale`` (value / scale is in ``unit``), ``values`` (in the
    order measured), ``labels`` (which measurement each came from), ``min``, ``median``, ``max``}."""
    found = {}
    for measurement in measurements:
        for key, (name, unit, scale, value) in _values(measurement).items():
            entry = found.setdefault(key, {"name": name, "unit": unit, "scale": scale,
                                           "values": [], "labels": []})
            entry["values"].append(value)
            entry["labels"].append(measurement["label"])
    for entry in found.values():
        entry.update(min=min(entry["values"]), median=statistics.median(entry["values"]),
                     max=max(entry["values"]))
    return found


def _shown(entry, value):
    scaled = value / entry["scale"]
    return f"{scaled:.2f}" if scaled < 10 else f"{scaled:.0f}"


def moved(measurements, threshold=MOVED):
    """The sentence naming every ceiling whose highest value is more than ``threshold``
    above its lowest, with its values in the order measured; None when none moved."""
    named = []
    for entry in spread(measurements).values():
        if entry["max"] > entry["min"] * (1 + threshold):
            values = " -> ".join(_shown(entry, value) for value in entry["values"])
            named.append(f"{entry['name']} {values} {entry['unit']} "
                         f"({entry['max'] / entry['min'] - 1:.0%} apart)")
    if not named:
        return None
    labels = ", ".join(measurement["label"] for measurement in measurements)
    return (f"Moved more than {threshold:.0%} between the measurements ({labels}): "
            + "; ".join(named) + ".")


def _highest(measurements, found):
    """The clock, bandwidth and peaks dicts the roofline takes, each value the highest measured."""
    latest = measurements[-1]
    clock = {**latest["clock"], "ghz": found["clock"]["max"]} if "clock" in found else latest["clock"]
    levels = {level: {**entry, "bytes_per_second": found[f"bandwidth {level}"]["max"]}
              for level, entry in (latest["bandwidth"].get("levels") or {}).items()}
    units = {unit: {**entry, "macs_per_second": found[f"peak {unit}"]["max"]}
             for unit, entry in (latest["peaks"].get("units") or {}).items()}
    return {"clock": clock, "bandwidth": {**latest["bandwidth"], "levels": levels},
            "peaks": {**latest["peaks"], "units": units, "dtypes": peaks.by_dtype(units)}}


def record(measurements):
    """What a study keeps of its ceilings: the ``measurements``, their ``spread``, the
    ``moved`` sentence (or None), and ``used``: the ``clock``, ``bandwidth`` and ``peaks``
    for the roofline and "% of peak", each ceiling at its highest value, with the ``rule``
    that chose it in words."""
    found = spread(measurements)
    labels = ", ".join(measurement["label"] for measurement in measurements)
    count = len(measurements)
    return {"measurements": measurements, "spread": found, "moved": moved(measurements),
            "used": {**_highest(measurements, found),
                     "rule": (f"the highest of {count} measurements ({labels}) of each ceiling"
                              if count > 1 else f"one measurement ({labels})")}}


def format_spread(kept):
    """One line per ceiling: the value used and min / median / max over the measurements."""
    lines = []
    for entry in kept["spread"].values():
        lines.append(f"{entry['name']}: {_shown(entry, entry['max'])} {entry['unit']} "
                     f"(min {_shown(entry, entry['min'])}, median {_shown(entry, entry['median'])}, "
                     f"max {_shown(entry, entry['max'])} over {len(entry['values'])})")
    return lines
