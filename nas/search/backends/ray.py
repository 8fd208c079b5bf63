"""The search's trials on Ray Tune: one GPU shared by several candidates, several GPUs, or a cluster.

The Optuna study stays the one source of truth. Tune only schedules: its searcher
(:class:`StudySearcher`) asks :meth:`Search.propose` for each candidate and hands every outcome to
:meth:`Search.record`, so the controllers, the reward, the budget rule, resume and the output files
are exactly those of the local backend. Nothing the user needs lives in Ray's own folders.

Failures: a candidate that raises is caught inside the trial and comes back as a result with its
reason; a Ray worker that dies (killed, out of memory, past ``--trial-timeout``) reaches the searcher
as a Tune error, and the trial is recorded FAILED with that reason while the search goes on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Quiet, prompt-free start-up; Tune writes no result logs of its own (the study has everything).
RAY_ENVIRONMENT = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_USAGE_STATS_PROMPT_ENABLED": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_DEDUP_LOGS": "0",
}


def configure_ray_environment() -> None:
    """No usage-stats prompt, no Tune result logs; the user's own environment settings win."""
    for key, value in RAY_ENVIRONMENT.items():
        os.environ.setdefault(key, value)


configure_ray_environment()  # before Ray is imported: some of these are read at import time

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune import Callback  # noqa: E402
from ray.tune.search import Searcher  # noqa: E402

from effnas.nas.search.budget import counted_trials  # noqa: E402
from effnas.nas.search.session import Search, SearchError, SearchSummary  # noqa: E402
from effnas.nas.search.backends.local import failure_reason  # noqa: E402


@dataclass
class RayOptions:
    """Where trials run and what each one reserves (fractional GPUs let candidates share a GPU)."""

    address: str | None = None  # None: start a local Ray sized to this machine; "auto" or "host:port": join
    cpus_per_trial: float | None = None  # None: 1
    gpus_per_trial: float | None = None  # None: the GPUs spread over the concurrent trials, at most 1 each
    workers: int | None = None  # trials at once; None: as many as the cluster's CPUs or GPUs fit


def _on_this_device(settings: dict[str, Any]) -> dict[str, Any]:
    """One timing lock per GPU that Ray gave this worker: trials on other GPUs need not wait their turn."""
    if settings.get("timing_lock"):
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "").replace(",", "-")
        settings = {**settings, "timing_lock": f"{settings['timing_lock']}.{gpus or 'cpu'}"}
    return settings


def _train(config: dict[str, Any]) -> None:
    """Tune's trainable: one proxy trial in a reused Ray worker; the outcome is reported, never raised."""
    from ray import tune

    from effnas.nas.search.trial import run_trial

    if config["threads"]:
        import torch

        torch.set_num_threads(config["threads"])
    watchdog = None
    if config["timeout"]:
        # A stuck candidate cannot be interrupted from Python: end the worker, Tune reports its death.
        watchdog = threading.Timer(config["timeout"], os._exit, args=(124,))
        watchdog.daemon = True
        watchdog.start()
    start = time.perf_counter()
    outcome: dict[str, Any] = {"metrics": None, "error": None}
    try:
        outcome["metrics"] = run_trial(config["spec"], _on_this_device(config["settings"]), config["seed"])
    except Exception as error:  # noqa: BLE001 - any failure of a candidate is data, not a crash
        outcome["error"] = failure_reason(error)
    finally:
        if watchdog is not None:
            watchdog.cancel()
    outcome["seconds"] = time.perf_counter() - start
    tune.report({"effnas": json.dumps(outcome)})


def _measure(spec: dict, settings: dict, seed: int, threads: int | None) -> dict[str, Any] | str:
    """The backbone's reference trial, run as a Ray task with the same resources as every candidate."""
    from effnas.nas.search.trial import run_trial

    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        return run_trial(spec, _on_this_device(settings), seed)
    except Exception as error:  # noqa: BLE001
        return failure_reason(error)


def node_settings(search: Search, workers: int) -> dict[str, Any]:
    """Trial settings as a Ray node runs them: concurrent trials time their steps one at a time.

    The lock (``nas.trial.DeviceLock``) lives in the node's temporary folder, since the run directory
    may not exist on other nodes and trials only compete with trials on the same node.
    """
    settings = dict(search.config.trial)
    settings.pop("timing_lock", None)
    if workers > 1:
        tag = hashlib.sha1(search.storage_url.encode()).hexdigest()[:12]
        settings["timing_lock"] = os.path.join(tempfile.gettempdir(), f"effnas-{tag}.timing.lock")
    return settings


