"""Turn an :class:`~search_space.ArchSpec` into a PyTorch network."""

from __future__ import annotations

import math

import torch
from torch import nn

from effnas.search_space import ArchSpec
from effnas.search_space.reference import ReferenceSpec

from effnas.models.blocks import BLOCKS, ConvBNAct
from effnas.models.reference import build_reference


class EfficientNet(nn.Module):
    """Stem, stages of MBConv / Fused-MBConv blocks, 1x1 head conv, pooling, dropout, classifier.

    Also MobileNetV2 and MnasNet: the same skeleton with ``spec.activation`` (ReLU6 / ReLU) in every
    conv-BN-act and SE squeeze.
    """

    def __init__(self, spec: ArchSpec, num_classes: int | None = None) -> None:
        super().__init__()
        self.spec = spec
        num_classes = spec.num_classes if num_classes is None else num_classes
        self.stem = ConvBNAct(spec.image_channels, spec.stem_channels, 3, spec.stem_stride,
                              activation=spec.activation)

        # Stochastic depth grows linearly with the block's index over the whole network.
        total, index = spec.num_blocks, 0
        stages = []
        for stage in spec.stages:
            blocks = []
            for layer in range(stage.layers):
                first = layer == 0
                blocks.append(BLOCKS[stage.op](
                    in_channels=stage.in_channels if first else stage.out_channels,
                    out_channels=stage.out_channels,
                    kernel=stage.kernel,
                    stride=stage.stride if first else 1,
                    expand_ratio=stage.expand_ratio,
                    se_ratio=stage.se_ratio,
                    drop_path=spec.drop_path_rate * index / total,
                    activation=spec.activation,
                ))
                index += 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)

        self.head = ConvBNAct(spec.stages[-1].out_channels, spec.head_channels, 1, activation=spec.activation)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(spec.dropout, inplace=True)
        self.classifier = nn.Linear(spec.head_channels, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise as the reference implementations do (He-normal fan-out convs, uniform linear)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.out_features)
                nn.init.uniform_(module.weight, -bound, bound)
                nn.init.zeros_(module.bias)

    def set_dropout(self, p: float) -> None:
        """Change the head's dropout rate (progressive learning raises it stage by stage)."""
        self.dropout.p = p

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.forward_features(x)).flatten(1)
        return self.classifier(self.dropout(x))


def build_model(spec: ArchSpec | ReferenceSpec, num_classes: int | None = None) -> nn.Module:
    """Build the network a spec (or a reference network's spec) describes (``num_classes`` overrides its own)."""
    if isinstance(spec, ReferenceSpec):
        return build_reference(spec, num_classes)
    return EfficientNet(spec, num_classes)
