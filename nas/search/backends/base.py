"""What the search loop needs from a place that runs trials: start, take work, hand back results, stop.

One loop (:meth:`effnas.nas.search.session.Search.run`) drives every backend, so the budget, the progress
bar, Ctrl-C, the reference trial and the study writes exist once; a backend only runs trials. Both
implementations, :class:`~effnas.nas.search.backends.local.LocalBackend` (worker processes on this
machine) and :class:`~effnas.nas.search.backends.ray.RayBackend` (Ray tasks), return the same
:class:`TrialResult` records and word failures with :func:`failure_reason`.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from effnas.errors import EffnasError


@dataclass(frozen=True)
class TrialResult:
    """What came back for one submitted task: its metrics, or the reason it failed. A worker sends it as it is, so
    the trial's record reaches the study unchanged."""

    key: Any
    # what the trial function returned: the trial's TrialMetrics (a function of one's own may return another value,
    # which the search reads with TrialMetrics.from_result)
    metrics: Any
    error: str | None
    seconds: float


@dataclass(frozen=True)
class BackendSetup:
    """What a backend is told when it starts: the run's runtime choices it applies to every trial."""

    workers: int | None  # trials at once; None: the backend's own default (cores, GPUs, cluster)
    threads: int | None  # torch CPU threads per trial; None: the backend's share of the machine
    trial_timeout: float | None  # seconds; a trial past it fails "trial exceeded the time limit of N s"
    trial_memory: float | None  # GiB a trial may use (local backend only)
    device: str  # auto | cpu | cuda | cuda:N, as the user gave it
    run_dir: Path  # the run directory
    storage_url: str  # names the study, and the timing lock its trials on one machine share


class Backend(Protocol):
    """Runs trials; knows nothing of the study, the budget or the controller.

    ``submit`` takes plain data (spec dict, trial settings dict, seed) so a trial can run in another process
    or on another machine; ``collect`` returns every task that ended, failures included, with a reason.
    Once started, ``workers`` and ``threads`` say what it resolved, for the timing conditions a resume compares.
    """

    workers: int  # trials at once, as resolved by start (0 before)
    threads: int | None  # torch CPU threads per trial, as resolved by start (None before)

    def start(self, setup: BackendSetup) -> None:
        """Start workers (or join a cluster); a setting this backend cannot honour is a one-line error."""

    @property
    def free(self) -> int:
        """How many more tasks can be submitted now (0 while every slot is taken)."""

    def submit(self, key: Any, spec: dict[str, Any], settings: dict[str, Any], seed: int) -> None:
        """Queue one trial; its result comes back from :meth:`collect` under ``key``."""

    def collect(self, poll_seconds: float) -> list[TrialResult]:
        """Wait up to ``poll_seconds``; return the tasks that finished, failed or ran out of time."""

    def close(self, kill: bool) -> None:
        """Stop the workers; ``kill`` ends running tasks at once (Ctrl-C) instead of letting them finish."""


def failure_reason(error: BaseException) -> str:
    """The reason a failed trial is recorded with, in the study and the report.

    A :class:`effnas.nas.search.trial.TrialError` ("out of memory: ...", "diverged: ...") and effnas's own errors
    already say what went wrong in words meant for the user, so they are recorded as they are; anything else keeps
    its class name ("ZeroDivisionError: division by zero"), and one without a message the line that raised it.
    """
    message = str(error).strip()
    if message and isinstance(error, (EffnasError, _trial_error())):
        return message[:2000]
    reason = f"{type(error).__name__}: {message}".rstrip(": ")
    if not message and error.__traceback__ is not None:  # say where, at least
        frame = traceback.extract_tb(error.__traceback__)[-1]
        reason += f" at {os.path.basename(frame.filename)}:{frame.lineno} in {frame.name}"
    return reason[:2000]


def _trial_error() -> type[BaseException]:
    """The trial module's TrialError, imported late: that module pulls in torch and the models, which only a worker
    needs (a pool that runs another function should not pay for them until a task actually fails)."""
    from effnas.nas.search.trial import TrialError

    return TrialError
