"""The reference networks of :mod:`effnas.search_space.reference`, as a practitioner writes them.

Each takes any image size its stride allows and has ``set_dropout``, the one hook progressive learning needs
(the dropout before the classifier), as :class:`effnas.models.network.EfficientNet` does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from effnas.search_space.reference import ReferenceSpec


class MnistCNN(nn.Module):
    """PyTorch's MNIST example: conv 3x3 (32) - conv 3x3 (64) - max-pool - dropout 0.25 - dense 128 - dropout -
    classifier. The flattened map is pooled to the example's 12 x 12, so any image size trains (28 px is the
    example exactly)."""

    def __init__(self, channels: int, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(channels, 32, 3), nn.Conv2d(32, 64, 3)
        self.dropout1, self.dropout2 = nn.Dropout(0.25), nn.Dropout(dropout)
        self.fc1, self.fc2 = nn.Linear(64 * 12 * 12, 128), nn.Linear(128, num_classes)

    def set_dropout(self, p: float) -> None:
        self.dropout2.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = torch.flatten(self.dropout1(F.adaptive_avg_pool2d(x, 12)), 1)
        return self.fc2(self.dropout2(F.relu(self.fc1(x))))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a shortcut (a strided 1x1 conv-BN where the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet20(nn.Module):
    """ResNet-20 for CIFAR-sized images (He et al., 2016, section 4.2): a 3x3 conv (16), three stages of three
    basic blocks at 16, 32 and 64 channels (the last two stride 2), global average pooling, a linear classifier."""

    def __init__(self, channels: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        blocks, in_channels = [], 16
        for out_channels, stride in ((16, 1), (32, 2), (64, 2)):
            for index in range(3):
                blocks.append(BasicBlock(in_channels, out_channels, stride if index == 0 else 1))
                in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def set_dropout(self, p: float) -> None:
        self.dropout.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1).flatten(1)
        return self.classifier(self.dropout(x))


BUILDERS = {"mnist-cnn": MnistCNN, "resnet20": ResNet20}


def build_reference(spec: ReferenceSpec, num_classes: int | None = None) -> nn.Module:
    return BUILDERS[spec.reference](spec.image_channels, spec.num_classes if num_classes is None else num_classes,
                                    spec.dropout)
