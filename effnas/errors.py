"""The one exception type that means "the user gave us something wrong".

Every package raises a subclass of :class:`EffnasError` for bad input; the CLI turns it into a
single line and exit code 2, and lets anything else surface as the bug it is.
"""


class EffnasError(Exception):
    """Bad user input: reported by the CLI as one line, exit code 2."""


class SpecError(EffnasError, ValueError):
    """An architecture spec (or block string) that cannot describe a network."""
