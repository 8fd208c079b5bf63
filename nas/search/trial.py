"""One proxy trial: train a candidate briefly on the user's device and measure what the reward needs.

:func:`measure_trial` is self-contained (plain dicts in, the trial's
:class:`~effnas.results.record.TrialMetrics` out, which pickles) so a worker process or Ray can run it and the study
stores what it returns as it is; :func:`run_trial` gives the same record as a dict, for scripts that read it by name.
A long-lived worker keeps the loaded, resized, device-resident data between trials (small LRU cache), and
convolution shapes it has already seen cost nothing again.

The step time is the median of real training steps, each timed on its own, so measuring costs no extra steps.
With ``timing_lock`` (a file path shared by a search's concurrent workers) ``timing_steps`` steps are timed
while this trial has the device to itself, on a GPU as on CPU: other trials finish their current step (on a GPU,
their current run of steps) and wait. Without a lock (one worker) a CPU trial times every step after the first
two: spread over the run, a moment of interference from the rest of the machine moves the median little.
Which steps are timed and what each run of steps holds is :class:`~effnas.nas.search.device_sharing.TimingPlan`'s
to say; the loop only enters it. Each trial records what it was timed under (``timing``, ``threads``,
``workers``, ``device``) and how long it waited for the device (``lock_wait_seconds``).

The trial asks its early-stopping rule (:mod:`effnas.nas.search.early_stopping`) after each timed window whether
its cost alone already loses (the first window is a few steps into the first epoch), and after each epoch but
the last, where the rule may evaluate it and report its reward so far to Hyperband. It stops when the rule says
so; its metrics then say how many whole ``epochs`` it trained. Without a rule the answer is always to go on.
"""

from __future__ import annotations

import contextlib
import dataclasses
from concurrent.futures import Future, ThreadPoolExecutor
import functools
import math
import random
import time
from typing import Any, Iterator

import numpy as np
import torch

from effnas.models import build_model
from effnas.models.profile import count_macs, count_params
from effnas.search_space import ArchSpec, spec_from_dict
from effnas.results.record import TrialMetrics

from effnas.nas.training.budget import measure_step_seconds
from effnas.nas.training.data import DeviceData, load_data, to_device
from effnas.nas.training.engine import (classification_loss, cudnn_benchmark, evaluate, make_optimizer,
                                        make_train_step, prepare_model, resolve_device)
from effnas.nas.training.optim import warmup_cosine, warmup_steps
from effnas.nas.search.device_sharing import DeviceSharing, TimingPlan
from effnas.nas.search.early_stopping import Decision, stopping_for
from effnas.nas.search.trial_settings import TrialSettings


class TrialError(Exception):
    """The candidate itself failed (diverged, out of memory, its model raised): a result, not a user error."""


MAX_PROXY_EPOCHS = 100  # an equal-time proxy of a very fast candidate stops here


# ----------------------------------------------------------------------------- data cache
@functools.lru_cache(maxsize=2)
def _cached_data(source: str, seed: int, val_fraction: float, data_size: int, image_size: int,
                 device: str) -> DeviceData:
    return to_device(load_data(source, seed=seed, val_fraction=val_fraction, data_size=data_size), image_size, device)


def trial_data(settings: TrialSettings, seed: int, device: torch.device, image_size: int) -> DeviceData:
    """The device-resident data for ``settings`` at ``image_size`` px (the spec's), loaded once per process
    (trials only read it)."""
    return _cached_data(settings.data, seed, settings.val_fraction, settings.data_size, image_size,
                        str(device))


# ----------------------------------------------------------------------------- the trial
def lr_schedule(base_lr: float, total_steps: int, warmup_fraction: float) -> list[float]:
    """The trial's rate for every step: the engine's linear warm-up then cosine to zero, the warm-up being
    ``warmup_fraction`` of the run (computed once, so the step loop only looks rates up)."""
    warmup = warmup_steps(total_steps, warmup_fraction)
    return [warmup_cosine(k, base_lr, total_steps, warmup) for k in range(total_steps)]


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and ("out of memory" in str(error) or "can't allocate memory" in str(error)))


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".strip()[:500]


