"""What an architecture costs: parameters, multiply-adds, and the wall time of one training step.

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode`, not by hand, and on the
``meta`` device: the network runs on shapes only, so counting EfficientNetV2-XL at 512 px takes
well under a second and no memory. Papers (and torchvision's "GFLOPS") report *multiply-adds* of
the convolutions and the classifier; the counter reports 2 FLOPs per multiply-add, so
``macs = flops // 2``.

Step time is a small, self-contained timed loop (forward, backward, optimizer step; median after
warm-up, synchronised on CUDA). The search's trial engine has its own step builder; this one only
answers "how fast does this spec train here" for ``nas profile``.
"""

from __future__ import annotations

import statistics
from contextlib import nullcontext
from time import perf_counter
from typing import Any, Callable

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from effnas.search_space import ArchSpec, SpecError, encode_block_string
from effnas.errors import EffnasError

from effnas.models.network import build_model

# Defaults for the timed loop: CPUs are slow, so fewer and smaller steps there.
TIMING_DEFAULTS = {"cpu": {"batch_size": 8, "warmup": 1, "steps": 3},
                   "cuda": {"batch_size": 32, "warmup": 5, "steps": 20}}


class ProfileError(EffnasError):
    """A profiling request this machine cannot serve (no CUDA, out of memory, bad sizes)."""


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` means CUDA when available, else CPU; asking for CUDA without it is a user error."""
    name = "auto" if device is None else str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError:
        raise ProfileError(f"device: unknown device {name!r} (use cpu, cuda, cuda:N or auto)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ProfileError(f"device: {name!r} requested but CUDA is not available on this machine "
                           f"(torch {torch.__version__}); use --device cpu")
    if resolved.type not in ("cpu", "cuda"):
        raise ProfileError(f"device: {name!r} is not supported (use cpu or cuda)")
    return resolved


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _check_image_size(image_size: Any) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ProfileError(f"image_size: must be a positive integer, got {image_size!r}")
    return image_size


def count_macs_by_module(model: nn.Module, image_size: int, channels: int = 3,
                         on_meta: bool = True) -> dict[str, int]:
    """Multiply-adds of one image through ``model`` per submodule name (``""`` is the whole model).

    Runs in eval mode and without gradients, leaving the caller's model as it was. By default on ``meta``
    copies of the weights, so no real compute happens (a V2-L at 480 px costs nothing); a model with an op
    that has no meta kernel falls back to one real forward. ``on_meta=False`` runs that real batch-1
    forward on the model's own device: for a small proxy on a CPU it is about 3x cheaper than the meta
    path's dispatch (27 vs 90 ms), and the count is the same.
    """
    size = _check_image_size(image_size)
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


def _timing_plan(device: torch.device, batch_size: int | None, warmup: int | None,
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


def time_train_step(model: nn.Module, image_size: int, batch_size: int | None, device: str | torch.device = "auto",
                    warmup: int | None = None, steps: int | None = None, channels: int = 3,
                    amp: bool = True) -> dict[str, Any]:
    """Median wall time of one SGD training step on random data (forward + backward + step).

    The model is moved to ``device`` and trained in place (its weights change: pass a throw-away
    copy). On CUDA each step is synchronised and, with ``amp``, runs under bf16 autocast as the
    trial engine does. ``spread`` is the relative inter-quartile range of the timed steps.
    """
    device = resolve_device(device)
    batch_size, warmup, steps = _timing_plan(device, batch_size, warmup, steps)
    size = _check_image_size(image_size)

    use_bf16 = amp and device.type == "cuda" and torch.cuda.is_bf16_supported()
    model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images = torch.randn(batch_size, channels, size, size, device=device)
    targets: list[torch.Tensor] = []  # made on the first step, once the number of classes is known

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext():
            logits = model(images)
        if not targets:
            targets.append(torch.randint(0, logits.shape[-1], (batch_size,), device=device))
        loss = nn.functional.cross_entropy(logits.float(), targets[0])
        loss.backward()
        optimizer.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times_ms: list[float] = []
    for index in range(warmup + steps):
        sync()
        start = perf_counter()
        step()
        sync()
        if index >= warmup:
            times_ms.append((perf_counter() - start) * 1000.0)

    median = statistics.median(times_ms)
    spread = 0.0
    if len(times_ms) >= 2:
        q1, _, q3 = statistics.quantiles(times_ms, n=4, method="inclusive")
        spread = (q3 - q1) / median if median > 0 else 0.0
    return {"median_ms": median, "spread": spread, "steps": steps, "warmup": warmup, "batch_size": batch_size,
            "image_size": size, "device": str(device), "precision": "bf16-autocast" if use_bf16 else "fp32"}


def profile_spec(spec: ArchSpec, image_size: int | None = None, batch_size: int | None = None,
                 device: str | torch.device = "auto", time: bool = True, num_classes: int | None = None,
                 warmup: int | None = None, steps: int | None = None, amp: bool = True,
                 announce: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Params, MACs/FLOPs (with a per-stage breakdown) and, if ``time``, the training step time.

    FLOPs are counted at ``image_size`` or else the spec's ``eval_image_size`` (as the papers
    report them); the step is timed at ``image_size`` or else the spec's ``train_image_size``.
    ``announce`` receives a one-line note just before the (possibly slow) timed loop starts.
    """
    if num_classes is not None:
        spec = spec.replace(num_classes=num_classes)
    if image_size is not None and _check_image_size(image_size) < spec.total_stride:
        raise SpecError(f"image_size: {image_size} px is reduced below 1 pixel by the network's total stride "
                        f"{spec.total_stride}; use at least {spec.total_stride}")
    flops_size = spec.eval_image_size if image_size is None else image_size
    step_size = spec.train_image_size if image_size is None else image_size
    resolved = resolve_device(device) if time else None

    # Counting needs no real weights: build on meta unless we are about to train the model.
    if time:
        model = build_model(spec)
    else:
        with torch.device("meta"):
            model = build_model(spec)
    macs = count_macs_by_module(model, flops_size, spec.image_channels)

    stages = []
    for index, stage in enumerate(spec.stages):
        stages.append({"block": encode_block_string(stage), "op": stage.op, "kernel": stage.kernel,
                       "stride": stage.stride, "expand_ratio": stage.expand_ratio,
                       "in_channels": stage.in_channels, "out_channels": stage.out_channels,
                       "layers": stage.layers, "se_ratio": stage.se_ratio,
                       "params": count_params(model.stages[index]), "macs": macs.get(f"stages.{index}", 0)})
    result: dict[str, Any] = {
        "name": spec.name, "num_classes": spec.num_classes, "params": count_params(model),
        "macs": macs[""], "flops": 2 * macs[""], "image_size": flops_size,
        "stem": {"channels": spec.stem_channels, "params": count_params(model.stem), "macs": macs.get("stem", 0)},
        "stages": stages,
        "head": {"channels": spec.head_channels,
                 "params": count_params(model.head) + count_params(model.classifier),
                 "macs": macs.get("head", 0) + macs.get("classifier", 0)},
    }
    if time:
        batch_size, warmup, steps = _timing_plan(resolved, batch_size, warmup, steps)
        if announce is not None:
            announce(f"timing training steps of batch {batch_size} at {step_size} px on {resolved} ...")
        try:
            timing = time_train_step(model, step_size, batch_size, resolved, warmup=warmup, steps=steps,
                                     channels=spec.image_channels, amp=amp)
        except torch.cuda.OutOfMemoryError:
            raise ProfileError(f"out of memory timing batch {batch_size} at {step_size} px on {resolved}; "
                               "try a smaller --batch-size or --image-size") from None
        result.update(step_time_ms=timing["median_ms"], step_time_spread=timing["spread"],
                      timed_steps=timing["steps"], warmup_steps=timing["warmup"], batch_size=timing["batch_size"],
                      step_image_size=timing["image_size"], device=timing["device"], precision=timing["precision"])
    return result
