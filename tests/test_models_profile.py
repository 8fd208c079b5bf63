"""Counting: parameter and multiply-add counts checked against hand formulas (the timed step: test_nas_train_profile)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from effnas.models import ProfileError, build_model, count_macs, count_macs_by_module, count_params, count_spec
from effnas.models.profile import _count_for_real
from effnas.search_space import SpecError, get_spec, spec_from_dict
from effnas.search_space.space import SearchSpace
from tests.test_search_space_spec import tiny_spec_dict


def conv_pool_linear() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def test_count_params_matches_the_layer_formulas():
    conv, bn, linear = 3 * 8 * 3 * 3, 2 * 8, 8 * 4 + 4
    model = conv_pool_linear()
    assert count_params(model) == conv + bn + linear
    model[0].weight.requires_grad_(False)
    assert count_params(model, trainable_only=True) == bn + linear


def test_count_macs_matches_the_layer_formulas():
    size = 10  # conv: every output pixel of every output channel costs in_channels * k * k multiply-adds
    assert count_macs(conv_pool_linear(), size) == 8 * size * size * 3 * 3 * 3 + 8 * 4


@pytest.mark.parametrize("which", ["tiny", "default-space backbone", "zoo b0"])
def test_count_macs_on_meta_equals_a_real_forward_and_leaves_the_model_alone(which):
    spec = {"tiny": lambda: spec_from_dict(tiny_spec_dict()), "default-space backbone": lambda: SearchSpace
            .from_dict({}).backbone, "zoo b0": lambda: get_spec("efficientnet-b0")}[which]()
    torch.manual_seed(0)
    model = build_model(spec).train()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}  # weights and BN running stats
    on_meta = count_macs(model, 32)
    real = count_macs(model, 32, on_meta=False)
    assert model.training and next(model.parameters()).device.type == "cpu"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        by_hand = _count_for_real(model.eval(), 32, 3).get_total_flops() // 2
    assert on_meta == real == by_hand > 0


def test_macs_by_module_add_up_and_scale_with_pixels():
    spec = spec_from_dict(tiny_spec_dict())
    with torch.device("meta"):
        model = build_model(spec)
    parts = count_macs_by_module(model, 32)
    pieces = ["stem", "head", "classifier"] + [f"stages.{i}" for i in range(len(spec.stages))]
    assert sum(parts[name] for name in pieces) == parts[""] == count_macs(model, 32)
    # Convs cost 4x at twice the side; the classifier and SE's 1x1 convs act on pooled vectors and do not grow.
    fixed = parts["classifier"] + sum(macs for name, macs in parts.items() if name.endswith((".reduce", ".expand")))
    assert fixed > parts["classifier"]
    assert count_macs(model, 64) - fixed == 4 * (parts[""] - fixed)


def test_bad_image_size_is_a_user_error():
    with pytest.raises(ProfileError, match="image_size"):
        count_macs(conv_pool_linear(), 0)


def test_count_spec_counts_at_eval_size_with_a_breakdown():
    spec = spec_from_dict(tiny_spec_dict())  # train 32 px, eval 48 px
    result = count_spec(spec)
    with torch.device("meta"):
        model = build_model(spec)
    assert result["params"] == count_params(model)
    assert result["image_size"] == 48 and result["macs"] == count_macs(model, 48)
    assert result["flops"] == 2 * result["macs"]
    assert [stage["block"] for stage in result["stages"]] == [
        "r1_k3_s1_e1_i8_o8_c1", "r2_k3_s2_e4_i8_o16_c1", "r2_k5_s2_e4_i16_o24_se0.25"]
    parts = [result["stem"], result["head"], *result["stages"]]
    assert sum(part["params"] for part in parts) == result["params"]
    assert sum(part["macs"] for part in parts) == result["macs"]


def test_count_spec_overrides():
    spec = spec_from_dict(tiny_spec_dict())
    base = count_spec(spec)
    more = count_spec(spec, image_size=64, num_classes=100)
    assert "step_time_ms" not in base
    assert more["num_classes"] == 100 and more["params"] - base["params"] == 90 * (spec.head_channels + 1)
    assert more["image_size"] == 64 and more["macs"] > base["macs"]
    with pytest.raises(SpecError, match=r"^image_size: 4 px .* total stride 8"):
        count_spec(spec, image_size=4)
    with pytest.raises(SpecError, match="num_classes"):
        count_spec(spec, num_classes=1)
