"""How concurrent trials share one device: their timed steps run alone, the rest side by side.

A search's workers train at once, but a step timed beside a busy worker is far slower than alone, and the
reward would then mostly rank which trial happened to be measured alone. So every timed step holds
:class:`DeviceLock` exclusively and every untimed step holds it shared, and :func:`timing_windows` says which of
a trial's steps are timed (docs/performance.md, "Step-time fidelity").
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
from typing import Callable, Iterator

import torch


class DeviceLock:
    """A reader-writer lock across processes (``flock`` on two files), with the writer first in line.

    Untimed steps hold it shared; the timed steps hold it exclusively. A timer first takes the ``.gate``
    file, so no new run of untimed steps starts, then waits for the running ones to finish. Without a path it does nothing.
    ``before_release`` runs while the lock is still held: on a GPU it synchronises the device, since the host
    runs ahead of the work it queued, and that work must not spill into another trial's timing window.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path

    @contextlib.contextmanager
    def _flock(self, path: str, mode: int) -> Iterator[None]:
        with open(path, "a+") as handle:
            fcntl.flock(handle, mode)
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


def device_sync(device: torch.device) -> Callable[[], None] | None:
    """What a lock runs before it is released: wait for the GPU's queued work (CPU steps are synchronous)."""
    return functools.partial(torch.cuda.synchronize, device) if device.type == "cuda" else None


def timing_conditions(locked: bool) -> str:
    """How the timed steps ran, for the record: alone (``exclusive``) or beside the other workers, and on which
    cores when the process is pinned to some."""
    words = "exclusive" if locked else "unlocked"
    if hasattr(os, "sched_getaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < (os.cpu_count() or len(cores)):
            words += f", pinned cores {','.join(map(str, cores))}"
    return words


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


def shared_chunks(indices: range, device: torch.device, timed: bool) -> list[range]:
    """How the untimed steps take the shared lock. On a CPU one step at a time: a step is synchronous, so a trial
    that wants to time waits for one step of the others, not for the rest of their epoch, with its core idle. On a
    GPU the whole segment at once: each shared section ends with a device sync (see DeviceLock)."""
    if timed or device.type != "cpu":
        return [indices]
    return [range(i, i + 1) for i in indices]
