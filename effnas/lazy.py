"""A package's names loaded on first use (PEP 562): importing the package then costs nothing its caller does not
use, as when a search's own process needs the memory estimate but no network, or a worker the trial record but
no reports."""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_names(package: str, home: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: each name in ``home`` is imported from ``package.<module>``
    the first time it is asked for, and then kept in the package's namespace."""
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        if name not in home:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{home[name]}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(home))

    return __getattr__, __dir__
