"""Repeated architectures: a proposal the study has already trained takes that trial's record instead of training.

Controllers propose known architectures again (TPE and evolution more often as they converge, and processes
sharing a study independently), and a study's trials are all trained alike, so training one twice measures
nothing new. The copy is recorded with ``reuse_of`` (see :data:`effnas.results.record.REUSE_ATTR`): the
controller sees the value again, the budget does not count it, and the trial it repeats stands for it in
``best.json`` and on the fronts. A repeat of a trial still training (here or in another process) waits for it.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from effnas.results.record import (DURATION_ATTR, FAIL_REASON_ATTR, INTERRUPTED_ATTR, REUSE_ATTR, REWARD_ATTR,
                                   SPEC_ATTR, TrialMetrics, architecture_key)

from effnas.nas.search.budget import trial_id_of

# A controller that proposes this many architectures in a row that the study already trained has run out of
# new ones it wants to try: the search ends there rather than spin.
MAX_REPEATS = 100


class Repeats:
    """What one search process knows about repeated proposals: each trial's architecture key, the repeats
    waiting for a running trial, and how many proposals in a row were repeats."""

    def __init__(self, study: optuna.Study, storage: optuna.storages.BaseStorage) -> None:
        self.study, self.storage = study, storage
        self.waiting: dict[int, tuple[optuna.trial.Trial, int]] = {}  # repeat's number -> (repeat, trial it waits for)
        self.in_a_row = 0
        self._keys: dict[int, str] = {}  # trial number -> architecture key, for the trials seen so far

    def trained_before(self, number: int, spec: dict) -> int | None:
        """The first trial of the study that trained, or is training, the architecture ``spec`` of trial
        ``number``; None for a new architecture."""
        key = architecture_key(spec)
        self._keys[number] = key
        for trial in self.study.get_trials(deepcopy=False):
            if trial.number == number or trial.user_attrs.get(REUSE_ATTR) is not None:
                continue
            if trial.state == TrialState.FAIL and trial.user_attrs.get(INTERRUPTED_ATTR):
                continue  # cut off: its architecture is evaluated again
            if trial.state == TrialState.WAITING or SPEC_ATTR not in trial.user_attrs:
                continue
            if trial.number not in self._keys:
                self._keys[trial.number] = architecture_key(trial.user_attrs[SPEC_ATTR])
            if self._keys[trial.number] == key:
                return trial.number
        return None

    def counted(self, repeated: bool) -> bool:
        """Note one proposal; True once :data:`MAX_REPEATS` in a row were repeats."""
        self.in_a_row = self.in_a_row + 1 if repeated else 0
        return self.in_a_row >= MAX_REPEATS

    def wait(self, trial: optuna.trial.Trial, original: int) -> None:
        """Record ``trial`` as a reuse of ``original`` now if that has ended, else once it has."""
        if not self.settle(trial, original):
            self.waiting[trial.number] = (trial, original)

    def settle_waiting(self) -> list[int]:
        """Give each waiting repeat its trial's record once that trial has ended; the numbers settled."""
        settled = [number for number, (trial, original) in list(self.waiting.items()) if self.settle(trial, original)]
        for number in settled:
            del self.waiting[number]
        return settled

    def settle(self, trial: optuna.trial.Trial, original: int) -> bool:
        """Record ``trial`` as a reuse of trial ``original`` if that one has ended (False while it runs)."""
        source = self.storage.get_trial(trial_id_of(self.storage, self.study, original))
        if not source.state.is_finished():
            return False
        trial.set_user_attr(DURATION_ATTR, 0.0)
        if source.state == TrialState.FAIL:
            reason = source.user_attrs.get(FAIL_REASON_ATTR, "no reason recorded")
            if source.user_attrs.get(INTERRUPTED_ATTR):
                trial.set_user_attr(INTERRUPTED_ATTR, True)
                trial.set_user_attr(FAIL_REASON_ATTR, f"interrupted: trial {original}, with the same architecture, "
                                                   "was cut off")
            else:
                trial.set_user_attr(FAIL_REASON_ATTR, f"same architecture as trial {original}, which failed: {reason}")
            self.study.tell(trial, state=TrialState.FAIL)
            return True
        record = TrialMetrics.from_trial(source)
        copied = {**(record.to_dict() if record is not None else {}), REWARD_ATTR: source.user_attrs.get(REWARD_ATTR)}
        for key, value in copied.items():
            trial.set_user_attr(key, value)
        if source.state == TrialState.PRUNED:
            for step, value in source.intermediate_values.items():
                self.storage.set_trial_intermediate_value(trial_id_of(self.storage, self.study, trial.number),
                                                          step, value)
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, source.values)
        return True