def measure_trial(spec: dict | ArchSpec, settings: dict | TrialSettings | None, seed: int) -> TrialMetrics:
    """Train ``spec`` under ``settings``; return its record: accuracy, step time, size and cost. See the module docs.

    Bad settings or data raise an :class:`EffnasError`; a failing candidate raises :class:`TrialError`.
    """
    start = time.perf_counter()
    settings = settings if isinstance(settings, TrialSettings) else TrialSettings.from_dict(settings)
    spec = spec if isinstance(spec, ArchSpec) else spec_from_dict(spec)
    device = resolve_device(settings.device)
    with _torch_threads(settings.threads), cudnn_benchmark(False):
        data = trial_data(settings, seed, device, spec.train_image_size)  # the spec's size: best.json says it
        _seed_everything(seed)
        overrides = {name: getattr(settings, name) for name in ("dropout", "drop_path_rate")
                     if getattr(settings, name) is not None}
        spec = spec.replace(num_classes=data.num_classes, image_channels=data.channels, **overrides)
        try:
            record = _train_and_measure(spec, settings, seed, device, data)
        except TrialError:
            raise
        except Exception as error:  # noqa: BLE001 - whatever the candidate did, it is this trial's result
            reason = "out of memory" if _is_oom(error) else "the model raised"
            raise TrialError(f"{reason}: {_first_line(error)}") from None
    return dataclasses.replace(record, total_seconds=time.perf_counter() - start)


def run_trial(spec: dict | ArchSpec, settings: dict | TrialSettings | None, seed: int) -> dict[str, Any]:
    """:func:`measure_trial`'s record as a dict of every field (None where not measured), for a script that reads
    metrics by name; a dict a script hands back to the search is read with ``TrialMetrics.from_result``."""
    return dataclasses.asdict(measure_trial(spec, settings, seed))


_MACS_THREAD: ThreadPoolExecutor | None = None


def _count_macs_on_meta(spec: ArchSpec, image_size: int) -> int:
    with torch.device("meta"):
        model = build_model(spec)
    return count_macs(model, image_size, spec.image_channels)


def _macs_in_background(spec: ArchSpec, image_size: int) -> Future:
    """Count MACs on a meta copy in a thread: on a GPU the host is idle while graphs replay, so this
    profiling then costs the trial no wall time."""
    global _MACS_THREAD
    if _MACS_THREAD is None:
        _MACS_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="effnas-macs")
    return _MACS_THREAD.submit(_count_macs_on_meta, spec, image_size)


class _Validation:
    """The model's validation accuracy, measured when called, under the shared lock (computing beside another
    trial's timed steps would slow them); ``value`` keeps it, so a trial stopped at a rung is not evaluated twice."""

    def __init__(self, model: torch.nn.Module, data: DeviceData, sharing: DeviceSharing) -> None:
        self.model, self.data, self.sharing = model, data, sharing
        self.value: float | None = None

    def __call__(self) -> float:
        with self.sharing.shared():
            self.value = evaluate(self.model, self.data.val_x, self.data.val_y)
        return self.value


