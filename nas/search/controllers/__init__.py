"""Search controllers, each an Optuna sampler over the same :class:`~search_space.SearchSpace`.

``random``, ``tpe`` and ``nsga2`` are Optuna's own; ``rl`` (MnasNet-style LSTM + REINFORCE) and
``evolution`` (aging evolution) are written here and rebuild their state from the study, so a
resumed search continues where it stopped. Single-objective controllers maximise the reward;
``nsga2`` optimises [accuracy up, step_time_ms down, params down] directly, less any cost whose reward
exponent is 0.
"""

from __future__ import annotations

import optuna

from effnas.search_space import SearchSpace
from effnas.errors import EffnasError

from effnas.nas.search.controllers.base import REWARD_ATTR, SpaceSampler, reward_of
from effnas.results.record import OBJECTIVE_DIRECTIONS, OBJECTIVES
from effnas.results.reward import DEFAULT_V, DEFAULT_W
from effnas.nas.search.controllers.evolution import EvolutionSampler
from effnas.nas.search.controllers.rl import RLSampler

CONTROLLERS = ("random", "tpe", "nsga2", "rl", "evolution")
MULTI_OBJECTIVE = ("nsga2",)  # the raw objectives instead of the reward


class ControllerError(EffnasError):
    """An unknown controller name."""


def _check(name: str) -> str:
    if name not in CONTROLLERS:
        raise ControllerError(f"unknown controller {name!r} (expected one of {', '.join(CONTROLLERS)})")
    return name


def is_multi_objective(name: str) -> bool:
    """Whether the controller's study has the three raw objectives instead of the reward."""
    return _check(name) in MULTI_OBJECTIVE


def study_objectives(name: str, reward_w: float = DEFAULT_W, reward_v: float = DEFAULT_V) -> tuple[str, ...]:
    """What a multi-objective controller's study holds: accuracy and each cost the reward weighs (an exponent of 0
    says the cost does not matter, so NSGA-II does not spread its front along it); empty for the reward's."""
    if not is_multi_objective(name):
        return ()
    return tuple(objective for objective, exponent in zip(OBJECTIVES, (None, reward_w, reward_v)) if exponent != 0)


def study_directions(name: str, reward_w: float = DEFAULT_W, reward_v: float = DEFAULT_V) -> list[str]:
    """Optuna directions for a controller's study (see :func:`study_objectives`)."""
    objectives = study_objectives(name, reward_w, reward_v)
    return [OBJECTIVE_DIRECTIONS[OBJECTIVES.index(o)] for o in objectives] if objectives else ["maximize"]


def make_sampler(name: str, space: SearchSpace, seed: int = 0) -> optuna.samplers.BaseSampler:
    """A seeded sampler for ``name``; settings suit budgets of tens to hundreds of trials."""
    _check(name)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        # Multivariate TPE models the decisions jointly (the space's parameter set never changes).
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=10, multivariate=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=20)
    if name == "rl":
        return RLSampler(space, seed=seed)
    return EvolutionSampler(space, seed=seed)


__all__ = ["CONTROLLERS", "REWARD_ATTR", "ControllerError", "EvolutionSampler", "RLSampler", "SpaceSampler",
           "is_multi_objective", "make_sampler", "reward_of", "study_directions", "study_objectives"]
