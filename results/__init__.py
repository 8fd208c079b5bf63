"""Reading a finished (or running) search back: trials table, Pareto fronts, queries and reports."""

from effnas.results.analysis import choice_frequencies, failure_counts, running_best, state_counts, top_trials
from effnas.results.pareto import FRONTS, OBJECTIVES, front_mask, non_dominated, pareto_front, with_fronts
from effnas.results.queries import best_by_reward, best_under, metrics_of, trial_row
from effnas.results.run_files import RUN_FILES, write_run_files
from effnas.results.record import STUDY_NAME, Reference, TrialMetrics, best_trial
from effnas.results.storage import STUDY_FILE, ResultsError, open_storage, redact, search_storage_url, storage_url
from effnas.results.study import block_strings, choice_columns, completed, open_study, spec_of, study_info, trials_frame

__all__ = [
    "FRONTS", "OBJECTIVES", "RUN_FILES", "STUDY_FILE", "STUDY_NAME", "Reference", "ResultsError", "TrialMetrics",
    "best_by_reward", "best_trial", "best_under", "open_storage", "redact", "search_storage_url",
    "block_strings", "choice_columns", "choice_frequencies", "completed", "failure_counts", "front_mask",
    "metrics_of", "non_dominated", "open_study", "pareto_front", "running_best", "spec_of", "state_counts",
    "storage_url", "study_info", "top_trials", "trial_row", "trials_frame", "with_fronts", "write_run_files",
]
