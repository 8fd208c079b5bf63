"""Uniform (compound) scaling: every stage's width and depth multiplied alike.

This is EfficientNet's rule (Tan & Le 2019): depth ``alpha**phi``, width ``beta**phi``, resolution
``gamma**phi`` with alpha = 1.2, beta = 1.1, gamma = 1.15 found by grid search on B0. The published
B1-B7 did not use the formula's exact values but rounded per-model coefficients, listed in
:data:`EFFICIENTNET_V1_COEFFICIENTS` (from the official ``efficientnet_builder.efficientnet_params``).
"""

from __future__ import annotations

from effnas.search_space.rounding import round_filters, round_repeats
from effnas.search_space.spec import ArchSpec

# name: (width, depth, resolution, dropout)
EFFICIENTNET_V1_COEFFICIENTS: dict[str, tuple[float, float, int, float]] = {
    "efficientnet-b0": (1.0, 1.0, 224, 0.2),
    "efficientnet-b1": (1.0, 1.1, 240, 0.2),
    "efficientnet-b2": (1.1, 1.2, 260, 0.3),
    "efficientnet-b3": (1.2, 1.4, 300, 0.3),
    "efficientnet-b4": (1.4, 1.8, 380, 0.4),
    "efficientnet-b5": (1.6, 2.2, 456, 0.4),
    "efficientnet-b6": (1.8, 2.6, 528, 0.5),
    "efficientnet-b7": (2.0, 3.1, 600, 0.5),
}

ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15


def scale_uniform(spec: ArchSpec, width: float, depth: float, rounding: str = "v1",
                  **changes: object) -> ArchSpec:
    """Multiply every stage's channels by ``width`` and layers by ``depth`` (official rounding).

    Stem and head channels scale with the width too. ``changes`` sets other fields (image sizes,
    dropout, name) on the result.
    """
    def channels(c: int) -> int:
        return round_filters(c, width, style=rounding)

    stages = tuple(
        stage.__class__(op=stage.op, kernel=stage.kernel, stride=stage.stride, expand_ratio=stage.expand_ratio,
                        in_channels=channels(stage.in_channels), out_channels=channels(stage.out_channels),
                        layers=round_repeats(stage.layers, depth), se_ratio=stage.se_ratio)
        for stage in spec.stages)
    return spec.replace(stages=stages, stem_channels=channels(spec.stem_channels),
                        head_channels=channels(spec.head_channels), **changes)


def efficientnet_v1(base: ArchSpec, name: str) -> ArchSpec:
    """EfficientNet-B1 ... B7 from B0 with the published per-model coefficients."""
    width, depth, resolution, dropout = EFFICIENTNET_V1_COEFFICIENTS[name]
    return scale_uniform(base, width, depth, rounding="v1", name=name, dropout=dropout,
                         train_image_size=resolution, eval_image_size=resolution)
