"""Equal-time training (``nas train --time``, ``nas compare --time``): a run that ends when its time does.

Training-aware search exists to give the most accuracy for the training time a user has, so the comparison that
decides whether it worked gives every network the same seconds, not the same epochs. A time run measures its
own step time first (a few steps on a throwaway copy of the network), which sets how many steps it expects and
so how strongly it regularizes. From then on the *clock* drives it: the fraction of the time spent picks the
progressive-learning stage and the point on the learning-rate curve, so the schedule ends when the time does,
whatever the step time turns out to be. Only training steps count; evaluation after each epoch does not.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch

from effnas.nas.training.engine import classification_loss, make_optimizer, make_train_step
from effnas.nas.training.optim import warmup_cosine

CURVE_RESOLUTION = 10_000  # points of the learning-rate curve a time run walks along
WARMUP_FRACTION = 0.05  # of a time run, unless --warmup-epochs says otherwise
CALIBRATION_WARMUP, CALIBRATION_STEPS = 2, 3
CUDA_READ_EVERY = 8  # steps between two readings of a CUDA run's clock: each one waits for the device


@dataclass
class TimeBudget:
    """The clock of a time run: ``spent`` seconds of training so far, ``seconds`` in all."""

    seconds: float
    spent: float = 0.0
    warmup_fraction: float = WARMUP_FRACTION
    synchronize: bool = False  # on CUDA the clock waits for the queued steps, else it would run ahead of them
    step_seconds: float = 0.0  # measured before the run
    planned_steps: int = 0  # the steps that step time promises

    def start_epoch(self) -> None:
        self._epoch_start, self._spent_before, self._ticks = time.perf_counter(), self.spent, 0

    def tick(self, final: bool = False) -> float:
        """The fraction of the time spent, read after the last step finished. On CUDA reading it waits for the
        queued steps, so the clock is read every ``CUDA_READ_EVERY`` steps (and at the end), not on every one."""
        self._ticks += 1
        if self.synchronize:
            if not final and self._ticks % CUDA_READ_EVERY != 1:
                return self.spent / self.seconds
            torch.cuda.synchronize()
        self.spent = self._spent_before + time.perf_counter() - self._epoch_start
        return self.spent / self.seconds

    @property
    def expired(self) -> bool:
        return self.spent >= self.seconds

    def lr(self, peak: float, progress: float) -> float:
        """Linear warm-up, then cosine to zero when the time is up."""
        return warmup_cosine(int(progress * CURVE_RESOLUTION), peak, CURVE_RESOLUTION,
                             max(1, round(self.warmup_fraction * CURVE_RESOLUTION)))

    @staticmethod
    def stage_index(progress: float, stages: int) -> int:
        """Progressive learning's stage at this point of the run: equal shares of the time."""
        return min(stages - 1, max(0, int(progress * stages)))


def measure_step_seconds(model: torch.nn.Module, optimizer_name: str, lr: float, batch_size: int, channels: int,
                         image_size: int, num_classes: int, device: torch.device, engine: str) -> float:
    """Median seconds of one training step at the run's largest image size, on a copy of ``model`` (whose weights,
    and the random streams, are left untouched)."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        probe = copy.deepcopy(model).train()
        optimizer = make_optimizer(optimizer_name, probe.parameters(), lr, device)
        x = torch.randn((batch_size, channels, image_size, image_size), device=device)
        y = torch.full((batch_size, num_classes), 1.0 / num_classes, device=device)
        step = make_train_step(probe, optimizer, classification_loss(0.0), x, y, engine=engine)
        times = []
        for index in range(CALIBRATION_WARMUP + CALIBRATION_STEPS):
            started = time.perf_counter()
            float(step(x, y))
            if index >= CALIBRATION_WARMUP:
                times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def planned_epochs(seconds: float, step_seconds: float, steps_per_epoch: int) -> tuple[int, int]:
    """(steps, whole epochs rounded up) that ``seconds`` of training should give at ``step_seconds`` a step."""
    steps = max(1, int(seconds / max(step_seconds, 1e-6)))
    return steps, max(1, math.ceil(steps / steps_per_epoch))
