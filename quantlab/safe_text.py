"""Text from files and the environment, made safe to use: names checked where they enter,
everything else escaped where a report prints it.

A results file, a model or ``QUANTLAB_MACHINE`` may hold anything: a newline that starts a
Markdown heading, a link, raw HTML that a viewer runs, a slash or ``..`` that leaves a
folder. Names that become paths or keys (machines, variants, runtimes) must be plain names;
other text is printed through ``markdown`` as the literal characters it holds.
"""

import re
from pathlib import Path

from quantlab.errors import QuantlabError

MAX_NAME = 64
_PLAIN = re.compile(r"[A-Za-z0-9._-]+")
# Markdown's and HTML's active characters, as the characters themselves: a backslash escapes
# the Markdown ones (links, images, code, table cells), HTML's are written as entities.
_ESCAPES = {"\\": "\\\\", "`": "\\`", "[": "\\[", "]": "\\]", "|": "\\|",
            "&": "&amp;", "<": "&lt;", ">": "&gt;"}
_ACTIVE = re.compile("|".join(map(re.escape, _ESCAPES)))
# What makes a heading, a list item or a rule of a line that starts with it (a list item's
# text too): its first mark is escaped.
_BLOCK_START = re.compile(r"^(\d{0,9})([#*+.)-])(?=(?<=#)#{0,5}(\s|$)|(?<=[*+-])(\s|$)|"
                          r"(?<=\d[.)])(\s|$)|(?<=[*-])\s*([*-]\s*){2,}$)")


def is_plain_name(text):
    """Letters, digits, ``.``, ``_`` and ``-``, at most ``MAX_NAME`` of them, and not ``.``
    or ``..``: a name that is safe as a file name, a key and a table cell."""
    return (isinstance(text, str) and len(text) <= MAX_NAME and _PLAIN.fullmatch(text) is not None
            and text not in (".", ".."))


def as_plain_name(text, fallback):
    """``text`` made a plain name: every run of other characters one ``_``, at most
    ``MAX_NAME`` characters, no leading or trailing ``.`` or ``_``; ``fallback`` if nothing
    is left."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text))[:MAX_NAME].strip("._")
    return name if is_plain_name(name) else fallback


def net_name(model_path):
    """The net name of a user's model file: its stem as a plain name. It names folders in
    the cache and the report's headings, plot titles and table columns, so a stem of 240
    characters, a ``$`` (matplotlib's math) or Markdown must not reach them as it is."""
    return as_plain_name(Path(model_path).stem, "model")


def plain_name(text, what, fix):
    """``text`` when it is a plain name; else a one-line QuantlabError naming ``what`` and
    ``fix``."""
    if not is_plain_name(text):
        shown = " ".join(str(text).split())
        shown = repr(shown if len(shown) <= 40 else shown[:40] + "...")
        raise QuantlabError(f"{what} {shown} is not a plain name (letters, digits, '.', '_' "
                            f"and '-', at most {MAX_NAME}, not '.' or '..'); {fix}")
    return text


def one_line(text):
    """``text`` as one line of printable characters: line breaks and control characters (a
    terminal's escape sequences) become spaces, runs of whitespace one space."""
    return " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())


def markdown(text):
    """``text`` on one line, as literal characters in Markdown and in the HTML it becomes."""
    text = _ACTIVE.sub(lambda match: _ESCAPES[match.group()], one_line(text))
    return _BLOCK_START.sub(r"\1\\\2", text)
