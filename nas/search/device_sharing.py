"""How concurrent trials share one device: their timed steps run alone, the rest side by side.

A search's workers train at once, but a step timed beside a busy worker is far slower than alone, and the
reward would then mostly rank which trial happened to be measured alone. So every timed step holds
:class:`DeviceLock` exclusively and every untimed step holds it shared (docs/performance.md, "Step-time
fidelity"). This module holds the whole policy: which lock file a run's trials share (:func:`timing_lock_path`,
chosen once by whichever backend runs them), and which of a trial's steps are timed and under which hold
(:class:`TimingPlan`), so the trial's loop only enters what the plan gives it.

torch is imported where a trial needs it: a backend picks its lock path without loading it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import math
import os
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ContextManager, Iterator

if TYPE_CHECKING:
    import torch

    from effnas.nas.training.timing import StepTiming


class DeviceLock:
    """A reader-writer lock across processes (``flock`` on two files), with the writer first in line.

    Untimed steps hold it shared; the timed steps hold it exclusively. A timer first takes the ``.gate``
    file, so no new run of untimed steps starts, then waits for the running ones to finish. Without a path it does
    nothing.
    ``before_release`` runs while the lock is still held: on a GPU it synchronises the device, since the host
    runs ahead of the work it queued, and that work must not spill into another trial's timing window.
    ``wait_seconds`` adds up the time spent waiting to acquire it: what sharing the device cost this holder.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.wait_seconds = 0.0

    @contextlib.contextmanager
    def _flock(self, path: str, mode: int) -> Iterator[None]:
        with open(path, "a+") as handle:
            start = time.perf_counter()
            fcntl.flock(handle, mode)
            self.wait_seconds += time.perf_counter() - start
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def shared(self, before_release: Callable[[], None] | None = None) -> Iterator[None]:
        if self.path is None:
            yield
            return
        with contextlib.ExitStack() as stack:
            with self._flock(self.path + ".gate", fcntl.LOCK_EX):
                stack.enter_context(self._flock(self.path, fcntl.LOCK_SH))
            yield
            if before_release is not None:
                before_release()

    @contextlib.contextmanager
    def exclusive(self, before_release: Callable[[], None] | None = None) -> Iterator[None]:
        if self.path is None:
            yield
            return
        with self._flock(self.path + ".gate", fcntl.LOCK_EX), self._flock(self.path, fcntl.LOCK_EX):
            yield
            if before_release is not None:
                before_release()


def timing_lock_path(storage_url: str, workers: int) -> str | None:
    """The lock file a run's concurrent trials on one machine share, or None when it trains one trial at a time.

    In the machine's temporary folder, named after the study: a cluster node may have no run directory, and trials
    only compete with trials on the same machine. Both backends take it from here; a trial narrows it to its GPU
    (:func:`device_lock_path`)."""
    if workers < 2:
        return None
    tag = hashlib.sha1(storage_url.encode()).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), f"effnas-{tag}.timing.lock")


def device_lock_path(path: str | None, device: torch.device) -> str | None:
    """The run's lock narrowed to one GPU, so trials on other GPUs need not wait their turn; CPU trials share the
    run's. The GPU is named as the machine numbers it: Ray hands each worker its own GPUs through
    ``CUDA_VISIBLE_DEVICES``, where every worker's first GPU is index 0."""
    if path is None or device.type != "cuda":
        return path
    import torch

    index = device.index if device.index is not None else torch.cuda.current_device()
    visible = [name for name in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if name.strip()]
    return f"{path}.gpu{visible[index].strip() if index < len(visible) else index}"


def device_sync(device: torch.device) -> Callable[[], None] | None:
    """What a lock runs before it is released: wait for the GPU's queued work (CPU steps are synchronous)."""
    if device.type != "cuda":
        return None
    import torch

    return functools.partial(torch.cuda.synchronize, device)


