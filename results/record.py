"""One trial's record in the study: the study's name, what a trial measured, its reward, and which trial is best.

Every reader and writer of trial metrics goes through :class:`TrialMetrics`: the search stores it, the table,
``best.json`` and the reports read it back, so adding a metric means adding one field here. Its fields' metadata
place them in the trials table (``trials.csv``, the report); the other user attributes a trial carries are named
once, by the ``*_ATTR`` constants below, and :data:`TRIAL_COLUMNS` is the table's list of them all. These names
are on disk in every study: old studies must still read, so they never change.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:  # a trial worker reads the record without loading Optuna
    import optuna

from effnas.errors import EffnasError
from effnas.results.reward import reward

STUDY_NAME = "effnas"  # every search's Optuna study is called this, in SQLite, PostgreSQL or a journal file


class RecordError(EffnasError, ValueError):
    """Metrics that do not form a trial record (a missing or unknown metric, a wrong type)."""


def _shown(column: int, kind: str = "number", metric: bool = False) -> dict[str, Any]:
    """A field's metadata: its place among the trials table's columns from the study (see :data:`TRIAL_COLUMNS`),
    how exports write it (``kind``: number, count (a whole number) or text), and whether it is one of the measured
    metrics ``best.json`` carries (``metric``)."""
    return {"column": column, "kind": kind, "metric": metric}


@dataclass(frozen=True)
class TrialMetrics:
    """What one proxy trial measured, as the study stores it (one user attribute per field, named as the field).
    A field with ``column`` metadata is a column of the trials table; the others are kept in the study only."""

    accuracy: float = field(metadata=_shown(0, metric=True))  # validation top-1 in [0, 1]
    step_time_ms: float = field(metadata=_shown(1, metric=True))  # median training step
    params: int = field(metadata=_shown(4, "count", metric=True))
    # (p90 - p10) / median of the timed steps
    step_time_spread: float | None = field(default=None, metadata=_shown(2, metric=True))
    timed_steps: int | None = field(default=None, metadata=_shown(3, "count", metric=True))
    macs: int | None = field(default=None, metadata=_shown(5, "count", metric=True))  # per image, proxy image size
    flops: int | None = field(default=None, metadata=_shown(6, "count", metric=True))
    engine: str | None = field(default=None, metadata=_shown(10, "text"))  # eager, graph or compile: how steps ran
    fallback_reason: str | None = None  # why a requested engine fell back to eager
    device: str | None = field(default=None, metadata=_shown(12, "text"))
    # what the timed steps ran under: "exclusive" (alone) or "unlocked", pinned cores
    timing: str | None = field(default=None, metadata=_shown(15, "text"))
    threads: int | None = field(default=None, metadata=_shown(13))  # torch CPU threads the trial trained with
    workers: int | None = field(default=None, metadata=_shown(14))  # trials the search ran at once
    image_size: int | None = None
    batch_size: int | None = None
    train_steps: int | None = None
    # epochs trained: fewer than the recipe's when early stopping stopped the trial
    epochs: int | None = field(default=None, metadata=_shown(8))
    train_loss: float | None = None
    train_seconds: float | None = None
    eval_seconds: float | None = None
    build_seconds: float | None = None
    lock_wait_seconds: float | None = None  # waiting for the device while other trials' steps were timed
    total_seconds: float | None = None

    @classmethod
    def from_dict(cls, metrics: Mapping[str, Any]) -> "TrialMetrics":
        """A record from what a trial returned; an unknown name is an error, so no metric goes unrecorded."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(metrics) - known)
        if unknown:
            raise RecordError(f"trial metrics: unknown metric {unknown[0]!r} (add it to TrialMetrics)")
        missing = [name for name in OBJECTIVES if metrics.get(name) is None]
        if missing:
            raise RecordError(f"trial metrics: {missing[0]} is missing")
        return cls(**dict(metrics))

    @classmethod
    def from_result(cls, result: "TrialMetrics | Mapping[str, Any]") -> "TrialMetrics":
        """The record a trial function returned, checked as :meth:`from_dict` checks a mapping: the search's own
        function returns the record itself, a function of one's own (a plug-in's worker, a script) may return a
        mapping of its fields instead."""
        if isinstance(result, cls):
            return cls.from_dict(result.to_dict())
        if isinstance(result, Mapping):
            return cls.from_dict(result)
        raise RecordError(f"trial metrics: expected TrialMetrics or a mapping of its fields, "
                          f"got {type(result).__name__}")

    @classmethod
    def from_trial(cls, trial: optuna.trial.FrozenTrial) -> "TrialMetrics | None":
        """The record a completed trial holds, or None for trials without one (failed, running, foreign)."""
        attrs = trial.user_attrs
        if any(attrs.get(name) is None for name in OBJECTIVES):
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


