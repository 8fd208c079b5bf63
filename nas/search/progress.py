"""What a search tells while it runs and when it ends, apart from the loop that decides what to run.

The search process's own work is timed per part (:meth:`Progress.cost`), so a summary says where its time went
besides its trials' training. The run files (``trials.csv``, ``pareto.json``, ``best.json``) are refreshed as
trials finish, at most every :data:`RUN_FILES_EVERY` seconds: each write reads the whole study, so writing after
every trial would cost more the longer the search runs. All of this only reads the study.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from effnas.results import write_run_files
from effnas.results.record import REUSE_ATTR, REWARD_ATTR, SPEC_ATTR, UNSTEADY_SPREAD, TrialMetrics, best_trial

from effnas.nas.search.budget import counted_trials


@dataclass
class SearchSummary:
    run_dir: Path
    storage: str
    counted: int
    budget: int
    best: dict[str, Any] | None
    reference: dict[str, Any]
    stopped_early: bool = False  # the search itself was stopped (Ctrl-C, SIGTERM)
    seconds: float = 0.0
    stopped: int = 0  # trials early stopping ended after fewer epochs
    reused: int = 0  # proposals of an architecture the study had trained: its record, no training
    # Seconds this process spent on each part of its own work (see Progress.cost): where a search's time goes
    # besides its trials' training.
    costs: dict[str, float] = field(default_factory=dict)


# The run files are refreshed at most this often while trials finish (and always when the search ends or stops).
RUN_FILES_EVERY = 10.0


class Progress:
    """One search's account of itself: ``costs`` per part of its own work, its run files in ``run_dir``, and
    ``on_trial``, told of every stored trial. The study is passed in, as the search may reopen it."""

    def __init__(self, run_dir: Path, on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None) -> None:
        self.run_dir = run_dir
        self.on_trial = on_trial
        self.costs: dict[str, float] = {}  # seconds of the search process's own work, per part (see cost)
        self._files_written: float | None = None  # when publish last wrote the run files (time.monotonic)

    @contextlib.contextmanager
    def cost(self, part: str) -> Iterator[None]:
        """Add the block's wall time to ``costs[part]``: the search process's own work, per part.

        ``start``: starting the backend's workers; ``reference``: training the backbone; ``propose``: asking the
        controller (study reads, sampling); ``store``: writing a result to the study; ``run_files``: rewriting
        ``trials.csv``, ``pareto.json`` and ``best.json``; ``progress``: the progress bar's best reward."""
        began = time.perf_counter()
        try:
            yield
        finally:
            self.costs[part] = self.costs.get(part, 0.0) + time.perf_counter() - began

    def publish(self, study: optuna.Study, numbers: list[int], every: float = RUN_FILES_EVERY) -> None:
        """After stored trials: refresh the run files, at most every ``every`` seconds (the search writes them once
        more when it ends or stops, and a killed search leaves the last, complete, versions), and tell
        ``on_trial`` of each of ``numbers``."""
        now = time.monotonic()
        if self._files_written is None or now - self._files_written >= every:
            with self.cost("run_files"):
                self.write_outputs(study)
            self._files_written = time.monotonic()
        if self.on_trial is not None:
            trials = study.get_trials(deepcopy=False)
            for number in numbers:
                self.on_trial(trials[number])

    def write_outputs(self, study: optuna.Study) -> None:
        """trials.csv, pareto.json and best.json next to the study, each written atomically."""
        write_run_files(study, self.run_dir)

    def show_best(self, bar: Any, study: optuna.Study) -> None:
        """The best reward so far beside the progress bar."""
        with self.cost("progress"):
            best = best_of(study)
        if best:
            bar.set_postfix(best_reward=f"{best['metrics'][REWARD_ATTR]:.4f}", refresh=False)

    def summary(self, study: optuna.Study, storage_url: str, budget: int, reference: dict[str, Any],
                seconds: float, stopped_early: bool = False) -> SearchSummary:
        trials = study.get_trials(deepcopy=False)
        return SearchSummary(self.run_dir, storage_url, counted_trials(study), budget, best_of(study), reference,
                             stopped_early, seconds,
                             stopped=sum(t.state == TrialState.PRUNED and REUSE_ATTR not in t.user_attrs
                                         for t in trials),
                             reused=sum(t.user_attrs.get(REUSE_ATTR) is not None for t in trials),
                             costs=dict(self.costs))


def best_of(study: optuna.Study) -> dict[str, Any] | None:
    """The best completed trial (the rule ``best.json`` follows too): its spec, metrics and reward."""
    top = best_trial(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if top is None:
        return None
    metrics = {**TrialMetrics.from_trial(top).to_dict(), REWARD_ATTR: top.user_attrs[REWARD_ATTR]}
    return {"trial": top.number, "spec": top.user_attrs[SPEC_ATTR], "metrics": metrics}


def warn_unsteady(what: str, record: TrialMetrics) -> None:
    """One line on stderr (above the progress bar) for a step time too unsteady to rank."""
    tqdm.write(f"warning: {what}'s step time is too unsteady to rank: spread {record.step_time_spread:.2f} "
               f"> {UNSTEADY_SPREAD} (p90 - p10 over the median of its timed steps; was the machine busy?); "
               f"flagged in trials.csv", file=sys.stderr)