class StudySearcher(Searcher):
    """Tune's searcher backed by the Optuna study: propose on suggest, record on completion."""

    def __init__(self, search: Search, settings: dict[str, Any], threads: int | None, progress: Any = None) -> None:
        super().__init__()
        self.search = search
        self.settings = settings
        self.threads = threads
        self.progress = progress
        self.running: dict[str, list] = {}  # Tune trial id -> [Optuna trial, started at]
        self.errored: dict[str, list] = {}  # failed in Ray; the reason comes in ErrorReasons.on_trial_error
        self.finished = False

    def suggest(self, trial_id: str) -> dict | str | None:
        search = self.search
        if self.finished or counted_trials(search.study) + len(self.running) >= search.config.budget:
            self.finished = True
            return Searcher.FINISHED
        proposal = search.propose()
        if proposal is None:  # other processes on the same study took the rest of the budget
            self.finished = True
            return Searcher.FINISHED
        trial, spec = proposal
        self.running[trial_id] = [trial, time.perf_counter()]
        return {"number": trial.number, "spec": spec.to_dict(), "settings": self.settings,
                "seed": search.config.seed, "threads": self.threads, "timeout": search.config.trial_timeout}

    def started(self, trial_id: str) -> None:
        """The trial got its resources and began (it may have waited for them since ``suggest``)."""
        if trial_id in self.running:
            self.running[trial_id][1] = time.perf_counter()

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.running:
            return
        if error:
            self.errored[trial_id] = self.running.pop(trial_id)
            return
        trial, _ = self.running.pop(trial_id)
        if not result or "effnas" not in result:
            self.search.interrupt(trial, "Ray Tune stopped the trial before it reported")
            return
        outcome = json.loads(result["effnas"])
        self._record(trial, outcome["metrics"], outcome["error"], outcome["seconds"])

    def fail(self, trial_id: str, detail: str | None) -> None:
        """Record a trial whose Ray worker failed, with the best reason known."""
        if trial_id not in self.errored:
            return
        trial, started = self.errored.pop(trial_id)
        seconds = time.perf_counter() - started
        timeout = self.search.config.trial_timeout
        if timeout is not None and seconds >= timeout:  # the trial's watchdog ended its worker
            reason = f"trial exceeded the time limit of {timeout:g} s"
        else:
            reason = "Ray worker died" + (f": {detail}" if detail else " (killed, out of memory or crashed)")
        self._record(trial, None, reason, seconds)

    def _record(self, trial: Any, metrics: dict | None, error: str | None, seconds: float) -> None:
        self.search.record(trial, metrics, error, seconds)
        if self.progress is not None:
            self.progress.update(1)
            best = self.search.best()
            if best:
                self.progress.set_postfix(best_reward=f"{best['metrics']['reward']:.4f}", refresh=False)

    def save(self, checkpoint_path: str) -> None:
        # Tune checkpoints its searcher; all of this one's state is the study, so say where it is.
        Path(checkpoint_path).write_text(json.dumps({"study": self.search.storage_url}))

    def restore(self, checkpoint_path: str) -> None:
        pass  # a resumed search reopens the study, which holds every trial


class ErrorReasons(Callback):
    """Tells the searcher when a trial starts, and why Ray says a failed one failed (its worker died)."""

    def __init__(self, searcher: StudySearcher) -> None:
        self.searcher = searcher

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.searcher.started(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.searcher.fail(trial.trial_id, _ray_error_detail(trial))


def _ray_error_detail(trial: Any) -> str | None:
    """The telling part of the error Ray stored for a trial, e.g. how its worker process ended."""
    path = getattr(trial, "error_file", None)
    if not path or not os.path.exists(path):
        return None
    text = " ".join(Path(path).read_text(errors="replace").split("Failure #")[-1].split()[1:])
    if "Worker exit detail:" in text:  # a dead worker: Ray's one-line cause, without its general advice
        text = text.split("Worker exit detail:", 1)[1].split(" Some common causes")[0]
    return text.strip()[:300] or None


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
    try:
        if options.address:
            ray.init(address=options.address, **quiet)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, **quiet)
    except (ConnectionError, ValueError, RuntimeError) as error:
        where = options.address or "a local instance"
        raise SearchError(f"cannot start Ray ({where}): {str(error).strip().splitlines()[0]}") from None
    return True