def _fields_shown(*, kind: str | None = None, metric: bool | None = None) -> tuple[str, ...]:
    """TrialMetrics' fields the trials table shows, in its order; only those of ``kind`` / ``metric`` when given."""
    shown = [(f.metadata["column"], f.name) for f in dataclasses.fields(TrialMetrics) if "column" in f.metadata
             and kind in (None, f.metadata["kind"]) and metric in (None, f.metadata["metric"])]
    return tuple(name for _, name in sorted(shown))


# Columns of the trials table that come from the record, in the order the table shows them.
TABLE_METRICS = _fields_shown(metric=True)  # accuracy, step_time_ms, step_time_spread, timed_steps, params, ...
COUNT_METRICS = _fields_shown(kind="count")  # whole numbers in every export
TEXT_METRICS = _fields_shown(kind="text")  # engine, device, timing: strings, not numbers


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
    """The ranking :func:`best_order` applies: highest reward; on a tie the more accurate, then the earlier trial.
    Sorting ascending by this key puts the best first."""
    reward_value = reward_value if reward_value is not None and math.isfinite(reward_value) else -math.inf
    return (-reward_value, -accuracy, number)


# The user attributes a trial carries besides its TrialMetrics fields.
REWARD_ATTR = "reward"  # the user attribute that holds a completed trial's reward
# A trial whose architecture the study had already trained holds that trial's number here and a copy of its
# record: it cost no training, does not count against the budget, and is never "best" or on a front itself.
REUSE_ATTR = "reuse_of"
SPEC_ATTR = "spec"  # the candidate's ArchSpec.to_dict()
WORKER_ATTR = "worker"  # "host:pid" of the search process that asked for the trial
DURATION_ATTR = "duration_s"  # seconds the trial ran, as its backend measured them (0 for a reused record)
FAIL_REASON_ATTR = "fail_reason"  # why a failed trial failed, in words
INTERRUPTED_ATTR = "interrupted"  # True: cut off by the search stopping, not by its own failure (not counted)
RETRY_OF_ATTR = "retry_of"  # on a queued trial: the number of the interrupted trial it evaluates again

# The user attributes of the study itself.
SETTINGS_ATTR = "settings"  # the search's recipe and runtime (SearchConfig as a dict)
SPACE_ATTR = "space"  # the search space (SearchSpace.to_dict)
REFERENCE_ATTR = "reference"  # the backbone's measurement the rewards are relative to, with its timing conditions
IDENTITY_ATTR = "identity"  # what a resume must match: the recipe's parts that change what a trial measures

# The trials table's columns from the study (after number, state and the choices): the measured metrics, the
# reward, then how each trial ran and what its step time was timed under (so a table says which step times
# compare); ``unsteady``, the failure, the spec and its block strings follow (results.study). The positions of the
# attributes that are not TrialMetrics fields, among the fields' own (their ``column`` metadata):
_ATTR_COLUMNS = {REWARD_ATTR: 7, REUSE_ATTR: 9, DURATION_ATTR: 11}
TRIAL_COLUMNS = tuple(name for _, name in sorted(
    [(f.metadata["column"], f.name) for f in dataclasses.fields(TrialMetrics) if "column" in f.metadata]
    + [(column, name) for name, column in _ATTR_COLUMNS.items()]))


def architecture_key(spec: Mapping[str, Any]) -> str:
    """Two trials with the same key train the same network (a study's trial settings are all alike)."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def eligible(state: str, reuse_of: Any, accuracy: Any, step_time_ms: Any, params: Any) -> bool:
    """The one rule for which trials may be best or on a front: trained to the end itself (``COMPLETE``; not a
    stopped trial, and not a repeated architecture's copy of another trial's record) and all three objectives
    measured. A missing value is None (a study's attributes) or NaN (the trials table)."""
    return state == "COMPLETE" and _absent(reuse_of) and not any(map(_absent, (accuracy, step_time_ms, params)))


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def best_order(rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """The one definition of "best": the positions of the :func:`eligible` rows among ``rows`` (each with
    ``state``, ``number``, the reward and the objectives, as a trials-table row has them), best first by
    :func:`rank_key`."""
    keys = [(rank_key(row[REWARD_ATTR], float(row["accuracy"]), row["number"]), index)
            for index, row in enumerate(rows)
            if eligible(row["state"], row.get(REUSE_ATTR), *(row[name] for name in OBJECTIVES))]
    return [index for _, index in sorted(keys)]


def best_trial(trials: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial | None:
    """The best completed trial with a reward (:func:`best_order`), or None before the first one; a stopped or
    reused trial never is."""
    rewarded = [trial for trial in trials if isinstance(trial.user_attrs.get(REWARD_ATTR), (int, float))]
    rows = [{"state": trial.state.name, "number": trial.number, REWARD_ATTR: float(trial.user_attrs[REWARD_ATTR]),
             REUSE_ATTR: trial.user_attrs.get(REUSE_ATTR), **{name: trial.user_attrs.get(name) for name in OBJECTIVES}}
            for trial in rewarded]
    order = best_order(rows)
    return rewarded[order[0]] if order else None
