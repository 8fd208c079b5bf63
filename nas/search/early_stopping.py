"""Early stopping of weak candidates, epoch by epoch: a bound on the reward, and Hyperband on it.

After each epoch but the last, a trial computes its reward so far (accuracy after that epoch, with the
step-time and size factors, which are known after the first epoch) and reports it to the study; Optuna's
:class:`~optuna.pruners.HyperbandPruner` puts each trial in one of several brackets of successive halving, and
in a bracket that stops trials at an epoch, a trial continues only while it is in the top
``1 / reduction_factor`` of that bracket's trials that reached the epoch before it. The other brackets let
their trials finish, so a candidate that learns slowly but ends well still gets through (stopping every
candidate after its first epoch cost best reward in ``benchmarks.search_efficiency``). The first rung is the
second epoch (:data:`FIRST_RUNG`), and Hyperband needs at least ``FIRST_RUNG * reduction_factor`` epochs: with
fewer it has a single bracket, which stops all but the best third of every candidate and, measured on a 3-epoch
proxy, cost best reward; shorter proxies get the cost bound below alone. The decision is taken
inside the trial, from the study, so the local and Ray backends behave alike and several processes on one
study share one ladder. A stopped trial is recorded ``PRUNED`` with the epochs it trained: it counts against the budget
and is never ``best.json`` or on a Pareto front.

Beside Hyperband, in every bracket, a bound: the reward is accuracy times the step-time and size factors, and
accuracy is at most 1, so a trial whose factors alone (measured after its first epoch) put its reward below the
best finished trial's even at full accuracy cannot win, and stops. On small data, where candidates' accuracies lie
close together and the factors decide the ranking, this stops most slow or large candidates after one epoch
without stopping one that would have won (up to the noise of the step time after one epoch).

Only for the single-objective controllers. NSGA-II keeps every candidate to the end: its selection ranks
whole fronts of finished accuracy, step time and size, and a rule that cut trials on the reward would impose
the reward's trade-off on a search whose point is not to choose one.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna

from effnas.errors import EffnasError
from effnas.results.record import STUDY_NAME
from effnas.results.reward import reward
from effnas.results.storage import open_storage

REDUCTION_FACTOR = 3  # keep the best third at each epoch
# Hyperband's first rung: after one epoch a short proxy run's accuracy is still mostly noise (candidates that end
# level lie anywhere from chance upwards), after two it ranks them as the finished runs do. The cost bound below
# needs no accuracy, so it applies from the first epoch.
FIRST_RUNG = 2


class EarlyStoppingError(EffnasError):
    """Early-stopping settings a trial cannot use."""


@dataclass(frozen=True)
class EarlyStopping:
    """What a trial needs to report its reward after each epoch and learn whether to go on (plain data, so a
    worker process or a Ray task can receive it)."""

    storage: str  # the study's storage URL
    trial_id: int  # the Optuna trial being trained
    ref_step_time_ms: float
    ref_params: int
    reward_w: float
    reward_v: float
    epochs: int  # the trial's full length, Hyperband's largest resource
    reduction_factor: int = REDUCTION_FACTOR

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EarlyStopping":
        try:
            rule = cls(**data)
        except TypeError as error:
            raise EarlyStoppingError(f"early stopping: {error}") from None
        if not (isinstance(rule.reduction_factor, int) and rule.reduction_factor >= 2):
            raise EarlyStoppingError(f"early stopping: reduction_factor must be an integer >= 2, "
                                     f"got {rule.reduction_factor!r}")
        return rule

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def reward(self, accuracy: float, step_time_ms: float, params: int) -> float:
        return reward(accuracy, step_time_ms, params, self.ref_step_time_ms, self.ref_params,
                      self.reward_w, self.reward_v)

    def should_stop(self, epoch: int, accuracy: float, step_time_ms: float, params: int) -> bool:
        """Report the reward after ``epoch`` (1-based) and say whether the trial falls behind at this rung."""
        value = self.reward(accuracy, step_time_ms, params)
        if not math.isfinite(value):
            return False  # the trial's own checks fail it
        try:
            study, pruner = _study(self.storage, self.epochs, self.reduction_factor)
        except Exception:  # noqa: BLE001 - e.g. a cluster node that cannot reach the run's SQLite file
            return False  # train to the end: a trial is never lost to its early-stopping report
        storage = study._storage
        storage.set_trial_intermediate_value(self.trial_id, epoch, value)
        return self.cannot_win(study, step_time_ms, params) or pruner.prune(study, storage.get_trial(self.trial_id))

    def cannot_win(self, study: optuna.Study, step_time_ms: float, params: int) -> bool:
        """Whether even every validation image right would leave the trial's reward below the best finished one:
        its step-time and size factors alone already lose, whatever more training does to its accuracy."""
        try:
            best = study.best_value
        except ValueError:  # no finished trial yet
            return False
        return self.reward(1.0, step_time_ms, params) < best


@functools.lru_cache(maxsize=2)
def _study(storage_url: str, epochs: int, reduction_factor: int) -> tuple[optuna.Study, optuna.pruners.BasePruner]:
    """The study as this process sees it, opened once per worker (a rung reads every trial's last report)."""
    if storage_url.startswith("sqlite:///") and not Path(storage_url.removeprefix("sqlite:///")).is_file():
        raise FileNotFoundError(storage_url)  # another machine's file: never create an empty one here
    pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()  # the cost bound alone
    if epochs >= FIRST_RUNG * reduction_factor:  # else Hyperband has one bracket, which stops most candidates
        pruner = optuna.pruners.HyperbandPruner(min_resource=FIRST_RUNG, max_resource=epochs,
                                                reduction_factor=reduction_factor)
    study = optuna.load_study(study_name=STUDY_NAME, storage=open_storage(storage_url),
                              sampler=optuna.samplers.RandomSampler(), pruner=pruner)
    return study, pruner
