"""Reading a finished (or running) search back: trials table, Pareto fronts, queries and reports.

Each name is imported from its module on first use, so a trial worker that needs only the trial record
(``effnas.results.record``) does not load pandas, Optuna's storage or the reports."""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "analysis": ("choice_frequencies", "failure_counts", "running_best", "state_counts", "top_trials"),
    "pareto": ("FRONTS", "OBJECTIVES", "front_mask", "non_dominated", "pareto_front", "with_fronts"),
    "queries": ("best_by_reward", "best_under", "metrics_of", "trial_row"),
    "run_files": ("RUN_FILES", "write_run_files"),
    "record": ("STUDY_NAME", "Reference", "TrialMetrics", "best_trial"),
    "storage": ("STUDY_FILE", "ResultsError", "open_storage", "redact", "search_storage_url", "storage_url"),
    "study": ("block_strings", "choice_columns", "completed", "open_study", "spec_of", "study_info", "trials_frame"),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
