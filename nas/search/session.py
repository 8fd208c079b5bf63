"""The search runner: controller -> candidate spec -> proxy trial -> reward -> Optuna study.

The Optuna study (SQLite ``study.db`` in the run directory by default, any RDB URL with
``--storage``) is the one source of truth: settings, the reference measurement, every trial's
choices, metrics and failure reason live there, so a killed search resumes where it stopped, the
controllers rebuild their state from it, and ``nas report`` / ``optuna-dashboard`` read it.

Budget rule: trials that completed or failed on their own count; a trial cut off because the search
process itself died is marked ``interrupted`` on resume and its architecture is evaluated again.
"""

from __future__ import annotations

import os
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from effnas.search_space import ArchSpec
from effnas.errors import EffnasError
from effnas.writes import ensure_writable_dir, remove_stale_temporaries

from effnas.nas.search.budget import budget_position, counted_trials, recover_interrupted, worker_id
from effnas.results.storage import open_storage

STUDY_NAME = "effnas"


class SearchError(EffnasError):
    """A search that cannot start as asked (bad settings, unusable storage or run directory)."""


@dataclass
class SearchConfig:
    """Everything ``nas search`` was asked; stored in the study so a resume can check it matches."""

    out: str = "runs/search"
    budget: int = 200
    controller: str = "tpe"
    seed: int = 0
    storage: str | None = None
    space: str | None = None
    workers: int | None = None  # None: one per CPU core (at most 8) on CPU, one on a GPU
    trial_timeout: float | None = None
    trial_memory: float | None = None  # GiB a trial may use (see nas.workers.limit_memory)
    reward_w: float = -0.07
    reward_v: float = -0.05
    image_size: int | None = None  # proxy image size; None: the space's
    trial: dict[str, Any] = field(default_factory=dict)  # TrialSettings.to_dict()

    # Settings that define *what* is searched: a resume with different values would mix studies.
    IDENTITY = ("controller", "space_dict", "reward_w", "reward_v", "trial_identity")


def default_workers(device: str) -> int:
    """Trials at once when the user does not say: one single-threaded trial per core on CPU (the best
    throughput, and steady step times), one on a GPU (pass --workers N to share it)."""
    import torch

    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return 1
    return max(1, min(8, os.cpu_count() or 1))


def _storage_url(config: SearchConfig) -> str:
    if config.storage:
        return config.storage
    return f"sqlite:///{Path(config.out).resolve() / 'study.db'}"


def _identity(config: SearchConfig, space_dict: dict) -> dict[str, Any]:
    trial = {k: v for k, v in config.trial.items() if k not in ("device", "engine", "threads", "timing_lock")}
    return {"controller": config.controller, "space_dict": space_dict, "reward_w": config.reward_w,
            "reward_v": config.reward_v, "trial_identity": trial}


RESTARTED_RNG = ("random", "tpe", "nsga2")  # Optuna's own samplers: one running RNG, seeded per process


def _sampler_seed(config: SearchConfig, trials_so_far: int = 0) -> int:
    """The controller's seed. On a shared ``--storage`` each process mixes in its own identity: with the
    same seed, processes started together would propose the same candidates and train each twice. For the
    same reason a resumed process of Optuna's own samplers mixes in how many trials the study holds (else a
    random search replays its first run's draws); rl and evolution replay the study by trial number instead."""
    seed = config.seed if not config.storage else (config.seed + zlib.crc32(worker_id().encode())) % 2**31
    if config.controller in RESTARTED_RNG and trials_so_far:
        seed = (seed + trials_so_far) % 2**31
    return seed


def _trials_so_far(storage: optuna.storages.BaseStorage) -> int:
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    return next((summary.n_trials for summary in summaries if summary.study_name == STUDY_NAME), 0)


@dataclass
class SearchSummary:
    run_dir: Path
    storage: str
    counted: int
    budget: int
    best: dict[str, Any] | None
    reference: dict[str, Any]
    stopped_early: bool = False
    seconds: float = 0.0


