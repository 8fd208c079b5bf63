"""``nas train``: train one architecture with progressive learning and adaptive regularization.

The recipe (:mod:`effnas.nas.training.recipe`) follows the official EfficientNetV2 code in spirit, with
Algorithm 1 (:mod:`effnas.nas.training.progressive`) raising image size, dropout, RandAugment and mixup stage
by stage. A run trains for a number of epochs, or for a number of seconds (:mod:`effnas.nas.training.budget`),
and ends with one evaluation on the data's test split, which nothing before it reads.

The optimisation step itself is :func:`effnas.nas.training.engine.make_train_step`, the very step the search's
proxy trials use (eager, whole-step CUDA graph or compiled), with the same optimizers, warm-up + cosine schedule
and evaluation; the step is rebuilt at each stage because the batch shape and the dropout rate change there.
Augmentation (:mod:`effnas.nas.training.augment`) runs before the step on the device.
Every epoch ends with a checkpoint, so ``--resume`` continues exactly where a run stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from effnas.models import build_model
from effnas.search_space import ArchSpec, ProgressiveRecipe
from effnas.writes import atomic_write, ensure_writable_dir, remove_stale_temporaries

from effnas.nas.training import state as train_state
from effnas.nas.training.augment import TrainAugment, channel_stats, eval_batch
from effnas.nas.training.budget import WARMUP_FRACTION, TimeBudget, measure_step_seconds, planned_epochs
from effnas.nas.training.data import ImageData, load_data
from effnas.nas.training.engine import (classification_loss, cudnn_benchmark, evaluate_loss_acc, make_train_step,
                                        prepare_model, resolve_device, set_threads)
from effnas.nas.training.optim import set_lr
from effnas.nas.training.progressive import Stage, progressive_schedule, ranges_for, stage_at
from effnas.nas.training.recipe import (LRSchedule, TrainConfig, TrainError, build_optimizer, effective_recipe,
                                        eval_size_for, peak_lr, scaled_ranges)

__all__ = ["LRSchedule", "TrainConfig", "TrainError", "effective_recipe", "train"]

TRAIN_ACC_IMAGES = 2048  # train accuracy is measured on this many (un-augmented) training images

# what a training run writes into its --out
TRAIN_RUN_FILES = ("last.pt", "metrics.csv", "training.html", "final.pt", "metrics.json", "config.yaml")


def evaluate_images(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, image_size: int,
                    mean: torch.Tensor, std: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and top-1 of ``model`` on uint8 ``images`` resized to ``image_size`` (the engine's
    evaluation, with this run's resize and normalisation)."""
    return evaluate_loss_acc(model, images, labels, batch_size,
                             prepare=lambda batch: eval_batch(batch, image_size, mean, std))


