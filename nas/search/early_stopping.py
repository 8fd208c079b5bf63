"""Early stopping of weak candidates: a bound on the reward from a trial's cost, and Hyperband on long proxies.

The bound, for every trial: the reward is accuracy times the step-time and size factors, and accuracy is at most
1, so a trial whose factors alone put its reward below the best finished trial's even at full accuracy cannot
win, and stops. It needs no accuracy, so a trial asks after each of its timed windows, the first of which is a
few steps into the first epoch: a hopeless candidate costs a handful of steps, not an epoch. On small data, where
candidates' accuracies lie close together and the factors decide the ranking, this stops most slow or large
candidates without stopping one that would have won (up to the noise of a few timed steps, which the reward's
small step-time exponent shrinks further).

Hyperband, where the proxy is long enough: after each epoch but the last, a trial reports its reward so far to
the study; Optuna's :class:`~optuna.pruners.HyperbandPruner` puts each trial in one of several brackets of
successive halving, and in a bracket that stops trials at an epoch, a trial continues only while it is in the
top ``1 / reduction_factor`` of that bracket's trials that reached the epoch before it. The other brackets let
their trials finish, so a candidate that learns slowly but ends well still gets through. The first rung is the
second epoch (:data:`FIRST_RUNG`): after one epoch a short proxy's accuracy is still mostly noise. Hyperband
needs at least ``FIRST_RUNG * reduction_factor`` epochs: with fewer it has a single bracket, which stops all but
the best third of every candidate and, measured on a 3-epoch proxy, cost best reward
(``benchmarks.search_efficiency``); shorter proxies get the bound alone and evaluate no epoch early.

The decisions are taken inside the trial, from the study, so the local and Ray backends behave alike and
several processes on one study share one ladder. A stopped trial is recorded ``PRUNED`` with the whole epochs it
trained: it counts against the budget and is never ``best.json`` or on a Pareto front.

A trial only asks (:class:`Stopping`, in the shape of Ray Tune's ``TrialScheduler.on_trial_result``):
:meth:`~Stopping.on_window` after each timed window, :meth:`~Stopping.on_epoch` after each epoch but the last, each
answered with a :class:`Decision`. A trial without early stopping asks :class:`NeverStop`, which always says
continue. The study's side (Optuna, the results package) is imported only when a rule is first asked: a worker
without one never loads it.

Only for the single-objective controllers. NSGA-II keeps every candidate to the end: its selection ranks
whole fronts of finished accuracy, step time and size, and a rule that cut trials on the reward would impose
the reward's trade-off on a search whose point is not to choose one.
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol

from effnas.errors import EffnasError

if TYPE_CHECKING:
    import optuna

REDUCTION_FACTOR = 3  # keep the best third at each epoch
# Hyperband's first rung: after one epoch a short proxy run's accuracy is still mostly noise (candidates that end
# level lie anywhere from chance upwards), after two it ranks them as the finished runs do.
FIRST_RUNG = 2


class EarlyStoppingError(EffnasError):
    """Early-stopping settings a trial cannot use."""


class Decision(enum.Enum):
    """What a trial is told after it reports: train on, or stop where it is."""

    CONTINUE = "continue"
    STOP = "stop"


def _decide(stop: bool) -> Decision:
    return Decision.STOP if stop else Decision.CONTINUE


class Stopping(Protocol):
    """What a trial asks while it trains; it never looks inside."""

    # Whether this may stop a trial: then every epoch has timed steps, so the cost is known a few steps in.
    may_stop: bool

    def on_window(self, step_time_ms: float, params: int) -> Decision:
        """Asked after each timed window, with the median step time so far."""

    def on_epoch(self, epoch: int, accuracy: Callable[[], float], step_time_ms: float, params: int) -> Decision:
        """Asked after each epoch but the last (``epoch`` is 1-based); ``accuracy()`` evaluates the model now."""


class NeverStop:
    """A trial without early stopping: it trains every step, and no epoch is evaluated early."""

    may_stop = False

    def on_window(self, step_time_ms: float, params: int) -> Decision:
        return Decision.CONTINUE

    def on_epoch(self, epoch: int, accuracy: Callable[[], float], step_time_ms: float, params: int) -> Decision:
        return Decision.CONTINUE


@dataclass(frozen=True)
class EarlyStopping:
    """What a trial needs to report its reward after each epoch and learn whether to go on (plain data, so a
    worker process or a Ray task can receive it)."""

    may_stop: ClassVar[bool] = True

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
        from effnas.results.reward import reward

        return reward(accuracy, step_time_ms, params, self.ref_step_time_ms, self.ref_params,
                      self.reward_w, self.reward_v)

    @property
    def hyperband(self) -> bool:
        """Whether trials report their reward after each epoch to Hyperband: only with enough epochs for more than
        one bracket (see the module docs); otherwise the cost bound decides alone and no epoch is evaluated
        early."""
        return runs_hyperband(self.epochs, self.reduction_factor)

    def falls_behind(self, epoch: int, accuracy: float, step_time_ms: float, params: int) -> bool:
        """Report the reward after ``epoch`` (1-based) and say whether Hyperband stops the trial at this rung."""
        value = self.reward(accuracy, step_time_ms, params)
        if not (self.hyperband and math.isfinite(value)):
            return False  # a non-finite reward: the trial's own checks fail it
        try:
            study, storage, pruner = _study(self.storage, self.epochs, self.reduction_factor)
        except Exception:  # noqa: BLE001 - e.g. a cluster node that cannot reach the run's SQLite file
            return False  # train to the end: a trial is never lost to its early-stopping report
        storage.set_trial_intermediate_value(self.trial_id, epoch, value)
        return pruner.prune(study, storage.get_trial(self.trial_id))

    def cannot_win(self, step_time_ms: float, params: int) -> bool:
        """Whether even every validation image right would leave the trial's reward below the best finished one:
        its step-time and size factors alone already lose, whatever more training does to its accuracy."""
        try:
            study, _, _ = _study(self.storage, self.epochs, self.reduction_factor)
            best = study.best_value
        except Exception:  # noqa: BLE001 - nothing finished yet (ValueError), or a study this node cannot read
            return False
        return self.reward(1.0, step_time_ms, params) < best

    def on_window(self, step_time_ms: float, params: int) -> Decision:
        """The bound needs only the cost: a hopeless candidate stops a few steps into its first epoch."""
        return _decide(self.cannot_win(step_time_ms, params))

    def on_epoch(self, epoch: int, accuracy: Callable[[], float], step_time_ms: float, params: int) -> Decision:
        """Hyperband's rung report: only where the rule runs Hyperband is the model evaluated early."""
        if not self.hyperband:
            return Decision.CONTINUE
        return _decide(self.falls_behind(epoch, accuracy(), step_time_ms, params))


