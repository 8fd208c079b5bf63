"""Long-lived worker processes that run trials for the local backend.

Why processes rather than threads or the search process itself: a candidate that crashes the
interpreter, exhausts memory or hangs past ``--trial-timeout`` takes down only its worker, which is
replaced; and a worker that lives across many trials keeps what it has warmed up (loaded data,
convolution shapes it has seen, CUDA context), which the GPU measurements show is most of a new
candidate's fixed cost. ``N`` workers on one device give the "several trials per GPU" mode.
"""

from __future__ import annotations

import gc
import importlib
import multiprocessing as mp
import os
import resource
import time
from collections import deque
from multiprocessing.connection import Connection, wait
from typing import Any, Callable

from effnas.models.memory import gpu_may_be_present, threads_set_by_user
from effnas.nas.search.backends.base import BackendSetup, TrialResult, failure_reason
from effnas.nas.search.device_sharing import timing_lock_path


def _import_function(path: str) -> Callable[..., Any]:
    module_name, _, name = path.partition(":")
    return getattr(importlib.import_module(module_name), name)


def limit_memory(gib: float | None) -> str | None:
    """Cap what this process's trials may allocate, so a candidate too big for the machine fails as "out of
    memory" instead of swapping the machine to a halt or being killed by the kernel with the worker.

    On a GPU: a share of the device's memory (torch then raises its OutOfMemoryError). On CPU: the heap
    (``RLIMIT_DATA``, which on Linux >= 4.7 also counts the anonymous mappings large tensors live in) may grow
    ``gib`` beyond what the worker holds now, after start-up. Returns what was limited, for the record.
    """
    if gib is None:
        return None
    import torch  # only in a worker: the search process and other pools need not pay torch's start-up

    if torch.cuda.is_available():  # CPU limits would also cap the CUDA driver's host mappings: leave them be
        total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, gib * 2**30 / total))
        return f"GPU memory {gib:g} GiB"
    with open("/proc/self/status") as status:
        in_use = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmData:"))
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = in_use + int(gib * 2**30)
    resource.setrlimit(resource.RLIMIT_DATA, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    return f"heap {gib:g} GiB beyond {in_use / 2**30:.2f} GiB at start-up"


def freeze_imports() -> None:
    """Take what is alive now (torch, the models: many long-lived objects) out of the garbage collector's view.
    Otherwise every full collection rescans them all, landing in a random phase of a random trial and slowing
    it (docs/performance.md has the figures). Only for a process of its own (a worker, the ``nas search``
    command): what is frozen is never collected, garbage cycles among it included."""
    gc.collect()
    gc.freeze()


def worker_context() -> mp.context.BaseContext:
    """How worker processes start: forked from a server that has already imported torch and the trial code.

    The server starts with the first pool and lives as long as this process, so the imports (torch, and the
    ``torch._dynamo`` that torch's optimizers load when first built: seconds of CPU) are paid once, not once per
    worker: a replacement for a crashed or hung worker is ready at once, and so is a second search in the same
    process (the Python API, a notebook). The server is a fresh interpreter, not a fork of this one, so nothing
    this process has done (threads, CUDA, open files) is inherited; the script that started it (``__main__``) is
    imported there, and each worker takes this process's folder and ``sys.path``, as with the spawn method.
    Where forking is not available, each worker is spawned and imports for itself.
    """
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(["__main__", "torch", "torch._dynamo", "effnas.nas.search.trial"])
    return context


def start_worker_server() -> None:
    """Start the server the workers fork from now, so that its imports (seconds of CPU) run on another core while
    this process opens the study and measures its data, instead of after it. Without forkserver: nothing."""
    context = worker_context()
    if context.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _worker_main(connection: Connection, threads: int | None, function: str, memory_gib: float | None) -> None:
    """Loop: receive (key, spec, settings, seed), run the trial, send its :class:`TrialResult` back."""
    import torch  # in the worker process only (see limit_memory)

    if threads:
        torch.set_num_threads(threads)
    trial_function = _import_function(function)
    limit_memory(memory_gib)
    freeze_imports()

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
            metrics = trial_function(spec, settings, seed)
            connection.send(TrialResult(key, metrics, None, time.perf_counter() - start))
        except KeyboardInterrupt:
            return
        except BaseException as error:  # noqa: BLE001 - any failure of a candidate is data, not a crash
            connection.send(TrialResult(key, None, failure_reason(error), time.perf_counter() - start))
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # hand back what the failed candidate held before the next one


STARTUP_S = 120.0  # how long a new worker may take to start before its first task counts as hung


class _Worker:
    def __init__(self, context: mp.context.BaseContext, threads: int | None, function: str,
                 memory_gib: float | None = None) -> None:
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, threads, function, memory_gib), daemon=True)
        self.process.start()
        child.close()
        self.tasks: deque[tuple[Any, tuple]] = deque()  # (key, message) in the order sent; the first one runs
        self.since = 0.0  # when the first task was sent, or acknowledged as started
        self.running = False  # the worker has acknowledged its first task: its time limit runs from then

    def send(self, key: Any, message: tuple) -> None:
        self.connection.send(message)
        if not self.tasks:
            self.since, self.running = time.perf_counter(), False
        self.tasks.append((key, message))

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

    Each worker holds up to ``depth`` tasks: with ``depth=2`` the next task already waits in its pipe when the
    current one ends, so the worker goes straight on while the caller stores the result and picks another.
    A worker that dies or overruns ``timeout`` seconds is killed and replaced; its running task comes back as a
    failure with the reason, and the tasks queued behind it go to the replacement. ``memory_gib`` caps each
    worker's trials (see :func:`limit_memory`).
    """

    def __init__(self, size: int, timeout: float | None = None, threads: int | None = None,
                 function: str = "effnas.nas.search.trial:measure_trial", memory_gib: float | None = None,
                 depth: int = 1) -> None:
        self._context = worker_context()
        self._threads = threads
        self._memory_gib = memory_gib
        self._function = function
        self.timeout = timeout
        self.depth = depth
        self._workers = [self._new_worker() for _ in range(size)]

    def _new_worker(self) -> _Worker:
        return _Worker(self._context, self._threads, self._function, self._memory_gib)

    @property
    def idle(self) -> int:
        """Workers with nothing to do."""
        return sum(not worker.tasks for worker in self._workers)

    @property
    def free(self) -> int:
        """Tasks that can be submitted now (each worker holds up to ``depth``)."""
        return sum(self.depth - len(worker.tasks) for worker in self._workers)

    @property
    def busy(self) -> int:
        return len(self._workers) - self.idle

    def submit(self, key: Any, spec: dict, settings: dict, seed: int) -> None:
        """Queue a task on the least loaded worker."""
        worker = min(self._workers, key=lambda w: len(w.tasks))
        if len(worker.tasks) >= self.depth:
            raise RuntimeError("every worker already holds `depth` tasks")
        worker.send(key, (key, spec, settings, seed))

    def collect(self, poll: float = 1.0) -> list[TrialResult]:
        """Wait up to ``poll`` seconds; return every task that finished, failed or timed out."""
        busy = [w for w in self._workers if w.tasks]
        if not busy:
            return []
        ready = wait([w.connection for w in busy] + [w.process.sentinel for w in busy], timeout=poll)
        results: list[TrialResult] = []
        for index, worker in enumerate(self._workers):
            if not worker.tasks:
                continue
            key = worker.tasks[0][0]
            if worker.connection in ready:
                try:
                    message = worker.connection.recv()
                    if not isinstance(message, TrialResult):  # ("started", key): the trial began
                        worker.since, worker.running = time.perf_counter(), True
                        continue
                    worker.tasks.popleft()
                    worker.since, worker.running = time.perf_counter(), False  # the next one, if any, is due
                    if self.timeout is not None and message.error is None and message.seconds > self.timeout:
                        # it finished between two looks at the clock: over the limit all the same
                        message = TrialResult(key, None, self._over_limit(), message.seconds)
                    results.append(message)
                    continue
                except (EOFError, OSError):
                    worker.process.join(timeout=1)  # the worker died mid-send; reap it, report below
            elapsed = time.perf_counter() - worker.since
            died = not worker.process.is_alive()
            # A fresh worker's start-up (importing torch: seconds on a loaded machine) is not the trial's time.
            limit = None if self.timeout is None else self.timeout if worker.running else self.timeout + STARTUP_S
            timed_out = limit is not None and elapsed > limit
            if died or timed_out:
                if timed_out and not died:
                    reason = self._over_limit()
                else:
                    code = worker.process.exitcode
                    reason = (f"worker process died (exit code {code}"
                              f"{', killed by the OS - out of memory?' if code == -9 else ''})")
                worker.stop(kill=True)
                replacement = self._workers[index] = self._new_worker()
                for queued_key, queued in list(worker.tasks)[1:]:  # never started: they go to the replacement
                    replacement.send(queued_key, queued)
                results.append(TrialResult(key, None, reason, elapsed))
        return results

    def _over_limit(self) -> str:
        return f"trial exceeded the time limit of {self.timeout:g} s"

    def close(self, kill: bool = False) -> None:
        for worker in self._workers:
            worker.stop(kill=kill or bool(worker.tasks))

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(kill=exc[0] is not None)


def default_threads(workers: int) -> int:
    """CPU threads per worker: the machine's cores shared evenly, so step times stay comparable; no more than
    ``OMP_NUM_THREADS`` where it is set."""
    shared = max(1, (os.cpu_count() or 1) // max(1, workers))
    return min(shared, threads_set_by_user() or shared)


def default_workers(device: str) -> int:
    """Trials at once when the user does not say: one single-threaded trial per core on CPU (the best
    throughput, and steady step times), one on a GPU (pass --workers N to share it)."""
    if device.startswith("cuda"):
        return 1
    if device == "auto" and gpu_may_be_present():
        import torch  # only to ask whether there is a GPU: a search that is told its device never loads it here

        if torch.cuda.is_available():
            return 1
    return max(1, min(8, os.cpu_count() or 1))


class LocalBackend:
    """The search's trials in a :class:`WorkerPool` on this machine (see the module docs).

    Each worker holds two trials (``depth=2``): its next candidate waits in its pipe, so it never idles while
    the search process stores a result, asks the controller and rewrites the run files.

    With more than one worker, the trials share the run's timing lock
    (:func:`~effnas.nas.search.device_sharing.timing_lock_path`): each times its steps while the others finish
    their current step (on a GPU, their current run of untimed steps) and wait, so candidates are timed alone
    as the reference is.
    """

    DEPTH = 2

    def __init__(self, function: str = "effnas.nas.search.trial:measure_trial") -> None:
        self._function = function
        self._pool: WorkerPool | None = None
        self._timing_lock: str | None = None
        self.workers = 0
        self.threads: int | None = None

    def start(self, setup: BackendSetup) -> None:
        self.workers = setup.workers if setup.workers is not None else default_workers(setup.device)
        self.threads = setup.threads or default_threads(self.workers)
        self._timing_lock = timing_lock_path(setup.storage_url, self.workers)
        self._pool = WorkerPool(self.workers, timeout=setup.trial_timeout, threads=self.threads,
                                function=self._function, memory_gib=setup.trial_memory, depth=self.DEPTH)

    @property
    def free(self) -> int:
        return self._pool.free if self._pool is not None else 0

    def submit(self, key: Any, spec: dict[str, Any], settings: dict[str, Any], seed: int) -> None:
        settings = {**settings, "timing_lock": self._timing_lock, "workers": self.workers}
        self._pool.submit(key, spec, settings, seed)

    def collect(self, poll_seconds: float) -> list[TrialResult]:
        return self._pool.collect(poll=poll_seconds) if self._pool is not None else []

    def close(self, kill: bool) -> None:
        if self._pool is not None:
            self._pool.close(kill=kill)
            self._pool = None