class Search:
    """One search: open or resume the study, measure the reference, run trials up to the budget."""

    def __init__(self, config: SearchConfig, progress: bool = True,
                 on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None) -> None:
        from effnas.nas.search.controllers import CONTROLLERS, is_multi_objective, make_sampler
        from effnas.search_space.space import default_space, load_space

        if config.budget <= 0:
            raise SearchError(f"--budget must be a positive number of trials, got {config.budget}")
        if config.controller not in CONTROLLERS:
            raise SearchError(f"unknown controller {config.controller!r} (choose from {', '.join(CONTROLLERS)})")
        if config.workers is None:
            config.workers = default_workers(config.trial.get("device", "auto"))
        if config.workers < 1:
            raise SearchError(f"--workers must be at least 1, got {config.workers}")
        if config.trial_timeout is not None and config.trial_timeout <= 0:
            raise SearchError(f"--trial-timeout must be positive, got {config.trial_timeout}")
        if config.trial_memory is not None and not 0 < config.trial_memory < 2**20:
            raise SearchError(f"--trial-memory must be a positive number of GiB, got {config.trial_memory:g}")
        self.config = config
        self.progress = progress
        self.on_trial = on_trial
        self.space = load_space(config.space) if config.space else default_space()
        self.multi_objective = is_multi_objective(config.controller)
        self.run_dir = Path(config.out)
        image_size = config.image_size or self.space.backbone.train_image_size
        if image_size < self.space.backbone.total_stride:
            raise SearchError(f"--image-size {image_size} is below the network's total stride "
                              f"{self.space.backbone.total_stride}: the last stage would see less than 1 pixel")
        config.trial = {**config.trial, "image_size": image_size}
        # An unreadable data set fails here, before anything is written; specs get its classes and channels.
        self.num_classes, self.image_channels = self._data_shape()
        if config.workers > 1:  # concurrent trials time their steps one at a time (see nas.trial.DeviceLock)
            config.trial["timing_lock"] = str(self.run_dir.resolve() / ".timing.lock")
        ensure_writable_dir(self.run_dir, "run directory")  # read-only, full: one line, and nothing created
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.storage_url = _storage_url(config)
        self.storage = open_storage(self.storage_url)
        directions = ["maximize", "minimize", "minimize"] if self.multi_objective else ["maximize"]
        try:
            self.study = optuna.create_study(
                study_name=STUDY_NAME, storage=self.storage, load_if_exists=True, directions=directions,
                sampler=make_sampler(config.controller, self.space,
                                     _sampler_seed(config, _trials_so_far(self.storage))))
        except Exception as error:  # noqa: BLE001
            raise SearchError(f"cannot open the study in {self.storage_url}: {error}") from None
        self._check_or_store_settings()

    # ------------------------------------------------------------------ settings
    def _check_or_store_settings(self) -> None:
        identity = _identity(self.config, self.space.to_dict())
        stored = self.study.user_attrs.get("identity")
        if stored is None:
            self.study.set_user_attr("identity", identity)
        elif stored != identity:
            changed = sorted(k for k in identity if identity[k] != stored.get(k))
            detail = changed[0]
            if detail == "trial_identity":
                keys = sorted(k for k in identity[detail] if identity[detail][k] != stored[detail].get(k))
                detail = ", ".join(keys) or detail
            raise SearchError(
                f"{self.storage_url} already holds a search with different settings ({detail}); "
                f"re-run with the same settings to resume, or use another --out")
        settings = asdict(self.config)
        self.study.set_user_attr("settings", settings)
        self.study.set_user_attr("space", self.space.to_dict())

    def _data_shape(self) -> tuple[int, int]:
        """The data set's number of classes and image channels (loading it also validates it)."""
        from effnas.nas.training.data import load_data
        from effnas.nas.search.trial import TrialSettings

        settings = TrialSettings.from_dict(self.config.trial)
        data = load_data(settings.data, seed=self.config.seed, val_fraction=settings.val_fraction,
                         data_size=settings.data_size)
        return data.num_classes, data.channels

    # ------------------------------------------------------------------ steps any backend uses
    def prepare(self, measure_reference: Callable[[ArchSpec], dict[str, Any] | str]) -> dict[str, Any]:
        """Recover trials a dead process left running, check the data, and get the reference.

        ``measure_reference(spec)`` runs the backbone on the backend (metrics, or a failure reason);
        it is only called the first time, later runs reuse the stored reference.
        """
        recover_interrupted(self.study, self.storage)
        from effnas.results import RUN_FILES

        remove_stale_temporaries(self.run_dir, RUN_FILES)  # copies a write killed mid-way left
        stored = self.study.user_attrs.get("reference")
        if stored:
            self.reference = stored
            return stored
        spec = self.space.backbone.replace(num_classes=self.num_classes, image_channels=self.image_channels)
        metrics = measure_reference(spec)
        if isinstance(metrics, str):
            raise SearchError(f"the backbone itself failed to train, so there is no reference: {metrics}")
        self.reference = {"step_time_ms": metrics["step_time_ms"], "params": metrics["params"],
                          "accuracy": metrics["accuracy"], "macs": metrics.get("macs"), "spec": spec.to_dict()}
        self.study.set_user_attr("reference", self.reference)
        return self.reference

    def propose(self) -> tuple[optuna.trial.Trial, ArchSpec] | None:
        """Ask the controller for the next candidate; None once the shared budget is taken."""
        trial = self.study.ask()
        if budget_position(self.study, trial.number) > self.config.budget:  # other processes got there first
            trial.set_user_attr("interrupted", True)
            trial.set_user_attr("fail_reason", "surplus: the budget was reached by other workers")
            self.study.tell(trial, state=TrialState.FAIL)
            return None
        spec = self.space.sample(trial, num_classes=self.num_classes).replace(image_channels=self.image_channels)
        trial.set_user_attr("spec", spec.to_dict())
        trial.set_user_attr("worker", worker_id())
        return trial, spec

    def record(self, trial: optuna.trial.Trial, metrics: dict[str, Any] | None, error: str | None,
               seconds: float) -> None:
        """Store a finished trial and refresh the run files (what a backend with one result at a time calls)."""
        self.store(trial, metrics, error, seconds)
        self.publish([trial.number])

    def store(self, trial: optuna.trial.Trial, metrics: dict[str, Any] | None, error: str | None,
              seconds: float) -> None:
        """Tell the study a trial's metrics and reward, or its failure reason: the one write a result needs
        before the controller can propose the next candidate."""
        from effnas.results.reward import reward as compute_reward

        trial.set_user_attr("duration_s", round(seconds, 3))
        if error is not None or metrics is None:
            trial.set_user_attr("fail_reason", error or "no metrics returned")
            self.study.tell(trial, state=TrialState.FAIL)
            return
        value = compute_reward(metrics["accuracy"], metrics["step_time_ms"], metrics["params"],
                               self.reference["step_time_ms"], self.reference["params"],
                               w=self.config.reward_w, v=self.config.reward_v)
        for key, item in metrics.items():
            trial.set_user_attr(key, item)
        trial.set_user_attr("reward", value)
        if self.multi_objective:
            self.study.tell(trial, [metrics["accuracy"], metrics["step_time_ms"], float(metrics["params"])])
        else:
            self.study.tell(trial, value)

    def publish(self, numbers: list[int]) -> None:
        """After stored trials: rewrite the run files (so a killed search leaves files that match its study)
        and tell ``on_trial``."""
        self.write_outputs()
        if self.on_trial is not None:
            for number in numbers:
                self.on_trial(self.study.trials[number])

    def interrupt(self, trial: optuna.trial.Trial, reason: str) -> None:
        """A trial cut off by the search stopping: not counted, and its architecture is queued again."""
        trial.set_user_attr("interrupted", True)
        trial.set_user_attr("fail_reason", f"interrupted: {reason}")
        self.study.tell(trial, state=TrialState.FAIL)
        self.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})

    def summary(self, seconds: float, stopped_early: bool = False) -> SearchSummary:
        return SearchSummary(self.run_dir, self.storage_url, counted_trials(self.study), self.config.budget,
                             self.best(), getattr(self, "reference", {}), stopped_early, seconds)

    # ------------------------------------------------------------------ the local backend
    def run(self) -> SearchSummary:
        """Run trials in local worker processes until the budget is reached (or Ctrl-C)."""
        from tqdm.auto import tqdm

        from effnas.nas.search.backends.local import WorkerPool, default_threads

        start = time.perf_counter()
        budget = self.config.budget
        threads = self.config.trial.get("threads") or default_threads(self.config.workers)
        running: dict[int, optuna.trial.Trial] = {}
        stopped_early = False
        # depth=2: each worker's next candidate waits in its pipe, so it never idles while this process
        # stores a result, asks the controller and rewrites the run files.
        pool = WorkerPool(self.config.workers, timeout=self.config.trial_timeout, threads=threads,
                          memory_gib=self.config.trial_memory, depth=2)
        bar = None
        try:
            self.prepare(lambda spec: self._measure_on_pool(pool, spec))
            bar = tqdm(total=budget, initial=min(counted_trials(self.study), budget), desc="trials",
                       unit="trial", disable=not self.progress, dynamic_ncols=True)
            self._postfix(bar)
            self._feed(pool, running)
            while running:
                finished = []
                for result in pool.collect(poll=0.5):
                    self.store(running.pop(result.key), result.metrics, result.error, result.seconds)
                    finished.append(result.key)
                # Refill the workers' queues before the run files and the progress bar are refreshed.
                self._feed(pool, running)
                if finished:
                    self.publish(finished)
                    bar.update(len(finished))
                    self._postfix(bar)
        except KeyboardInterrupt:
            stopped_early = True
            for trial in running.values():
                self.interrupt(trial, "the search was stopped (Ctrl-C)")
            running.clear()
        finally:
            pool.close(kill=bool(running) or stopped_early)
            if bar is not None:
                bar.close()
            self.write_outputs()
        return self.summary(time.perf_counter() - start, stopped_early)

    def _feed(self, pool: Any, running: dict[int, optuna.trial.Trial]) -> None:
        """Fill the workers' queues while the budget allows, counting running and queued trials too so that
        N workers stop together at the budget."""
        if not pool.free:
            return
        done = counted_trials(self.study)
        while pool.free and done + len(running) < self.config.budget:
            proposal = self.propose()
            if proposal is None:  # the shared budget was taken by other processes
                return
            trial, spec = proposal
            pool.submit(trial.number, spec.to_dict(), self.config.trial, self.config.seed)
            running[trial.number] = trial

    def _measure_on_pool(self, pool: Any, spec: ArchSpec) -> dict[str, Any] | str:
        """Train the backbone in a worker, under the same conditions as every candidate."""
        pool.submit("reference", spec.to_dict(), self.config.trial, self.config.seed)
        results: list[Any] = []
        while not results:
            results = pool.collect(poll=0.5)
        return results[0].error if results[0].error is not None else results[0].metrics

    def _postfix(self, bar: Any) -> None:
        best = self.best()
        if best:
            bar.set_postfix(best_reward=f"{best['metrics']['reward']:.4f}", refresh=False)

    def best(self) -> dict[str, Any] | None:
        """The completed trial with the highest reward: its spec and metrics."""
        completed = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                     if "reward" in t.user_attrs]
        if not completed:
            return None
        top = max(completed, key=lambda t: (t.user_attrs["reward"], -t.number))
        metrics = {k: v for k, v in top.user_attrs.items() if k not in ("spec", "worker")}
        return {"trial": top.number, "spec": top.user_attrs["spec"], "metrics": metrics}

    def write_outputs(self) -> None:
        """trials.csv, pareto.json and best.json next to the study, each written atomically."""
        from effnas.results import write_run_files

        write_run_files(self.study, self.run_dir)
