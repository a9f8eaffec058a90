"""How long work shows that it is moving: progress bars on a terminal, plain lines elsewhere.

    progress = Progress()
    progress("medium: exporting int8")                  # one line
    for case in progress.steps(cases, "timing"):        # a bar (tqdm) on a terminal,
        ...                                             # "timing 3/48" lines in CI logs

Everything goes to stderr, so that machine-readable output on stdout stays clean.
"""

import sys
import time

from quantlab.safe_text import one_line


class Progress:
    """Lines start with the time since the run began, so a log shows where the time went."""

    def __init__(self, stream=None, bars=None):
        self.stream = stream or sys.stderr
        self.bars = self.stream.isatty() if bars is None else bars
        self.started = time.monotonic()

    def __call__(self, message):
        # One line of printable characters: names from users' files reach it.
        line = f"[{time.monotonic() - self.started:6.1f} s] {one_line(message)}"
        if self.bars:  # above the bar, which tqdm then draws again
            from tqdm import tqdm

            tqdm.write(line, file=self.stream)
        else:  # one write: lines from the background counting never run into each other
            self.stream.write(line + "\n")
            self.stream.flush()

    def steps(self, items, label, total=None):
        """Yield ``items``, showing how many are done and an estimate of the time left."""
        items = list(items) if total is None else items
        total = len(items) if total is None else total
        if self.bars:
            from tqdm import tqdm

            yield from tqdm(items, desc=label, total=total, file=self.stream, leave=False,
                            dynamic_ncols=True)
            self(f"{label}: {total} done")
            return
        started, shown = time.monotonic(), 0
        for done, item in enumerate(items, 1):
            yield item
            elapsed = time.monotonic() - started
            # A line per tenth of the work (or the last): a CI log stays readable.
            if done == total or (done - shown) * 10 >= total:
                shown = done
                left = elapsed / done * (total - done)
                self(f"{label} {done}/{total} ({elapsed:.0f} s, about {left:.0f} s left)")
