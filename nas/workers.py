"""Long-lived worker processes that run trials for the local backend.

Why processes rather than threads or the search process itself: a candidate that crashes the
interpreter, exhausts memory or hangs past ``--trial-timeout`` takes down only its worker, which is
replaced; and a worker that lives across many trials keeps what it has warmed up (loaded data,
convolution shapes it has seen, CUDA context), which the GPU measurements show is most of a new
candidate's fixed cost. ``N`` workers on one device give the "several trials per GPU" mode.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable


@dataclass
class TrialResult:
    """What came back for one submitted task: metrics, or the reason it failed."""

    key: Any
    metrics: dict[str, Any] | None
    error: str | None
    seconds: float


def _import_function(path: str) -> Callable[..., dict]:
    module_name, _, name = path.partition(":")
    return getattr(importlib.import_module(module_name), name)


def _worker_main(connection: Connection, threads: int | None, function: str) -> None:
    """Loop: receive (key, spec, settings, seed), run the trial, send the outcome back."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    run_trial = _import_function(function)

    while True:
        try:
            message = connection.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if message is None:
            return
        key, spec, settings, seed = message
        connection.send(("started", key))  # the time limit counts from here, not from the worker's start-up
        start = time.perf_counter()
        try:
            metrics = run_trial(spec, settings, seed)
            connection.send((key, metrics, None, time.perf_counter() - start))
        except KeyboardInterrupt:
            return
        except BaseException as error:  # noqa: BLE001 - any failure of a candidate is data, not a crash
            reason = f"{type(error).__name__}: {error}".strip()
            if not str(error):
                reason += " " + traceback.format_exc(limit=-1).strip().splitlines()[-1]
            connection.send((key, None, reason[:2000], time.perf_counter() - start))


class _Worker:
    def __init__(self, context: mp.context.BaseContext, threads: int | None, function: str) -> None:
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, threads, function), daemon=True)
        self.process.start()
        child.close()
        self.task: tuple[Any, float] | None = None  # (key, started at)

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        else:
            try:
                self.connection.send(None)
            except (BrokenPipeError, OSError):
                pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.connection.close()


class WorkerPool:
    """``size`` worker processes; submit tasks, collect results as they finish.

    A worker that dies or overruns ``timeout`` seconds is killed and replaced, and its task comes
    back as a failure with the reason.
    """

    def __init__(self, size: int, timeout: float | None = None, threads: int | None = None,
                 function: str = "nas.trial:run_trial") -> None:
        self._context = mp.get_context("spawn")
        self._threads = threads
        self._function = function
        self.timeout = timeout
        self._workers = [self._new_worker() for _ in range(size)]

    def _new_worker(self) -> _Worker:
        return _Worker(self._context, self._threads, self._function)

    @property
    def idle(self) -> int:
        return sum(worker.task is None for worker in self._workers)

    @property
    def busy(self) -> int:
        return len(self._workers) - self.idle

    def submit(self, key: Any, spec: dict, settings: dict, seed: int) -> None:
        worker = next(w for w in self._workers if w.task is None)
        worker.connection.send((key, spec, settings, seed))
        worker.task = (key, time.perf_counter())

    def collect(self, poll: float = 1.0) -> list[TrialResult]:
        """Wait up to ``poll`` seconds; return every task that finished, failed or timed out."""
        busy = [w for w in self._workers if w.task is not None]
        if not busy:
            return []
        sentinels = {w.process.sentinel: w for w in busy}
        ready = wait([w.connection for w in busy] + list(sentinels), timeout=poll)
        results: list[TrialResult] = []
        for index, worker in enumerate(self._workers):
            if worker.task is None:
                continue
            key, started = worker.task
            elapsed = time.perf_counter() - started
            if worker.connection in ready:
                try:
                    message = worker.connection.recv()
                    if message[0] == "started":
                        worker.task = (key, time.perf_counter())
                        continue
                    got_key, metrics, error, seconds = message
                    worker.task = None
                    results.append(TrialResult(got_key, metrics, error, seconds))
                    continue
                except (EOFError, OSError):
                    worker.process.join(timeout=1)  # the worker died mid-send; reap it, report below
            died = not worker.process.is_alive()
            timed_out = self.timeout is not None and elapsed > self.timeout
            if died or timed_out:
                if timed_out and not died:
                    reason = f"trial exceeded the time limit of {self.timeout:g} s"
                else:
                    code = worker.process.exitcode
                    reason = (f"worker process died (exit code {code}"
                              f"{', killed by the OS - out of memory?' if code == -9 else ''})")
                worker.stop(kill=True)
                self._workers[index] = self._new_worker()
                results.append(TrialResult(key, None, reason, elapsed))
        return results

    def close(self, kill: bool = False) -> None:
        for worker in self._workers:
            worker.stop(kill=kill or worker.task is not None)

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(kill=exc[0] is not None)


def default_threads(workers: int) -> int:
    """CPU threads per worker: the machine's cores shared evenly, so step times stay comparable."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))
