"""Which device a run trains on, named without importing torch where the name already says it."""

from __future__ import annotations


def device_name(device: str) -> str:
    """The device a run trains on, named as ``torch.device`` names it (``auto`` resolved). ``cpu`` needs no torch
    to be known, so a CPU search's own process, which only proposes and records, never imports it; nor does
    ``auto`` on a machine where torch can see no GPU."""
    from effnas.models.memory import gpu_may_be_present

    if device == "cpu" or (device == "auto" and not gpu_may_be_present()):
        return "cpu"
    from effnas.nas.training.engine import resolve_device

    return str(resolve_device(device))
