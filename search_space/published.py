"""The published EfficientNetV2 (S/M/L/XL), EfficientNet (B0-B7), MobileNetV2 and MnasNet-A1 as specs.

V2 specs are the official block strings (google/automl ``effnetv2_configs``); B1-B7 are produced
from B0 by :func:`effnas.search_space.compound.efficientnet_v1` with the published width/depth/resolution coefficients.
Progressive-learning ranges are the paper's Table 6 (XL reuses L's). MobileNetV2 and MnasNet-A1 are the
baselines the search's winner has to beat, written in the same notation so they train the same way.
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


# torchvision ``mobilenet_v2`` (width 1.0): the (t, c, n, s) table as block strings; ReLU6, no SE. The e1
# block has no expand conv, exactly as torchvision's first InvertedResidual.
_MOBILENETV2_BLOCKS = ["r1_k3_s1_e1_i32_o16", "r2_k3_s2_e6_i16_o24", "r3_k3_s2_e6_i24_o32",
                       "r4_k3_s2_e6_i32_o64", "r3_k3_s1_e6_i64_o96", "r3_k3_s2_e6_i96_o160",
                       "r1_k3_s1_e6_i160_o320"]

# MnasNet-A1 (paper Fig. 7; timm ``semnasnet_100``), ReLU. The first block is the paper's depthwise-separable
# conv (dw k3, pw 32 -> 16, no skip): an e1 MBConv is the same layers, and 32 -> 16 never takes a skip.
# SE squeezes to 0.25 of the block's input channels, as timm does (``se_from_exp=False``).
_MNASNET_A1_BLOCKS = ["r1_k3_s1_e1_i32_o16", "r2_k3_s2_e6_i16_o24", "r3_k5_s2_e3_i24_o40_se0.25",
                      "r4_k3_s2_e6_i40_o80", "r2_k3_s1_e6_i80_o112_se0.25", "r3_k5_s2_e6_i112_o160_se0.25",
                      "r1_k3_s1_e6_i160_o320"]

# name: (block strings, activation, dropout, stochastic depth): stem 32, head 1280, 224 px for both.
_BASELINES = {
    "mobilenetv2": (_MOBILENETV2_BLOCKS, "relu6", 0.2, 0.0),
    "mnasnet-a1": (_MNASNET_A1_BLOCKS, "relu", 0.2, 0.0),
}


def _baseline(name: str) -> ArchSpec:
    blocks, activation, dropout, drop_path = _BASELINES[name]
    stages = tuple(decode_block_string(block) for block in blocks)
    return ArchSpec(stages=stages, stem_channels=32, head_channels=1280, num_classes=1000, dropout=dropout,
                    drop_path_rate=drop_path, train_image_size=224, eval_image_size=224, name=name,
                    activation=activation)


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
    return list(_V2_BLOCKS) + list(EFFICIENTNET_V1_COEFFICIENTS) + list(_BASELINES)


def get_spec(name: str, num_classes: int | None = None) -> ArchSpec:
    """A zoo architecture by name (``efficientnetv2-s`` ... ``efficientnet-b7``, ``mobilenetv2``, ``mnasnet-a1``)."""
    key = name.strip().lower()
    if key in _V2_BLOCKS:
        spec = _v2(key)
    elif key == "efficientnet-b0":
        spec = _b0()
    elif key in EFFICIENTNET_V1_COEFFICIENTS:
        spec = efficientnet_v1(_b0(), key)
    elif key in _BASELINES:
        spec = _baseline(key)
    else:
        raise SpecError(f"unknown zoo model {name!r} (known: {', '.join(zoo_names())})")
    return spec if num_classes is None else spec.replace(num_classes=num_classes)
