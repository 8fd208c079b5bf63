"""One trial's record in the study: the study's name, what a trial measured, its reward, and which trial is best.

Every reader and writer of trial metrics goes through :class:`TrialMetrics`: the search stores it, the table,
``best.json`` and the reports read it back, so adding a metric means adding one field here.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import optuna

from effnas.errors import EffnasError
from effnas.results.reward import reward

STUDY_NAME = "effnas"  # every search's Optuna study is called this, in SQLite, PostgreSQL or a journal file


class RecordError(EffnasError, ValueError):
    """Metrics that do not form a trial record (a missing or unknown metric, a wrong type)."""


@dataclass(frozen=True)
class TrialMetrics:
    """What one proxy trial measured, as the study stores it (one user attribute per field)."""

    accuracy: float  # validation top-1 in [0, 1]
    step_time_ms: float  # median training step
    params: int
    step_time_spread: float | None = None  # (p90 - p10) / median of the timed steps
    timed_steps: int | None = None
    macs: int | None = None  # per image at the proxy image size
    flops: int | None = None
    engine: str | None = None  # eager, graph or compile: how the steps ran
    fallback_reason: str | None = None  # why a requested engine fell back to eager
    device: str | None = None
    timing: str | None = None  # what the timed steps ran under: "exclusive" (alone) or "unlocked", pinned cores
    threads: int | None = None  # torch CPU threads the trial trained with
    workers: int | None = None  # trials the search ran at once
    image_size: int | None = None
    batch_size: int | None = None
    train_steps: int | None = None
    epochs: int | None = None  # epochs trained: fewer than the recipe's when early stopping stopped the trial
    train_loss: float | None = None
    train_seconds: float | None = None
    eval_seconds: float | None = None
    build_seconds: float | None = None
    total_seconds: float | None = None

    @classmethod
    def from_dict(cls, metrics: Mapping[str, Any]) -> "TrialMetrics":
        """A record from what a trial returned; an unknown name is an error, so no metric goes unrecorded."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(metrics) - known)
        if unknown:
            raise RecordError(f"trial metrics: unknown metric {unknown[0]!r} (add it to TrialMetrics)")
        missing = [name for name in ("accuracy", "step_time_ms", "params") if metrics.get(name) is None]
        if missing:
            raise RecordError(f"trial metrics: {missing[0]} is missing")
        return cls(**dict(metrics))

    @classmethod
    def from_trial(cls, trial: optuna.trial.FrozenTrial) -> "TrialMetrics | None":
        """The record a completed trial holds, or None for trials without one (failed, running, foreign)."""
        attrs = trial.user_attrs
        if any(attrs.get(name) is None for name in ("accuracy", "step_time_ms", "params")):
            return None
        return cls(**{field.name: attrs.get(field.name) for field in dataclasses.fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        """The measured fields, without the ones this trial did not measure."""
        return {name: value for name, value in dataclasses.asdict(self).items() if value is not None}

    def reward(self, reference: "Reference", w: float, v: float) -> float:
        return reward(self.accuracy, self.step_time_ms, self.params, reference.step_time_ms, reference.params,
                      w=w, v=v)

    @property
    def unsteady(self) -> bool:
        """Whether the step time is too unsteady to rank (see :data:`UNSTEADY_SPREAD`)."""
        return unsteady(self.step_time_spread)

    def objectives(self, names: Sequence[str] = ()) -> list[float]:
        """The multi-objective controllers' values of ``names`` (default: all of ``OBJECTIVES``), in that order."""
        return [float(getattr(self, name)) for name in (names or OBJECTIVES)]


# A step time whose (p90 - p10) / median exceeds this is flagged: the timed steps disagree by more than the
# differences between candidates the reward's step-time factor weighs, so its rank is noise.
UNSTEADY_SPREAD = 0.5


def unsteady(spread: float | None) -> bool:
    """True for a measured spread above :data:`UNSTEADY_SPREAD` (an unknown one is not flagged)."""
    return spread is not None and isinstance(spread, (int, float)) and not math.isnan(spread) \
        and spread > UNSTEADY_SPREAD


# Conditions a step time was measured under; a resumed search must match the stored reference's.
CONDITIONS = ("device", "engine", "threads", "workers", "timing")


# The raw objectives of multi-objective studies and their directions, in the order the study stores them.
OBJECTIVES = ("accuracy", "step_time_ms", "params")
OBJECTIVE_DIRECTIONS = ("maximize", "minimize", "minimize")

# Columns of the trials table that come from the record, in the order the table shows them.
TABLE_METRICS = ("accuracy", "step_time_ms", "step_time_spread", "timed_steps", "params", "macs", "flops")
COUNT_METRICS = ("params", "macs", "flops", "timed_steps")  # whole numbers in every export


@dataclass(frozen=True)
class Reference:
    """The backbone measured at the start of a search: what every candidate's step time and size are divided by."""

    step_time_ms: float
    params: int
    accuracy: float
    macs: int | None = None
    spec: dict[str, Any] | None = None
    step_time_spread: float | None = None
    # where and how it was timed (device, engine, threads, workers, timing: see CONDITIONS)
    conditions: dict[str, Any] | None = None

    @classmethod
    def from_metrics(cls, metrics: TrialMetrics, spec: dict[str, Any],
                     conditions: dict[str, Any] | None = None) -> "Reference":
        return cls(metrics.step_time_ms, metrics.params, metrics.accuracy, metrics.macs, spec,
                   metrics.step_time_spread, conditions)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Reference":
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{name: value for name, value in data.items() if name in known})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def rank_key(reward_value: float, accuracy: float, number: int) -> tuple[float, float, int]:
    """The one definition of "best": highest reward; on a tie the more accurate, then the earlier trial.
    Sorting ascending by this key puts the best first."""
    reward_value = reward_value if reward_value is not None and math.isfinite(reward_value) else -math.inf
    return (-reward_value, -accuracy, number)


REWARD_ATTR = "reward"  # the user attribute that holds a completed trial's reward
# A trial whose architecture the study had already trained holds that trial's number here and a copy of its
# record: it cost no training, does not count against the budget, and is never "best" or on a front itself.
REUSE_ATTR = "reuse_of"


def architecture_key(spec: Mapping[str, Any]) -> str:
    """Two trials with the same key train the same network (a study's trial settings are all alike)."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def best_trial(trials: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial | None:
    """The best completed trial with a reward (see :func:`rank_key`), or None before the first one; a stopped or
    reused trial never is."""
    scored = []
    for trial in trials:
        own = trial.state == optuna.trial.TrialState.COMPLETE and trial.user_attrs.get(REUSE_ATTR) is None
        metrics = TrialMetrics.from_trial(trial) if own else None
        value = trial.user_attrs.get(REWARD_ATTR)
        if metrics is not None and isinstance(value, (int, float)):
            scored.append((rank_key(float(value), float(metrics.accuracy), trial.number), trial))
    return min(scored, key=lambda pair: pair[0])[1] if scored else None
