"""The search's scalar reward: accuracy traded against training step time and size.

EfficientNetV2 (Tan & Le 2021, section 3.3) scores a candidate by ``A * S**w * P**v``: accuracy A,
normalised training step time S and parameter count P, with ``w = -0.07`` and ``v = -0.05``. Both
S and P are normalised by the search's reference (the backbone measured at the start), so the reward
of the backbone itself equals its accuracy, and a candidate twice as slow loses ``1 - 2**-0.07``
(about 4.7 %) of its accuracy.
"""

from __future__ import annotations

import math

DEFAULT_W = -0.07
DEFAULT_V = -0.05


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"reward: {name} must be a positive finite number, got {value!r}")
    return value


def reward(accuracy: float, step_time_ms: float, params: float, ref_step_time_ms: float, ref_params: float,
           w: float = DEFAULT_W, v: float = DEFAULT_V) -> float:
    """``A * (S / S_ref)**w * (P / P_ref)**v`` (the paper's soft-constraint reward)."""
    accuracy = float(accuracy)
    if not math.isfinite(accuracy) or not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"reward: accuracy must be in [0, 1], got {accuracy!r}")
    speed = _positive("step_time_ms", step_time_ms) / _positive("ref_step_time_ms", ref_step_time_ms)
    size = _positive("params", params) / _positive("ref_params", ref_params)
    return accuracy * speed ** float(w) * size ** float(v)
