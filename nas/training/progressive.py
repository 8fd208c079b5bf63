"""Progressive learning with adaptive regularization (EfficientNetV2, Algorithm 1).

Training is split into ``M`` stages. Stage ``i`` trains at image size
``S_i = S_0 + (S_e - S_0) * i / (M - 1)`` and with every regularization
``phi_i = phi_0 + (phi_e - phi_0) * i / (M - 1)`` (dropout rate, RandAugment magnitude, mixup alpha):
small images with weak regularization first, large images with strong regularization last, because a
small image carries less information and so needs less regularization to avoid over-fitting.

Sizes are rounded to the nearest whole pixel (halves up), nothing more: the network ends in global
pooling, so any size of at least its total stride works, and rounding to a multiple of the stride (32
for EfficientNetV2) would collapse the 16-64 px ranges small data sets use into one or two sizes. The
endpoints ``S_0`` and ``S_e`` are exact. ``M = 1`` (``--no-progressive``) is one stage at the final
size with the final regularization. Epochs are split into ``M`` contiguous runs of whole epochs
(stage ``i`` starts at epoch ``floor(i * E / M)``), the paper's "N/M steps per stage" at epoch grain,
so a checkpoint always falls on a stage's own settings.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from effnas.search_space import ArchSpec
from effnas.errors import EffnasError

# The paper's EfficientNetV2-S ranges (Table 6), used when the arch file carries no recipe.
DEFAULT_MIN_SIZE_RATIO = 128 / 300
DEFAULT_RANDAUG = (5.0, 15.0)
DEFAULT_MIXUP = (0.0, 0.0)
DEFAULT_DROPOUT = (0.1, 0.3)


class ScheduleError(EffnasError):
    """Progressive-learning settings that cannot form a schedule."""


@dataclass(frozen=True)
class Ranges:
    """Start and end of every quantity Algorithm 1 interpolates (``*_start`` at stage 0)."""

    min_image_size: int
    max_image_size: int
    randaug: tuple[float, float]
    mixup: tuple[float, float]
    dropout: tuple[float, float]

    def validate(self, total_stride: int = 1) -> None:
        if not 1 <= self.min_image_size <= self.max_image_size:
            raise ScheduleError(f"image sizes: need 1 <= min ({self.min_image_size}) <= max ({self.max_image_size})")
        if self.min_image_size < total_stride:
            raise ScheduleError(f"min image size {self.min_image_size} px is below the network's total stride "
                                f"{total_stride}; use at least {total_stride}")
        for name, (low, high), top in (("randaug", self.randaug, 30.0), ("mixup", self.mixup, 10.0),
                                       ("dropout", self.dropout, 0.99)):
            if not (math.isfinite(low) and math.isfinite(high) and 0.0 <= low <= high <= top):
                raise ScheduleError(f"{name} range: need 0 <= start <= end <= {top:g}, got {low:g} {high:g}")


@dataclass(frozen=True)
class Stage:
    """One stage's settings: epochs ``[first_epoch, end_epoch)`` at one size and regularization."""

    index: int
    first_epoch: int
    end_epoch: int
    image_size: int
    dropout: float
    randaug: float
    mixup: float

    @property
    def epochs(self) -> int:
        return self.end_epoch - self.first_epoch

    def to_dict(self) -> dict:
        return asdict(self)


def interpolate(start: float, end: float, index: int, stages: int) -> float:
    """``start + (end - start) * i / (M - 1)``; exact at both ends, ``end`` when ``M == 1``."""
    if stages == 1 or index == stages - 1:
        return float(end)
    if index == 0:
        return float(start)
    return start + (end - start) * index / (stages - 1)


def progressive_schedule(stages: int, epochs: int, ranges: Ranges) -> list[Stage]:
    """Algorithm 1: ``stages`` stages over ``epochs`` epochs, size and regularization rising together."""
    if isinstance(stages, bool) or not isinstance(stages, int) or stages < 1:
        raise ScheduleError(f"stages: must be a positive integer, got {stages!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ScheduleError(f"epochs: must be a positive integer, got {epochs!r}")
    if stages > epochs:
        raise ScheduleError(f"stages: {stages} stages need at least {stages} epochs, got {epochs}")
    ranges.validate()
    schedule = []
    for i in range(stages):
        size = interpolate(ranges.min_image_size, ranges.max_image_size, i, stages)
        schedule.append(Stage(
            index=i,
            first_epoch=i * epochs // stages,
            end_epoch=(i + 1) * epochs // stages,
            image_size=int(math.floor(size + 0.5)),
            dropout=interpolate(*ranges.dropout, i, stages),
            randaug=interpolate(*ranges.randaug, i, stages),
            mixup=interpolate(*ranges.mixup, i, stages),
        ))
    return schedule


def stage_at(schedule: list[Stage], epoch: int) -> Stage:
    """The stage that trains ``epoch`` (0-based)."""
    for stage in schedule:
        if stage.first_epoch <= epoch < stage.end_epoch:
            return stage
    raise ScheduleError(f"epoch {epoch} is outside the schedule's {schedule[-1].end_epoch} epochs")


def ranges_for(spec: ArchSpec, *, image_size: int | None = None, min_image_size: int | None = None,
               randaug: tuple[float, float] | None = None, mixup: tuple[float, float] | None = None,
               dropout: tuple[float, float] | None = None) -> Ranges:
    """The ranges to train ``spec`` with: flags first, then the arch file's recipe, then the paper's S recipe.

    The final size is ``image_size`` or the spec's ``train_image_size``. Without a recipe the start size
    keeps the paper's ratio (128/300 of the final size), never below the network's total stride. A recipe's
    ``min_image_size`` is scaled by the same factor when ``image_size`` overrides the spec's train size.
    """
    final = spec.train_image_size if image_size is None else int(image_size)
    recipe = spec.progressive
    if min_image_size is None:
        ratio = DEFAULT_MIN_SIZE_RATIO if recipe is None else recipe.min_image_size / spec.train_image_size
        min_image_size = max(spec.total_stride, min(final, int(math.floor(final * ratio + 0.5))))
    if recipe is not None:
        randaug = randaug or (recipe.min_randaug, recipe.max_randaug)
        mixup = mixup or (recipe.min_mixup, recipe.max_mixup)
        dropout = dropout or (recipe.min_dropout, recipe.max_dropout)
    ranges = Ranges(min_image_size=int(min_image_size), max_image_size=final,
                    randaug=tuple(map(float, randaug or DEFAULT_RANDAUG)),
                    mixup=tuple(map(float, mixup or DEFAULT_MIXUP)),
                    dropout=tuple(map(float, dropout or DEFAULT_DROPOUT)))
    ranges.validate(spec.total_stride)
    return ranges