def _train_and_measure(spec: ArchSpec, settings: TrialSettings, seed: int, device: torch.device,
                       data: DeviceData) -> TrialMetrics:
    model = build_model(spec)
    params = count_params(model)
    if device.type == "cuda":
        macs_job: Future | None = _macs_in_background(spec, spec.train_image_size)
    else:  # no idle host time to hide it in: count now, with one real batch-1 forward (cheaper than meta)
        macs_job, macs = None, count_macs(model, spec.train_image_size, spec.image_channels, on_meta=False)
    prepare_model(model, device)
    optimizer = make_optimizer(settings.optimizer, model.parameters(), settings.lr, device,
                               weight_decay=settings.weight_decay)
    count = len(data.train_x)
    batch = min(settings.batch_size, count)
    steps_per_epoch = count // batch  # the last partial batch is dropped: the graph needs one shape
    sharing = DeviceSharing(settings.timing_lock, device)  # the same discipline on CPU and GPU
    epochs, total = settings.epochs, settings.epochs * steps_per_epoch
    if settings.seconds is not None:  # equal time: the steps this candidate's own step time buys
        with sharing.exclusive():
            step_seconds = measure_step_seconds(model, settings.optimizer, settings.lr, batch, spec.image_channels,
                                                spec.train_image_size, spec.num_classes, device, settings.engine)
        total = min(MAX_PROXY_EPOCHS * steps_per_epoch, max(4, round(settings.seconds / step_seconds)))
        epochs = -(-total // steps_per_epoch)
    rates = lr_schedule(settings.lr, total, settings.warmup_fraction)
    stopping = stopping_for(settings.early_stopping)
    plan = TimingPlan(sharing, settings.timing_steps, epochs, steps_per_epoch, total, stopping.may_stop)

    build_start = time.perf_counter()
    step = make_train_step(model, optimizer, classification_loss(settings.label_smoothing),
                           data.train_x[:batch], data.train_y[:batch], engine=settings.engine)
    build_seconds = time.perf_counter() - build_start

    generator = torch.Generator(device=device).manual_seed(seed)
    train_start = time.perf_counter()
    k, epoch_loss, epochs_trained, accuracy = 0, math.nan, settings.epochs, None
    for epoch in plan.epochs():
        order = torch.randperm(count, device=device, generator=generator)
        running, done, stopped = torch.zeros((), device=device), 0, False
        for segment in epoch.segments:
            with segment.hold():
                for i in segment.steps:
                    step.set_lr(rates[k])
                    index = order[i * batch:(i + 1) * batch]
                    x, y = data.train_x[index], data.train_y[index]
                    with segment.measure():
                        loss = step(x, y)
                    running += loss
                    k, done = k + 1, done + 1
            if segment.timed and stopping.on_window(plan.step_time_ms(), params) is Decision.STOP:
                stopped = True
                break
        epoch_loss = running.item() / done  # the one host sync per epoch
        if not math.isfinite(epoch_loss):
            raise TrialError(f"diverged: training loss is {'NaN' if math.isnan(epoch_loss) else 'inf'} "
                             f"in epoch {epoch.number} (NaN/inf loss)")
        if stopped:
            epochs_trained = epoch.number - (done < steps_per_epoch)  # whole epochs trained
            break
        rung = _Validation(model, data, sharing)  # evaluated only if the rule reports this epoch
        if not epoch.last and stopping.on_epoch(epoch.number, rung, plan.step_time_ms(), params) is Decision.STOP:
            epochs_trained, accuracy = epoch.number, rung.value
            break
    timing = plan.timing()
    train_seconds = time.perf_counter() - train_start
    eval_start = time.perf_counter()
    if accuracy is None:  # not already measured at the rung that stopped the trial
        accuracy = _Validation(model, data, sharing)()
    eval_seconds = time.perf_counter() - eval_start
    if macs_job is not None:
        macs = macs_job.result()
    return TrialMetrics(
        accuracy=accuracy, step_time_ms=timing.median_ms, step_time_spread=timing.spread,
        timed_steps=timing.steps, params=params, macs=macs, flops=2 * macs,
        engine=step.engine, fallback_reason=step.fallback_reason, train_seconds=train_seconds,
        eval_seconds=eval_seconds, build_seconds=build_seconds, train_loss=epoch_loss, train_steps=k,
        epochs=epochs_trained,
        batch_size=batch, image_size=spec.train_image_size, device=str(device),
        timing=sharing.conditions(), threads=torch.get_num_threads(),
        workers=settings.workers, lock_wait_seconds=sharing.wait_seconds)
