"""The one exception type that means "the user gave us something wrong".

Every package raises a subclass of :class:`EffnasError` for bad input; the CLI turns it into a
single line and exit code 2, and lets anything else surface as the bug it is. The helpers below keep that line
safe to print: no secret, no terminal control character, no unbounded quote of a hostile value.
"""

import re


class EffnasError(Exception):
    """Bad user input: reported by the CLI as one line, exit code 2."""


class SpecError(EffnasError, ValueError):
    """An architecture spec (or block string) that cannot describe a network."""


QUOTE_LIMIT = 60  # characters of an offending value a message shows: a 1 MB string must not become a 1 MB line
LINE_LIMIT = 500  # characters of one error line, the whole of it


def shown(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` fit for a one-line message: control characters escaped (repr does that for strings,
    and the result is checked again for other types), and cut at ``limit`` characters."""
    text = escape_controls(repr(value))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def escape_controls(text: str) -> str:
    """``text`` with terminal control characters (ESC, CR, newlines, C1 codes, ...) written as ``\\xNN`` escapes,
    so a user-given name or path cannot move the cursor, recolour the terminal or break a line in two."""
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)


_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)(?P<password>[^\s@/]*)(?P<at>@)")


def redact_secrets(text: str) -> str:
    """Every ``scheme://user:PASSWORD@host`` in ``text`` with the password replaced by ``***``: the last line of
    defence, applied to every error the CLI prints, whatever code formatted the URL into it."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}***{m.group('at')}", text)


def one_line(message: str, limit: int = LINE_LIMIT) -> str:
    """A message as the CLI prints it: secrets redacted, control characters escaped, cut at ``limit``."""
    text = escape_controls(redact_secrets(str(message)))
    return text if len(text) <= limit else text[:limit - 3] + "..."


MAX_SIBLINGS = 1000  # entries of a folder a "did you mean" reads: a huge folder gets no suggestion, not a long wait


def did_you_mean_path(path: object) -> str:
    """`` (did you mean NAME?)`` naming the closest existing sibling of a path that does not exist (a mistyped run
    directory), or ``""``."""
    import difflib
    import itertools
    from pathlib import Path

    missing = Path(str(path)).expanduser()
    try:
        siblings = [entry.name for entry in itertools.islice(missing.parent.iterdir(), MAX_SIBLINGS)]
    except OSError:
        return ""
    close = difflib.get_close_matches(missing.name, siblings, n=1, cutoff=0.6)
    return f" (did you mean {shown(str(missing.parent / close[0]), limit=200)}?)" if close else ""
