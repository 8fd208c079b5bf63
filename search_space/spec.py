"""The architecture spec: a plain, immutable, validated description of an EfficientNet-style network.

A spec is data, not a model: the search samples them, scaling rewrites them, ``models.build_model``
turns one into a ``torch.nn.Module``, and every one of them round-trips through JSON (and, stage by
stage, through the official block strings, see :mod:`search_space.block_strings`).

Every check raises :class:`SpecError` with the offending field's path (``stages[2].kernel: ...``),
so a mistyped file gets a one-line answer instead of a traceback deep inside PyTorch.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from effnas.errors import EffnasError, SpecError, shown

OPS = ("mbconv", "fused")
# Nonlinearities a spec may name: EfficientNet's SiLU (the default), MnasNet's ReLU, MobileNetV2's ReLU6.
ACTIVATIONS = ("silu", "relu", "relu6")
DEFAULT_ACTIVATION = "silu"
STEM_STRIDES = (1, 2)
DEFAULT_STEM_STRIDE = 2

# Every number a spec holds has a bound, so a hostile file cannot ask for an absurd network (the estimate of a
# network's memory, effnas.models.memory, then refuses what is within the bounds but beyond the device).
MAX_KERNEL = 15  # the largest depthwise kernel any published EfficientNet / MnasNet uses is 7
MAX_CHANNELS = 8192  # stem, stage and head channels
MAX_LAYERS = 100  # per stage
MAX_STAGES = 32  # EfficientNetV2-XL has 7
MAX_CLASSES = 100_000
MAX_IMAGE_CHANNELS = 4  # gray, RGB, RGBA
MAX_IMAGE_SIZE = 4096
MAX_NAME = 128  # characters of a spec's name; control characters are refused


def require_int(path: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise SpecError(f"{path}: must be an integer, got {shown(value)}")
    if minimum is not None and value < minimum:
        raise SpecError(f"{path}: must be >= {minimum}, got {value}")
    return value


def check_name(path: str, name: Any, error: type[EffnasError] = SpecError) -> str:
    """A name that is printed (tables, reports, progress): a string of at most :data:`MAX_NAME` characters without
    control characters, which would otherwise reach the terminal raw (``\x1b[2J`` clears it)."""
    if not isinstance(name, str):
        raise error(f"{path}: must be a string, got {shown(name)}")
    if len(name) > MAX_NAME:
        raise error(f"{path}: at most {MAX_NAME} characters, got {len(name)}")
    if not all(ch.isprintable() for ch in name):
        raise error(f"{path}: control characters are not allowed in a name, got {shown(name)}")
    return name


def _require_float(path: str, value: Any, low: float, high: float, high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(f"{path}: must be a number, got {shown(value)}")
    if value < low or value > high or (high_open and value == high):
        bracket = ")" if high_open else "]"
        raise SpecError(f"{path}: must be in [{low}, {high}{bracket}, got {value}")
    return float(value)


@dataclass(frozen=True)
class StageSpec:
    """One stage: ``layers`` blocks of one op; only the first block strides and changes channels."""

    op: str
    kernel: int
    stride: int
    expand_ratio: int
    in_channels: int
    out_channels: int
    layers: int
    se_ratio: float = 0.0

    def validate(self, path: str = "stage") -> None:
        if self.op not in OPS:
            raise SpecError(f"{path}.op: unknown op {shown(self.op)} (expected one of {', '.join(OPS)})")
        kernel = require_int(f"{path}.kernel", self.kernel)
        if kernel < 1 or kernel % 2 == 0:
            raise SpecError(f"{path}.kernel: must be a positive odd integer, got {kernel}")
        if kernel > MAX_KERNEL:
            raise SpecError(f"{path}.kernel: must be <= {MAX_KERNEL}, got {kernel}")
        require_int(f"{path}.stride", self.stride, 1)
        if self.stride > 2:
            raise SpecError(f"{path}.stride: must be 1 or 2, got {self.stride}")
        require_int(f"{path}.expand_ratio", self.expand_ratio, 1)
        if self.expand_ratio > 16:
            raise SpecError(f"{path}.expand_ratio: must be <= 16, got {self.expand_ratio}")
        for name in ("in_channels", "out_channels"):
            value = require_int(f"{path}.{name}", getattr(self, name))
            if value <= 0:
                raise SpecError(f"{path}.{name}: must be > 0, got {value}")
            if value > MAX_CHANNELS:
                raise SpecError(f"{path}.{name}: must be <= {MAX_CHANNELS}, got {value}")
        layers = require_int(f"{path}.layers", self.layers)
        if layers < 1:
            raise SpecError(f"{path}.layers: a stage needs at least 1 layer, got {layers}")
        if layers > MAX_LAYERS:
            raise SpecError(f"{path}.layers: must be <= {MAX_LAYERS}, got {layers}")
        _require_float(f"{path}.se_ratio", self.se_ratio, 0.0, 1.0)

    @property
    def has_se(self) -> bool:
        return self.se_ratio > 0


@dataclass(frozen=True)
class ProgressiveRecipe:
    """Progressive-learning ranges (paper Algorithm 1): image size and regularization rise together.

    The final image size is the spec's ``train_image_size``; training starts at ``min_image_size``.
    """

    min_image_size: int
    min_randaug: float
    max_randaug: float
    min_mixup: float
    max_mixup: float
    min_dropout: float
    max_dropout: float

    def validate(self, path: str = "progressive") -> None:
        require_int(f"{path}.min_image_size", self.min_image_size, 1)
        for low, high, top in (("min_randaug", "max_randaug", 30.0), ("min_mixup", "max_mixup", 10.0),
                               ("min_dropout", "max_dropout", 0.99)):
            lo = _require_float(f"{path}.{low}", getattr(self, low), 0.0, top)
            hi = _require_float(f"{path}.{high}", getattr(self, high), 0.0, top)
            if lo > hi:
                raise SpecError(f"{path}.{low}: must not exceed {high} ({lo} > {hi})")


@dataclass(frozen=True)
class ArchSpec:
    """A whole network: stem conv, stages of blocks, 1x1 head conv, pooling, dropout, classifier."""

    stages: tuple[StageSpec, ...]
    stem_channels: int
    head_channels: int = 1280
    num_classes: int = 1000
    dropout: float = 0.2
    drop_path_rate: float = 0.2
    train_image_size: int = 224
    eval_image_size: int = 224
    image_channels: int = 3
    name: str = ""
    progressive: ProgressiveRecipe | None = None
    activation: str = DEFAULT_ACTIVATION  # of every conv-BN-act and of SE's squeeze; the SE gate stays sigmoid
    # The stem conv's stride: the paper's 2 halves the image at once; 1 keeps a full-size map for the first conv,
    # which on images of about 28 px keeps detail the first stage's own stride can then reduce.
    stem_stride: int = DEFAULT_STEM_STRIDE

    def __post_init__(self) -> None:
        # Accept lists (from JSON or callers) but store tuples so the spec stays hashable and immutable.
        if not isinstance(self.stages, tuple):
            object.__setattr__(self, "stages", tuple(self.stages))
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        check_name("name", self.name)
        if len(self.stages) == 0:
            raise SpecError("stages: a spec needs at least one stage")
        if len(self.stages) > MAX_STAGES:
            raise SpecError(f"stages: a spec may have at most {MAX_STAGES} stages, got {len(self.stages)}")
        if not isinstance(self.activation, str) or self.activation not in ACTIVATIONS:
            raise SpecError(f"activation: unknown activation {shown(self.activation)} "
                            f"(expected one of {', '.join(ACTIVATIONS)})")
        for index, stage in enumerate(self.stages):
            if not isinstance(stage, StageSpec):
                raise SpecError(f"stages[{index}]: expected a StageSpec, got {type(stage).__name__}")
            stage.validate(f"stages[{index}]")
        if require_int("stem_stride", self.stem_stride) not in STEM_STRIDES:
            raise SpecError(f"stem_stride: must be one of {', '.join(map(str, STEM_STRIDES))}, got {self.stem_stride}")
        stem = require_int("stem_channels", self.stem_channels)
        if stem <= 0:
            raise SpecError(f"stem_channels: must be > 0, got {stem}")
        if stem > MAX_CHANNELS:
            raise SpecError(f"stem_channels: must be <= {MAX_CHANNELS}, got {stem}")
        previous_out, previous_path = stem, "stem_channels"
        for index, stage in enumerate(self.stages):
            if stage.in_channels != previous_out:
                raise SpecError(
                    f"stages[{index}].in_channels: {stage.in_channels} does not match "
                    f"{previous_path} = {previous_out}")
            previous_out, previous_path = stage.out_channels, f"stages[{index}].out_channels"
        head = require_int("head_channels", self.head_channels)
        if head <= 0:
            raise SpecError(f"head_channels: must be > 0, got {head}")
        if head > MAX_CHANNELS:
            raise SpecError(f"head_channels: must be <= {MAX_CHANNELS}, got {head}")
        if require_int("num_classes", self.num_classes, 2) > MAX_CLASSES:
            raise SpecError(f"num_classes: must be <= {MAX_CLASSES}, got {self.num_classes}")
        if require_int("image_channels", self.image_channels, 1) > MAX_IMAGE_CHANNELS:
            raise SpecError(f"image_channels: must be <= {MAX_IMAGE_CHANNELS}, got {self.image_channels}")
        _require_float("dropout", self.dropout, 0.0, 1.0, high_open=True)
        _require_float("drop_path_rate", self.drop_path_rate, 0.0, 1.0, high_open=True)
        for name in ("train_image_size", "eval_image_size"):
            size = require_int(name, getattr(self, name), 1)
            if size > MAX_IMAGE_SIZE:
                raise SpecError(f"{name}: must be <= {MAX_IMAGE_SIZE}, got {size}")
            if size < self.total_stride:
                raise SpecError(
                    f"{name}: {size} px is reduced below 1 pixel by the network's total stride "
                    f"{self.total_stride}; use at least {self.total_stride}")
        if self.progressive is not None:
            if not isinstance(self.progressive, ProgressiveRecipe):
                raise SpecError("progressive: expected a ProgressiveRecipe")
            self.progressive.validate()
            if self.progressive.min_image_size > self.train_image_size:
                raise SpecError(
                    f"progressive.min_image_size: {self.progressive.min_image_size} exceeds "
                    f"train_image_size {self.train_image_size}")
            if self.progressive.min_image_size < self.total_stride:
                raise SpecError(
                    f"progressive.min_image_size: {self.progressive.min_image_size} px is reduced below "
                    f"1 pixel by the network's total stride {self.total_stride}")

    # ------------------------------------------------------------------ derived facts
    @property
    def total_stride(self) -> int:
        return self.stem_stride * math.prod(stage.stride for stage in self.stages)

    @property
    def num_blocks(self) -> int:
        return sum(stage.layers for stage in self.stages)

    def replace(self, **changes: Any) -> "ArchSpec":
        """A copy with some fields changed, validated again."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["stages"] = [dataclasses.asdict(stage) for stage in self.stages]
        if self.progressive is None:
            del data["progressive"]
        if self.activation == DEFAULT_ACTIVATION:  # specs stored before the field existed stay byte-identical
            del data["activation"]
        if self.stem_stride == DEFAULT_STEM_STRIDE:  # likewise
            del data["stem_stride"]
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)
