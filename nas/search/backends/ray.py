"""The search's trials as Ray tasks: one GPU shared by several candidates, several GPUs, or a cluster.

Each trial is one Ray core task (``ray.remote(...).options(num_cpus, num_gpus, max_retries=0)``); Ray
reuses its worker processes, so a worker keeps what it has warmed up, as a local worker does. The
search loop (:meth:`Search.run`) stays in this process beside the study, exactly as with the local
backend: Ray only places and runs trials, and nothing the user needs lives in Ray's own folders.

Failures: a candidate that raises is caught inside the task and comes back as a result with its reason;
a Ray worker that dies (killed, out of memory, or ended by its ``--trial-timeout`` watchdog) comes back
from ``ray.get`` as an error, recorded as "Ray worker died: ..." or "trial exceeded the time limit of N s".
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

# Quiet, prompt-free start-up; the user's own environment settings win.
RAY_ENVIRONMENT = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_USAGE_STATS_PROMPT_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
}


def configure_ray_environment() -> None:
    """No usage-stats prompt, no log de-duplication notices; the user's own environment settings win."""
    for key, value in RAY_ENVIRONMENT.items():
        os.environ.setdefault(key, value)


configure_ray_environment()  # before Ray is imported: some of these are read at import time

import ray  # noqa: E402
import torch  # noqa: E402

from effnas.nas.search.backends.base import BackendSetup, TrialResult, failure_reason  # noqa: E402
from effnas.nas.search.device_sharing import timing_lock_path  # noqa: E402
from effnas.nas.search.settings import SearchError  # noqa: E402
from effnas.nas.search.trial import measure_trial  # noqa: E402


@dataclass(frozen=True)
class RayOptions:
    """Where trials run and what each one reserves (fractional GPUs let candidates share a GPU)."""

    address: str | None = None  # None: start a local Ray sized to this machine; "auto" or "host:port": join
    cpus_per_trial: float | None = None  # None: 1
    gpus_per_trial: float | None = None  # None: the GPUs spread over the concurrent trials, at most 1 each


@dataclass(frozen=True)
class Resources:
    """What each trial reserves, and how many run at once."""

    cpus_per_trial: float
    gpus_per_trial: float
    workers: int


def train_candidate(key: Any, spec: dict, settings: dict, seed: int, threads: int | None,
                    timeout: float | None) -> TrialResult:
    """One proxy trial in a reused Ray worker: its record, or its failure reason; never raised."""
    if threads:
        torch.set_num_threads(threads)
    watchdog = None
    if timeout:
        # A stuck candidate cannot be interrupted from Python: end the worker; the driver words the reason.
        watchdog = threading.Timer(timeout, os._exit, args=(124,))
        watchdog.daemon = True
        watchdog.start()
    start = time.perf_counter()
    try:
        return TrialResult(key, measure_trial(spec, settings, seed), None, time.perf_counter() - start)
    except Exception as error:  # noqa: BLE001 - any failure of a candidate is data, not a crash
        return TrialResult(key, None, failure_reason(error), time.perf_counter() - start)
    finally:
        if watchdog is not None:
            watchdog.cancel()


def start_ray(options: RayOptions) -> bool:
    """Join ``options.address`` or start a local Ray; returns whether this call started it.

    An already initialised Ray (a notebook, a test fixture) is used as it is.
    """
    if ray.is_initialized():
        return False
    if options.address and options.address.startswith("ray://"):
        raise SearchError(
            "--address ray://... (Ray Client) would run the search loop on the cluster, away from the study; "
            "run nas search on a cluster node with --address auto instead, e.g. "
            "ray job submit --address http://HEAD:8265 -- nas search --backend ray --address auto ...")
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR, "configure_logging": True}
    main_thread = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main_thread else None
    try:
        if options.address:
            ray.init(address=options.address, **quiet)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, **quiet)
    except (ConnectionError, ValueError, RuntimeError) as error:
        where = options.address or "a local instance"
        raise SearchError(f"cannot start Ray ({where}): {str(error).strip().splitlines()[0]}") from None
    finally:
        if main_thread:  # ray.init installs a SIGTERM handler that exits at once: keep the process's own
            signal.signal(signal.SIGTERM, sigterm)
    return True


