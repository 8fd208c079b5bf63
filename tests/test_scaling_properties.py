"""Properties of scaling on many bases: zoo specs and random valid specs made here.

For every base: params and MACs never decrease s -> m -> l -> xl, the eval size never exceeds the
cap, later stages never gain relatively fewer layers than earlier ones (v2 rule), and every output
validates, round-trips and builds. Counting runs on the meta device, so it stays cheap.
"""

import random

import pytest
import torch

from effnas.models import build_model
from effnas.search_space import get_spec
from effnas.models.profile import count_macs, count_params
from effnas.scaling import scale_spec
from effnas.search_space import ArchSpec, ProgressiveRecipe, StageSpec, spec_from_dict

TARGET_ORDER = ("s", "m", "l", "xl")
NUM_RANDOM = 10  # v2 on all of them, compound on the first COMPOUND_RANDOM (counting costs ~10 ms a block)
COMPOUND_RANDOM = 4


def random_spec(seed: int) -> ArchSpec:
    """A small valid spec: 1-6 stages of random op/kernel/expansion/SE/width/depth, small images."""
    rng = random.Random(seed)
    stem = rng.choice([8, 12, 16, 24, 32])
    channels, stages = stem, []
    for index in range(rng.randint(1, 6)):
        out = rng.choice([8, 16, 20, 24, 32, 48, 64, 96])
        stages.append(StageSpec(op=rng.choice(["mbconv", "fused"]), kernel=rng.choice([3, 5]),
                                stride=2 if index < 4 and rng.random() < 0.6 else 1,
                                expand_ratio=rng.choice([1, 4, 6]), in_channels=channels, out_channels=out,
                                layers=rng.randint(1, 3), se_ratio=rng.choice([0.0, 0.25])))
        channels = out
    total_stride = 2 * 2 ** sum(stage.stride == 2 for stage in stages)
    train = max(total_stride, rng.choice([16, 24, 32, 48, 64]))
    evaluate = train + rng.choice([0, 8, 16, 32])
    progressive = None
    if rng.random() < 0.5:
        progressive = ProgressiveRecipe(min_image_size=max(total_stride, train // 2), min_randaug=2, max_randaug=8,
                                        min_mixup=0.0, max_mixup=0.1, min_dropout=0.0, max_dropout=0.2)
    return ArchSpec(stages=tuple(stages), stem_channels=stem, head_channels=rng.choice([32, 64, 128]),
                    num_classes=10, dropout=rng.choice([0.0, 0.2]), drop_path_rate=rng.choice([0.0, 0.1]),
                    train_image_size=train, eval_image_size=evaluate, name=f"random-{seed}",
                    progressive=progressive)


# (base name, rule); efficientnetv2-s's v2 family is measured in test_scaling_rules.py.
CASES = ([(f"random-{seed}", "v2") for seed in range(NUM_RANDOM)]
         + [(f"random-{seed}", "compound") for seed in range(COMPOUND_RANDOM)]
         + [("efficientnet-b0", "v2"), ("efficientnet-b0", "compound")])


def make_base(name: str) -> ArchSpec:
    if name.startswith("random-"):
        return random_spec(int(name.removeprefix("random-")))
    return get_spec(name, num_classes=10)


def counts(spec: ArchSpec) -> tuple[int, int]:
    """(params, MACs at the eval size), built on the meta device."""
    with torch.device("meta"):
        model = build_model(spec)
    return count_params(model), count_macs(model, spec.eval_image_size, spec.image_channels)


def relative_gains(base: ArchSpec, scaled: ArchSpec) -> list[float]:
    """Layers gained per base stage; a stage the v2 rule split off counts with the one it came from."""
    layers = [stage.layers for stage in scaled.stages[:len(base.stages)]]
    layers[-1] += sum(stage.layers for stage in scaled.stages[len(base.stages):])
    return [new / stage.layers for new, stage in zip(layers, base.stages)]


def test_random_specs_are_varied():
    specs = [random_spec(seed) for seed in range(NUM_RANDOM)]
    assert len({spec.to_json() for spec in specs}) == NUM_RANDOM
    assert len({len(spec.stages) for spec in specs}) >= 4
    assert len({stage.layers for spec in specs for stage in spec.stages}) == 3
    assert {stage.op for spec in specs for stage in spec.stages} == {"mbconv", "fused"}


@pytest.mark.parametrize("name, rule", CASES)
def test_scaling_properties(name, rule):
    base = make_base(name)
    cap = 480 if name.startswith("efficient") else random.Random(name).choice([base.train_image_size, 64, 96])
    cap = max(cap, base.train_image_size)
    family = [scale_spec(base, target, rule=rule, max_image_size=cap) for target in TARGET_ORDER]
    measured = [counts(spec) for spec in family]

    for smaller, bigger in zip(measured, measured[1:]):
        assert bigger[0] >= smaller[0], f"params decreased: {measured}"
        assert bigger[1] >= smaller[1], f"MACs decreased: {measured}"
    assert measured[-1][0] > measured[0][0]
    for spec in family:
        assert spec.eval_image_size <= cap
        assert base.train_image_size <= spec.train_image_size
        assert spec_from_dict(spec.to_dict()) == spec  # validates and round-trips
        if rule == "v2":
            gains = relative_gains(base, spec)
            assert gains == sorted(gains), f"later stages gained relatively fewer layers: {gains}"
            assert min(gains) >= 1
    assert [s.eval_image_size for s in family] == sorted(s.eval_image_size for s in family)


@pytest.mark.parametrize("name", ["efficientnetv2-s", "random-4"])
def test_fractional_phi_never_shrinks_a_stage(name):
    """Every stage's layers and channels and the image sizes grow with phi (so params and MACs do)."""
    base = make_base(name)
    family = [scale_spec(base, phi=step / 4) for step in range(0, 17)]
    for smaller, bigger in zip(family, family[1:]):
        if len(bigger.stages) == len(smaller.stages):  # the extra stage arrives at phi 1
            pairs = zip(smaller.stages, bigger.stages)
            assert all(b.layers >= a.layers and b.out_channels >= a.out_channels for a, b in pairs)
        assert bigger.num_blocks >= smaller.num_blocks
        assert bigger.eval_image_size >= smaller.eval_image_size
        assert bigger.train_image_size >= smaller.train_image_size
    assert family[-1].num_blocks > 2 * base.num_blocks


def test_scaled_random_spec_trains_one_step():
    """A scaled output is a real network, not just a valid description: one CPU step at 16 px."""
    base = random_spec(3).replace(train_image_size=32, eval_image_size=32, progressive=None)
    scaled = scale_spec(base, "m", max_image_size=32)
    model = build_model(scaled)
    images = torch.randn(2, 3, 32, 32)
    loss = torch.nn.functional.cross_entropy(model(images), torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(loss)
