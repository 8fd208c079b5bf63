"""Argument types the sub-commands share: a bad value is argparse's one-line error before any work starts."""

from __future__ import annotations

import argparse
import math


def finite_number(text: str) -> float:
    """A finite number: NaN or infinity would only fail later (every reward NaN, a limit that never applies,
    a learning rate that diverges mid-training)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_number(text: str) -> float:
    value = finite_number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION = 7 * 86400
MAX_THREADS = 1024


def duration(text: str) -> float:
    """A training time: seconds (``90``, ``90s``), minutes (``5m``), hours (``1.5h``) or days (``2d``); more than
    0 and at most a week (``10y`` is a typo, not a plan)."""
    spoken = text.strip().lower()
    number, unit = (spoken[:-1], spoken[-1]) if spoken[-1:] in DURATION_UNITS else (spoken, "s")
    try:
        value = float(number) * DURATION_UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a time such as 90s, 5m or 1h, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text!r}")
    if value > MAX_DURATION:
        raise argparse.ArgumentTypeError(f"at most 7 days (7d), got {text!r}")
    return value


def thread_count(text: str) -> int:
    """CPU threads: a whole number from 1 to the machine's limit."""
    value = positive_int(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"at most {MAX_THREADS}, got {value}")
    return value


# ----------------------------------------------------------------------------- --config: a run file
# API keyword -> (CLI dest, value as the flag holds it), where the two differ.
_API_TO_FLAG = {"progressive": ("no_progressive", lambda value: not value),
                "early_stopping": ("early_stopping", lambda value: ("on" if value else "off")
                                   if isinstance(value, bool) else value)}


def add_config_argument(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("--config", default=argparse.SUPPRESS, metavar="FILE",
                        help=f"run from a run file (a run directory's config.yaml, which every nas {command} writes); "
                             "flags given beside it override its options")


def config_path(argv: list[str]) -> str | None:
    """The --config FILE among a sub-command's arguments (abbreviated as argparse allows), or None."""
    pre = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    pre.add_argument("--config")
    try:
        return pre.parse_known_args(argv)[0].config
    except (argparse.ArgumentError, SystemExit):
        return None  # the real parser says what is wrong


def apply_run_config(parser: argparse.ArgumentParser, command: str, path: str) -> None:
    """Make the options of ``path``'s ``command`` section ``parser``'s defaults, so flags on the command line
    override them. Each value goes through its flag's own type and choices: a value a flag refuses is refused
    here, in one line (:class:`effnas.run_config.RunConfigError`)."""
    import inspect

    from effnas import api
    from effnas.run_config import RunConfigError, read_run_config

    keywords = [name for name in inspect.signature(getattr(api, command)).parameters if name != "own_process"]
    options = read_run_config(path, command, keywords)
    actions: dict[str, list[argparse.Action]] = {}
    for action in parser._actions:
        actions.setdefault(action.dest, []).append(action)
    for name, value in options.items():
        dest, convert = _API_TO_FLAG.get(name, (name, lambda held: held))
        if value is None or dest not in actions:
            continue  # None: the default, which the flag and the keyword share
        try:
            flag_value = _flag_value(actions[dest][0], convert(value))
        except (argparse.ArgumentTypeError, ValueError, TypeError) as error:
            raise RunConfigError(f"--config {path}: {name}: {error}") from None
        for action in actions[dest]:
            action.default = flag_value
            action.required = False
            if not action.option_strings:  # a positional (compare's RUN): the command line may leave it out
                action.nargs = "?"


def _flag_value(action: argparse.Action, value: object) -> object:
    """``value`` from a run file as ``action``'s flag would parse it."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction)):
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if action.dest == "arch" and isinstance(value, dict):  # a spec given to effnas.train as an object
        from effnas.search_space import spec_from_dict

        return spec_from_dict(value)
    if isinstance(action, argparse._AppendAction) or action.nargs not in (None, "?"):
        if not isinstance(value, list) or (isinstance(action.nargs, int) and len(value) != action.nargs):
            count = f"{action.nargs} values" if isinstance(action.nargs, int) else "a list"
            raise ValueError(f"expected {count}, got {value!r}")
        return [_one_value(action, item) for item in value]
    return _one_value(action, value)


def _one_value(action: argparse.Action, value: object) -> object:
    if isinstance(value, (dict, list)):
        raise ValueError(f"expected one value, got {value!r}")
    text = str(value)
    try:
        converted = action.type(text) if callable(action.type) else text
    except (ValueError, TypeError):  # int, float: argparse's own words for them
        raise ValueError(f"invalid {getattr(action.type, '__name__', 'value')} value: {text!r}") from None
    if action.choices is not None and converted not in action.choices:
        raise ValueError(f"invalid choice {converted!r} (choose from {', '.join(map(str, action.choices))})")
    return converted