def _resolve_resources(options: RayOptions, device: str, workers: int | None = None) -> Resources:
    """Fill in the defaults from the cluster; a request no node can meet is an error, not a hang."""
    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    total = {key: sum(node.get(key, 0) for node in nodes) for key in ("CPU", "GPU")}
    largest = {key: max((node.get(key, 0) for node in nodes), default=0) for key in ("CPU", "GPU")}
    use_gpus = device != "cpu" and total["GPU"] > 0
    if device == "cuda" and not use_gpus:
        raise SearchError("--device cuda but the Ray cluster has no GPUs")
    cpus = 1.0 if options.cpus_per_trial is None else options.cpus_per_trial
    share = options.gpus_per_trial
    if share is None:  # e.g. 1 GPU and --workers 4: a quarter each; 8 GPUs and --workers 8: one each
        share = 0.0 if not use_gpus else 1.0 if workers is None else min(1.0, total["GPU"] / workers)
    for name, key, wanted in (("--cpus-per-trial", "CPU", cpus), ("--gpus-per-trial", "GPU", share)):
        if wanted < 0:
            raise SearchError(f"{name} must not be negative, got {wanted:g}")
        if wanted > largest[key]:  # a trial runs on one node
            raise SearchError(f"{name} {wanted:g} but no Ray node has more than {largest[key]:g} {key}s")
    if share > 1 and share != int(share):
        raise SearchError(f"--gpus-per-trial above 1 must be a whole number, got {share:g}")
    if cpus == 0 and share == 0:
        raise SearchError("each trial needs some resource: give --cpus-per-trial or --gpus-per-trial above 0")
    if device == "cuda" and share == 0:
        raise SearchError("--device cuda but no GPU share per trial: give --gpus-per-trial (e.g. 0.25)")
    if workers is None:  # as many trials as the cluster holds at once
        fits = [int(total[key] // wanted) for key, wanted in (("CPU", cpus), ("GPU", share)) if wanted > 0]
        workers = max(1, min(fits))
    return Resources(cpus, share, workers)


class RayBackend:
    """Trials as Ray tasks, at most ``workers`` in flight (see the module docs).

    With more than one, the trials on each node share the run's timing lock
    (:func:`~effnas.nas.search.device_sharing.timing_lock_path`, in the node's temporary folder), which each trial
    narrows to the GPU Ray gave it.
    """

    def __init__(self, options: RayOptions | None = None) -> None:
        self.options = options if options is not None else RayOptions()
        self._started_ray = False
        self._task: Any = None
        self._pending: dict[Any, tuple[Any, float]] = {}  # Ray object ref -> (key, submitted at)
        self.workers = 0
        self.threads: int | None = None  # torch threads per trial, known once started

    @staticmethod
    def refuse_unsupported(trial_memory: float | None) -> None:
        """Settings only the local backend honours; ``nas search`` checks them before anything is written."""
        if trial_memory is not None:
            raise SearchError("--trial-memory applies to the local backend; on Ray, give trials memory with Ray's "
                              "own resources (ray start --memory)")

    def start(self, setup: BackendSetup) -> None:
        if setup.device.startswith("cuda:"):
            raise SearchError(f"--device {setup.device} picks a GPU, but Ray assigns GPUs to trials: use --device cuda")
        self.refuse_unsupported(setup.trial_memory)
        self._started_ray = start_ray(self.options)
        resources = _resolve_resources(self.options, setup.device, setup.workers)
        self.workers = resources.workers
        self.threads = setup.threads or max(1, int(resources.cpus_per_trial))
        self._timeout = setup.trial_timeout
        self._timing_lock = timing_lock_path(setup.storage_url, resources.workers)
        self._task = ray.remote(train_candidate).options(
            num_cpus=resources.cpus_per_trial, num_gpus=resources.gpus_per_trial, max_retries=0)

    @property
    def free(self) -> int:
        return max(0, self.workers - len(self._pending)) if self._task is not None else 0

    def submit(self, key: Any, spec: dict[str, Any], settings: dict[str, Any], seed: int) -> None:
        settings = {**settings, "timing_lock": self._timing_lock, "workers": self.workers}
        ref = self._task.remote(key, spec, settings, seed, self.threads, self._timeout)
        self._pending[ref] = (key, time.perf_counter())

    def collect(self, poll_seconds: float) -> list[TrialResult]:
        if not self._pending:
            return []
        ready, _ = ray.wait(list(self._pending), num_returns=len(self._pending), timeout=poll_seconds)
        results = []
        for ref in ready:
            key, submitted = self._pending.pop(ref)
            try:
                results.append(ray.get(ref))
            except ray.exceptions.RayError as failure:
                seconds = time.perf_counter() - submitted
                results.append(TrialResult(key, None, self._death_reason(failure, seconds), seconds))
        return results

    def _death_reason(self, failure: BaseException, seconds: float) -> str:
        if self._timeout is not None and seconds >= self._timeout:  # the trial's watchdog ended its worker
            return f"trial exceeded the time limit of {self._timeout:g} s"
        detail = " ".join(str(failure).split()).split(" Check python-core-worker")[0]
        return "Ray worker died" + (f": {detail[:300]}" if detail else " (killed, out of memory or crashed)")

    def close(self, kill: bool) -> None:
        for ref in self._pending:  # only a stopped search leaves tasks behind: end them, uncounted
            ray.cancel(ref, force=True)
        self._pending.clear()
        self._task = None
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False
