"""What the custom controllers share: the space as Optuna's relative search space, rewards read back
from the study, and per-trial random streams.

The RL and evolution controllers keep no state that the study does not hold: everything they know
comes from the completed trials (ordered by trial number) and their ``reward`` user attribute, and
each trial draws from its own generator seeded by ``(seed, trial.number)``. A resumed search therefore
rebuilds the controller by replaying the study and samples exactly what an uninterrupted run would.

Failed trials (crashes, NaN loss, out of memory, and trials cut off by a killed search) are ignored:
an interrupted trial is not the candidate's fault, and the runner evaluates its architecture again.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial, TrialState

from effnas.results.record import REWARD_ATTR
from effnas.search_space import SearchSpace

def reward_of(trial: FrozenTrial) -> float | None:
    """A completed trial's reward: ``user_attrs["reward"]``, else its single objective value."""
    value = trial.user_attrs.get(REWARD_ATTR)
    if value is None and trial.values is not None and len(trial.values) == 1:
        value = trial.values[0]
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def rewarded_history(study: optuna.Study) -> list[tuple[FrozenTrial, float]]:
    """Completed trials with a usable reward, by trial number."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    history = [(trial, reward_of(trial)) for trial in sorted(trials, key=lambda t: t.number)]
    return [(trial, reward) for trial, reward in history if reward is not None]


def trial_seed(seed: int, number: int) -> int:
    """An independent 63-bit seed for trial ``number`` of a search seeded with ``seed``."""
    return int(np.random.SeedSequence([seed, number]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class SpaceSampler(BaseSampler):
    """Samples the whole architecture at once (relative sampling) from the space's distributions.

    Subclasses implement :meth:`propose`. Parameters outside the space (if a caller suggests any)
    are drawn by a seeded :class:`~optuna.samplers.RandomSampler`.
    """

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        self.space = space
        self.seed = int(seed)
        self._distributions = space.distributions()
        self._fallback = RandomSampler(seed=self.seed)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self._distributions)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        params = self.propose(study, trial)
        return {name: value for name, value in params.items() if name in search_space}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def reseed_rng(self) -> None:
        # Per-trial generators are already distinct; only the fallback keeps a running stream.
        self._fallback.reseed_rng()

    def random_params(self, rng: np.random.Generator) -> dict[str, Any]:
        """Every decision drawn uniformly (as Optuna's RandomSampler would)."""
        return {name: dist.choices[int(rng.integers(len(dist.choices)))]
                for name, dist in self._distributions.items()}

    def propose(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        raise NotImplementedError
