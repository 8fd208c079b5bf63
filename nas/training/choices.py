"""The names the training engine accepts, without importing torch.

The ``nas`` command builds its argument parsers from these before it knows which subcommand runs, so they
live apart from the engine: parsing ``--help`` must not pay for importing torch.
"""

from __future__ import annotations

from effnas.errors import EffnasError

ENGINES = ("auto", "eager", "graph", "compile")
OPTIMIZERS = ("rmsprop", "sgd", "adamw")


class EngineError(EffnasError):
    """An engine, optimizer or device request that cannot be honoured."""
