"""The one exception type for expected user errors.

The CLI prints these as a single line and exits non-zero, without a traceback; anything
else is a bug and keeps its traceback.
"""


class QuantlabError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""
