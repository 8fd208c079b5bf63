"""The zoo reproduces the published EfficientNet / EfficientNetV2 models, and every one of them trains.

Counting happens on the meta device (shapes only), so even V2-XL costs well under a second.
"""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch

from effnas.models import build_model, count_macs, count_params
from effnas.search_space import get_spec, zoo_names
from effnas.search_space import SpecError

# torchvision's published parameter counts (1000 classes) and the papers' multiply-adds.
PUBLISHED_PARAMS = {"efficientnetv2-s": 21_458_488, "efficientnetv2-m": 54_139_356,
                    "efficientnetv2-l": 118_515_272, "efficientnet-b0": 5_288_548,
                    "efficientnet-b1": 7_794_184, "efficientnet-b4": 19_341_616, "efficientnet-b7": 66_347_960}
PUBLISHED_GMACS = {"efficientnetv2-s": (8.37, 384), "efficientnetv2-m": (24.58, 480),
                   "efficientnetv2-l": (56.08, 480), "efficientnet-b0": (0.39, 224)}

# Real forward + backward on CPU for these; the largest run the same pass on the meta device.
REAL_RUN = {"efficientnetv2-s", "efficientnetv2-m", "efficientnet-b0", "efficientnet-b1", "efficientnet-b2",
            "efficientnet-b3", "efficientnet-b4", "efficientnet-b5"}


@lru_cache(maxsize=None)
def meta_model(name: str) -> torch.nn.Module:
    """The 1000-class model on the meta device, built once per test session."""
    with torch.device("meta"):
        return build_model(get_spec(name))


def test_zoo_names():
    names = zoo_names()
    assert names[:4] == ["efficientnetv2-s", "efficientnetv2-m", "efficientnetv2-l", "efficientnetv2-xl"]
    assert names[4:] == [f"efficientnet-b{i}" for i in range(8)]
    assert {get_spec(name).name for name in names} == set(names)


@pytest.mark.parametrize("name", PUBLISHED_PARAMS)
def test_params_match_published(name):
    params = count_params(meta_model(name))
    assert abs(params - PUBLISHED_PARAMS[name]) <= 0.005 * PUBLISHED_PARAMS[name], params


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
