"""Block details that decide whether a spec's network is the published one: residuals, stochastic depth,
SE width, block structure, BatchNorm and initialisation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from effnas.models import FusedMBConv, MBConv, SqueezeExcite, StochasticDepth, build_model
from effnas.search_space import get_spec
from effnas.search_space import spec_from_dict
from tests.test_search_space_spec import tiny_spec_dict


def blocks_with_specs(spec, model):
    """(block module, its input channels, its stride) in network order."""
    for stage, stage_module in zip(spec.stages, model.stages):
        for layer, block in enumerate(stage_module):
            first = layer == 0
            yield block, stage.in_channels if first else stage.out_channels, stage.stride if first else 1, stage


@pytest.fixture(scope="module")
def v2s_meta():
    spec = get_spec("efficientnetv2-s")
    with torch.device("meta"):
        return spec, build_model(spec)


def test_residual_only_where_stride_one_and_channels_match(v2s_meta):
    spec, model = v2s_meta
    seen = {True: 0, False: 0}
    for block, in_channels, stride, stage in blocks_with_specs(spec, model):
        expected = stride == 1 and in_channels == stage.out_channels
        assert block.use_residual == expected
        assert isinstance(block.drop_path, StochasticDepth if expected else nn.Identity)
        seen[expected] += 1
    assert seen[True] == spec.num_blocks - 5 and seen[False] == 5  # stage 0's first block keeps 24 -> 24


def test_residual_adds_the_input_in_eval_mode():
    torch.manual_seed(0)
    block = MBConv(8, 8, kernel=3, stride=1, expand_ratio=4, se_ratio=0.25, drop_path=0.5).eval()
    x = torch.randn(2, 8, 8, 8)
    assert torch.allclose(block(x), block.body(x) + x)
    downsample = FusedMBConv(8, 16, kernel=3, stride=2, expand_ratio=4).eval()
    assert torch.equal(downsample(x), downsample.body(x))


@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_stochastic_depth_grows_linearly_with_block_index(rate):
    spec = get_spec("efficientnetv2-s").replace(drop_path_rate=rate)
    with torch.device("meta"):
        model = build_model(spec)
    blocks = [block for stage in model.stages for block in stage]
    assert len(blocks) == spec.num_blocks
    for index, block in enumerate(blocks):
        if block.use_residual:
            assert block.drop_path.p == pytest.approx(rate * index / spec.num_blocks)
    assert blocks[0].drop_path.p == 0.0 and blocks[-1].drop_path.p < rate


def test_stochastic_depth_drops_whole_samples_and_keeps_the_expectation():
    torch.manual_seed(0)
    layer = StochasticDepth(0.25)
    x = torch.ones(4000, 3, 2, 2)
    out = layer.train()(x)
    per_sample = out.flatten(1)
    kept = per_sample[:, 0] > 0
    assert torch.all(per_sample == per_sample[:, :1])  # one decision per sample
    assert torch.allclose(per_sample[kept], torch.full_like(per_sample[kept], 1 / 0.75))
    assert abs(kept.float().mean().item() - 0.75) < 0.03
    assert torch.equal(layer.eval()(x), x)
    assert torch.equal(StochasticDepth(0.0).train()(x), x)


@pytest.mark.parametrize("op, in_channels, expand, ratio", [
    ("mbconv", 40, 6, 0.25), ("mbconv", 16, 1, 0.25), ("fused", 24, 4, 0.25), ("fused", 32, 1, 0.5),
    ("mbconv", 2, 4, 0.25)])
def test_se_squeeze_width_comes_from_the_block_input(op, in_channels, expand, ratio):
    block_class = MBConv if op == "mbconv" else FusedMBConv
    block = block_class(in_channels, 48, kernel=3, stride=1, expand_ratio=expand, se_ratio=ratio)
    (se,) = [module for module in block.modules() if isinstance(module, SqueezeExcite)]
    assert se.reduce.out_channels == max(1, int(in_channels * ratio))
    gated = 48 if op == "fused" and expand == 1 else in_channels * expand
    assert se.reduce.in_channels == se.expand.out_channels == gated


def test_mbconv_structure():
    block = MBConv(16, 24, kernel=5, stride=2, expand_ratio=6, se_ratio=0.25)
    expand, depthwise, se, project = block.body
    assert expand[0].kernel_size == (1, 1) and expand[0].out_channels == 96
    assert depthwise[0].kernel_size == (5, 5) and depthwise[0].groups == 96 and depthwise[0].stride == (2, 2)
    assert isinstance(se, SqueezeExcite)
    assert project[0].kernel_size == (1, 1) and isinstance(project[2], nn.Identity)  # no activation
    no_expand = MBConv(32, 16, kernel=3, stride=1, expand_ratio=1)
    assert len(no_expand.body) == 2 and no_expand.body[0][0].groups == 32


def test_fused_mbconv_structure():
    single = FusedMBConv(24, 24, kernel=3, stride=1, expand_ratio=1)
    (conv,) = single.body
    assert conv[0].kernel_size == (3, 3) and isinstance(conv[2], nn.SiLU)
    expand, project = FusedMBConv(24, 48, kernel=3, stride=2, expand_ratio=4).body
    assert expand[0].kernel_size == (3, 3) and expand[0].stride == (2, 2) and expand[0].out_channels == 96
    assert project[0].kernel_size == (1, 1) and isinstance(project[2], nn.Identity)


def test_network_shape_batchnorm_and_init():
    torch.manual_seed(0)
    spec = spec_from_dict(tiny_spec_dict()).replace(head_channels=512)
    model = build_model(spec)
    assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert model.stem[0].stride == (2, 2) and model.stem[0].out_channels == spec.stem_channels
    head = model.head[0].weight  # 1x1 conv 24 -> 512: He-normal with fan-out 512
    assert head.std().item() == pytest.approx(math.sqrt(2 / 512), rel=0.05)
    bound = 1 / math.sqrt(model.classifier.out_features)
    assert model.classifier.weight.abs().max() <= bound and model.classifier.weight.abs().max() > 0.9 * bound
    assert torch.count_nonzero(model.classifier.bias) == 0
    features = model.eval().forward_features(torch.randn(1, 3, 32, 32))
    assert features.shape == (1, 512, 32 // spec.total_stride, 32 // spec.total_stride)


def test_dropout_can_be_changed_for_progressive_learning():
    model = build_model(spec_from_dict(tiny_spec_dict()))
    assert model.dropout.p == 0.2
    model.set_dropout(0.4)
    assert model.dropout.p == 0.4


@pytest.mark.parametrize("activation, layer", [("silu", nn.SiLU), ("relu", nn.ReLU), ("relu6", nn.ReLU6)])
def test_spec_activation_reaches_every_conv_bn_act_and_se_squeeze(activation, layer):
    spec = spec_from_dict(tiny_spec_dict()).replace(activation=activation)
    model = build_model(spec)
    acts = [m for m in model.modules() if isinstance(m, (nn.SiLU, nn.ReLU, nn.ReLU6, nn.GELU, nn.Hardswish))]
    assert acts and all(type(m) is layer for m in acts)
    ses = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    assert ses and all(type(se.act) is layer for se in ses)  # the SE gate itself stays a sigmoid
    assert type(model.stem[2]) is layer and type(model.head[2]) is layer


def test_relu6_changes_the_function_on_the_same_weights():
    torch.manual_seed(0)
    silu = build_model(spec_from_dict(tiny_spec_dict())).eval()
    relu6 = build_model(silu.spec.replace(activation="relu6")).eval()
    relu6.load_state_dict(silu.state_dict())
    x = 4 * torch.randn(2, 3, 32, 32)  # large inputs: some activations pass 6 and clip under ReLU6
    with torch.no_grad():
        a, b = silu(x), relu6(x)
        clipped = relu6.forward_features(x)
    assert not torch.allclose(a, b, atol=1e-4)
    assert clipped.max() <= 6.0 and clipped.min() >= 0.0  # the head's ReLU6 bounds the features
    relu = build_model(silu.spec.replace(activation="relu")).eval()
    relu.load_state_dict(silu.state_dict())
    with torch.no_grad():
        assert not torch.allclose(relu(x), b, atol=1e-4)  # ReLU6 clips, plain ReLU does not


def test_stem_stride_one_keeps_the_full_map_for_the_first_conv():
    spec = spec_from_dict(tiny_spec_dict())
    full = build_model(spec.replace(stem_stride=1)).eval()
    assert full.stem[0].stride == (1, 1)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert full.stem(x).shape[-1] == 32 and build_model(spec).eval().stem(x).shape[-1] == 16
        assert full.forward_features(x).shape[-1] == 32 // spec.replace(stem_stride=1).total_stride
