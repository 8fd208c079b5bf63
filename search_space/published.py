"""The published EfficientNetV2 (S/M/L/XL) and EfficientNet (B0-B7) architectures as specs.

V2 specs are the official block strings (google/automl ``effnetv2_configs``); B1-B7 are produced
from B0 by :func:`effnas.search_space.compound.efficientnet_v1` with the published width/depth/resolution coefficients.
Progressive-learning ranges are the paper's Table 6 (XL reuses L's).
"""

from __future__ import annotations

from effnas.errors import SpecError
from effnas.search_space.block_strings import decode_block_string
from effnas.search_space.compound import EFFICIENTNET_V1_COEFFICIENTS, efficientnet_v1
from effnas.search_space.spec import ArchSpec, ProgressiveRecipe

_V2_BLOCKS = {
    "efficientnetv2-s": ["r2_k3_s1_e1_i24_o24_c1", "r4_k3_s2_e4_i24_o48_c1", "r4_k3_s2_e4_i48_o64_c1",
                         "r6_k3_s2_e4_i64_o128_se0.25", "r9_k3_s1_e6_i128_o160_se0.25",
                         "r15_k3_s2_e6_i160_o256_se0.25"],
    "efficientnetv2-m": ["r3_k3_s1_e1_i24_o24_c1", "r5_k3_s2_e4_i24_o48_c1", "r5_k3_s2_e4_i48_o80_c1",
                         "r7_k3_s2_e4_i80_o160_se0.25", "r14_k3_s1_e6_i160_o176_se0.25",
                         "r18_k3_s2_e6_i176_o304_se0.25", "r5_k3_s1_e6_i304_o512_se0.25"],
    "efficientnetv2-l": ["r4_k3_s1_e1_i32_o32_c1", "r7_k3_s2_e4_i32_o64_c1", "r7_k3_s2_e4_i64_o96_c1",
                         "r10_k3_s2_e4_i96_o192_se0.25", "r19_k3_s1_e6_i192_o224_se0.25",
                         "r25_k3_s2_e6_i224_o384_se0.25", "r7_k3_s1_e6_i384_o640_se0.25"],
    "efficientnetv2-xl": ["r4_k3_s1_e1_i32_o32_c1", "r8_k3_s2_e4_i32_o64_c1", "r8_k3_s2_e4_i64_o96_c1",
                          "r16_k3_s2_e4_i96_o192_se0.25", "r24_k3_s1_e6_i192_o256_se0.25",
                          "r32_k3_s2_e6_i256_o512_se0.25", "r8_k3_s1_e6_i512_o640_se0.25"],
}

# name: (train size, eval size, dropout, progressive recipe from the paper's Table 6)
_V2_TRAINING = {
    "efficientnetv2-s": (300, 384, 0.2, ProgressiveRecipe(128, 5, 15, 0.0, 0.0, 0.1, 0.3)),
    "efficientnetv2-m": (384, 480, 0.3, ProgressiveRecipe(128, 5, 20, 0.0, 0.2, 0.1, 0.4)),
    "efficientnetv2-l": (384, 480, 0.4, ProgressiveRecipe(128, 5, 25, 0.0, 0.4, 0.1, 0.5)),
    "efficientnetv2-xl": (384, 512, 0.4, ProgressiveRecipe(128, 5, 25, 0.0, 0.4, 0.1, 0.5)),
}

_B0_BLOCKS = ["r1_k3_s11_e1_i32_o16_se0.25", "r2_k3_s22_e6_i16_o24_se0.25", "r2_k5_s22_e6_i24_o40_se0.25",
              "r3_k3_s22_e6_i40_o80_se0.25", "r3_k5_s11_e6_i80_o112_se0.25", "r4_k5_s22_e6_i112_o192_se0.25",
              "r1_k3_s11_e6_i192_o320_se0.25"]


def _v2(name: str) -> ArchSpec:
    stages = tuple(decode_block_string(block) for block in _V2_BLOCKS[name])
    train, evaluate, dropout, recipe = _V2_TRAINING[name]
    return ArchSpec(stages=stages, stem_channels=stages[0].in_channels, head_channels=1280, num_classes=1000,
                    dropout=dropout, drop_path_rate=0.2, train_image_size=train, eval_image_size=evaluate,
                    name=name, progressive=recipe)


def _b0() -> ArchSpec:
    stages = tuple(decode_block_string(block) for block in _B0_BLOCKS)
    return ArchSpec(stages=stages, stem_channels=32, head_channels=1280, num_classes=1000, dropout=0.2,
                    drop_path_rate=0.2, train_image_size=224, eval_image_size=224, name="efficientnet-b0")


def zoo_names() -> list[str]:
    """Every built-in architecture name."""
    return list(_V2_BLOCKS) + list(EFFICIENTNET_V1_COEFFICIENTS)


def get_spec(name: str, num_classes: int | None = None) -> ArchSpec:
    """A zoo architecture by name (``efficientnetv2-s`` ... ``efficientnet-b7``)."""
    key = name.strip().lower()
    if key in _V2_BLOCKS:
        spec = _v2(key)
    elif key == "efficientnet-b0":
        spec = _b0()
    elif key in EFFICIENTNET_V1_COEFFICIENTS:
        spec = efficientnet_v1(_b0(), key)
    else:
        raise SpecError(f"unknown zoo model {name!r} (known: {', '.join(zoo_names())})")
    return spec if num_classes is None else spec.replace(num_classes=num_classes)
