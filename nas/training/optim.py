"""Optimizers and the learning-rate schedule, shared by proxy trials and ``nas train``.

One :func:`make_optimizer` builds every optimizer the engine steps, set up for graph capture on CUDA; one
:func:`warmup_cosine` gives the learning rate of a step, so a proxy trial and a full run follow the same curve.
Rates are set on the host before each step (:func:`set_lr`): a CUDA-graphed step reads them from its lr
tensor without any device-to-host synchronisation.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from effnas.nas.training.choices import OPTIMIZERS, EngineError

__all__ = ["OPTIMIZERS", "decay_groups", "make_optimizer", "set_lr", "warmup_cosine",
           "warmup_steps"]


def make_optimizer(name: str, params: Iterable[nn.Parameter] | list, lr: float, device: str | torch.device,
                   weight_decay: float = 0.0, momentum: float = 0.9) -> torch.optim.Optimizer:
    """SGD (Nesterov), RMSProp (the official EfficientNet settings) or AdamW, set up for graph capture on CUDA
    (learning rate as a device tensor, capturable / fused state) and plain on CPU.

    ``params`` is an iterable of parameters or of param groups (see :func:`decay_groups`).
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    rate: float | torch.Tensor = torch.tensor(float(lr), device=device) if cuda else float(lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=rate, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay,
                               fused=True if cuda else None)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=rate, alpha=0.9, eps=1e-3, momentum=momentum,
                                   weight_decay=weight_decay, capturable=cuda)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=rate, weight_decay=weight_decay, capturable=cuda)
    raise EngineError(f"optimizer: unknown {name!r} (expected {', '.join(OPTIMIZERS)})")


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Param groups that decay weight matrices and kernels only: decaying norm scales and biases pulls them
    towards zero for no regularising benefit (the official EfficientNetV2 recipe exempts them too)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate; tensor rates are filled in place, so a captured graph sees them."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def warmup_steps(total_steps: int, fraction: float) -> int:
    """Warm-up length as a share of the run, in whole steps (never more than the run)."""
    return min(total_steps, round(total_steps * fraction))


def warmup_cosine(step: int, peak: float, total_steps: int, warmup: int) -> float:
    """Learning rate at ``step`` (from 0): linear warm-up to ``peak`` over ``warmup`` steps, then cosine to zero
    at ``total_steps``. Warm-up keeps the first updates of a randomly initialised network (and of RMSProp's
    still-empty second-moment estimate) small; cosine spends the remaining steps at a usefully high rate."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))
