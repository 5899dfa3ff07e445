"""The base of every error a user can cause (a bad file, a wrong argument, a misfit model).

The `reid` command prints these as one line naming the culprit, without a traceback.
"""


class ReidError(Exception):
    """A mistake in the user's input or files, explained in the message."""
