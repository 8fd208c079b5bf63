"""Scaling a base spec into a bigger family member: EfficientNetV2's non-uniform rule, or EfficientNet's compound one.

One entry point, :func:`scale_spec`. A target is a compound coefficient ``phi``; the named targets are in
:data:`TARGETS` (``s`` is the base itself with S's training recipe). The paper gives no formula for its M, L and XL
(they are hand-written block strings), so the ``v2`` rule is ours: width and depth ramp geometrically from the first
stage to the last, M and up gain an extra last stage, image sizes grow and are capped, and regularization follows
the published S, M and L. Where each constant comes from, and how close the rule lands to the published models
(which ``tests/test_scaling_rules.py`` holds it to), is in docs/scaling.md. The ``compound`` rule scales every
stage alike (:func:`effnas.search_space.compound.scale_uniform`).
"""

from __future__ import annotations

import dataclasses
import math

from effnas.search_space import ArchSpec, ProgressiveRecipe, SpecError, StageSpec, round_filters, round_repeats
from effnas.errors import EffnasError

from effnas.search_space.compound import ALPHA, BETA, GAMMA, scale_uniform

TARGETS: dict[str, float] = {"s": 0.0, "m": 1.0, "l": 2.0, "xl": 3.0}
RULES = ("v2", "compound")
MAX_PHI = 6.0  # phi 3 is XL; beyond 6 layer counts and channels leave any sensible range
DEFAULT_MAX_IMAGE_SIZE = 480

# --- v2 rule (docs/scaling.md says where each comes from)
WIDTH_FIRST, WIDTH_LAST = 1.1, 1.2  # per unit of phi, first and last stage
DEPTH_FIRST, DEPTH_LAST = 1.3, 1.5
DEPTH_PHI_POWER = 0.9  # depth grows with phi ** 0.9: published L -> XL deepens less than S -> M
EXTRA_STAGE_PHI = 1.0
EXTRA_STAGE_WIDTH = 5 / 3
EXTRA_STAGE_SHARE = 0.2
RESOLUTION_BASE = 1.25
IMAGE_DIVISOR = 32  # the rounding step from 256 px up (a network's usual total stride)
MIN_IMAGE_STEP = 4
TRAIN_EVAL_RATIO = 0.8

# --- regularization: published S, M, L at phi = 0, 1, 2 (held at L's beyond)
DROP_PATH_RATE = 0.2
DROPOUT = (0.2, 0.3, 0.4)
PROGRESSIVE_MIN_IMAGE_SIZE = 128
RANDAUG = ((5.0, 15.0), (5.0, 20.0), (5.0, 25.0))
MIXUP = ((0.0, 0.0), (0.0, 0.2), (0.0, 0.4))
PROGRESSIVE_DROPOUT = ((0.1, 0.3), (0.1, 0.4), (0.1, 0.5))


class ScaleError(EffnasError):
    """A scaling request that cannot be honoured (unknown target, bad phi, cap below the train size)."""


def resolve_phi(target: str | None = None, phi: float | None = None) -> tuple[str, float]:
    """The (label, phi) a target name or an explicit compound coefficient stands for."""
    if phi is not None:
        if isinstance(phi, bool) or not isinstance(phi, (int, float)) or not math.isfinite(phi):
            raise ScaleError(f"phi must be a finite number, got {phi!r}")
        if phi < 0:
            raise ScaleError(f"phi must be >= 0 (scaling only grows a model), got {phi:g}")
        if phi > MAX_PHI:
            raise ScaleError(f"phi {phi:g} is absurd: at most {MAX_PHI:g} (xl is 3)")
        return f"phi{phi:g}", float(phi)
    if target is None:
        raise ScaleError("give a target (s, m, l, xl) or a compound coefficient phi")
    key = str(target).strip().lower()
    if key not in TARGETS:
        raise ScaleError(f"unknown target {target!r} (expected one of {', '.join(TARGETS)}, or --phi)")
    return key, TARGETS[key]


