"""The building blocks of EfficientNet and EfficientNetV2 (and MobileNetV2 / MnasNet): one class per op.

Details follow the official code (google/automl) and torchvision: one activation everywhere (SiLU unless
the spec names another), BatchNorm with eps 1e-3, SE squeeze width taken from the block's *input*
channels, projection convs without an activation, and a residual (with stochastic depth) only where
the block keeps shape.
"""

from __future__ import annotations

import torch
from torch import nn

BN_EPS = 1e-3

# The spec's ``activation`` names (effnas.search_space.spec.ACTIVATIONS) and their modules.
ACTIVATION_LAYERS: dict[str, type[nn.Module]] = {"silu": nn.SiLU, "relu": nn.ReLU, "relu6": nn.ReLU6}


def make_activation(name: str) -> nn.Module:
    """A fresh in-place activation module for a spec's activation name."""
    try:
        return ACTIVATION_LAYERS[name](inplace=True)
    except KeyError:
        raise ValueError(f"activation: unknown {name!r} (expected one of {', '.join(ACTIVATION_LAYERS)})") from None


class ConvBNAct(nn.Sequential):
    """Conv (no bias) + BatchNorm + optional activation, 'same' padding for odd kernels."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1,
                 groups: int = 1, act: bool = True, activation: str = "silu") -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels, eps=BN_EPS),
            make_activation(activation) if act else nn.Identity(),
        )


class SqueezeExcite(nn.Module):
    """Channel attention: global pool, 1x1 reduce, the network's activation, 1x1 expand, sigmoid gate."""

    def __init__(self, channels: int, squeeze_channels: int, activation: str = "silu") -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze_channels, 1)
        self.act = make_activation(activation)
        self.expand = nn.Conv2d(squeeze_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = self.expand(self.act(self.reduce(scale)))
        return x * scale.sigmoid()


class StochasticDepth(nn.Module):
    """Drop a residual branch for whole samples with probability ``p`` while training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        mask = torch.empty((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device).bernoulli_(survival)
        return x * mask.div_(survival)

    def extra_repr(self) -> str:
        return f"p={self.p:.4f}"


def _squeeze_channels(in_channels: int, se_ratio: float) -> int:
    return max(1, int(in_channels * se_ratio))


class _ResidualBlock(nn.Module):
    """Shared residual wiring: ``body`` plus a skip connection where stride 1 and channels match."""

    body: nn.Sequential

    def __init__(self, in_channels: int, out_channels: int, stride: int, drop_path: float) -> None:
        super().__init__()
        self.use_residual = stride == 1 and in_channels == out_channels
        self.drop_path = StochasticDepth(drop_path) if self.use_residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if self.use_residual:
            out = self.drop_path(out) + x
        return out


class MBConv(_ResidualBlock):
    """Inverted bottleneck: 1x1 expand (if ratio > 1), depthwise kxk, SE, 1x1 project.

    With ratio 1 there is no expand conv: that is MobileNetV2's first block and MnasNet's
    depthwise-separable conv, parameter for parameter.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand_ratio: int,
                 se_ratio: float = 0.0, drop_path: float = 0.0, activation: str = "silu") -> None:
        super().__init__(in_channels, out_channels, stride, drop_path)
        expanded = in_channels * expand_ratio
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_channels, expanded, 1, activation=activation))
        layers.append(ConvBNAct(expanded, expanded, kernel, stride, groups=expanded, activation=activation))
        if se_ratio > 0:
            layers.append(SqueezeExcite(expanded, _squeeze_channels(in_channels, se_ratio), activation))
        layers.append(ConvBNAct(expanded, out_channels, 1, act=False))
        self.body = nn.Sequential(*layers)


class FusedMBConv(_ResidualBlock):
    """EfficientNetV2's fused block: the expand and depthwise convs become one regular kxk conv.

    With expansion 1 it is a single kxk conv + BN + activation; otherwise kxk expand, (SE), 1x1 project.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand_ratio: int,
                 se_ratio: float = 0.0, drop_path: float = 0.0, activation: str = "silu") -> None:
        super().__init__(in_channels, out_channels, stride, drop_path)
        if expand_ratio == 1:
            layers: list[nn.Module] = [ConvBNAct(in_channels, out_channels, kernel, stride, activation=activation)]
            if se_ratio > 0:
                layers.append(SqueezeExcite(out_channels, _squeeze_channels(in_channels, se_ratio), activation))
        else:
            expanded = in_channels * expand_ratio
            layers = [ConvBNAct(in_channels, expanded, kernel, stride, activation=activation)]
            if se_ratio > 0:
                layers.append(SqueezeExcite(expanded, _squeeze_channels(in_channels, se_ratio), activation))
            layers.append(ConvBNAct(expanded, out_channels, 1, act=False))
        self.body = nn.Sequential(*layers)


BLOCKS: dict[str, type[_ResidualBlock]] = {"mbconv": MBConv, "fused": FusedMBConv}
