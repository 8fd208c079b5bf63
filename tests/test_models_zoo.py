"""The zoo reproduces the published EfficientNet / EfficientNetV2 models and the MobileNetV2 / MnasNet-A1
baselines, parameter for parameter, and every one of them trains.

Counting happens on the meta device (shapes only), so even V2-XL costs well under a second.
"""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch
from torch import nn

from effnas.models import SqueezeExcite, build_model, count_macs, count_params
from effnas.search_space import get_spec, zoo_names
from effnas.search_space import SpecError

# Published parameter counts (1000 classes): torchvision's, and timm's semnasnet_100 for MnasNet-A1.
# The papers' multiply-adds (MobileNetV2: 300M; MnasNet-A1: 312M).
PUBLISHED_PARAMS = {"efficientnetv2-s": 21_458_488, "efficientnetv2-m": 54_139_356,
                    "efficientnetv2-l": 118_515_272, "efficientnet-b0": 5_288_548,
                    "efficientnet-b1": 7_794_184, "efficientnet-b4": 19_341_616, "efficientnet-b7": 66_347_960,
                    "mobilenetv2": 3_504_872, "mnasnet-a1": 3_887_038}
PUBLISHED_GMACS = {"efficientnetv2-s": (8.37, 384), "efficientnetv2-m": (24.58, 480),
                   "efficientnetv2-l": (56.08, 480), "efficientnet-b0": (0.39, 224),
                   "mobilenetv2": (0.300, 224), "mnasnet-a1": (0.312, 224)}

# Real forward + backward on CPU for these; the largest run the same pass on the meta device.
REAL_RUN = {"efficientnetv2-s", "efficientnetv2-m", "efficientnet-b0", "efficientnet-b1", "efficientnet-b2",
            "efficientnet-b3", "efficientnet-b4", "efficientnet-b5", "mobilenetv2", "mnasnet-a1"}


@lru_cache(maxsize=None)
def meta_model(name: str) -> torch.nn.Module:
    """The 1000-class model on the meta device, built once per test session."""
    with torch.device("meta"):
        return build_model(get_spec(name))


def test_zoo_names():
    names = zoo_names()
    assert names[:4] == ["efficientnetv2-s", "efficientnetv2-m", "efficientnetv2-l", "efficientnetv2-xl"]
    assert names[4:12] == [f"efficientnet-b{i}" for i in range(8)]
    assert names[12:] == ["mobilenetv2", "mnasnet-a1"]
    assert {get_spec(name).name for name in names} == set(names)


@pytest.mark.parametrize("name", PUBLISHED_PARAMS)
def test_params_match_published(name):
    assert count_params(meta_model(name)) == PUBLISHED_PARAMS[name]  # exact: every BN, bias and SE width


@pytest.mark.parametrize("name", PUBLISHED_GMACS)
def test_macs_match_published_at_eval_size(name):
    gmacs, size = PUBLISHED_GMACS[name]
    spec = get_spec(name)
    assert spec.eval_image_size == size
    macs = count_macs(meta_model(name), size)
    assert abs(macs / 1e9 - gmacs) <= 0.05 * gmacs, macs


def test_v1_family_grows_with_its_coefficients():
    sizes = [get_spec(f"efficientnet-b{i}").eval_image_size for i in range(8)]
    assert sizes == [224, 240, 260, 300, 380, 456, 528, 600]
    params = [count_params(meta_model(f"efficientnet-b{i}")) for i in range(8)]
    assert params == sorted(params) and len(set(params)) == 8
    assert all(stage.op == "mbconv" for i in range(8) for stage in get_spec(f"efficientnet-b{i}").stages)


def test_v2_specs_carry_the_paper_recipe():
    spec = get_spec("efficientnetv2-s")
    assert (spec.train_image_size, spec.eval_image_size, spec.dropout) == (300, 384, 0.2)
    assert spec.progressive is not None and spec.progressive.min_image_size == 128
    assert [stage.op for stage in spec.stages] == ["fused"] * 3 + ["mbconv"] * 3


def test_mobilenetv2_is_relu6_without_se_or_first_expand_conv():
    spec, model = get_spec("mobilenetv2"), meta_model("mobilenetv2")
    assert (spec.activation, spec.stem_channels, spec.head_channels, spec.dropout) == ("relu6", 32, 1280, 0.2)
    assert [(s.expand_ratio, s.out_channels, s.layers, s.stride) for s in spec.stages] == [
        (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    assert not any(isinstance(m, SqueezeExcite) for m in model.modules())
    depthwise, project = model.stages[0][0].body  # t = 1: no 1x1 expand conv
    assert depthwise[0].groups == 32 and isinstance(depthwise[2], nn.ReLU6) and project[0].out_channels == 16
    assert count_params(model) == 3_504_872 and spec.eval_image_size == 224


def test_mnasnet_a1_se_where_the_paper_has_it_squeezed_from_block_inputs():
    spec, model = get_spec("mnasnet-a1"), meta_model("mnasnet-a1")
    assert spec.activation == "relu"
    assert [s.has_se for s in spec.stages] == [False, False, True, False, True, True, False]
    assert [(s.kernel, s.expand_ratio, s.out_channels, s.layers) for s in spec.stages] == [
        (3, 1, 16, 1), (3, 6, 24, 2), (5, 3, 40, 3), (3, 6, 80, 4), (3, 6, 112, 2), (5, 6, 160, 3), (3, 6, 320, 1)]
    assert not model.stages[0][0].use_residual  # the depthwise-separable 32 -> 16 block has no skip
    squeezes = [(m.expand.out_channels, m.reduce.out_channels) for m in model.modules() if isinstance(m, SqueezeExcite)]
    assert squeezes == [(72, 6), (120, 10), (120, 10), (480, 20), (672, 28), (672, 28), (960, 40), (960, 40)]
    assert all(isinstance(m.act, nn.ReLU) for m in model.modules() if isinstance(m, SqueezeExcite))
    assert count_params(model) == 3_887_038


def test_unknown_name_and_class_override():
    with pytest.raises(SpecError, match="unknown zoo model 'efficientnetv3-s'"):
        get_spec("efficientnetv3-s")
    assert get_spec(" EfficientNetV2-S ", num_classes=10).num_classes == 10
    with torch.device("meta"):
        ten_classes = build_model(get_spec("efficientnet-b0", num_classes=10))
    # Only the classifier (1280 features + bias per class) depends on the number of classes.
    assert count_params(meta_model("efficientnet-b0")) - count_params(ten_classes) == (1000 - 10) * 1281


@pytest.mark.parametrize("name", zoo_names())
def test_forward_and_backward_at_32px(name):
    if name in REAL_RUN:
        torch.manual_seed(0)
        model, images = build_model(get_spec(name, num_classes=10)), torch.randn(2, 3, 32, 32)
    else:  # the same pass on shapes only: checks the wiring of the largest models in a second or two
        model, images = meta_model(name), torch.empty(2, 3, 32, 32, device="meta")
    model.zero_grad(set_to_none=True)
    logits = model(images)
    assert logits.shape == (2, model.classifier.out_features)
    logits.logsumexp(1).mean().backward()
    for parameter in model.parameters():
        assert parameter.grad is not None and parameter.grad.shape == parameter.shape
    if name in REAL_RUN:
        assert torch.isfinite(logits).all()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        assert model.classifier.weight.grad.abs().sum() > 0
