"""argparse option types shared by the command line and the pytest plugin.

Each raises ``argparse.ArgumentTypeError`` with one line naming the valid choices. Cheap to
import (the plugin loads in every pytest run): a list of valid names may be given as
"module:ATTRIBUTE" and is imported only when an option is actually parsed.
"""

import argparse

# numpy's and Python's generators, which Keras seeds from one number, take seeds below 2**32.
MAX_SEED = 2**32 - 1


def _choices(valid):
    if isinstance(valid, str):  # "module:ATTRIBUTE", imported only when the option is given
        module, _, attribute = valid.partition(":")
        valid = getattr(__import__(module, fromlist=[attribute]), attribute)
    return valid


def names(valid, what):
    def parse(text):
        given = tuple(n.strip() for n in text.split(",") if n.strip())
        choices = _choices(valid)
        unknown = [n for n in given if n not in choices]
        if unknown or not given:
            problem = f"unknown {what} {unknown[0]!r}" if unknown else f"no {what} given"
            raise argparse.ArgumentTypeError(f"{problem}: choose from {','.join(choices)}")
        return tuple(dict.fromkeys(given))
    return parse


def name(valid, what):
    def parse(text):
        choices = _choices(valid)
        if text not in choices:
            raise argparse.ArgumentTypeError(f"unknown {what} {text!r}: choose one of {', '.join(choices)}")
        return text
    return parse


def seed(text):
    """A random seed: a whole number from 0 to ``MAX_SEED``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed {text!r} is not a whole number") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"seed {value} is out of range: give 0 to {MAX_SEED}")
    return value


def positive_ints(text):
    try:
        values = tuple(dict.fromkeys(int(v) for v in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be at least 1")
    return values


def thread_counts(text):
    """Comma-separated thread counts; ``all`` means every core this process may use."""
    import os

    counts = []
    for item in text.split(","):
        item = item.strip()
        if item == "all":
            counts.append(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                          else os.cpu_count() or 1)
            continue
        try:
            counts.append(int(item))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: give thread counts as whole numbers or 'all' (e.g. 1,all)") from None
        if counts[-1] < 1:
            raise argparse.ArgumentTypeError(f"{text!r}: every thread count must be at least 1")
    return tuple(dict.fromkeys(counts))
