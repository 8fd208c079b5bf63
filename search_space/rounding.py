"""Channel and depth rounding shared by the zoo and by scaling.

EfficientNet (V1) and EfficientNetV2 round scaled channel counts differently; both rules are the
official code's (google/automl ``efficientnet_model.round_filters`` and
``efficientnetv2/effnetv2_model.round_filters``).
"""

import math


def round_filters(filters: float, width: float = 1.0, divisor: int = 8, style: str = "v1") -> int:
    """Scale ``filters`` by ``width`` and round to a multiple of ``divisor``.

    ``style="v1"`` never rounds down by more than 10 % (EfficientNet, torchvision's
    ``_make_divisible``); ``style="v2"`` is EfficientNetV2's plain round-half-up.
    """
    scaled = filters * width
    if style == "v2":
        return max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if style != "v1":
        raise ValueError(f"unknown rounding style {style!r} (expected 'v1' or 'v2')")
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float = 1.0) -> int:
    """Scale a stage's layer count by ``depth``, rounding up (never fewer than one layer)."""
    return max(1, int(math.ceil(depth * repeats)))
