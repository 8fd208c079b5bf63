"""The training recipe of ``nas train`` and ``nas compare``: every choice a run makes (:class:`TrainConfig`),
the defaults decided for the data set and the run's length, and the learning-rate curve.

The recipe follows the official EfficientNetV2 code in spirit: RMSProp (decay 0.9, momentum 0.9, eps 1e-3; SGD
or AdamW selectable), learning rate scaled by batch/256 with a linear warm-up then cosine or exponential
(x0.97 every 2.4 epochs) decay, label smoothing 0.1 and an EMA of the weights; tuned for ImageNet-length runs,
so shorter runs get proportionally less regularization (:func:`effective_recipe`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from effnas.errors import EffnasError
from effnas.search_space import ArchSpec

from effnas.nas.training.augment import CROP_MIN_AREA
from effnas.nas.training.engine import OPTIMIZERS, make_optimizer
from effnas.nas.training.optim import decay_groups, warmup_cosine
from effnas.nas.training.progressive import Ranges
from effnas.nas.training.sources import NO_FLIP_SOURCES  # each source's registry entry says if flips suit it

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
# AdamW's is the same per batch, the rate the Fashion-MNIST race trains every network with (docs/training.md).
BASE_LR = {"rmsprop": 0.008, "sgd": 0.1, "adamw": 0.008}
WEIGHT_DECAY = {"rmsprop": 1e-5, "sgd": 5e-5, "adamw": 0.05}
MAX_TIME_LIMIT = 7 * 86400  # seconds: a longer --time is a typo, not a plan


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
    flip: bool | None = None  # None: on, but off for digits and the MNIST family (a mirrored 2 is no 2)
    crop_min_area: float | None = None  # None: CROP_MIN_AREA, scaled with the run's length
    val_fraction: float = 0.2
    seed: int = 0
    time_limit: float | None = None  # seconds of training; the run ends when they are spent (``epochs`` unused)

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
        if self.time_limit is not None and not (math.isfinite(self.time_limit) and
                                                0 < self.time_limit <= MAX_TIME_LIMIT):
            raise TrainError(f"time: must be more than 0 s and at most {MAX_TIME_LIMIT // 86400:.0f} days, "
                             f"got {self.time_limit} s")
        for name in ("image_size", "eval_image_size", "min_image_size"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= 4096:
                raise TrainError(f"{name}: must be in [1, 4096] px, got {value}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


# ----------------------------------------------------------------------------- set-up
def flips_by_default(data: str) -> bool:
    """Horizontal flips suit photographs, not digits or characters (``digits``, ``idx:`` sources)."""
    return data.strip().partition(":")[0].lower() not in NO_FLIP_SOURCES


def effective_recipe(config: TrainConfig, train_images: int, steps: int | None = None) -> tuple[TrainConfig, float]:
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
    steps = steps if steps is not None else config.epochs * max(1, train_images // batch)
    scale = min(1.0, steps / FULL_REGULARIZATION_STEPS)
    effective = dataclasses.replace(
        config, batch_size=batch, flip=config.flip if config.flip is not None else flips_by_default(config.data),
        stages=config.stages if config.stages is not None else min(DEFAULT_STAGES, config.epochs),
        label_smoothing=config.label_smoothing if config.label_smoothing is not None else LABEL_SMOOTHING * scale,
        crop_min_area=(config.crop_min_area if config.crop_min_area is not None
                       else 1.0 - (1.0 - CROP_MIN_AREA) * scale))
    return effective, scale


def scaled_ranges(ranges: Ranges, config: TrainConfig, scale: float) -> Ranges:
    """Regularization ranges the user did not give, scaled by the run's length (see :func:`effective_recipe`).

    The first stage's image size too: small early images buy a long run many cheap epochs, but a short run spends
    a large share of its steps learning features at a size it is not evaluated at. So, unless given, the start
    size moves from the recipe's towards the final size as the run gets shorter."""
    changes: dict = {name: tuple(value * scale for value in getattr(ranges, name))
                     for name in ("randaug", "mixup", "dropout") if getattr(config, name) is None}
    if config.min_image_size is None:
        final, start = ranges.max_image_size, ranges.min_image_size
        changes["min_image_size"] = max(start, round(final - (final - start) * scale))
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


