"""Search controllers, each an Optuna sampler over the same :class:`~search_space.SearchSpace`, named in one
table (:mod:`.registry`).

``random``, ``tpe`` and ``nsga2`` are Optuna's own; ``rl`` (MnasNet-style LSTM + REINFORCE) and
``evolution`` (aging evolution) are written here and rebuild their state from the study, so a
resumed search continues where it stopped. Single-objective controllers maximise the reward; a
multi-objective one (``nsga2``) optimises [accuracy up, step_time_ms down, params down] directly, less any cost
whose reward exponent is 0.

Importing this package loads only the table; the samplers (Optuna, torch) load when one is built or named.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from effnas.nas.search.controllers.registry import (CONTROLLERS, Controller, ControllerError, controllers_help,
                                                    get_controller, register_controller)

if TYPE_CHECKING:
    import optuna

    from effnas.search_space import SearchSpace


def is_multi_objective(name: str) -> bool:
    """Whether the controller's study has the three raw objectives instead of the reward."""
    return get_controller(name).multi_objective


def study_objectives(name: str, reward_w: float | None = None, reward_v: float | None = None) -> tuple[str, ...]:
    """What a multi-objective controller's study holds: accuracy and each cost the reward weighs (an exponent of 0
    says the cost does not matter, so NSGA-II does not spread its front along it); empty for the reward's.
    ``reward_w`` and ``reward_v`` default to the reward's own exponents."""
    from effnas.results.record import OBJECTIVES
    from effnas.results.reward import DEFAULT_V, DEFAULT_W

    if not is_multi_objective(name):
        return ()
    exponents = (None, DEFAULT_W if reward_w is None else reward_w, DEFAULT_V if reward_v is None else reward_v)
    return tuple(objective for objective, exponent in zip(OBJECTIVES, exponents) if exponent != 0)


def study_directions(name: str, reward_w: float | None = None, reward_v: float | None = None) -> list[str]:
    """Optuna directions for a controller's study (see :func:`study_objectives`)."""
    from effnas.results.record import OBJECTIVE_DIRECTIONS, OBJECTIVES

    objectives = study_objectives(name, reward_w, reward_v)
    return [OBJECTIVE_DIRECTIONS[OBJECTIVES.index(o)] for o in objectives] if objectives else ["maximize"]


def make_sampler(name: str, space: "SearchSpace", seed: int = 0) -> "optuna.samplers.BaseSampler":
    """A seeded sampler for controller ``name``, from its registry entry."""
    return get_controller(name).factory(space, seed)


# Names that need Optuna or torch, loaded on first use (as Ray Tune's scheduler table imports a class when named).
_LAZY = {"EvolutionSampler": "evolution", "RLSampler": "rl", "SpaceSampler": "base", "reward_of": "base",
         "REWARD_ATTR": "base"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


__all__ = ["CONTROLLERS", "REWARD_ATTR", "Controller", "ControllerError", "EvolutionSampler", "RLSampler",
           "SpaceSampler", "controllers_help", "get_controller", "is_multi_objective", "make_sampler",
           "register_controller", "reward_of", "study_directions", "study_objectives"]
