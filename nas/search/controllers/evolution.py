"""Regularized (aging) evolution, Real et al. 2019 ("Regularized Evolution for Image Classifier
Architecture Search"), as an Optuna sampler.

The population is the last ``population_size`` completed trials by trial number, so every model
"ages out" after that many newer ones regardless of its reward: this is what regularizes the search
against lucky proxy evaluations. Until the population is full, architectures are drawn uniformly.
Then each new trial picks ``sample_size`` random members, takes the one with the best reward and
mutates one decision that matters (a fused stage's SE switch does not) to a different value.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from effnas.search_space import SearchSpace

from effnas.nas.search.controllers.base import SpaceSampler, rewarded_history, trial_seed


class EvolutionSampler(SpaceSampler):
    """Aging evolution: tournament selection of size ``sample_size`` in a population of ``population_size``."""

    def __init__(self, space: SearchSpace, seed: int = 0, population_size: int = 20, sample_size: int = 5) -> None:
        if population_size < 2 or not 1 <= sample_size <= population_size:
            raise ValueError("need population_size >= 2 and 1 <= sample_size <= population_size")
        super().__init__(space, seed)
        self.population_size = population_size
        self.sample_size = sample_size

    def propose(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        rng = np.random.default_rng(trial_seed(self.seed, trial.number))
        history = [(t, r) for t, r in rewarded_history(study) if t.number < trial.number]
        if len(history) < self.population_size:
            return self.random_params(rng)
        population = history[-self.population_size:]
        picked = rng.choice(len(population), size=self.sample_size, replace=False)
        parent = max((population[i] for i in picked), key=lambda item: item[1])[0]
        return self.mutate(dict(parent.params), rng)

    def mutate(self, params: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """Change exactly one architecture-changing decision to another of its values."""
        for name, dist in self._distributions.items():  # a parent from another space: fill the gaps
            if name not in params or params[name] not in dist.choices:
                params[name] = dist.choices[int(rng.integers(len(dist.choices)))]
        mutable = [name for name in self.space.active_params(params) if len(self._distributions[name].choices) > 1]
        if not mutable:
            return params
        name = mutable[int(rng.integers(len(mutable)))]
        others = [value for value in self._distributions[name].choices if value != params[name]]
        params[name] = others[int(rng.integers(len(others)))]
        return params
