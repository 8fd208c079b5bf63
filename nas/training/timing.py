"""Step times that mean the hardware's cost: individual training steps timed without a host sync between them.

CUDA: an event pair around each step (graph replays included), read after one synchronisation at the end;
CPU: ``perf_counter`` around each (synchronous) step. The median and the spread (p90 - p10) / median are kept,
so a trial stores how steady its measurement was: the tails, not the quartiles, show a window that other work
cut into.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch


@dataclass(frozen=True)
class StepTiming:
    """Median step time, its spread ((p90 - p10) / median) and how many steps were timed."""

    median_ms: float
    spread: float
    steps: int


class StepTimer:
    """Collects the duration of individual steps without adding a host sync between them.

    CUDA: an event pair around each step, read after one synchronisation in :meth:`result`.
    CPU: ``perf_counter`` around each (synchronous) step.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._times: list[float] = []

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        if self.cuda:
            # on this device's current stream: a bare record() uses the current *device*, not necessarily ours
            stream = torch.cuda.current_stream(self.device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            yield
            end.record(stream)
            self._events.append((start, end))
        else:
            begin = time.perf_counter()
            yield
            self._times.append((time.perf_counter() - begin) * 1000.0)

    def result(self) -> StepTiming:
        if self.cuda and self._events:
            self._events[-1][1].synchronize()
            self._times += [start.elapsed_time(end) for start, end in self._events]
            self._events.clear()
        if not self._times:
            raise ValueError("StepTimer: no steps were timed")
        median = statistics.median(self._times)
        spread = 0.0
        if len(self._times) >= 2 and median > 0:
            deciles = statistics.quantiles(self._times, n=10, method="inclusive")
            spread = (deciles[-1] - deciles[0]) / median
        return StepTiming(median_ms=median, spread=spread, steps=len(self._times))


def time_steps(step: Callable[[torch.Tensor, torch.Tensor], object], x: torch.Tensor, y: torch.Tensor,
               warmup: int = 3, steps: int = 20) -> StepTiming:
    """Median time of ``steps`` calls of ``step`` on one fixed batch after ``warmup`` untimed ones (they train)."""
    if steps < 1 or warmup < 0:
        raise ValueError(f"time_steps: need steps >= 1 and warmup >= 0, got {steps}, {warmup}")
    for _ in range(warmup):
        step(x, y)
    timer = StepTimer(x.device)
    for _ in range(steps):
        with timer.measure():
            step(x, y)
    return timer.result()
