"""Networks from specs: blocks, the builder, and counting (params, multiply-adds).

Names load on first use (PEP 562), so ``effnas.models.memory``, which estimates a network's memory from its spec
alone, imports without torch: a search's own process checks its space with it and never builds a network.
"""

from __future__ import annotations

from effnas.lazy import lazy_names

_HOME = {"FusedMBConv": "blocks", "MBConv": "blocks", "SqueezeExcite": "blocks", "StochasticDepth": "blocks",
         "EfficientNet": "network", "build_model": "network",
         "ProfileError": "profile", "count_macs": "profile", "count_macs_by_module": "profile",
         "count_params": "profile", "count_spec": "profile"}

__all__ = sorted(_HOME)

__getattr__, __dir__ = lazy_names(__name__, _HOME)