def scale_spec(base: ArchSpec, target: str | None = None, *, phi: float | None = None, rule: str = "v2",
               max_image_size: int = DEFAULT_MAX_IMAGE_SIZE, extra_stage: bool = True) -> ArchSpec:
    """Scale ``base`` to ``target`` (``s``/``m``/``l``/``xl``) or to a compound coefficient ``phi``.

    ``phi`` wins over ``target`` when both are given. ``extra_stage=False`` stops the v2 rule from
    appending M/L's final stage. Raises :class:`ScaleError` for bad input.
    """
    if not isinstance(base, ArchSpec):
        raise ScaleError(f"base must be an ArchSpec, got {type(base).__name__}")
    label, phi = resolve_phi(target, phi)
    if rule not in RULES:
        raise ScaleError(f"unknown rule {rule!r} (expected one of {', '.join(RULES)})")
    if isinstance(max_image_size, bool) or not isinstance(max_image_size, int) or max_image_size < 1:
        raise ScaleError(f"max image size must be a positive integer, got {max_image_size!r}")
    if max_image_size < base.train_image_size:
        raise ScaleError(f"max image size {max_image_size} is smaller than the base's train size "
                         f"{base.train_image_size}")

    train, evaluate = image_sizes(base, resolution_multiplier(rule, phi), max_image_size)
    changes = dict(name=f"{base.name or 'base'}-{rule}-{label}", train_image_size=train,
                   eval_image_size=evaluate, **regularization(phi, base, train))
    if phi == 0:  # target s: the base's architecture as it is, with S's sizes and recipe
        return base.replace(**changes)
    try:
        if rule == "compound":
            return scale_uniform(base, BETA ** phi, ALPHA ** phi, rounding="v1", **changes)
        stages = _scale_stages_v2(base.stages, phi, extra_stage and phi >= EXTRA_STAGE_PHI)
        return base.replace(stages=stages, stem_channels=stages[0].in_channels, **changes)
    except SpecError as error:
        raise ScaleError(f"phi {phi:g} scales this base out of range: {error}") from None


# ---------------------------------------------------------------------------- the v2 rule
def _ramp(first: float, last: float, num_stages: int, phi: float) -> list[float]:
    """Per-stage ``(first ** (1 - t) * last ** t) ** phi`` for stage position ``t`` in [0, 1]."""
    positions = [i / (num_stages - 1) if num_stages > 1 else 1.0 for i in range(num_stages)]
    return [(first ** (1 - t) * last ** t) ** phi for t in positions]


def width_multipliers(num_stages: int, phi: float) -> list[float]:
    """Per-stage width multipliers of the v2 rule (later stages widen more)."""
    return _ramp(WIDTH_FIRST, WIDTH_LAST, num_stages, phi)


def depth_multipliers(num_stages: int, phi: float) -> list[float]:
    """Per-stage depth multipliers of the v2 rule (later stages deepen more; each step of phi a little less)."""
    return _ramp(DEPTH_FIRST, DEPTH_LAST, num_stages, phi ** DEPTH_PHI_POWER)


def scaled_layers(layers: list[int], multipliers: list[float]) -> list[int]:
    """Round ``layers * multipliers`` up, clamping earlier stages so relative gains never shrink.

    Going from the last stage backwards, a stage keeps ``ceil(layers * multiplier)`` unless that
    would make it gain relatively more than the stage after it; then it takes the most layers that
    do not (never fewer than it had).
    """
    result = [0] * len(layers)
    next_gain = math.inf
    for i in reversed(range(len(layers))):
        wanted = round_repeats(layers[i], multipliers[i])
        allowed = math.floor(layers[i] * next_gain + 1e-9) if math.isfinite(next_gain) else wanted
        result[i] = max(layers[i], min(wanted, allowed))
        next_gain = result[i] / layers[i]
    return result


def _scale_stages_v2(stages: tuple[StageSpec, ...], phi: float, add_stage: bool) -> tuple[StageSpec, ...]:
    widths = width_multipliers(len(stages), phi)
    layers = scaled_layers([s.layers for s in stages], depth_multipliers(len(stages), phi))
    def widen(channels: int, width: float) -> int:  # multiples of 8, never below the base's
        return max(channels, round_filters(channels, width, style="v2"))

    channels = widen(stages[0].in_channels, widths[0])  # the stem
    scaled = []
    for stage, width, count in zip(stages, widths, layers):
        out_channels = widen(stage.out_channels, width)
        scaled.append(StageSpec(op=stage.op, kernel=stage.kernel, stride=stage.stride,
                                expand_ratio=stage.expand_ratio, in_channels=channels,
                                out_channels=out_channels, layers=count, se_ratio=stage.se_ratio))
        channels = out_channels
    if add_stage and scaled[-1].layers >= 2:
        # Split the last stage: its first layers keep their width, the rest become a wider stage.
        last = scaled[-1]
        moved = round_repeats(last.layers, EXTRA_STAGE_SHARE)
        scaled[-1] = dataclasses.replace(last, layers=last.layers - moved)
        scaled.append(StageSpec(op=last.op, kernel=last.kernel, stride=1, expand_ratio=last.expand_ratio,
                                in_channels=last.out_channels,
                                out_channels=round_filters(last.out_channels, EXTRA_STAGE_WIDTH, style="v2"),
                                layers=moved, se_ratio=last.se_ratio))
    return tuple(scaled)


