"""Reading a search back: open the Optuna study a run wrote, and flatten its trials into a table.

A run directory holds an ordinary Optuna study (``study.db``, study name ``effnas``), so everything
here uses Optuna's public API only; ``optuna-dashboard`` reads the very same file. The table is the one
currency of this package: Pareto fronts, queries and every report format start from it.
"""

from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from effnas.errors import SpecError
from effnas.results.record import (DURATION_ATTR, FAIL_REASON_ATTR, INTERRUPTED_ATTR, OBJECTIVES, REFERENCE_ATTR,
                                   REUSE_ATTR, REWARD_ATTR, SETTINGS_ATTR, SPACE_ATTR, SPEC_ATTR, STUDY_NAME,
                                   TEXT_METRICS, TRIAL_COLUMNS, eligible, unsteady)
from effnas.results.storage import ResultsError, open_reader, storage_url
from effnas.search_space import ArchSpec, encode_block_string, spec_from_dict

# The user attributes the table shows, in its order, and those of them that are text (see record.TRIAL_COLUMNS).
METRIC_COLUMNS = TRIAL_COLUMNS
TEXT_COLUMNS = TEXT_METRICS
CHOICE_PATTERN = re.compile(r"^s(\d+)_([a-z]+)$")
CHOICE_KINDS = ("op", "kernel", "expand", "layers", "se")  # the search space's order within a stage


def open_study(location: str | Path, study_name: str = STUDY_NAME) -> optuna.Study:
    """Load the study a run wrote; a missing, foreign or empty study is a :class:`ResultsError`.

    When the storage holds no study called ``study_name`` but exactly one other study, that one is
    used, so any single-study Optuna database can be reported on.
    """
    url = storage_url(location)
    try:
        storage = open_reader(url)
        names = [summary.study_name for summary in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    except Exception as error:  # bad URL, server down, missing driver: the user's storage, one line
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ResultsError(f"{location}: cannot open storage ({first_line})") from None
    if study_name not in names:
        if len(names) != 1:
            listed = ", ".join(names) if names else "none"
            raise ResultsError(f"{location}: no study named {study_name!r} (studies: {listed})")
        study_name = names[0]
    study = optuna.load_study(study_name=study_name, storage=storage)
    if not study.get_trials(deepcopy=False):
        raise ResultsError(f"{location}: the study has no trials yet")
    return study


def _choice_key(name: str) -> tuple[int, int, str]:
    stage, kind = CHOICE_PATTERN.match(name).groups()
    return int(stage), CHOICE_KINDS.index(kind) if kind in CHOICE_KINDS else len(CHOICE_KINDS), kind


def choice_columns(frame: pd.DataFrame) -> list[str]:
    """The per-stage architecture choices (``s0_op``, ``s0_kernel``, ...), stage by stage."""
    return sorted((c for c in frame.columns if CHOICE_PATTERN.match(c)), key=_choice_key)


def block_strings(spec: dict[str, Any] | None) -> str:
    """One line per stage in the official notation, the readable name of an architecture."""
    if not spec:
        return ""
    return _block_strings(json.dumps(spec, sort_keys=True))


@functools.lru_cache(maxsize=4096)
def _block_strings(spec_json: str) -> str:
    """Cached by the spec's JSON: a search rewrites its run files after every trial, and validating every
    stored spec again each time grew with the study, a cost paid after every trial."""
    try:
        arch = spec_from_dict(json.loads(spec_json))
    except SpecError:
        return ""
    return " ".join(encode_block_string(stage) for stage in arch.stages)


def _number(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _row(trial: optuna.trial.FrozenTrial, single_objective: bool) -> dict[str, Any]:
    attrs = trial.user_attrs
    row: dict[str, Any] = {"number": trial.number, "state": trial.state.name}
    row.update(trial.params)
    for name in METRIC_COLUMNS:
        row[name] = attrs.get(name) if name in TEXT_COLUMNS else _number(attrs.get(name))
    row["unsteady"] = unsteady(attrs.get("step_time_spread"))  # too unsteady to rank (see record.UNSTEADY_SPREAD)
    if math.isnan(row[REWARD_ATTR]) and single_objective and trial.value is not None:
        row[REWARD_ATTR] = float(trial.value)  # any single-objective study: its value is what it maximised
    if math.isnan(row[DURATION_ATTR]) and trial.duration is not None:
        row[DURATION_ATTR] = trial.duration.total_seconds()
    row[FAIL_REASON_ATTR] = attrs.get(FAIL_REASON_ATTR)
    row[INTERRUPTED_ATTR] = bool(attrs.get(INTERRUPTED_ATTR, False))
    row[SPEC_ATTR] = attrs.get(SPEC_ATTR)
    row["blocks"] = block_strings(attrs.get(SPEC_ATTR))
    return row


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """Every trial as one row: number, state, per-stage choices, metrics, failure, spec.

    Metrics a trial lacks (failed, still running) are NaN; ``spec`` holds the ``ArchSpec.to_dict()``
    the runner stored and ``blocks`` its block strings.
    """
    single = len(study.directions) == 1
    rows = [_row(trial, single) for trial in study.get_trials(deepcopy=False)]
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=["number", "state", *METRIC_COLUMNS, "unsteady", FAIL_REASON_ATTR,
                                      INTERRUPTED_ATTR, SPEC_ATTR, "blocks"])
    leading = ["number", "state", *choice_columns(frame)]
    rest = [c for c in frame.columns if c not in leading]
    return frame[leading + rest].sort_values("number", ignore_index=True)


def completed(frame: pd.DataFrame) -> pd.DataFrame:
    """Trials that trained to the end and measured all three objectives (not early-stopped ones, and not the
    copies a repeated architecture got: the trial it repeats stands for it), by the rule of
    :func:`effnas.results.record.eligible`."""
    reused = frame[REUSE_ATTR] if REUSE_ATTR in frame else [None] * len(frame)  # older studies' tables lack it
    mask = [eligible(state, reuse_of, *objectives) for state, reuse_of, *objectives
            in zip(frame["state"], reused, *(frame[name] for name in OBJECTIVES))]
    return frame[pd.Series(mask, index=frame.index, dtype=bool)]


def spec_of(row: pd.Series) -> ArchSpec:
    """The validated architecture of one trial row."""
    if not row.get("spec"):
        raise ResultsError(f"trial {row['number']} has no stored spec (not an effnas study?)")
    return spec_from_dict(row["spec"])


def study_info(study: optuna.Study) -> dict[str, Any]:
    """What the runner recorded about the search: settings, reference, directions, trial counts."""
    frame_states = [trial.state.name for trial in study.get_trials(deepcopy=False)]
    counts = {state: frame_states.count(state) for state in sorted(set(frame_states))}
    settings = study.user_attrs.get(SETTINGS_ATTR, {})
    return {
        "study_name": study.study_name,
        "directions": [direction.name.lower() for direction in study.directions],
        "controller": controller_of(settings),
        "settings": settings,
        "reference": study.user_attrs.get(REFERENCE_ATTR, {}),
        "space": study.user_attrs.get(SPACE_ATTR),
        "states": counts,
    }


def controller_of(settings: Any) -> str | None:
    """The controller a study's settings name: the recipe's (as searches store them), or a flat settings dict's."""
    if not isinstance(settings, dict):
        return None
    recipe = settings.get("recipe")
    for holder in (recipe if isinstance(recipe, dict) else {}, settings):
        if isinstance(holder.get("controller"), str):
            return holder["controller"]
    return None