def stopping_for(rule: dict[str, Any] | None) -> Stopping:
    """The trial's rule from its settings (:meth:`EarlyStopping.to_dict`), or :class:`NeverStop` without one."""
    return EarlyStopping.from_dict(rule) if rule else NeverStop()


def runs_hyperband(epochs: int, reduction_factor: int = REDUCTION_FACTOR) -> bool:
    """Hyperband needs a rung and a next one: with fewer epochs it has one bracket, which stops most candidates."""
    return epochs >= FIRST_RUNG * reduction_factor


@functools.lru_cache(maxsize=2)
def _study(storage_url: str, epochs: int,
           reduction_factor: int) -> tuple[optuna.Study, optuna.storages.BaseStorage, optuna.pruners.BasePruner]:
    """The study as this process sees it, with its storage (which addresses a trial by id) and pruner, opened once
    per worker (a rung reads every trial's last report)."""
    import optuna

    from effnas.results.record import STUDY_NAME
    from effnas.results.storage import open_storage

    if storage_url.startswith("sqlite:///") and not Path(storage_url.removeprefix("sqlite:///")).is_file():
        raise FileNotFoundError(storage_url)  # another machine's file: never create an empty one here
    pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()  # the cost bound alone
    if runs_hyperband(epochs, reduction_factor):
        pruner = optuna.pruners.HyperbandPruner(min_resource=FIRST_RUNG, max_resource=epochs,
                                                reduction_factor=reduction_factor)
    storage = open_storage(storage_url)
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage, sampler=optuna.samplers.RandomSampler(),
                              pruner=pruner)
    return study, storage, pruner
