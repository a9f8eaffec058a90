"""Cache geometries that valgrind can simulate: names, spec strings and their validation.

A geometry is given as ``host`` (valgrind reads the host's caches and adjusts what it cannot
simulate), a named machine (``i7-6500u``, the laptop of the P17 study) or an explicit spec
``I1=size,assoc,line:D1=size,assoc,line:LL=size,assoc,line`` (any subset of the three
levels; sizes in bytes, or with a K/M suffix meaning KiB/MiB). Specs are checked here with
valgrind's own rules so that a bad one fails in a second with a one-line message instead of
after valgrind has started.
"""

import argparse
import re

from quantlab.errors import QuantlabError


class CacheGeometryError(QuantlabError, argparse.ArgumentTypeError):
    """A bad geometry; also an ArgumentTypeError so argparse prints its message as is."""

LEVELS = ("I1", "D1", "LL")

CACHE_GEOMETRIES = {
    # valgrind's default: read the host's caches (CPUID) and adjust what it cannot simulate
    "host": None,
    # P17's laptop, Intel Core i7-6500U (Skylake): 32 KiB 8-way L1s, 4 MiB 16-way L3
    "i7-6500u": {"I1": (32768, 8, 64), "D1": (32768, 8, 64), "LL": (4194304, 16, 64)},
}

_MIN_LINE = 16  # valgrind: a smaller line could let one instruction straddle three lines
_SUFFIX = {"": 1, "K": 1024, "M": 1024 * 1024}


def _power_of_two(n):
    return n > 0 and n & (n - 1) == 0


def check_level(level, size, assoc, line):
    """Raise a one-line error unless valgrind accepts this cache (same rules as valgrind)."""
    where = f"cache geometry {level}={size},{assoc},{line}"
    if min(size, assoc, line) < 1:
        raise CacheGeometryError(f"{where}: size, associativity and line size must be positive")
    if not _power_of_two(line) or line < _MIN_LINE:
        raise CacheGeometryError(f"{where}: the line size must be a power of two of at least {_MIN_LINE} bytes")
    if size <= line:
        raise CacheGeometryError(f"{where}: the size must be larger than one line")
    sets, rest = divmod(size, assoc * line)
    if rest or not _power_of_two(sets):
        raise CacheGeometryError(
            f"{where}: size / (associativity x line) = {size / (assoc * line):g} sets, "
            f"but valgrind needs a power of two"
        )


def _number(text, level, spec):
    match = re.fullmatch(r"(\d+)([KM]?)", text.strip(), re.IGNORECASE)
    if not match:
        raise CacheGeometryError(
            f"malformed cache geometry {spec!r}: {level} needs three whole numbers "
            f"size,assoc,line (e.g. {level}=32768,8,64)"
        )
    return int(match.group(1)) * _SUFFIX[match.group(2).upper()]


def levels_of(text):
    """Spec or name -> {level: (size, assoc, line)} for the levels it sets, or None for host."""
    name = str(text).strip()
    if name.lower() in CACHE_GEOMETRIES:
        return CACHE_GEOMETRIES[name.lower()]
    if "=" not in name:
        raise CacheGeometryError(
            f"unknown cache geometry {name!r}: use {', '.join(CACHE_GEOMETRIES)} or a spec "
            f"like I1=32768,8,64:D1=32768,8,64:LL=4194304,16,64"
        )
    levels = {}
    for part in name.split(":"):
        key, _, value = part.partition("=")
        level = key.strip().upper()
        if level not in LEVELS:
            raise CacheGeometryError(
                f"malformed cache geometry {name!r}: unknown level {key.strip()!r}; "
                f"levels are {', '.join(LEVELS)}"
            )
        if level in levels:
            raise CacheGeometryError(f"malformed cache geometry {name!r}: {level} given twice")
        fields = value.split(",")
        if len(fields) != 3:
            raise CacheGeometryError(
                f"malformed cache geometry {name!r}: {level} needs three numbers "
                f"size,assoc,line (e.g. {level}=32768,8,64)"
            )
        size, assoc, line = (_number(f, level, name) for f in fields)
        check_level(level, size, assoc, line)
        levels[level] = (size, assoc, line)
    return levels


def spec_text(levels):
    return ":".join(f"{level}={','.join(str(v) for v in levels[level])}"
                    for level in LEVELS if level in levels)


def parse_cache_geometry(text):
    """Validate a geometry name or spec; return its canonical text (usable as argparse ``type=``)."""
    levels = levels_of(text)
    name = str(text).strip().lower()
    if name in CACHE_GEOMETRIES:
        return name
    return spec_text(levels)


def valgrind_options(text):
    """The ``--I1/--D1/--LL`` options for a geometry (none for ``host``)."""
    levels = levels_of(text) or {}
    return [f"--{level}={','.join(str(v) for v in levels[level])}"
            for level in LEVELS if level in levels]
