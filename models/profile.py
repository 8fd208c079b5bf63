"""What an architecture costs to run: parameters and multiply-adds, in total and per module.

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode`, not by hand, and on the ``meta``
device: the network runs on shapes only, so even the largest zoo model at its full size is counted without
real compute or memory. Papers (and torchvision's "FLOPs") report *multiply-adds* of the convolutions and the
classifier; the counter reports 2 FLOPs per multiply-add, so ``macs = flops // 2``.

Counting only: the time of a training step is the training engine's business
(:mod:`effnas.nas.training.profile`), so ``nas profile`` and a search time the very same step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from effnas.errors import EffnasError
from effnas.search_space import ArchSpec, SpecError, encode_block_string

from effnas.models.network import build_model


class ProfileError(EffnasError):
    """A profiling request that cannot be served (bad sizes, or a step that does not fit the device)."""


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def check_image_size(image_size: Any) -> int:
    """A positive whole number of pixels, or a one-line user error."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ProfileError(f"image_size: must be a positive integer, got {image_size!r}")
    return image_size


def count_macs_by_module(model: nn.Module, image_size: int, channels: int = 3,
                         on_meta: bool = True) -> dict[str, int]:
    """Multiply-adds of one image through ``model`` per submodule name (``""`` is the whole model).

    Runs in eval mode and without gradients, leaving the caller's model as it was. By default on ``meta``
    copies of the weights, so no real compute happens (a V2-L at 480 px costs nothing); a model with an op
    that has no meta kernel falls back to one real forward. ``on_meta=False`` runs that real batch-1
    forward on the model's own device: for a small proxy on a CPU that is cheaper than the meta path's
    dispatch overhead, and the count is the same.
    """
    size = check_image_size(image_size)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            counter = _count_on_meta(model, size, channels) if on_meta else None
            if counter is None:
                counter = _count_for_real(model, size, channels)
    finally:
        model.train(was_training)
    root = type(model).__name__
    counts: dict[str, int] = {}
    for name, by_op in counter.get_flop_counts().items():
        if name == "Global":
            continue
        key = "" if name == root else name.removeprefix(root + ".")
        counts[key] = int(sum(by_op.values())) // 2
    counts[""] = int(counter.get_total_flops()) // 2
    return counts


def _count_on_meta(model: nn.Module, size: int, channels: int) -> FlopCounterMode | None:
    """The counter after a forward on meta copies; None when some op has no meta kernel."""
    tensors = {name: torch.empty_like(t, device="meta")
               for name, t in [*model.named_parameters(), *model.named_buffers()]}
    image = torch.empty(1, channels, size, size, device="meta")
    try:
        with FlopCounterMode(display=False) as counter:
            functional_call(model, tensors, (image,))
    except (NotImplementedError, RuntimeError):
        return None
    return counter


def _count_for_real(model: nn.Module, size: int, channels: int) -> FlopCounterMode:
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    image = torch.zeros(1, channels, size, size, device=device)
    with FlopCounterMode(display=False) as counter:
        model(image)
    return counter


def count_macs(model: nn.Module, image_size: int, channels: int = 3, on_meta: bool = True) -> int:
    """Multiply-adds of one ``image_size`` x ``image_size`` image (what papers call FLOPs); see
    :func:`count_macs_by_module` for ``on_meta``."""
    return count_macs_by_module(model, image_size, channels, on_meta)[""]


def count_spec(spec: ArchSpec, image_size: int | None = None, num_classes: int | None = None) -> dict[str, Any]:
    """Params and MACs/FLOPs of ``spec`` with a stem / stage / head breakdown, counted on the meta device.

    MACs are counted at ``image_size`` or else the spec's ``eval_image_size``, as the papers report them.
    """
    if num_classes is not None:
        spec = spec.replace(num_classes=num_classes)
    if image_size is not None and check_image_size(image_size) < spec.total_stride:
        raise SpecError(f"image_size: {image_size} px is reduced below 1 pixel by the network's total stride "
                        f"{spec.total_stride}; use at least {spec.total_stride}")
    size = spec.eval_image_size if image_size is None else image_size
    with torch.device("meta"):  # counting needs shapes, not weights
        model = build_model(spec)
    macs = count_macs_by_module(model, size, spec.image_channels)
    stages = []
    for index, stage in enumerate(spec.stages):
        stages.append({"block": encode_block_string(stage), "op": stage.op, "kernel": stage.kernel,
                       "stride": stage.stride, "expand_ratio": stage.expand_ratio,
                       "in_channels": stage.in_channels, "out_channels": stage.out_channels,
                       "layers": stage.layers, "se_ratio": stage.se_ratio,
                       "params": count_params(model.stages[index]), "macs": macs.get(f"stages.{index}", 0)})
    return {
        "name": spec.name, "num_classes": spec.num_classes, "params": count_params(model),
        "macs": macs[""], "flops": 2 * macs[""], "image_size": size,
        "stem": {"in_channels": spec.image_channels, "channels": spec.stem_channels, "stride": spec.stem_stride,
                 "params": count_params(model.stem), "macs": macs.get("stem", 0)},
        "stages": stages,
        "head": {"channels": spec.head_channels,
                 "params": count_params(model.head) + count_params(model.classifier),
                 "macs": macs.get("head", 0) + macs.get("classifier", 0)},
    }
