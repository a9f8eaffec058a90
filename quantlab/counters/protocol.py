"""What the worker process and the backends that start it agree on: markers and dump names."""

# A worker's user error comes back as one stderr line starting with this, then exit status 2.
ERROR_MARK = "quantlab-counters-error: "
ERROR_STATUS = 2

# The windows of one batch size, in the order the worker opens them (see worker.py).
WARM, SHORT, LONG = "warm", "short", "long"


def dump_name(window, batch_size):
    """The description of one window's callgrind dump, which callgrind writes into its
    ``desc: Trigger:`` line: one name per (window, batch size), as one worker may count
    several batch sizes."""
    return f"quantlab-{window}-batch-{batch_size}"
