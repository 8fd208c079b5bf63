"""``nas profile``: what an architecture costs, with the step time measured as a search measures it.

Counting (params, MACs) is :func:`effnas.models.profile.count_spec`. The step time is the proxy trials' own:
the engine's step (:func:`~effnas.nas.training.engine.make_train_step`, so a CUDA graph on a GPU), the proxy
trials' optimizer, cuDNN autotuning off as in a trial, and the search's :class:`StepTimer` (no host sync
between timed steps). A profile and a search therefore disagree only by the data they feed the step, never
by how the step is built or timed. Random images and labels stand in for data: a step's cost depends on
shapes, not values.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from effnas.models import build_model
from effnas.models.profile import ProfileError, check_image_size, count_spec
from effnas.search_space import ArchSpec

from effnas.nas.training.engine import (classification_loss, cudnn_benchmark, make_optimizer, make_train_step,
                                        prepare_model, resolve_device, use_amp)
from effnas.nas.training.timing import time_steps

# The optimizer the proxy trials train with by default (effnas.nas.search.trial.TrialSettings; a test keeps the
# two equal). Its step is part of the timed step, so a profile must use the same one.
PROXY_OPTIMIZER = "rmsprop"
PROXY_LR = 0.002
PROXY_WEIGHT_DECAY = 1e-5

# Defaults for the timed loop. On a CPU they are a proxy trial's own (its batch, its two untimed warm-up steps, its
# timed steps; a test keeps them equal), on one thread as each of a search's CPU trials runs: a smaller batch or
# fewer steps time something else, and the median of a few steps on a shared machine does not repeat.
TIMING_DEFAULTS = {"cpu": {"batch_size": 64, "warmup": 2, "steps": 9},
                   "cuda": {"batch_size": 32, "warmup": 5, "steps": 20}}
CPU_THREADS = 1


def timing_plan(device: torch.device, batch_size: int | None, warmup: int | None,
                steps: int | None) -> tuple[int, int, int]:
    """Fill in the device's defaults and reject nonsense before any (slow) work starts."""
    defaults = TIMING_DEFAULTS[device.type]
    plan = {"batch_size": batch_size, "warmup": warmup, "steps": steps}
    for name, value in plan.items():
        value = defaults[name] if value is None else value
        lowest = 0 if name == "warmup" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            raise ProfileError(f"{name}: must be an integer >= {lowest}, got {value!r}")
        plan[name] = value
    return plan["batch_size"], plan["warmup"], plan["steps"]


@torch.no_grad()
def _output_classes(model: nn.Module, channels: int, size: int, device: torch.device) -> int:
    """The classifier's width, from one eval-mode forward (batch 1 would upset batch norm in train mode)."""
    was_training = model.training
    model.eval()
    try:
        return model(torch.zeros(1, channels, size, size, device=device)).shape[-1]
    finally:
        model.train(was_training)


def time_train_step(model: nn.Module, image_size: int, batch_size: int | None = None,
                    device: str | torch.device = "auto", warmup: int | None = None, steps: int | None = None,
                    channels: int = 3, amp: bool = True, engine: str = "auto",
                    num_classes: int | None = None) -> dict[str, Any]:
    """Median time of the proxy trials' training step on a random batch, after ``warmup`` untimed steps.

    The model is moved to ``device`` and trained in place (its weights change: pass a throw-away copy).
    ``amp`` allows bf16 autocast where the engine would use it (CUDA); ``spread`` is (p90 - p10) of the timed
    steps over their median, as a search's trials record it. The result names the engine that ran, and why it fell back if it did.
    """
    device = resolve_device(device)
    batch_size, warmup, steps = timing_plan(device, batch_size, warmup, steps)
    size = check_image_size(image_size)
    prepare_model(model, device).train()
    if num_classes is None:
        num_classes = _output_classes(model, channels, size, device)
    optimizer = make_optimizer(PROXY_OPTIMIZER, model.parameters(), PROXY_LR, device,
                               weight_decay=PROXY_WEIGHT_DECAY)
    images = torch.randn(batch_size, channels, size, size, device=device)
    labels = torch.randint(0, num_classes, (batch_size,), device=device)
    try:
        with cudnn_benchmark(False):
            step = make_train_step(model, optimizer, classification_loss(), images, labels, engine=engine,
                                   amp=use_amp(device) and amp)
            timing = time_steps(step, images, labels, warmup=warmup, steps=steps)
    except torch.cuda.OutOfMemoryError:
        raise ProfileError(f"out of memory timing batch {batch_size} at {size} px on {device}; "
                           "try a smaller --batch-size or --image-size") from None
    return {"median_ms": timing.median_ms, "spread": timing.spread, "steps": timing.steps, "warmup": warmup,
            "batch_size": batch_size, "image_size": size, "device": str(device),
            "precision": "bf16-autocast" if step.amp else "fp32", "engine": step.engine,
            "fallback_reason": step.fallback_reason, "optimizer": PROXY_OPTIMIZER}


def profile_spec(spec: ArchSpec, image_size: int | None = None, batch_size: int | None = None,
                 device: str | torch.device = "auto", time: bool = True, num_classes: int | None = None,
                 warmup: int | None = None, steps: int | None = None, amp: bool = True, engine: str = "auto",
                 threads: int | None = None, announce: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Params, MACs/FLOPs (with a per-stage breakdown) and, if ``time``, the training step time.

    MACs are counted at ``image_size`` or else the spec's ``eval_image_size`` (as the papers report them);
    the step is timed at ``image_size`` or else the spec's ``train_image_size`` (as a trial trains it).
    ``threads``: torch CPU threads for the timed steps (default :data:`CPU_THREADS` on a CPU, as a search's trials).
    ``announce`` receives a one-line note just before the (possibly slow) timed loop starts.
    """
    if num_classes is not None:
        spec = spec.replace(num_classes=num_classes)
    result = count_spec(spec, image_size)
    if not time:
        return result
    resolved = resolve_device(device)
    batch_size, warmup, steps = timing_plan(resolved, batch_size, warmup, steps)
    step_size = spec.train_image_size if image_size is None else image_size
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ProfileError(f"threads: must be an integer >= 1, got {threads!r}")
    threads = threads or (CPU_THREADS if resolved.type == "cpu" else torch.get_num_threads())
    if announce is not None:
        announce(f"timing training steps of batch {batch_size} at {step_size} px on {resolved}"
                 f"{f', {threads} thread' + 's' * (threads > 1) if resolved.type == 'cpu' else ''} ...")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        timing = time_train_step(build_model(spec), step_size, batch_size, resolved, warmup=warmup, steps=steps,
                                 channels=spec.image_channels, amp=amp, engine=engine, num_classes=spec.num_classes)
    finally:
        torch.set_num_threads(previous)
    result.update(step_time_ms=timing["median_ms"], step_time_spread=timing["spread"],
                  timed_steps=timing["steps"], warmup_steps=timing["warmup"], batch_size=timing["batch_size"],
                  step_image_size=timing["image_size"], device=timing["device"], precision=timing["precision"],
                  engine=timing["engine"], fallback_reason=timing["fallback_reason"],
                  optimizer=timing["optimizer"], threads=threads)
    return result
