"""Hand-designed networks a practitioner would train instead of searching, named as specs are.

They are not in the MBConv spec language, so each is a :class:`ReferenceSpec`: its name plus the fields a
training run rewrites (classes, channels, image sizes, the recipe it was trained with). ``nas compare`` trains
them with the same recipe, split, device and time as the search's winner; :mod:`effnas.models.reference`
builds them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from effnas.errors import SpecError, shown
from effnas.search_space.loading import load_arch
from effnas.search_space.spec import ArchSpec, ProgressiveRecipe

# name -> (what it is, total stride, the image size it was designed for)
REFERENCE_NETWORKS: dict[str, tuple[str, int, int]] = {
    "mnist-cnn": ("the CNN of PyTorch's MNIST example: two 3x3 convs (32, 64), max-pool, dense 128", 2, 28),
    "resnet20": ("ResNet-20 for CIFAR (He et al., 2016): 3 stages of 3 basic blocks, 16/32/64 channels", 4, 32),
}


@dataclass(frozen=True)
class ReferenceSpec:
    """A reference network by name, with the fields a training run sets."""

    reference: str
    num_classes: int = 10
    image_channels: int = 3
    train_image_size: int = 32
    eval_image_size: int = 32
    dropout: float = 0.0
    drop_path_rate: float = 0.0
    progressive: ProgressiveRecipe | None = None

    def __post_init__(self) -> None:
        if self.reference not in REFERENCE_NETWORKS:
            raise SpecError(f"reference: unknown network {shown(self.reference)} "
                            f"(one of {', '.join(REFERENCE_NETWORKS)})")

    @property
    def name(self) -> str:
        return self.reference

    @property
    def total_stride(self) -> int:
        return REFERENCE_NETWORKS[self.reference][1]

    def replace(self, **changes: Any) -> "ReferenceSpec":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ReferenceSpec":
        data = dict(data)
        if isinstance(data.get("progressive"), dict):
            data["progressive"] = ProgressiveRecipe(**data["progressive"])
        return cls(**data)


def load_network(reference: str) -> ArchSpec | ReferenceSpec:
    """What ``nas train --arch`` and ``nas compare --against`` accept: a reference network's name, or anything
    :func:`~effnas.search_space.loading.load_arch` reads (a spec file, a run directory, a zoo name)."""
    name = str(reference).strip().lower()
    if name in REFERENCE_NETWORKS:
        size = REFERENCE_NETWORKS[name][2]
        return ReferenceSpec(name, train_image_size=size, eval_image_size=size)
    return load_arch(reference)
