"""The controllers, by name: one entry each, with what the rest of the code asks of it.

A name -> entry table in the manner of timm's ``@register_model`` and Ray Tune's scheduler table: the search
builds its sampler from the entry's factory, the study's objectives from its ``multi_objective`` flag and each
process's seed from its ``per_process_rng`` flag, and ``nas search --help``, its ``--controller`` choices and the
benchmarks list the table. Adding a controller is its module plus one decorated factory here. Factories import
their sampler when called, so reading the table (as every ``nas`` command's parser does) pulls in neither
Optuna nor torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from effnas.errors import EffnasError

if TYPE_CHECKING:
    import optuna

    from effnas.search_space import SearchSpace

Factory = Callable[["SearchSpace", int], "optuna.samplers.BaseSampler"]


class ControllerError(EffnasError):
    """An unknown controller name."""


@dataclass(frozen=True)
class Controller:
    """One controller: how to build its seeded sampler over a space, and how the search must treat it."""

    name: str
    factory: Factory  # (space, seed) -> an Optuna sampler
    # The study holds the raw objectives (accuracy, step time, params) instead of the reward, and early
    # stopping, which ranks on the reward, stays off.
    multi_objective: bool = False
    # One running generator per process (Optuna's own samplers): each process joining a study seeds it from its
    # own stream (see effnas.nas.search.streams). False: it draws each trial from (seed, trial number) already.
    per_process_rng: bool = False
    about: str = ""  # one line for `nas search --help`


CONTROLLERS: dict[str, Controller] = {}


def register_controller(name: str, *, multi_objective: bool = False, per_process_rng: bool = False,
                        about: str = "") -> Callable[[Factory], Factory]:
    """Decorator: add the factory it decorates to the table as controller ``name`` (a name is taken once)."""

    def add(factory: Factory) -> Factory:
        if name in CONTROLLERS:
            raise ValueError(f"controller {name!r} is already registered")
        CONTROLLERS[name] = Controller(name, factory, multi_objective, per_process_rng, about)
        return factory

    return add


def get_controller(name: str) -> Controller:
    """The entry for ``name``; an unknown name is a one-line :class:`ControllerError` listing the known ones."""
    try:
        return CONTROLLERS[name]
    except (KeyError, TypeError):
        raise ControllerError(f"unknown controller {name!r} (expected one of {', '.join(CONTROLLERS)})") from None


def controllers_help() -> str:
    """The table as `nas search --help` shows it: one line per controller."""
    width = max(map(len, CONTROLLERS), default=0)
    return "\n".join(f"  {name:<{width}}  {entry.about}".rstrip() for name, entry in CONTROLLERS.items())


# ----------------------------------------------------------------------------- the built-in controllers
# Settings suit budgets of tens to hundreds of trials.
@register_controller("random", per_process_rng=True, about="uniform sampling: the baseline")
def _random(space: "SearchSpace", seed: int) -> "optuna.samplers.BaseSampler":
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


@register_controller("tpe", per_process_rng=True, about="Optuna's multivariate TPE (the default)")
def _tpe(space: "SearchSpace", seed: int) -> "optuna.samplers.BaseSampler":
    import optuna

    # Multivariate TPE models the decisions jointly (the space's parameter set never changes).
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=10, multivariate=True)


@register_controller("nsga2", multi_objective=True, per_process_rng=True,
                     about="NSGA-II on accuracy, step time and params: a Pareto front, no reward")
def _nsga2(space: "SearchSpace", seed: int) -> "optuna.samplers.BaseSampler":
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=20)


@register_controller("rl", about="MnasNet-style LSTM policy trained with REINFORCE")
def _rl(space: "SearchSpace", seed: int) -> "optuna.samplers.BaseSampler":
    from effnas.nas.search.controllers.rl import RLSampler

    return RLSampler(space, seed=seed)


@register_controller("evolution", about="aging (regularized) evolution")
def _evolution(space: "SearchSpace", seed: int) -> "optuna.samplers.BaseSampler":
    from effnas.nas.search.controllers.evolution import EvolutionSampler

    return EvolutionSampler(space, seed=seed)
