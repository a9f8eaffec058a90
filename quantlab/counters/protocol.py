"""What the worker process and the backends that start it agree on: markers and dump names."""

# A worker's user error comes back as one stderr line starting with this, then exit status 2.
ERROR_MARK = "quantlab-counters-error: "
ERROR_STATUS = 2

# callgrind dump descriptions; callgrind writes each into its dump's "desc: Trigger:" line.
DUMP_WARM, DUMP_SHORT, DUMP_LONG = "quantlab-warm", "quantlab-short", "quantlab-long"
