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