# ----------------------------------------------------------------------------- the run
def train(spec: ArchSpec, config: TrainConfig, out: str | Path, *, device: str = "auto", engine: str = "auto",
          resume: bool = False, stop_after: int | None = None, progress: bool = True, threads: int | None = None,
          log: Any = print, on_start: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train ``spec`` on ``config.data``; write ``last.pt`` (every epoch), ``metrics.csv``, ``training.html``,
    and at the end ``final.pt`` (EMA weights) and ``metrics.json`` (validation and test top-1) into ``out``.

    With ``config.time_limit`` the run trains for that many seconds (:mod:`effnas.nas.training.budget`), else for
    ``config.epochs``. ``stop_after`` ends this call after that many epochs (``resume=True`` continues from the
    checkpoint). ``threads``: CPU threads (None: the free cores). Returns the final metrics, or
    ``{"stopped_after_epoch": n}`` when stopped early.
    """
    config.validate()
    requested = config  # what a resume must match; ``config`` below is it with every default decided
    torch_device = resolve_device(device)
    threads = set_threads(threads)
    eval_size = eval_size_for(spec, config)
    if eval_size < spec.total_stride:
        raise TrainError(f"eval image size {eval_size} px is below the network's total stride {spec.total_stride}")
    log(f"reading {config.data}")  # a large data set takes seconds: say so from the first one
    data = load_data(config.data, seed=config.seed, val_fraction=config.val_fraction)
    n_train = len(data.train_y)
    budget = None
    if config.time_limit is not None:  # the epochs a time run expects come from its own measured step time
        budget, config = _plan_time_run(spec, config, data.num_classes, data.channels, n_train, torch_device, engine)
        log(f"{budget.seconds:.0f} s of training at about {1000 * budget.step_seconds:.0f} ms a step: "
            f"about {budget.planned_steps} steps")
    config, scale = effective_recipe(config, n_train, steps=budget and budget.planned_steps)
    ranges = scaled_ranges(ranges_for(spec, image_size=config.image_size, min_image_size=config.min_image_size,
                                      randaug=config.randaug, mixup=config.mixup, dropout=config.dropout),
                           requested, scale)
    stages = config.stages if config.progressive else 1
    # A time run's stages are equal shares of its time: one slot each in the schedule.
    schedule = progressive_schedule(stages, stages if budget else config.epochs, ranges)
    # The spec saved with the weights says how they were trained: data's classes and channels, sizes, recipe.
    spec = spec.replace(num_classes=data.num_classes, image_channels=data.channels,
                        train_image_size=ranges.max_image_size, eval_image_size=eval_size,
                        drop_path_rate=spec.drop_path_rate * scale,
                        progressive=ProgressiveRecipe(ranges.min_image_size, *ranges.randaug, *ranges.mixup,
                                                      *ranges.dropout))
    if config.batch_size > n_train:
        raise TrainError(f"batch size {config.batch_size} exceeds the {n_train} training images of "
                         f"{data.name}; use --batch-size {n_train} or less")
    steps_per_epoch = n_train // config.batch_size  # whole batches only: every step has the same shape

    out = Path(out)
    checkpoint = out / "last.pt"
    if checkpoint.exists() and not resume:
        raise TrainError(f"{out} already holds a run ({checkpoint.name}); pass --resume to continue it "
                         "or choose another --out")
    torch.manual_seed(config.seed)
    model = prepare_model(build_model(spec), torch_device)
    optimizer = build_optimizer(model, config, torch_device)
    ema = train_state.EMA(model, config.ema_decay)
    first_epoch, global_step, history = 0, 0, []
    if resume:
        state = train_state.load_checkpoint(checkpoint, torch_device)
        train_state.check_compatible(checkpoint, state, spec.to_dict(), requested.to_dict())
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        first_epoch, global_step, history = state["epoch"], state["step"], list(state["history"])
        train_state.set_rng_state(state["rng"])
        if budget is not None:
            budget.spent = sum(row["seconds"] for row in history)
        log(f"resuming {out} after epoch {first_epoch}/{config.epochs}")
    ensure_writable_dir(out, "output directory")  # read-only or full: one line, before any training
    remove_stale_temporaries(out, TRAIN_RUN_FILES)  # copies a killed write left; the files themselves are whole
    if on_start is not None:  # the run is accepted: a caller's own files (the run file) may be written now
        on_start()

    train_x, train_y = data.train_x.to(torch_device), data.train_y.to(torch_device)
    val_x, val_y = data.val_x.to(torch_device), data.val_y.to(torch_device)
    mean, std = channel_stats(train_x)
    probe = slice(0, min(n_train, TRAIN_ACC_IMAGES))
    lr_at = LRSchedule.for_run(config, steps_per_epoch)
    # A time run ends when its time does; its epoch count is only an estimate, so the loop may go past it.
    last_epoch = config.epochs if budget is None else 1000 * config.epochs
    end_epoch = last_epoch if stop_after is None else min(last_epoch, first_epoch + stop_after)
    run = _Run(model, optimizer, config, data.channels, data.num_classes, mean, std, engine, schedule, budget)
    with cudnn_benchmark(torch_device.type == "cuda"):
        for epoch in range(first_epoch, end_epoch):
            if budget is not None and budget.expired:
                break
            if budget is None:
                run.enter(stage_at(schedule, epoch))
            lr = lr_at(global_step)
            # The epoch's order depends only on (seed, epoch): a resumed run draws the same batches.
            order = torch.randperm(n_train, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
            started, cpu_started = time.perf_counter(), time.process_time()
            train_loss, global_step = _train_epoch(run, train_x, train_y, order.to(torch_device), steps_per_epoch,
                                                   lr_at, ema, global_step, epoch, progress=progress)
            seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
            if not math.isfinite(train_loss):
                raise TrainError(f"training diverged (loss {train_loss}) in epoch {epoch + 1}; try a lower --lr")
            stage = run.stage
            _, train_acc = evaluate_images(model, train_x[probe], train_y[probe], stage.image_size, mean, std,
                                             config.batch_size)
            val_loss, val_acc = evaluate_images(model, val_x, val_y, eval_size, mean, std, config.batch_size)
            _, ema_val_acc = evaluate_images(ema.module, val_x, val_y, eval_size, mean, std, config.batch_size)
            history.append({"epoch": epoch + 1, "stage": stage.index, "image_size": stage.image_size,
                            "dropout": stage.dropout, "randaug": stage.randaug, "mixup": stage.mixup, "lr": lr,
                            "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                            "val_acc": val_acc, "ema_val_acc": ema_val_acc, "seconds": seconds,
                            "cpu_seconds": cpu_seconds})
            train_state.save_checkpoint(checkpoint, {
                "spec": spec.to_dict(), "config": requested.to_dict(), "epoch": epoch + 1, "stage": stage.index,
                "step": global_step, "model": model.state_dict(), "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(), "rng": train_state.rng_state(), "history": history})
            train_state.write_metrics_csv(out / "metrics.csv", history)
            train_state.write_plot(out / "training.html", history, f"nas train: {spec.name or 'model'} on {data.name}",
                                   _headline(config, history, model))
            of = f"/{config.epochs}" if budget is None else f" ({budget.spent:.0f}/{budget.seconds:.0f} s)"
            log(f"epoch {epoch + 1}{of}  stage {stage.index + 1}/{len(schedule)}  {stage.image_size}px  "
                f"loss {train_loss:.3f}  train acc {train_acc:.3f}  val acc {val_acc:.3f} (EMA {ema_val_acc:.3f})  "
                f"{seconds:.1f} s")
    if budget is None and end_epoch < config.epochs or budget is not None and not budget.expired:
        log(f"stopped after epoch {end_epoch}; continue with --resume")
        return {"stopped_after_epoch": end_epoch}
    extras = {"threads": threads, "steps": global_step, "epochs_reached": global_step / steps_per_epoch,
              "time_limit": config.time_limit, "step_seconds_measured": budget and budget.step_seconds}
    return _finish(out, spec, requested, config, scale, schedule, history, model, ema, data, eval_size,
                   mean, std, getattr(run.step, "engine", None), extras)


def _plan_time_run(spec: ArchSpec, config: TrainConfig, num_classes: int, channels: int, n_train: int,
                   device: torch.device, engine: str) -> tuple[TimeBudget, TrainConfig]:
    """A time run's clock, and ``config`` with the epochs its measured step time promises (at least one)."""
    sized, _ = effective_recipe(config, n_train)  # the batch size the run will use
    size = ranges_for(spec, image_size=config.image_size).max_image_size
    probe = build_model(spec.replace(num_classes=num_classes, image_channels=channels, train_image_size=size))
    probe = prepare_model(probe, device)
    step_seconds = measure_step_seconds(probe, config.optimizer, peak_lr(sized), sized.batch_size, channels, size,
                                        num_classes, device, engine)
    steps_per_epoch = max(1, n_train // sized.batch_size)
    steps, epochs = planned_epochs(config.time_limit, step_seconds, steps_per_epoch)
    warmup = (WARMUP_FRACTION if config.warmup_epochs is None
              else min(0.5, config.warmup_epochs * steps_per_epoch / steps))
    budget = TimeBudget(config.time_limit, warmup_fraction=warmup, synchronize=device.type == "cuda",
                        step_seconds=step_seconds, planned_steps=steps)
    return budget, dataclasses.replace(config, epochs=epochs)


class _Run:
    """What the step loop switches when progressive learning enters a new stage: the dropout, the augmentation
    and the training step; and, for a time run, its clock."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig, channels: int,
                 num_classes: int, mean: torch.Tensor, std: torch.Tensor, engine: str, schedule: list[Stage],
                 budget: TimeBudget | None) -> None:
        self.model, self.optimizer, self.config, self.engine = model, optimizer, config, engine
        self.channels, self.num_classes, self.mean, self.std = channels, num_classes, mean, std
        self.schedule, self.budget = schedule, budget
        self.stage: Stage | None = None
        self.step: Any = None
        self.augment: TrainAugment | None = None
        if budget is not None:
            self.enter(schedule[TimeBudget.stage_index(budget.spent / budget.seconds, len(schedule))])

    def enter(self, stage: Stage) -> None:
        if self.stage is None or stage.index != self.stage.index:
            self.augment, self.step = _start_stage(stage, self.model, self.optimizer, self.config, self.channels,
                                                   self.num_classes, self.mean, self.std, self.engine)
            self.stage = stage


def _start_stage(stage: Stage, model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig,
                 channels: int, num_classes: int, mean: torch.Tensor, std: torch.Tensor,
                 engine: str) -> tuple[TrainAugment, Any]:
    """A stage's augmentation and training step. The step is rebuilt because a CUDA graph bakes in the
    batch shape and the dropout rate. Building it leaves weights and optimizer state untouched (the engine
    restores them after its warm-up) and, with ``fork_rng``, the random streams too: so a run resumed in
    the middle of a stage draws exactly what the uninterrupted run drew."""
    device = mean.device
    model.set_dropout(stage.dropout)
    augment = TrainAugment(stage.image_size, stage.randaug, stage.mixup, num_classes, mean, std,
                           flip=config.flip, crop_min_area=config.crop_min_area).to(device)
    example_x = torch.zeros((config.batch_size, channels, stage.image_size, stage.image_size), device=device)
    example_y = torch.full((config.batch_size, num_classes), 1.0 / num_classes, device=device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        step = make_train_step(model, optimizer, classification_loss(config.label_smoothing), example_x,
                               example_y, engine=engine)
    return augment, step


def _train_epoch(run: _Run, train_x: torch.Tensor, train_y: torch.Tensor, order: torch.Tensor, steps: int,
                 lr_at: LRSchedule, ema: train_state.EMA, global_step: int, epoch: int,
                 progress: bool) -> tuple[float, int]:
    """One epoch of augmented batches through the shared step; returns the mean loss (one host sync). A time
    run's clock picks each step's stage and learning rate, and ends the epoch early when the time is up."""
    budget, batch_size = run.budget, run.config.batch_size
    loss_sum = torch.zeros((), device=train_x.device)
    if budget is None:
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{run.config.epochs} {run.stage.image_size}px",
                   leave=False, unit="step", disable=None if progress else True)
    else:
        bar = tqdm(total=round(budget.seconds), initial=round(budget.spent), desc=f"epoch {epoch + 1}", leave=False,
                   unit="s", disable=None if progress else True, bar_format="{l_bar}{bar}| {n:.0f}/{total} s {postfix}")
        budget.start_epoch()
    done = 0
    for b in range(steps):
        if budget is None:
            lr = lr_at(global_step)
        else:
            fraction = budget.tick()
            if budget.expired:
                break
            run.enter(run.schedule[TimeBudget.stage_index(fraction, len(run.schedule))])
            lr = budget.lr(peak_lr(run.config), fraction)
        run.model.train()
        index = order[b * batch_size:(b + 1) * batch_size]
        x, y = run.augment(train_x[index], train_y[index])
        set_lr(run.optimizer, lr)
        loss_sum += run.step(x, y)
        ema.update(global_step)
        global_step += 1
        done += 1
        if budget is None:
            bar.update(1)
        else:
            bar.update(round(budget.spent) - bar.n)  # tqdm redraws at most a few times a second
        if b % 25 == 24:
            bar.set_postfix(loss=f"{loss_sum.item() / done:.3f}")
    if budget is not None:
        budget.tick(final=True)
    bar.close()
    return (loss_sum.item() / done if done else 0.0), global_step


def _finish(out: Path, spec: ArchSpec, requested: TrainConfig, config: TrainConfig, scale: float,
            schedule: list[Stage], history: list[dict[str, Any]], model: torch.nn.Module, ema: train_state.EMA,
            data: ImageData, eval_size: int, mean: torch.Tensor, std: torch.Tensor, engine: str | None,
            extras: dict[str, Any]) -> dict[str, Any]:
    """Final evaluation of the EMA weights at the eval size, on the validation split and then, once, on the test
    split (read here for the first time); writes ``final.pt`` and ``metrics.json``."""
    device = mean.device
    val_x, val_y = data.val_x.to(device), data.val_y.to(device)
    val_loss, top1 = evaluate_images(ema.module, val_x, val_y, eval_size, mean, std, config.batch_size)
    _, top1_raw = evaluate_images(model, val_x, val_y, eval_size, mean, std, config.batch_size)
    test_top1 = None
    if data.test_origin != "none":
        test_x, test_y = data.test_split()
        _, test_top1 = evaluate_images(ema.module, test_x.to(device), test_y.to(device), eval_size, mean, std,
                                       config.batch_size)
    train_state.save_checkpoint(out / "final.pt", {"spec": spec.to_dict(), "model": ema.state_dict(),
                                                   "config": requested.to_dict()})
    metrics = {
        "top1": top1, "test_top1": test_top1, "test_split": data.test_origin, "top1_raw_weights": top1_raw,
        "val_loss": val_loss, "eval_image_size": eval_size,
        "epochs": config.epochs if config.time_limit is None else round(extras["epochs_reached"], 3),
        "stages": len(schedule), "progressive": config.progressive,
        "train_seconds": sum(row["seconds"] for row in history),
        "train_cpu_seconds": sum(row["cpu_seconds"] for row in history),
        "params": sum(p.numel() for p in model.parameters()), "engine": engine, **extras,
        "schedule": [stage.to_dict() for stage in schedule], "config": requested.to_dict(),
        "recipe": config.to_dict(), "regularization_scale": scale, "spec": spec.to_dict(),
    }
    atomic_write(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    title = f"nas train: {spec.name or 'model'} on {config.data}"
    train_state.write_plot(out / "training.html", history, title, _headline(config, history, model, top1, eval_size))
    return metrics


def _headline(config: TrainConfig, history: list[dict[str, Any]], model: torch.nn.Module,
              top1: float | None = None, eval_size: int | None = None) -> str:
    """The numbers a reader of ``training.html`` wants first: result, size, time and recipe."""
    last = history[-1]
    result = (f"final top-1 {top1:.4f} (EMA weights, {eval_size} px)" if top1 is not None else
              f"epoch {last['epoch']}/{config.epochs}: validation top-1 {last['val_acc']:.4f} "
              f"(EMA {last['ema_val_acc']:.4f})")
    params = sum(p.numel() for p in model.parameters())
    seconds = sum(row["seconds"] for row in history)
    return (f"{result} · {params:,} params · {seconds:.0f} s of training · {config.optimizer}, batch "
            f"{config.batch_size}, peak lr {peak_lr(config):.3g}, {config.stages if config.progressive else 1} "
            f"stage(s)")
