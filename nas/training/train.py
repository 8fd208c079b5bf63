"""``nas train``: train one architecture with progressive learning and adaptive regularization.

The recipe follows the official EfficientNetV2 code in spirit: RMSProp (decay 0.9, momentum 0.9,
eps 1e-3; SGD or AdamW selectable), learning rate scaled by batch/256 with a linear warm-up then cosine or
exponential (x0.97 every 2.4 epochs) decay, label smoothing 0.1, an EMA of the weights, and Algorithm 1
(:mod:`effnas.nas.training.progressive`) raising image size, dropout, RandAugment and mixup stage by stage.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from effnas.errors import EffnasError
from effnas.models import build_model
from effnas.search_space import ArchSpec, ProgressiveRecipe
from effnas.writes import atomic_write, ensure_writable_dir

from effnas.nas.training import state as train_state
from effnas.nas.training.augment import CROP_MIN_AREA, TrainAugment, channel_stats, eval_batch
from effnas.nas.training.data import load_data
from effnas.nas.training.engine import (OPTIMIZERS, classification_loss, cudnn_benchmark, evaluate_loss_acc,
                                        make_optimizer, make_train_step, prepare_model, resolve_device)
from effnas.nas.training.optim import decay_groups, set_lr, warmup_cosine
from effnas.nas.training.progressive import Ranges, Stage, progressive_schedule, ranges_for, stage_at

SCHEDULES = ("cosine", "exponential")
DEFAULT_BATCH_SIZE, MIN_BATCH_SIZE = 64, 16  # the proxy trials' batch
MIN_STEPS_PER_EPOCH = 16  # fewer and a short run ends before warm-up and decay have done their work
DEFAULT_STAGES = 4
LABEL_SMOOTHING = 0.1
FULL_REGULARIZATION_STEPS = 10_000  # runs this long or longer get the paper's full regularization
MIN_RANDAUG_MAGNITUDE = 5.0  # the paper's smallest; RandAugment's magnitude-free ops make it all or nothing
# Learning rate per 256 images of batch, and weight decay, per optimizer. RMSProp's is half the official 0.016:
# PyTorch adds its epsilon outside the square root (TensorFlow inside), so the same rate takes larger steps; at
# the official rate small-batch runs oscillate, at this one (the proxy trials' 0.002 at batch 64) they converge.
BASE_LR = {"rmsprop": 0.008, "sgd": 0.1, "adamw": 0.002}
WEIGHT_DECAY = {"rmsprop": 1e-5, "sgd": 5e-5, "adamw": 0.05}
TRAIN_ACC_IMAGES = 2048  # train accuracy is measured on this many (un-augmented) training images


class TrainError(EffnasError):
    """Training options that cannot be honoured."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the result of a run (and must match when resuming)."""

    data: str = "digits"
    epochs: int = 10
    stages: int | None = None  # None: 4, at most one per epoch
    progressive: bool = True
    batch_size: int | None = None  # None: 64, smaller on small data sets (see effective_recipe)
    optimizer: str = "rmsprop"
    lr: float | None = None  # None: BASE_LR[optimizer] * batch_size / 256
    weight_decay: float | None = None
    schedule: str = "cosine"
    warmup_epochs: float | None = None  # None: 5 epochs, at most 10 % of the run
    label_smoothing: float | None = None  # None: 0.1, scaled with the run's length
    ema_decay: float = 0.9999
    image_size: int | None = None  # final training size; None: the spec's train_image_size
    eval_image_size: int | None = None
    min_image_size: int | None = None
    randaug: tuple[float, float] | None = None
    mixup: tuple[float, float] | None = None
    dropout: tuple[float, float] | None = None
    flip: bool = True
    crop_min_area: float | None = None  # None: CROP_MIN_AREA, scaled with the run's length
    val_fraction: float = 0.2
    seed: int = 0

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise TrainError(f"optimizer: unknown {self.optimizer!r} (expected one of {', '.join(OPTIMIZERS)})")
        if self.schedule not in SCHEDULES:
            raise TrainError(f"schedule: unknown {self.schedule!r} (expected one of {', '.join(SCHEDULES)})")
        for name in ("epochs", "stages", "batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise TrainError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "weight_decay", "warmup_epochs"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0 and (name != "lr" or value > 0)):
                raise TrainError(f"{name}: must be a {'positive' if name == 'lr' else 'non-negative'} number, "
                                 f"got {value}")
        if self.crop_min_area is not None and not 0.0 < self.crop_min_area <= 1.0:
            raise TrainError(f"crop_min_area: must be in (0, 1], got {self.crop_min_area}")
        if not 0.0 < self.val_fraction < 1.0:
            raise TrainError(f"val_fraction: must be in (0, 1), got {self.val_fraction}")
        if not 0.0 <= (self.label_smoothing or 0.0) < 1.0 or not 0.0 <= self.ema_decay < 1.0:
            raise TrainError("label_smoothing and ema_decay must be in [0, 1)")
        for name in ("image_size", "eval_image_size", "min_image_size"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= 4096:
                raise TrainError(f"{name}: must be in [1, 4096] px, got {value}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


# ----------------------------------------------------------------------------- set-up
def effective_recipe(config: TrainConfig, train_images: int) -> tuple[TrainConfig, float]:
    """``config`` with every unset choice decided for this data set, and the regularization scale.

    The official recipe is tuned for ImageNet-length runs; on a small data set or a short run it underfits
    (a few hundred steps of dropout 0.3, stochastic depth and label smoothing barely leave chance). So the
    batch is halved until an epoch has at least ``MIN_STEPS_PER_EPOCH`` steps, and every regularizer the user
    did not set is scaled by the run's length in steps over ``FULL_REGULARIZATION_STEPS`` (capped at 1): the
    paper's adaptive regularization, applied to how long the network trains as well as to its image size.
    """
    batch = config.batch_size
    if batch is None:
        batch = DEFAULT_BATCH_SIZE
        while batch > MIN_BATCH_SIZE and train_images // batch < MIN_STEPS_PER_EPOCH:
            batch //= 2
    batch = min(batch, train_images) if config.batch_size is None else batch
    steps = config.epochs * max(1, train_images // batch)
    scale = min(1.0, steps / FULL_REGULARIZATION_STEPS)
    effective = dataclasses.replace(
        config, batch_size=batch,
        stages=config.stages if config.stages is not None else min(DEFAULT_STAGES, config.epochs),
        label_smoothing=config.label_smoothing if config.label_smoothing is not None else LABEL_SMOOTHING * scale,
        crop_min_area=(config.crop_min_area if config.crop_min_area is not None
                       else 1.0 - (1.0 - CROP_MIN_AREA) * scale))
    return effective, scale


def scaled_ranges(ranges: Ranges, config: TrainConfig, scale: float) -> Ranges:
    """Regularization ranges the user did not give, scaled by the run's length (see :func:`effective_recipe`)."""
    changes = {name: tuple(value * scale for value in getattr(ranges, name))
               for name in ("randaug", "mixup", "dropout") if getattr(config, name) is None}
    if "randaug" in changes:  # equalize, auto-contrast and invert ignore the magnitude: below it, no RandAugment
        changes["randaug"] = tuple(value if value >= MIN_RANDAUG_MAGNITUDE else 0.0 for value in changes["randaug"])
    return dataclasses.replace(ranges, **changes)


def eval_size_for(spec: ArchSpec, config: TrainConfig) -> int:
    """The final evaluation size: the flag, else the spec's, scaled with ``--image-size`` when that is given."""
    if config.eval_image_size is not None:
        return config.eval_image_size
    if config.image_size is None:
        return spec.eval_image_size
    return max(1, round(config.image_size * spec.eval_image_size / spec.train_image_size))


def build_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """The engine's optimizer for ``config`` (graph-capturable on CUDA); norm weights and biases are not decayed."""
    decay = config.weight_decay if config.weight_decay is not None else WEIGHT_DECAY[config.optimizer]
    return make_optimizer(config.optimizer, decay_groups(model, decay), peak_lr(config), device, weight_decay=decay)


def peak_lr(config: TrainConfig) -> float:
    """``--lr``, else the optimizer's base rate scaled linearly with the batch size (per 256 images)."""
    return config.lr if config.lr is not None else BASE_LR[config.optimizer] * config.batch_size / 256


@dataclass(frozen=True)
class LRSchedule:
    """Learning rate per optimizer step: linear warm-up, then cosine to zero (the proxy trials' curve,
    :func:`effnas.nas.training.optim.warmup_cosine`) or the official x0.97 every 2.4 epochs.

    A pure function of the step (which the checkpoint stores), so a resumed run continues on the same curve.
    """

    peak: float
    total_steps: int
    warmup_steps: int
    steps_per_epoch: int
    kind: str = "cosine"

    @classmethod
    def for_run(cls, config: TrainConfig, steps_per_epoch: int) -> "LRSchedule":
        total = config.epochs * steps_per_epoch
        warmup_epochs = config.warmup_epochs if config.warmup_epochs is not None else min(5.0, 0.1 * config.epochs)
        warmup = min(total, round(warmup_epochs * steps_per_epoch))
        return cls(peak_lr(config), total, warmup, steps_per_epoch, config.schedule)

    def __call__(self, step: int) -> float:
        if self.kind == "cosine" or step < self.warmup_steps:
            return warmup_cosine(step, self.peak, self.total_steps, self.warmup_steps)
        return self.peak * 0.97 ** ((step - self.warmup_steps) / (2.4 * self.steps_per_epoch))


def evaluate_images(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, image_size: int,
                    mean: torch.Tensor, std: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and top-1 of ``model`` on uint8 ``images`` resized to ``image_size`` (the engine's
    evaluation, with this run's resize and normalisation)."""
    return evaluate_loss_acc(model, images, labels, batch_size,
                             prepare=lambda batch: eval_batch(batch, image_size, mean, std))


# ----------------------------------------------------------------------------- the run
def train(spec: ArchSpec, config: TrainConfig, out: str | Path, *, device: str = "auto", engine: str = "auto",
          resume: bool = False, stop_after: int | None = None, progress: bool = True,
          log: Any = print) -> dict[str, Any]:
    """Train ``spec`` on ``config.data``; write ``last.pt`` (every epoch), ``metrics.csv``, ``training.html``,
    and at the end ``final.pt`` (EMA weights) and ``metrics.json`` into ``out``.

    ``stop_after`` ends this call after that many epochs (``resume=True`` continues from the checkpoint).
    Returns the final metrics, or ``{"stopped_after_epoch": n}`` when stopped early.
    """
    config.validate()
    requested = config  # what a resume must match; ``config`` below is it with every default decided
    torch_device = resolve_device(device)
    eval_size = eval_size_for(spec, config)
    if eval_size < spec.total_stride:
        raise TrainError(f"eval image size {eval_size} px is below the network's total stride {spec.total_stride}")
    data = load_data(config.data, seed=config.seed, val_fraction=config.val_fraction)
    config, scale = effective_recipe(config, len(data.train_y))
    ranges = scaled_ranges(ranges_for(spec, image_size=config.image_size, min_image_size=config.min_image_size,
                                      randaug=config.randaug, mixup=config.mixup, dropout=config.dropout),
                           requested, scale)
    schedule = progressive_schedule(config.stages if config.progressive else 1, config.epochs, ranges)
    # The spec saved with the weights says how they were trained: data's classes and channels, sizes, recipe.
    spec = spec.replace(num_classes=data.num_classes, image_channels=data.channels,
                        train_image_size=ranges.max_image_size, eval_image_size=eval_size,
                        drop_path_rate=spec.drop_path_rate * scale,
                        progressive=ProgressiveRecipe(ranges.min_image_size, *ranges.randaug, *ranges.mixup,
                                                      *ranges.dropout))
    n_train = len(data.train_y)
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
        log(f"resuming {out} after epoch {first_epoch}/{config.epochs}")
    ensure_writable_dir(out, "output directory")  # read-only or full: one line, before any training

    train_x, train_y = data.train_x.to(torch_device), data.train_y.to(torch_device)
    val_x, val_y = data.val_x.to(torch_device), data.val_y.to(torch_device)
    mean, std = channel_stats(train_x)
    probe = slice(0, min(n_train, TRAIN_ACC_IMAGES))
    lr_at = LRSchedule.for_run(config, steps_per_epoch)
    end_epoch = config.epochs if stop_after is None else min(config.epochs, first_epoch + stop_after)
    current: Stage | None = None
    step = augment = None
    with cudnn_benchmark(torch_device.type == "cuda"):
        for epoch in range(first_epoch, end_epoch):
            stage = stage_at(schedule, epoch)
            if current is None or stage.index != current.index:
                augment, step = _start_stage(stage, model, optimizer, config, data.channels, data.num_classes,
                                             mean, std, engine)
                current = stage
            lr = lr_at(global_step)
            # The epoch's order depends only on (seed, epoch): a resumed run draws the same batches.
            order = torch.randperm(n_train, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
            started, cpu_started = time.perf_counter(), time.process_time()
            train_loss, global_step = _train_epoch(step, augment, train_x, train_y, order.to(torch_device),
                                                   config.batch_size, steps_per_epoch, lr_at, ema, global_step,
                                                   desc=f"epoch {epoch + 1}/{config.epochs} {stage.image_size}px",
                                                   progress=progress)
            seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
            if not math.isfinite(train_loss):
                raise TrainError(f"training diverged (loss {train_loss}) in epoch {epoch + 1}; try a lower --lr")
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
            log(f"epoch {epoch + 1}/{config.epochs}  stage {stage.index + 1}/{len(schedule)}  {stage.image_size}px  "
                f"loss {train_loss:.3f}  train acc {train_acc:.3f}  val acc {val_acc:.3f} (EMA {ema_val_acc:.3f})  "
                f"{seconds:.1f} s")
    if end_epoch < config.epochs:
        log(f"stopped after epoch {end_epoch}/{config.epochs}; continue with --resume")
        return {"stopped_after_epoch": end_epoch}
    return _finish(out, spec, requested, config, scale, schedule, history, model, ema, val_x, val_y, eval_size,
                   mean, std, getattr(step, "engine", None))


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


def _train_epoch(step: Any, augment: TrainAugment, train_x: torch.Tensor, train_y: torch.Tensor,
                 order: torch.Tensor, batch_size: int, steps: int, lr_at: LRSchedule, ema: train_state.EMA,
                 global_step: int, desc: str, progress: bool) -> tuple[float, int]:
    """One epoch of augmented batches through the shared step; returns the mean loss (one host sync)."""
    step.model.train()
    loss_sum = torch.zeros((), device=train_x.device)
    bar = tqdm(range(steps), desc=desc, leave=False, unit="step", disable=None if progress else True)
    for b in bar:
        index = order[b * batch_size:(b + 1) * batch_size]
        x, y = augment(train_x[index], train_y[index])
        set_lr(step.optimizer, lr_at(global_step))
        loss_sum += step(x, y)
        ema.update(global_step)
        global_step += 1
        if b % 25 == 24:
            bar.set_postfix(loss=f"{loss_sum.item() / (b + 1):.3f}")
    return loss_sum.item() / steps, global_step


def _finish(out: Path, spec: ArchSpec, requested: TrainConfig, config: TrainConfig, scale: float,
            schedule: list[Stage], history: list[dict[str, Any]], model: torch.nn.Module, ema: train_state.EMA,
            val_x: torch.Tensor, val_y: torch.Tensor, eval_size: int, mean: torch.Tensor, std: torch.Tensor,
            engine: str | None) -> dict[str, Any]:
    """Final evaluation of the EMA weights at the eval size; writes ``final.pt`` and ``metrics.json``."""
    val_loss, top1 = evaluate_images(ema.module, val_x, val_y, eval_size, mean, std, config.batch_size)
    _, top1_raw = evaluate_images(model, val_x, val_y, eval_size, mean, std, config.batch_size)
    train_state.save_checkpoint(out / "final.pt", {"spec": spec.to_dict(), "model": ema.state_dict(),
                                                   "config": requested.to_dict()})
    metrics = {
        "top1": top1, "top1_raw_weights": top1_raw, "val_loss": val_loss, "eval_image_size": eval_size,
        "epochs": config.epochs, "stages": len(schedule), "progressive": config.progressive,
        "train_seconds": sum(row["seconds"] for row in history),
        "train_cpu_seconds": sum(row["cpu_seconds"] for row in history),
        "params": sum(p.numel() for p in model.parameters()), "engine": engine,
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
