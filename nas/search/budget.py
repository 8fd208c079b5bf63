"""What a study says about a search's progress: which trials count against the budget, and which were left
running by a process that is gone (recovered as ``interrupted`` and queued again).

Shared by the local and Ray backends and by several ``nas search`` processes on one ``--storage``: everything
here is read from the study itself, never from one process's memory.
"""

from __future__ import annotations

import os
import socket
import time

import optuna
from optuna.trial import TrialState

from effnas.results.record import FAIL_REASON_ATTR, INTERRUPTED_ATTR, RETRY_OF_ATTR, REUSE_ATTR, WORKER_ATTR
from effnas.writes import process_alive


def worker_id() -> str:
    """This process, as it names itself on the trials it runs (``host:pid``)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def trial_id_of(storage: optuna.storages.BaseStorage, study: optuna.Study, number: int) -> int:
    """The storage's id of trial ``number``: a storage addresses trials by id, which Optuna keeps private on a
    trial, so it is asked of the storage by the study's name and the trial's number."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def counts_against_budget(trial: optuna.trial.FrozenTrial) -> bool:
    """Completed, stopped early, or failed through the candidate's own fault; not a reuse of a trained
    architecture (it cost no training) and not a trial cut off by a stopped search."""
    if trial.user_attrs.get(REUSE_ATTR) is not None:
        return False
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) \
        or (trial.state == TrialState.FAIL and not trial.user_attrs.get(INTERRUPTED_ATTR))


def counted_trials(study: optuna.Study) -> int:
    """Trials that count against the budget (see :func:`counts_against_budget`)."""
    return sum(1 for trial in study.get_trials(deepcopy=False) if counts_against_budget(trial))


def taken_trials(study: optuna.Study) -> int:
    """Trials that count, plus those training now in any process: what the next trial must fit beside.
    Read and acted on under :func:`effnas.results.storage.study_lock`, so two processes never both take the
    budget's last place."""
    return sum(1 for trial in study.get_trials(deepcopy=False)
               if counts_against_budget(trial)
               or (trial.state == TrialState.RUNNING and trial.user_attrs.get(REUSE_ATTR) is None))


UNOWNED_GRACE_S = 5.0  # a live process names itself on a trial milliseconds after asking for it


def _orphaned(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """RUNNING trials whose process is gone: named by a dead process on this host, or never named at all.

    A process killed between asking for a trial and naming itself on it leaves an unnamed trial; one that
    is still unnamed after a grace period cannot belong to a live process.
    """
    host = socket.gethostname()
    dead, unnamed = [], []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner_host, _, owner_pid = trial.user_attrs.get(WORKER_ATTR, "").rpartition(":")
        if not owner_pid:
            unnamed.append(trial.number)
        elif owner_host == host and owner_pid.isdigit() and not process_alive(int(owner_pid)):
            dead.append(trial)
    if unnamed:
        time.sleep(UNOWNED_GRACE_S)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.number in unnamed and WORKER_ATTR not in trial.user_attrs:
                dead.append(trial)
    return dead


def recover_interrupted(study: optuna.Study, storage: optuna.storages.BaseStorage) -> list[int]:
    """Mark trials left RUNNING by a dead search process on this host as interrupted; re-queue them.

    Trials of live processes (another ``nas search`` on the same study) are left alone, and so are those
    of processes on other hosts: a search there recovers them.
    """
    recovered = []
    queued = {t.user_attrs.get(RETRY_OF_ATTR) for t in study.get_trials(deepcopy=False)}
    for trial in _orphaned(study):
        # The retry is queued first: a recovery killed in between leaves the trial RUNNING, to be marked by
        # the next one (which finds the retry queued), never FAIL with its architecture not re-run.
        if trial.params and trial.number not in queued:
            study.enqueue_trial(trial.params, user_attrs={RETRY_OF_ATTR: trial.number}, skip_if_exists=False)
        trial_id = trial_id_of(storage, study, trial.number)
        storage.set_trial_user_attr(trial_id, INTERRUPTED_ATTR, True)
        storage.set_trial_user_attr(trial_id, FAIL_REASON_ATTR, "interrupted: the search process stopped")
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
        recovered.append(trial.number)
    return recovered


