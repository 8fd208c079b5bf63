"""What training a network will need in memory, estimated from its spec alone, before anything is built.

A spec within every bound of :mod:`effnas.search_space.spec` can still describe a network that no machine holds
(100 layers of 8192 channels at 4096 px). Building it would allocate until the operating system kills the process,
so commands estimate first and refuse in one line (:func:`check_fits`). The estimate is a floor, not a forecast:
weights, their gradients and two optimizer slots (4 copies of the parameters), and for each image of a batch the
outputs of every convolution, each kept with its batch norm's and activation's output for the backward pass (3
copies), all float32. Real training needs more (workspaces, the allocator's slack), so a refused network
certainly does not fit, and one that passes may still fail as a trial "out of memory". Beside it: what else the
machine lets a run use (whether a GPU may be there, the threads its owner allows), asked without importing torch.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass

from effnas.errors import EffnasError
from effnas.search_space import ArchSpec

BYTES = 4  # float32
PARAM_COPIES = 4  # weights, gradients, RMSProp / Adam's two slots (SGD momentum: one; the floor keeps 4)
ACTIVATION_COPIES = 3  # a convolution's output, its batch norm's, its activation's


class MemoryLimitError(EffnasError):
    """A network (at a batch and image size) whose estimated training memory exceeds what the device allows."""


@dataclass(frozen=True)
class MemoryEstimate:
    params: int  # parameters
    activations: int  # values kept per image for the backward pass

    def training_bytes(self, batch_size: int) -> int:
        return self.params * BYTES * PARAM_COPIES + batch_size * self.activations * BYTES * ACTIVATION_COPIES


def _out(size: int, stride: int) -> int:
    return (size + stride - 1) // stride


def estimate(spec: ArchSpec, image_size: int | None = None) -> MemoryEstimate:
    """Parameters and per-image activations of ``spec`` at ``image_size`` (default its train_image_size),
    counted from the spec with integer arithmetic: no torch, no allocation."""
    size = _out(image_size or spec.train_image_size, spec.stem_stride)
    params = 9 * spec.image_channels * spec.stem_channels + 2 * spec.stem_channels
    acts = spec.stem_channels * size * size
    for stage in spec.stages:
        for layer in range(stage.layers):
            cin = stage.in_channels if layer == 0 else stage.out_channels
            stride = stage.stride if layer == 0 else 1
            mid = cin * stage.expand_ratio
            out_size = _out(size, stride)
            k2 = stage.kernel * stage.kernel
            if stage.op == "fused":
                params += k2 * cin * mid + 2 * mid
                acts += mid * out_size * out_size
                if stage.expand_ratio != 1:
                    params += mid * stage.out_channels + 2 * stage.out_channels
                    acts += stage.out_channels * out_size * out_size
            else:
                if stage.expand_ratio != 1:
                    params += cin * mid + 2 * mid
                    acts += mid * size * size
                params += k2 * mid + 2 * mid
                acts += mid * out_size * out_size
                if stage.se_ratio > 0:
                    squeezed = max(1, int(cin * stage.se_ratio))
                    params += 2 * mid * squeezed + mid + squeezed
                params += mid * stage.out_channels + 2 * stage.out_channels
                acts += stage.out_channels * out_size * out_size
            size = out_size
    last = spec.stages[-1].out_channels
    params += last * spec.head_channels + 2 * spec.head_channels + (spec.head_channels + 1) * spec.num_classes
    acts += spec.head_channels * size * size
    return MemoryEstimate(params=params, activations=acts)


# What a GPU that torch can use leaves on a Linux machine: NVIDIA's driver (also inside containers), ROCm's
# kernel driver, or WSL's GPU bridge. Where none is there, torch.cuda cannot be available.
GPU_DEVICE_PATHS = ("/proc/driver/nvidia", "/dev/nvidia0", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg")


def gpu_may_be_present() -> bool:
    """False only where torch cannot see a GPU, told without importing torch: a search process that only proposes
    candidates need not pay the seconds of that import on a CPU machine to learn that ``auto`` means the CPU."""
    if "torch" in sys.modules or not sys.platform.startswith("linux"):
        return True
    return any(os.path.exists(path) for path in GPU_DEVICE_PATHS)


def threads_set_by_user() -> int | None:
    """``OMP_NUM_THREADS``, where it is set to a whole number of at least 1: the most threads the user wants one
    process to use. torch reads it only when it starts, and a run that then chooses its own number would put
    more busy threads on the machine than its owner allowed (a shared workstation, a scheduler's slot, a test
    suite's workers); every default here stays within it."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) >= 1 else None


def device_memory(device: str) -> tuple[int, str] | None:
    """Total memory of ``device`` in bytes and how to name it (``cpu``: this machine's RAM; ``cuda[:N]``: the
    GPU's; ``auto``: the GPU's when one is there), or None when it cannot be told (the command's own checks
    then answer for the device string)."""
    device = (device or "auto").strip().lower()
    if device == "auto" and not gpu_may_be_present():
        device = "cpu"
    if device in ("auto", "cuda") or device.startswith("cuda:"):
        try:
            import torch

            if torch.cuda.is_available():
                index = int(device.split(":", 1)[1]) if ":" in device else 0
                if 0 <= index < torch.cuda.device_count():
                    return int(torch.cuda.get_device_properties(index).total_memory), f"cuda:{index}"
                return None
        except (ImportError, RuntimeError, ValueError):
            return None
        if device != "auto":
            return None
    if device in ("auto", "cpu"):
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "this machine's memory"
        except (ValueError, OSError, AttributeError):
            return None
    return None


def check_fits(spec: ArchSpec, batch_size: int, device: str, image_size: int | None = None,
               limit_gib: float | None = None, what: str = "the network") -> MemoryEstimate:
    """Refuse (:class:`MemoryLimitError`) a network whose training, ``batch_size`` images at ``image_size`` px,
    needs more than ``limit_gib`` (``--trial-memory``) or, without one, more than the device has."""
    found = estimate(spec, image_size)
    need = found.training_bytes(max(1, int(batch_size)))
    if limit_gib is not None and math.isfinite(limit_gib):
        limit, named = int(limit_gib * 2**30), f"--trial-memory {limit_gib:g} GiB"
    else:
        memory = device_memory(device)
        if memory is None:
            return found
        limit, named = memory[0], f"{memory[1]} ({memory[0] / 2**30:,.1f} GiB)"
    if need > limit:
        raise MemoryLimitError(
            f"{what} ({found.params / 1e6:,.1f} M params, batch {batch_size} at {image_size or spec.train_image_size} "
            f"px) needs an estimated {need / 2**30:,.2f} GiB to train, more than {named}; make it smaller")
    return found

