"""The step-timing disciplines ``benchmarks.step_time_fidelity`` compares, each as a search's own LocalBackend.

``exclusive``: the product as it is: with several workers each trial times its steps alone, under the run's
timing lock. ``pinned``: each worker on its own cores, no turns. ``unlocked``: neither. The last two are what a
search did before it timed candidates alone; they live here, as worker functions around ``run_trial``, to show
why ``exclusive`` won.
"""

from __future__ import annotations

import fcntl
import os
from typing import IO, Any

from effnas.nas.search.backends.local import LocalBackend

TIMINGS = ("exclusive", "pinned", "unlocked")


def timing_backend(timing: str) -> LocalBackend:
    """The local backend whose workers time their steps under ``timing``."""
    if timing not in TIMINGS:
        raise ValueError(f"timing {timing!r} unknown (expected one of {', '.join(TIMINGS)})")
    if timing == "exclusive":
        return LocalBackend()
    return LocalBackend(function=f"benchmarks.timing_modes:run_{timing}")


def run_unlocked(spec: dict, settings: dict[str, Any], seed: int) -> dict[str, Any]:
    """``run_trial`` without the run's timing lock: timed steps run beside the other workers' steps."""
    from effnas.nas.search.trial import run_trial

    return run_trial(spec, {**settings, "timing_lock": None}, seed)


def run_pinned(spec: dict, settings: dict[str, Any], seed: int) -> dict[str, Any]:
    """``run_trial`` without the lock, in a worker pinned to cores no other worker of the search uses."""
    _pin_worker(settings.get("timing_lock"), settings.get("workers") or 1)
    return run_unlocked(spec, settings, seed)


def disjoint_cores(workers: int) -> list[tuple[int, ...]] | None:
    """This process's cores split into ``workers`` disjoint sets, or None when there are fewer cores."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if workers < 2 or len(cores) < workers:
        return None
    share = len(cores) // workers
    return [tuple(cores[i * share:(i + 1) * share]) for i in range(workers)]


_SLOT: IO[str] | None = None  # the core set this worker holds, for its life


def _pin_worker(run_lock: str | None, workers: int) -> None:
    """Pin this worker, once, to the first core set no other worker of the run holds. Each set is claimed with a
    ``flock`` held for the worker's life, named after the run's timing lock (one per run), so a replacement worker
    takes over the set of the one it replaces."""
    global _SLOT
    if _SLOT is not None or run_lock is None:
        return
    sets = disjoint_cores(workers) or []
    for index, cores in enumerate(sets):
        handle = open(f"{run_lock}.cores{index}", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _SLOT = handle
        os.sched_setaffinity(0, cores)
        return
