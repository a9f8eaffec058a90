"""Child processes that die with the process that started them.

A study killed mid-way (Ctrl-C aside: a killed Dask worker, an OOM kill) must leave no timing
run or valgrind worker behind: it would share the CPU with the next timing. Linux's
PR_SET_PDEATHSIG asks the kernel to kill a process when its parent dies, and it survives
exec; a tiny Python trampoline sets it and then execs the real command, because the
alternative, subprocess's ``preexec_fn``, is not safe in a process with threads.
"""

import os
import shutil
import signal
import sys

_TRAMPOLINE = (
    "import ctypes, os, signal, sys\n"
    "try:\n    ctypes.CDLL(None).prctl(1, signal.SIGKILL)\n"  # 1: PR_SET_PDEATHSIG
    "except (OSError, AttributeError):\n    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n    sys.exit(1)  # the parent died first\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n")


def dying_with_parent(argv):
    """``argv`` run so that it is killed when this process dies (elsewhere than Linux: as is)."""
    if not sys.platform.startswith("linux"):
        return list(argv)
    program = shutil.which(argv[0]) or argv[0]
    return [sys.executable, "-c", _TRAMPOLINE, str(os.getpid()), program, *argv[1:]]


def die_with_parent():
    """This process (a worker its parent started, e.g. through multiprocessing) killed when
    its parent dies: the trampoline's PR_SET_PDEATHSIG, for a process already running."""
    import ctypes

    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
