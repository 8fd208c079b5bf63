"""Networks from specs: blocks, the builder, and counting (params, multiply-adds).

Names load on first use (PEP 562), so ``effnas.models.memory``, which estimates a network's memory from its spec
alone, imports without torch: a search's own process checks its space with it and never builds a network.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {"FusedMBConv": "blocks", "MBConv": "blocks", "SqueezeExcite": "blocks", "StochasticDepth": "blocks",
         "EfficientNet": "network", "build_model": "network",
         "ProfileError": "profile", "count_macs": "profile", "count_macs_by_module": "profile",
         "count_params": "profile", "count_spec": "profile"}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