# ---------------------------------------------------------------------------- sizes and recipe
def resolution_multiplier(rule: str, phi: float) -> float:
    """How much ``phi`` multiplies the eval size under ``rule`` (before rounding and the cap)."""
    return (RESOLUTION_BASE if rule == "v2" else GAMMA) ** phi


def image_step(size: float) -> int:
    """Rounding step for an image size: the power of two nearest below ``size / 8``, from 4 to 32.

    At most an eighth of the size, so one unit of phi (x1.15 or more) always moves a size by at least
    a step (a 32 px base grows too), and 32 from 256 px up, where the published sizes live.
    """
    step = MIN_IMAGE_STEP
    while step < IMAGE_DIVISOR and step * 2 * 8 <= size:
        step *= 2
    return step


def round_image_size(size: float) -> int:
    """``size`` rounded half up to a multiple of its :func:`image_step`."""
    step = image_step(size)
    return int(size / step + 0.5) * step


def train_eval_ratio(base: ArchSpec) -> float:
    """The base's train/eval size ratio held to [``TRAIN_EVAL_RATIO``, 1]: what a scaled train size keeps."""
    return min(1.0, max(TRAIN_EVAL_RATIO, base.train_image_size / base.eval_image_size))


def image_sizes(base: ArchSpec, resolution: float, max_image_size: int) -> tuple[int, int]:
    """(train, eval) sizes for a resolution multiplier, eval capped at ``max_image_size``.

    Eval rounds half up to :func:`image_step`; train is ``ratio x eval`` rounded down, where ratio is
    the base's own train/eval ratio, but at least ``TRAIN_EVAL_RATIO`` and at most 1: a base trained
    at its eval size (a searched 32/32 base) keeps training at it instead of dropping back by 20 %.
    """
    if resolution == 1.0:
        return base.train_image_size, min(base.eval_image_size, max_image_size)
    scaled = round_image_size(base.eval_image_size * resolution)
    evaluate = min(max(base.eval_image_size, scaled), max_image_size)
    train_wanted = train_eval_ratio(base) * evaluate
    train = int(train_wanted + 1e-9) // image_step(train_wanted) * image_step(train_wanted)
    return max(base.train_image_size, train), evaluate


def _interpolate(rows: tuple, phi: float) -> float | tuple[float, ...]:
    """Linear interpolation over published rows at phi = 0, 1, 2 ..., held at the last row beyond."""
    low = min(int(phi), len(rows) - 1)
    high = min(low + 1, len(rows) - 1)
    fraction = min(phi, len(rows) - 1) - low
    if isinstance(rows[0], tuple):
        return tuple(round(a + (b - a) * fraction, 6) for a, b in zip(rows[low], rows[high]))
    return round(rows[low] + (rows[high] - rows[low]) * fraction, 6)


def regularization(phi: float, base: ArchSpec, train_image_size: int) -> dict[str, object]:
    """Dropout, stochastic depth and the progressive recipe (RandAugment, mixup, dropout) for ``phi``."""
    start = base.progressive.min_image_size if base.progressive else PROGRESSIVE_MIN_IMAGE_SIZE
    start = max(min(start, train_image_size), min(base.total_stride, train_image_size))
    (min_ra, max_ra), (min_mix, max_mix), (min_drop, max_drop) = (
        _interpolate(rows, phi) for rows in (RANDAUG, MIXUP, PROGRESSIVE_DROPOUT))
    recipe = ProgressiveRecipe(min_image_size=start, min_randaug=min_ra, max_randaug=max_ra,
                               min_mixup=min_mix, max_mixup=max_mix, min_dropout=min_drop,
                               max_dropout=max_drop)
    return dict(dropout=_interpolate(DROPOUT, phi), drop_path_rate=DROP_PATH_RATE, progressive=recipe)
