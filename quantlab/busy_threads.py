"""How many threads really ran a call: the thread count a runtime was told is checked, not
assumed.

Each thread's time on a CPU comes from the kernel (``/proc/self/task/TID/schedstat``, first
field, nanoseconds), read before and after the call runs for a short while. A thread is
busy when it ran at least a fifth as long as the busiest one: a runtime's pool thread that
shares the work counts (OpenVINO gave its second thread a third to a half of the first's
time here), one that wakes up now and then does not, and the test stays relative, so a
neighbour that slows every thread down does not change the count.
"""

import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

TASKS = Path("/proc/self/task")
SHARE = 0.2  # of the busiest thread's run time


def _run_times(tasks=TASKS):
    found = {}
    for task in tasks.iterdir():
        try:
            found[task.name] = int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):  # a thread that ended, or no schedstat
            continue
    return found


def busy(before, after, share=SHARE):
    """The number of threads whose run time grew by at least ``share`` of the largest growth
    ({thread id: nanoseconds} before and after); None when nothing grew."""
    grown = [after[t] - before.get(t, 0) for t in after]
    top = max(grown, default=0)
    if top <= 0:
        return None
    return sum(g >= share * top for g in grown)


@contextmanager
def counting(tasks=TASKS):
    """``with counting() as seen:`` run the calls to watch; ``seen.count`` is then how many
    threads of this process were busy meanwhile (None where the kernel does not say). The
    latency suite watches its timed window itself: the check costs no calls of its own."""
    seen = SimpleNamespace(count=None)
    before = _run_times(tasks) if tasks.is_dir() else None
    yield seen
    if before is not None:
        seen.count = busy(before, _run_times(tasks))


def count(call, seconds=0.05, tasks=TASKS):
    """Run ``call`` for about ``seconds`` (at least once); how many threads of this process
    were busy meanwhile (None where the kernel does not say)."""
    with counting(tasks) as seen:
        start = time.perf_counter()
        call()
        while time.perf_counter() - start < seconds:
            call()
    return seen.count
