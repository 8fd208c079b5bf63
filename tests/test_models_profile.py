"""Profiling: parameter and multiply-add counts checked against hand formulas, and the timed training step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from effnas.models import (ProfileError, build_model, count_macs, count_macs_by_module, count_params, profile_spec,
                    resolve_device, time_train_step)
from effnas.models.profile import _count_for_real
from effnas.search_space import SpecError, spec_from_dict
from tests.test_search_space_spec import tiny_spec_dict

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")


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
    from effnas.search_space import get_spec
    from effnas.search_space.space import SearchSpace

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


def test_time_train_step_trains_and_reports_the_median():
    torch.manual_seed(0)
    model = build_model(spec_from_dict(tiny_spec_dict()))
    before = model.classifier.weight.detach().clone()
    timing = time_train_step(model, 16, batch_size=4, device="cpu", warmup=1, steps=3)
    assert timing["steps"] == 3 and timing["warmup"] == 1 and timing["batch_size"] == 4
    assert timing["median_ms"] > 0 and timing["spread"] >= 0
    assert timing["device"] == "cpu" and timing["precision"] == "fp32"
    assert not torch.equal(before, model.classifier.weight)  # the optimizer stepped


@pytest.mark.parametrize("changes, error", [({"batch_size": 0}, "batch_size"), ({"steps": 0}, "steps"),
                                            ({"warmup": -1}, "warmup")])
def test_time_train_step_rejects_nonsense(changes, error):
    settings = {"batch_size": 2, "warmup": 0, "steps": 1, **changes}
    with pytest.raises(ProfileError, match=error):
        time_train_step(conv_pool_linear(), 8, device="cpu", **settings)


def test_profile_spec_counts_at_eval_size_and_times_at_train_size():
    spec = spec_from_dict(tiny_spec_dict())  # train 32 px, eval 48 px
    result = profile_spec(spec, batch_size=2, device="cpu", warmup=0, steps=2)
    with torch.device("meta"):
        model = build_model(spec)
    assert result["params"] == count_params(model)
    assert result["image_size"] == 48 and result["macs"] == count_macs(model, 48)
    assert result["flops"] == 2 * result["macs"]
    assert result["step_image_size"] == 32 and result["timed_steps"] == 2 and result["step_time_ms"] > 0
    assert [stage["block"] for stage in result["stages"]] == [
        "r1_k3_s1_e1_i8_o8_c1", "r2_k3_s2_e4_i8_o16_c1", "r2_k5_s2_e4_i16_o24_se0.25"]
    parts = [result["stem"], result["head"], *result["stages"]]
    assert sum(part["params"] for part in parts) == result["params"]
    assert sum(part["macs"] for part in parts) == result["macs"]


def test_profile_spec_overrides_and_no_time():
    spec = spec_from_dict(tiny_spec_dict())
    base = profile_spec(spec, time=False)
    more = profile_spec(spec, image_size=64, num_classes=100, time=False)
    assert "step_time_ms" not in base
    assert more["num_classes"] == 100 and more["params"] - base["params"] == 90 * (spec.head_channels + 1)
    assert more["image_size"] == 64 and more["macs"] > base["macs"]
    with pytest.raises(SpecError, match=r"^image_size: 4 px .* total stride 8"):
        profile_spec(spec, image_size=4, time=False)
    with pytest.raises(SpecError, match="num_classes"):
        profile_spec(spec, num_classes=1, time=False)


@no_cuda
def test_cuda_without_a_gpu_is_a_user_error():
    with pytest.raises(ProfileError, match="CUDA is not available"):
        profile_spec(spec_from_dict(tiny_spec_dict()), device="cuda")
    assert resolve_device("auto").type == "cpu"


def test_unknown_device_is_a_user_error():
    with pytest.raises(ProfileError, match="unknown device 'tpu9'"):
        resolve_device("tpu9")


@pytest.mark.gpu
def test_profile_on_cuda_uses_bf16_and_synchronises():
    result = profile_spec(spec_from_dict(tiny_spec_dict()), batch_size=8, device="cuda", warmup=2, steps=5)
    assert result["device"].startswith("cuda") and result["step_time_ms"] > 0
    assert result["precision"] in ("bf16-autocast", "fp32")
