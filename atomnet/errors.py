"""atomnet's own error types.

:class:`AtomnetError` is the base of every error that describes a mistake in
the user's input (a bad structure, config, model file, checkpoint or command
line). The CLI prints these as one line and exits with status 2; any other
exception is a bug in atomnet and keeps its traceback.
"""


class AtomnetError(Exception):
    """Bad input from the user; the message names the file, frame or field."""


class UsageError(AtomnetError, ValueError):
    """A bad argument or option (command line or Python API)."""
