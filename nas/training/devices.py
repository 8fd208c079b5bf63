"""Which device a run trains on, named without importing torch where the name already says it."""

from __future__ import annotations


def device_name(device: str) -> str:
    """The device a run trains on, named as ``torch.device`` names it (``auto`` resolved). ``cpu`` needs no torch
    to be known, so a CPU search's own process, which only proposes and records, never imports it."""
    if device == "cpu":
        return "cpu"
    from effnas.nas.training.engine import resolve_device

    return str(resolve_device(device))
