"""Errors a user can fix (bad config key, missing file, unreadable sample).

The CLI prints these as one clear message and exits non-zero without a traceback; anything else
is a bug and keeps its traceback.
"""


class TheWorldUserError(Exception):
    """An error caused by the user's input; the message names the offending key, file or sample."""