def timing_conditions(locked: bool) -> str:
    """How the timed steps ran, for the record: alone (``exclusive``) or beside the other workers, and on which
    cores when the process is pinned to some."""
    words = "exclusive" if locked else "unlocked"
    if hasattr(os, "sched_getaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < (os.cpu_count() or len(cores)):
            words += f", pinned cores {','.join(map(str, cores))}"
    return words


class DeviceSharing:
    """One trial's side of the sharing: the run's lock narrowed to its device, released only once the device has
    finished the work queued under it."""

    def __init__(self, lock_path: str | None, device: torch.device) -> None:
        self.device = device
        self.lock = DeviceLock(device_lock_path(lock_path, device))
        self._sync = device_sync(device)

    @property
    def locked(self) -> bool:
        return self.lock.path is not None

    def exclusive(self) -> ContextManager[None]:
        """The device alone: for timed steps."""
        return self.lock.exclusive(self._sync)

    def shared(self) -> ContextManager[None]:
        """Beside other trials' untimed steps, never beside a timed one: for everything else on the device."""
        return self.lock.shared(self._sync)

    @property
    def wait_seconds(self) -> float:
        """Wall time spent waiting for the lock so far (0 without one)."""
        return self.lock.wait_seconds

    def conditions(self) -> str:
        return timing_conditions(self.locked)


@dataclass(frozen=True)
class Segment:
    """A run of one epoch's batch indices, trained inside ``hold()`` with each step inside ``measure()``."""

    steps: range
    timed: bool
    hold: Callable[[], ContextManager[None]]
    measure: Callable[[], ContextManager[None]]


@dataclass(frozen=True)
class Epoch:
    number: int  # 1-based
    last: bool
    segments: list[Segment]


class TimingPlan:
    """Which of a trial's steps are timed, and what each run of steps holds, decided once from its settings.

    Timed steps: ``timing_steps`` of them, on a GPU the run's last, on a CPU beside other workers spread over the
    epochs (:func:`timing_windows`); a lone CPU worker times every step after the first two. With ``early_stopping``
    every epoch has timed steps and each window is split after its first few, so the rule is asked early.
    Each timed run holds the device exclusively; untimed steps hold it shared, on a CPU one step at a time
    (:func:`shared_chunks`). The timer is the plan's: ``timing()`` is the median of the timed steps.
    """

    def __init__(self, sharing: DeviceSharing, timing_steps: int, epochs: int, steps_per_epoch: int, total: int,
                 early_stopping: bool) -> None:
        from effnas.nas.training.timing import StepTimer

        self.sharing = sharing
        self.timer = StepTimer(sharing.device)
        self.count, self.steps_per_epoch, self.total = epochs, steps_per_epoch, total
        cpu = sharing.device.type == "cpu"
        timed = min(timing_steps, max(1, total - 2))  # at least two untimed steps first when possible
        if cpu and not sharing.locked:
            timed = max(timed, total - 2)  # every step after two warm-up steps
        self.windows = timing_windows(epochs, steps_per_epoch, timed, spread=(cpu and sharing.locked) or early_stopping)
        # A lone CPU worker's windows are whole epochs: the rule is asked a few timed steps in, as in short windows.
        self.first_run = -(-timing_steps // epochs) if early_stopping else steps_per_epoch

    def epochs(self) -> Iterator[Epoch]:
        for epoch in range(self.count):
            length = min(self.steps_per_epoch, self.total - epoch * self.steps_per_epoch)  # a short last epoch
            shift = max(0, self.windows[epoch].stop - length)  # moves its window back to end with it
            window = range(max(0, self.windows[epoch].start - shift), self.windows[epoch].stop - shift)
            yield Epoch(epoch + 1, epoch + 1 == self.count, self._segments(window, length))

    def _segments(self, window: range, length: int) -> list[Segment]:
        plan = []
        for timed, steps in segments(window, length, self.first_run):
            if timed:
                plan.append(Segment(steps, True, self.sharing.exclusive, self.timer.measure))
            else:
                plan += [Segment(chunk, False, self.sharing.shared, contextlib.nullcontext)
                         for chunk in shared_chunks(steps, self.sharing.device)]
        return plan

    def step_time_ms(self) -> float:
        """The median of the steps timed so far (NaN before the first)."""
        try:
            return self.timer.result().median_ms
        except ValueError:
            return math.nan

    def timing(self) -> StepTiming:
        return self.timer.result()


def segments(window: range, steps_per_epoch: int, first_run: int) -> list[tuple[bool, range]]:
    """Split one epoch's batch indices into the untimed run before ``window``, the window's first ``first_run``
    steps, the rest of the window, and the untimed run after it (each timed run ends with an early-stopping
    check, so a long window is asked about a few steps in, not only at its end)."""
    cut = min(window.start + first_run, window.stop)
    runs = [(False, range(0, window.start)), (True, range(window.start, cut)), (True, range(cut, window.stop)),
            (False, range(window.stop, steps_per_epoch))]
    return [(is_timed, r) for is_timed, r in runs if len(r)]


def timing_windows(epochs: int, steps_per_epoch: int, timed: int, spread: bool) -> list[range]:
    """Per epoch, the batch indices whose steps are timed. A tail: the run's last ``timed`` steps (a GPU, after
    graph warm-up). ``spread``: ``timed / epochs`` steps at the start of each epoch (the first epoch's after two
    untimed warm-up steps), so a trial knows its cost a few steps in (the early-stopping bound needs no
    accuracy), and on a shared CPU one burst of outside work falls on one short exclusive window of several."""
    total = epochs * steps_per_epoch
    if not spread:
        cuts = [min(steps_per_epoch, max(0, total - timed - e * steps_per_epoch)) for e in range(epochs)]
        return [range(cut, steps_per_epoch) for cut in cuts]
    per_epoch = -(-timed // epochs)
    starts = [min(2, steps_per_epoch - 1) if e == 0 else 0 for e in range(epochs)]
    return [range(start, min(steps_per_epoch, start + per_epoch)) for start in starts]


def shared_chunks(indices: range, device: torch.device) -> list[range]:
    """How untimed steps take the shared lock. On a CPU one step at a time: a step is synchronous, so a trial
    that wants to time waits for one step of the others, not for the rest of their epoch, with its core idle. On a
    GPU the whole run at once: each shared section ends with a device sync (see DeviceLock)."""
    if device.type != "cpu":
        return [indices]
    return [range(i, i + 1) for i in indices]