def _resolve_resources(options: RayOptions, device: str) -> RayOptions:
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
        share = 0.0 if not use_gpus else 1.0 if options.workers is None else min(1.0, total["GPU"] / options.workers)
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
    workers = options.workers
    if workers is None:  # as many trials as the cluster holds at once
        fits = [int(total[key] // wanted) for key, wanted in (("CPU", cpus), ("GPU", share)) if wanted > 0]
        workers = max(1, min(fits))
    return RayOptions(options.address, cpus, share, workers)


def run_ray(search: Search, options: RayOptions) -> SearchSummary:
    """Run ``search`` to its budget on Ray Tune (or until Ctrl-C); same study and outputs as ``Search.run``."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    config = search.config
    device = str(config.trial.get("device", "auto"))
    if device.startswith("cuda:"):
        raise SearchError(f"--device {device} picks a GPU, but Ray assigns GPUs to trials: use --device cuda")
    started_ray = start_ray(options)
    searcher = bar = None
    stopped_early = False
    try:
        options = _resolve_resources(options, device)
        threads = config.trial.get("threads") or max(1, int(options.cpus_per_trial))
        settings = node_settings(search, options.workers)
        measure = ray.remote(_measure).options(num_cpus=options.cpus_per_trial, num_gpus=options.gpus_per_trial,
                                               max_retries=0)
        search.prepare(lambda spec: _get_reference(measure.remote(spec.to_dict(), settings, config.seed, threads)))
        done = counted_trials(search.study)
        bar = tqdm(total=config.budget, initial=min(done, config.budget), desc="trials", unit="trial",
                   disable=not search.progress, dynamic_ncols=True)
        searcher = StudySearcher(search, settings, threads, bar)
        if done < config.budget:
            resources = {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
            tuner = tune.Tuner(
                tune.with_resources(_train, resources),
                tune_config=tune.TuneConfig(search_alg=searcher, num_samples=config.budget - done,
                                            max_concurrent_trials=options.workers, reuse_actors=True,
                                            trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
                run_config=tune.RunConfig(
                    name=f"effnas-{time.strftime('%Y%m%d-%H%M%S')}",
                    storage_path=str((search.run_dir / "ray").resolve()), verbose=0, log_to_file=False,
                    failure_config=tune.FailureConfig(max_failures=0), callbacks=[ErrorReasons(searcher)],
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
            with _QuietTune():
                tuner.fit()
    except KeyboardInterrupt:
        stopped_early = True
    finally:
        if searcher is not None:
            for trial_id in list(searcher.errored):
                searcher.fail(trial_id, None)
            # Trials Tune stopped (Ctrl-C: Tune ends its loop gracefully) are interrupted, not counted.
            stopped_early = stopped_early or bool(searcher.running) or (
                not searcher.finished and counted_trials(search.study) < config.budget)
            for trial, _ in searcher.running.values():
                search.interrupt(trial, "the search was stopped (Ctrl-C)")
            searcher.running.clear()
        if bar is not None:
            bar.close()
        search.write_outputs()
        if started_ray:
            ray.shutdown()
    return search.summary(time.perf_counter() - start, stopped_early)


def _trial_name(trial: Any) -> str:
    """Ray's name for a trial: the study's trial number, so its folder and the study agree."""
    return f"trial-{trial.config['number']}"


def _get_reference(ref: Any) -> dict[str, Any] | str:
    try:
        return ray.get(ref)
    except KeyboardInterrupt:
        ray.cancel(ref, force=True)
        raise
    except ray.exceptions.RayError as error:
        return f"Ray worker died: {str(error).strip().splitlines()[0][:300]}"


class _QuietTune:
    """Tune logs resume hints and trial tracebacks that the study and our summary say better, and it
    leaves its own Ctrl-C handler installed after a run: restore the process's handlers afterwards."""

    def __enter__(self) -> None:
        self.logger = logging.getLogger("ray.tune")
        self.level = self.logger.level
        self.logger.setLevel(logging.CRITICAL)
        self.handlers = {}
        if threading.current_thread() is threading.main_thread():
            self.handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGUSR1)}

    def __exit__(self, *exc: object) -> None:
        self.logger.setLevel(self.level)
        for number, handler in self.handlers.items():
            signal.signal(number, handler)
