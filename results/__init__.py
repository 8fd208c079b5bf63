"""Reading a finished (or running) search back: trials table, Pareto fronts, queries and reports.

Each name is imported from its module on first use, so a trial worker that needs only the trial record
(``effnas.results.record``) does not load pandas, Optuna's storage or the reports."""

from __future__ import annotations

from effnas.lazy import lazy_names

_MODULES = {
    "analysis": ("choice_frequencies", "failure_counts", "running_best", "state_counts", "top_trials"),
    "pareto": ("FRONTS", "OBJECTIVES", "front_mask", "non_dominated", "pareto_front", "with_fronts"),
    "queries": ("best_by_reward", "best_under", "metrics_of", "top_by_reward", "trial_row"),
    "run_files": ("RUN_FILES", "write_run_files"),
    "record": ("STUDY_NAME", "Reference", "TrialMetrics", "best_trial"),
    "storage": ("STUDY_FILE", "ResultsError", "open_storage", "redact", "search_storage_url", "storage_url"),
    "study": ("block_strings", "choice_columns", "completed", "open_study", "spec_of", "study_info", "trials_frame"),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}
__all__ = sorted(_HOME)

__getattr__, __dir__ = lazy_names(__name__, _HOME)
