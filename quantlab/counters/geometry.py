"""Cache geometries that valgrind can simulate: names, spec strings and their validation.

A geometry is given as ``host`` (this machine's caches as the kernel reports them in sysfs,
rounded to what valgrind can simulate), a named machine (``i7-6500u``, the laptop of the P17 study) or an explicit spec
``I1=size,assoc,line:D1=size,assoc,line:LL=size,assoc,line`` (any subset of the three
levels; sizes in bytes, or with a K/M suffix meaning KiB/MiB). Specs are checked here with
valgrind's own rules so that a bad one fails in a second with a one-line message instead of
after valgrind has started.

valgrind's own reading of the host (CPUID) is not used: on virtual machines CPUID can
describe caches that do not exist (seen: a 320 MB direct-mapped L3 on a guest whose kernel
reports 32 MiB, 16-way), and valgrind would silently simulate those.
"""

import argparse
import re
from pathlib import Path

from quantlab.errors import QuantlabError


class CacheGeometryError(QuantlabError, argparse.ArgumentTypeError):
    """A bad geometry; also an ArgumentTypeError so argparse prints its message as is."""

LEVELS = ("I1", "D1", "LL")

CACHE_GEOMETRIES = {
    # this machine's caches, read from sysfs when used (see host_levels)
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
    if max(size, assoc, line) >= 1 << 31:  # valgrind holds each in 32 bits ("overflowed")
        raise CacheGeometryError(f"{where}: valgrind takes sizes below 2 GiB")
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


SYSFS_CACHE = Path("/sys/devices/system/cpu/cpu0/cache")


def _sysfs_size(text):
    match = re.fullmatch(r"(\d+)([KMG]?)", text.strip(), re.IGNORECASE)
    return int(match.group(1)) * 1024 ** " KMG".index((match.group(2) or " ").upper())


def host_caches(cache_dir=SYSFS_CACHE):
    """{level: (size, assoc, line)} of this machine as the kernel reports it: I1, D1 and the
    largest unified cache as LL (what valgrind simulates); {} where sysfs says nothing usable.
    A ``ways_of_associativity`` of 0 means fully associative (one set)."""
    found = {}
    for index in sorted(Path(cache_dir).glob("index[0-9]*")):
        try:
            read = lambda name: (index / name).read_text().strip()  # noqa: E731
            level, kind = int(read("level")), read("type")
            size, line = _sysfs_size(read("size")), int(read("coherency_line_size"))
            ways = int(read("ways_of_associativity"))
        except (OSError, ValueError, AttributeError):
            continue
        geometry = (size, ways or max(size // max(line, 1), 1), line)
        if level == 1 and kind == "Instruction":
            found["I1"] = geometry
        elif level == 1 and kind == "Data":
            found["D1"] = geometry
        elif kind == "Unified" and level >= found.get("_ll_level", 0):
            found["LL"], found["_ll_level"] = geometry, level
    found.pop("_ll_level", None)
    return found


def simulable(size, assoc, line):
    """The nearest cache valgrind can simulate at or below this one: the set count rounded
    down to a power of two (associativity and line kept). Returns (size, assoc, line)."""
    sets = max(size // (assoc * line), 1)
    sets = 1 << (sets.bit_length() - 1)
    return sets * assoc * line, assoc, line


def host_levels(cache_dir=SYSFS_CACHE):
    """(levels to simulate, sentences on what was rounded) for ``host``; ({}, [...]) when
    sysfs has no cache information, and valgrind is left to read CPUID."""
    caches = host_caches(cache_dir)
    if not caches:
        return {}, ["sysfs reports no caches here: valgrind read the caches from CPUID, "
                    "which on a virtual machine may describe caches that do not exist"]
    levels, notes = {}, []
    for level, geometry in caches.items():
        levels[level] = simulable(*geometry)
        if levels[level] != geometry:
            notes.append(f"this CPU's {level} cache ({describe_level(level, *geometry)}) has a set "
                         f"count that is not a power of two: simulated as "
                         f"{describe_level(level, *levels[level])}")
    return levels, notes


def _size_text(size):
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def describe_level(level, size, assoc, line):
    return f"{level} {_size_text(size)} {assoc}-way {line} B lines"


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


def valgrind_options(text, cache_dir=SYSFS_CACHE):
    """The ``--I1/--D1/--LL`` options for a geometry; ``host`` reads sysfs (see host_levels)."""
    levels = levels_of(text)
    if levels is None:
        levels = host_levels(cache_dir)[0]
    return [f"--{level}={','.join(str(v) for v in levels[level])}"
            for level in LEVELS if level in levels]
