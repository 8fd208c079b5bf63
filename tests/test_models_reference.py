"""The reference networks a practitioner would train instead: published sizes, any image size, the dropout hook."""

import pytest
import torch

from effnas.errors import SpecError
from effnas.models import build_model, count_params
from effnas.search_space.reference import REFERENCE_NETWORKS, ReferenceSpec, load_network


@pytest.mark.parametrize("name, params", [("mnist-cnn", 1_199_882), ("resnet20", 272_474)])
def test_reference_networks_have_their_published_size(name, params):
    # PyTorch's MNIST example on grey images; ResNet-20 on CIFAR's RGB images (He et al., 2016, with the 1x1
    # projection shortcuts used here).
    spec = ReferenceSpec(name, num_classes=10, image_channels=1 if name == "mnist-cnn" else 3)
    assert count_params(build_model(spec)) == params


@pytest.mark.parametrize("name", sorted(REFERENCE_NETWORKS))
@pytest.mark.parametrize("size", [12, 28, 32])
def test_reference_networks_take_any_image_size_and_a_dropout(name, size):
    model = build_model(ReferenceSpec(name, num_classes=7, image_channels=1))
    model.set_dropout(0.3)
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.3 for m in model.modules())
    assert model(torch.zeros(2, 1, size, size)).shape == (2, 7)


def test_names_round_trip_and_unknown_ones_are_refused():
    spec = load_network("ResNet20").replace(num_classes=5)
    assert ReferenceSpec.from_dict(spec.to_dict()) == spec and spec.total_stride == 4
    assert load_network("efficientnetv2-s").name == "efficientnetv2-s"  # everything else is load_arch's
    with pytest.raises(SpecError, match="unknown network"):
        ReferenceSpec("vgg-16")


def test_each_network_trains_by_default_at_the_size_it_was_designed_for():
    # nas train --arch mnist-cnn on 28 px data must not upsample to CIFAR's 32 px (a third more work per step).
    assert load_network("mnist-cnn").train_image_size == load_network("mnist-cnn").eval_image_size == 28
    assert load_network("resnet20").train_image_size == 32
