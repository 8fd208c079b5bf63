"""The search runner: controller -> candidate spec -> proxy trial -> reward -> Optuna study.

The Optuna study (SQLite ``study.db`` in the run directory by default, any RDB URL with
``--storage``) is the one source of truth: settings, the reference measurement, every trial's
choices, metrics and failure reason live there, so a killed search resumes where it stopped, the
controllers rebuild their state from it, and ``nas report`` / ``optuna-dashboard`` read it.

One loop (:meth:`Search.run`) drives every backend (:mod:`effnas.nas.search.backends`): the budget, the
progress bar, Ctrl-C and the reference trial are written once; a backend only runs trials. The caller chooses and
builds the backend (local worker processes, Ray) and hands it to :meth:`Search.run`, which knows it only through
the :class:`~effnas.nas.search.backends.base.Backend` interface. What the search tells while it runs and when it
ends (its own costs, the run files, the progress bar's best reward, the summary) is :mod:`.progress`'s.

Step times are only comparable when measured alike, so the reference records where and how it was timed
(device, engine, threads, workers, timing discipline) and a resume under other conditions is refused; a trial
whose timed steps disagree too much to rank is flagged, with one warning line.

Budget rule: trials that completed, were stopped early or failed on their own count; a repeat of a trained
architecture takes its record and does not (:mod:`.repeats`); a trial cut off because the search process died
is marked ``interrupted`` on resume and its architecture is evaluated again.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from effnas.search_space import ArchSpec
from effnas.search_space.space import SearchSpace
from effnas.outputs import claim_run_dir
from effnas.writes import ensure_writable_dir, remove_stale_temporaries

from effnas.nas.training.devices import device_name
from effnas.results import RUN_FILES
from effnas.results.record import (DURATION_ATTR, FAIL_REASON_ATTR, IDENTITY_ATTR, INTERRUPTED_ATTR, REFERENCE_ATTR,
                                   RETRY_OF_ATTR, REUSE_ATTR, REWARD_ATTR, SETTINGS_ATTR, SPACE_ATTR, SPEC_ATTR,
                                   STUDY_NAME, WORKER_ATTR, RecordError, Reference, TrialMetrics)
from effnas.results.storage import open_storage, probe_storage, search_storage_url, storage_file, study_lock

from effnas.nas.search.backends.base import Backend, BackendSetup
from effnas.nas.search.budget import counted_trials, recover_interrupted, taken_trials, trial_id_of, worker_id
from effnas.nas.search import streams
from effnas.nas.search.controllers import is_multi_objective, make_sampler, study_directions, study_objectives
from effnas.nas.search.data_shape import data_shape
from effnas.nas.search import repeats
from effnas.nas.search.early_stopping import EarlyStopping
from effnas.nas.search.progress import RUN_FILES_EVERY, Progress, SearchSummary, best_of, warn_unsteady
from effnas.nas.search.repeats import Repeats
from effnas.nas.search.settings import SearchConfig, SearchError, build_space
from effnas.nas.search.trial_settings import TrialSettings


class Search:
    """One search: open or resume the study, measure the reference, run trials up to the budget.

    ``space``: the recipe's search space when the caller has already built it (built here otherwise).
    """

    def __init__(self, config: SearchConfig,
                 on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None,
                 space: SearchSpace | None = None) -> None:
        recipe, runtime = config.recipe, config.runtime
        self.config = config
        self._asked: optuna.trial.Trial | None = None  # see propose
        self.exhausted = False  # the controller proposes only architectures the study has (see repeats)
        self.space = space if space is not None else build_space(recipe.space, recipe.image_size)
        self.multi_objective = is_multi_objective(recipe.controller)
        self.objectives = study_objectives(recipe.controller, recipe.reward_w, recipe.reward_v)
        # See early_stopping's module docs: single-objective controllers only, and a rung needs a next epoch.
        self.early_stopping = recipe.early_stopping and not self.multi_objective and recipe.trial["epochs"] > 1
        self.run_dir = Path(runtime.out)
        self.progress = Progress(self.run_dir, on_trial)  # costs, run files, on_trial: see progress
        self.costs = self.progress.costs  # seconds of this process's own work, per part (see Progress.cost)
        self.storage_url = search_storage_url(runtime.out, runtime.storage)
        # Before anything is read or written: a folder of other files, or a storage file that is not a study, is
        # refused as it is, byte for byte.
        own = [storage_file(self.storage_url)] if runtime.storage and storage_file(self.storage_url) else []
        claim_run_dir(self.run_dir, "search", "--out", own_files=own)
        probe_storage(self.storage_url)
        # What every trial is sent: the recipe, and where this run trains it (a backend may add its timing lock).
        self.trial_settings = TrialSettings.from_dict(
            {**recipe.trial, "device": runtime.device, "engine": runtime.engine, "threads": runtime.threads}).to_dict()
        # Specs get the data's classes and channels; a data set this reads and cannot use fails here, before
        # anything is written (see data_shape for what is read).
        self.num_classes, self.image_channels = self._data_shape()
        ensure_writable_dir(self.run_dir, "run directory")  # read-only, full: one line, and nothing created
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.storage = open_storage(self.storage_url)
        try:  # the sampler is --seed's until this process takes its own stream (see prepare)
            self.study = optuna.create_study(
                study_name=STUDY_NAME, storage=self.storage, load_if_exists=True,
                directions=study_directions(recipe.controller, recipe.reward_w, recipe.reward_v),
                sampler=make_sampler(recipe.controller, self.space, runtime.seed))
        except Exception as error:  # noqa: BLE001
            raise SearchError(f"cannot open the study in {self.storage_url}: {error}") from None
        self._check_or_store_settings()
        self.repeats = Repeats(self.study, self.storage)

    # ------------------------------------------------------------------ settings
    def _check_or_store_settings(self) -> None:
        identity = self.config.recipe.identity(self.space)
        stored = self.study.user_attrs.get(IDENTITY_ATTR)
        if stored is None:
            self.study.set_user_attr(IDENTITY_ATTR, identity)
        elif stored != identity:
            changed = sorted(k for k in identity if identity[k] != stored.get(k))
            detail = changed[0]
            if detail == "trial" and isinstance(stored.get(detail), dict):
                keys = sorted(k for k in identity[detail] if identity[detail][k] != stored[detail].get(k))
                detail = ", ".join(keys) or detail
            raise SearchError(
                f"{self.storage_url} already holds a search with different settings ({detail}); "
                f"re-run with the same settings to resume, or use another --out")

    def conditions(self, backend: Backend | None = None) -> dict[str, Any]:
        """Where and how this run times steps, as a resume compares them with the stored reference's: the device
        (resolved), the engine asked for, and the started backend's workers and threads (without a backend, as
        when a test measures the reference itself: the runtime's, as given)."""
        runtime = self.config.runtime
        workers = (backend.workers if backend is not None else None) or runtime.workers
        threads = (backend.threads if backend is not None else None) or runtime.threads
        return {"device": device_name(runtime.device), "engine": runtime.engine, "threads": threads,
                "workers": workers}

    def _check_conditions(self, conditions: dict[str, Any]) -> None:
        """Refuse, before anything is written, a resume whose step times would not compare with the reference."""
        stored = (self.study.user_attrs.get(REFERENCE_ATTR) or {}).get("conditions")
        if not stored:
            return
        changed = [f"{name} {stored.get(name)} -> {value}" for name, value in conditions.items()
                   if stored.get(name) != value]
        if changed:
            self._refused = True
            raise SearchError(
                f"{self.storage_url} holds a search whose reference was timed under other conditions "
                f"({'; '.join(changed)}); resume with the same --device, --engine, --threads and --workers, "
                f"or use another --out")

    def _data_shape(self) -> tuple[int, int]:
        """The data set's number of classes and image channels, read without its images where the source allows
        (see :mod:`.data_shape`); a source that cannot say is loaded, which also validates it."""
        settings = TrialSettings.from_dict(self.trial_settings)
        shape = data_shape(settings.data, seed=self.config.runtime.seed, val_fraction=settings.val_fraction,
                           data_size=settings.data_size)
        return shape.num_classes, shape.channels

    # ------------------------------------------------------------------ the loop
    def run(self, backend: Backend) -> SearchSummary:
        """Run trials on ``backend`` (not yet started; the caller's choice, e.g. local worker processes) until the
        budget is reached, or until Ctrl-C (``nas search`` turns SIGTERM into one): trials cut off are recorded
        interrupted, not counted."""
        runtime = self.config.runtime
        self._refused = False
        start = time.perf_counter()
        running: dict[int, optuna.trial.Trial] = {}
        stopped_early = False
        bar = None
        try:
            with self.progress.cost("start"):
                backend.start(BackendSetup(runtime.workers, runtime.threads, runtime.trial_timeout,
                                           runtime.trial_memory, runtime.device, self.run_dir, self.storage_url))
            with self.progress.cost("reference"):
                self.prepare(lambda spec: self._measure(backend, spec), self.conditions(backend))
            bar = tqdm(total=runtime.budget, initial=min(counted_trials(self.study), runtime.budget), desc="trials",
                       unit="trial", disable=not runtime.progress, dynamic_ncols=True)
            self.progress.show_best(bar, self.study)
            self._feed(backend, running)
            while running or self.repeats.waiting:
                finished = []
                for result in backend.collect(0.5):
                    self.store(running.pop(result.key), result.metrics, result.error, result.seconds)
                    finished.append(result.key)
                finished += self.repeats.settle_waiting()
                if not running and self.repeats.waiting:
                    time.sleep(0.5)  # waiting for another process's trial of the same architecture
                # Refill the backend before the run files and the progress bar are refreshed.
                self._feed(backend, running)
                if finished:
                    self.publish(finished)
                    bar.update(len(finished))
                    self.progress.show_best(bar, self.study)
        except KeyboardInterrupt:
            stopped_early = True
            for trial in [*running.values(), *self._asked_but_not_submitted(running),
                          *(trial for trial, _ in self.repeats.waiting.values())]:
                self.interrupt(trial, "the search was stopped (Ctrl-C)")
            running.clear()
            self.repeats.waiting.clear()
        finally:
            backend.close(kill=bool(running) or stopped_early)
            if bar is not None:
                bar.close()
            if not self._refused:  # a refused resume leaves the run as it found it
                self.write_outputs()
        return self.summary(time.perf_counter() - start, stopped_early)

    def _asked_but_not_submitted(self, running: dict[int, optuna.trial.Trial]) -> list[optuna.trial.Trial]:
        """The trial a stop cut off between asking the controller and handing it to the backend, if any."""
        asked = self._asked
        if asked is None or asked.number in running or asked.number in self.repeats.waiting:
            return []
        state = self.storage.get_trial(trial_id_of(self.storage, self.study, asked.number)).state
        return [asked] if state == TrialState.RUNNING else []

    def _feed(self, backend: Backend, running: dict[int, optuna.trial.Trial]) -> None:
        """Give the backend candidates while the budget allows (trials running in any process count, so that
        every worker stops at the budget together). A candidate the study already trained is not trained again:
        it takes that trial's record, at once or when the trial ends."""
        while backend.free and not self.exhausted:
            with self.progress.cost("propose"):
                proposal = self.propose()
            if proposal is None:  # the budget is taken, by this process or others
                return
            trial, spec, original = proposal
            if original is None:
                backend.submit(trial.number, spec.to_dict(), self.settings_for(trial), self.config.runtime.seed)
                running[trial.number] = trial
            else:
                self.repeats.wait(trial, original)
            self._asked = None
            self.exhausted = self.repeats.counted(original is not None)
            if self.exhausted:
                tqdm.write(f"nas search: the controller proposed {repeats.MAX_REPEATS} architectures in a row that "
                           f"the study has already trained; stopping with {counted_trials(self.study)} trained "
                           "(the space, or the controller's view of it, is exhausted)", file=sys.stderr)

    def settings_for(self, trial: optuna.trial.Trial) -> dict[str, Any]:
        """The trial settings one candidate is sent: the search's, and its early-stopping rule when on."""
        if not self.early_stopping:
            return self.trial_settings
        reference, recipe = Reference.from_dict(self.reference), self.config.recipe
        trial_id = trial_id_of(self.storage, self.study, trial.number)
        rule = EarlyStopping(self.storage_url, trial_id, reference.step_time_ms, reference.params,
                             recipe.reward_w, recipe.reward_v, recipe.trial["epochs"])
        return {**self.trial_settings, "early_stopping": rule.to_dict()}

    def _measure(self, backend: Backend, spec: ArchSpec) -> TrialMetrics | str:
        """Train the backbone on the backend, under the same conditions as every candidate."""
        backend.submit("reference", spec.to_dict(), self.trial_settings, self.config.runtime.seed)
        results: list[Any] = []
        while not results:
            results = backend.collect(0.5)
        return results[0].error if results[0].error is not None else results[0].metrics

    # ------------------------------------------------------------------ steps of the loop
    def prepare(self, measure_reference: Callable[[ArchSpec], TrialMetrics | Mapping[str, Any] | str],
                conditions: dict[str, Any] | None = None) -> dict[str, Any]:
        """Check this run's timing ``conditions`` against the stored reference's (default: :meth:`conditions`),
        recover trials a dead process left running, and get the reference.

        ``measure_reference(spec)`` runs the backbone on the backend (its record, or a failure reason);
        it is only called the first time, later runs reuse the stored reference.
        """
        conditions = conditions if conditions is not None else self.conditions()
        self._check_conditions(conditions)
        # Under the study's lock: processes started together on one study measure one reference, and one of
        # them recovers each trial a dead process left.
        with study_lock(self.storage_url):
            return self._prepare(measure_reference, conditions)

    def _prepare(self, measure_reference: Callable[[ArchSpec], TrialMetrics | Mapping[str, Any] | str],
                 conditions: dict[str, Any]) -> dict[str, Any]:
        self._check_conditions(conditions)  # another process may have stored the reference meanwhile
        self.study.set_user_attr(SETTINGS_ATTR, asdict(self.config))
        self.study.set_user_attr(SPACE_ATTR, self.space.to_dict())
        recover_interrupted(self.study, self.storage)
        remove_stale_temporaries(self.run_dir, RUN_FILES)  # copies a write killed mid-way left
        self._take_stream()
        stored = self.study.user_attrs.get(REFERENCE_ATTR)
        if stored:
            self.reference = stored
            return stored
        spec = self.space.backbone.replace(num_classes=self.num_classes, image_channels=self.image_channels)
        metrics = measure_reference(spec)
        if isinstance(metrics, str):
            raise SearchError(f"the backbone itself failed to train, so there is no reference: {metrics}")
        record = TrialMetrics.from_result(metrics)
        conditions = {**conditions, "timing": record.timing}  # stored, not compared: it may name pinned cores
        self.reference = Reference.from_metrics(record, spec.to_dict(), conditions).to_dict()
        self.study.set_user_attr(REFERENCE_ATTR, self.reference)
        if record.unsteady:
            warn_unsteady("the reference", record)
        return self.reference

    def _take_stream(self) -> None:
        """Join the study with this process's own seed stream (see :mod:`.streams`), under the study's lock."""
        recipe = self.config.recipe
        self.stream = streams.join(self.study, recipe.controller, self.config.runtime.seed)
        self.study = optuna.load_study(study_name=STUDY_NAME, storage=self.storage,
                                       sampler=make_sampler(recipe.controller, self.space, self.stream["seed"]))
        self.repeats.study = self.study

    def propose(self) -> tuple[optuna.trial.Trial, ArchSpec, int | None] | None:
        """Ask the controller for the next candidate: the trial, its spec, and the number of an earlier trial
        with the same architecture (None for a new one); None once the budget is taken.

        Under the study's lock, so processes sharing the study neither take the budget's last place twice nor
        miss each other's candidates: a trial names its spec and process before the lock is released.
        """
        with study_lock(self.storage_url):
            if taken_trials(self.study) >= self.config.runtime.budget:
                return None
            trial = self.study.ask()
            self._asked = trial  # until the loop hands it on: a stop in between still finds it
            spec = self.space.sample(trial, num_classes=self.num_classes).replace(image_channels=self.image_channels)
            trial.set_user_attr(SPEC_ATTR, spec.to_dict())
            trial.set_user_attr(WORKER_ATTR, worker_id())
            original = self.repeats.trained_before(trial.number, spec.to_dict())
            if original is not None:
                trial.set_user_attr(REUSE_ATTR, original)
        return trial, spec, original

    def record(self, trial: optuna.trial.Trial, metrics: TrialMetrics | Mapping[str, Any] | None,
               error: str | None, seconds: float) -> None:
        """Store a finished trial and rewrite the run files (one result at a time)."""
        self.store(trial, metrics, error, seconds)
        self.publish([trial.number], every=0.0)

    def store(self, trial: optuna.trial.Trial, metrics: TrialMetrics | Mapping[str, Any] | None,
              error: str | None, seconds: float) -> None:
        """Tell the study a trial's metrics and reward, or its failure reason: the one write a result needs
        before the controller can propose the next candidate."""
        with self.progress.cost("store"):
            self._store(trial, metrics, error, seconds)

    def _store(self, trial: optuna.trial.Trial, metrics: TrialMetrics | Mapping[str, Any] | None,
               error: str | None, seconds: float) -> None:
        trial.set_user_attr(DURATION_ATTR, round(seconds, 3))
        if error is not None or metrics is None:
            trial.set_user_attr(FAIL_REASON_ATTR, error or "no metrics returned")
            self.study.tell(trial, state=TrialState.FAIL)
            return
        try:
            record = TrialMetrics.from_result(metrics)
        except RecordError as problem:  # a trial that returned something else than metrics: failed, say why
            trial.set_user_attr(FAIL_REASON_ATTR, str(problem))
            self.study.tell(trial, state=TrialState.FAIL)
            return
        recipe = self.config.recipe
        value = record.reward(Reference.from_dict(self.reference), recipe.reward_w, recipe.reward_v)
        for key, item in record.to_dict().items():
            trial.set_user_attr(key, item)
        trial.set_user_attr(REWARD_ATTR, value)  # a stopped trial's: the reward it had reached
        if record.epochs is not None and record.epochs < recipe.trial["epochs"]:
            self.study.tell(trial, state=TrialState.PRUNED)  # its value: its last Hyperband report, if any
        else:
            self.study.tell(trial, record.objectives(self.objectives) if self.multi_objective else value)
        if record.unsteady:
            warn_unsteady(f"trial {trial.number}", record)

    def publish(self, numbers: list[int], every: float = RUN_FILES_EVERY) -> None:
        """After stored trials: refresh the run files, at most every ``every`` seconds, and tell ``on_trial``
        (see :meth:`Progress.publish`)."""
        self.progress.publish(self.study, numbers, every)

    def interrupt(self, trial: optuna.trial.Trial, reason: str) -> None:
        """A trial cut off by the search stopping: not counted, and its architecture is queued again (unless it
        only waited for another trial of the same architecture)."""
        trial.set_user_attr(INTERRUPTED_ATTR, True)
        trial.set_user_attr(FAIL_REASON_ATTR, f"interrupted: {reason}")
        self.study.tell(trial, state=TrialState.FAIL)
        if trial.number not in self.repeats.waiting:
            self.study.enqueue_trial(trial.params, user_attrs={RETRY_OF_ATTR: trial.number})

    def summary(self, seconds: float, stopped_early: bool = False) -> SearchSummary:
        return self.progress.summary(self.study, self.storage_url, self.config.runtime.budget,
                                     getattr(self, "reference", {}), seconds, stopped_early)

    def best(self) -> dict[str, Any] | None:
        """The best completed trial (the rule ``best.json`` follows too): its spec, metrics and reward."""
        return best_of(self.study)

    def write_outputs(self) -> None:
        """trials.csv, pareto.json and best.json next to the study, each written atomically."""
        self.progress.write_outputs(self.study)
