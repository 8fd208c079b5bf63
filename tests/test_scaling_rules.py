"""The scaling rules against the published EfficientNet / EfficientNetV2 numbers, and their edges."""

import dataclasses
import math

import pytest
import torch

from effnas.models import build_model
from effnas.search_space import get_spec
from effnas.models.profile import count_params
from effnas.scaling import ScaleError, scale_spec
from effnas.search_space import EFFICIENTNET_V1_COEFFICIENTS, efficientnet_v1, scale_uniform
from effnas.scaling.compare import comparison_table, measure
from effnas.scaling.rules import (EXTRA_STAGE_SHARE, MAX_PHI, TARGETS, image_sizes, image_step, round_image_size,
                                  round_repeats, scaled_layers)
from effnas.search_space import load_spec, save_spec

# Published counts (facts file; MACs at the eval size).
PUBLISHED_V2 = {"m": (54_139_356, 24.582e9), "l": (118_515_272, 56.080e9), "xl": (208_119_808, 93.353e9)}
PUBLISHED_V1 = {"efficientnet-b1": 7_794_184, "efficientnet-b4": 19_341_616, "efficientnet-b7": 66_347_960}


@pytest.fixture(scope="module")
def v2_s():
    return get_spec("efficientnetv2-s")


@pytest.fixture(scope="module")
def v2_family(v2_s):
    """efficientnetv2-s scaled to s, m, l, xl with (params, MACs) counted once on the meta device."""
    family = {target: scale_spec(v2_s, target) for target in ("s", "m", "l", "xl")}
    return {target: (spec, measure(spec)) for target, spec in family.items()}


def params_of(spec):
    """Parameters only: a meta-device build, no forward pass."""
    with torch.device("meta"):
        return count_params(build_model(spec))


@pytest.mark.slow  # MACs of the XL model at 512 px
def test_s_scales_to_published_xl_within_10_percent_under_its_512_cap(v2_s):
    from effnas.models.profile import count_macs

    scaled = scale_spec(v2_s, "xl", max_image_size=512)
    assert (scaled.train_image_size, scaled.eval_image_size) == (384, 512)  # as published
    params, macs = PUBLISHED_V2["xl"]
    with torch.device("meta"):
        model = build_model(scaled)
    assert abs(count_params(model) / params - 1) < 0.10
    assert abs(count_macs(model, 512) / macs - 1) < 0.10


@pytest.mark.slow  # the whole V2 family's MACs at eval size
@pytest.mark.parametrize("target", ["m", "l"])
def test_s_scales_to_published_m_and_l_within_10_percent(v2_family, target):
    scaled, counts = v2_family[target]
    assert (scaled.train_image_size, scaled.eval_image_size) == (384, 480)
    params, macs = PUBLISHED_V2[target]
    assert counts["image_size"] == 480
    assert abs(counts["params"] / params - 1) < 0.10, counts
    assert abs(counts["macs"] / macs - 1) < 0.10, counts
    assert len(scaled.stages) == 7  # M and L add a 7th stage, as published


@pytest.mark.slow  # the whole V2 family's MACs at eval size
def test_s_family_grows_and_respects_the_cap(v2_s, v2_family):
    specs = [v2_family[target][0] for target in ("s", "m", "l", "xl")]
    counted = [v2_family[target][1] for target in ("s", "m", "l", "xl")]
    assert specs[0].stages == v2_s.stages and counted[0]["params"] == 21_458_488
    for key in ("params", "macs"):
        values = [c[key] for c in counted]
        assert values == sorted(values) and len(set(values)) == 4
    assert all(spec.eval_image_size <= 480 for spec in specs)
    for spec in specs[1:]:  # relative layer gains never shrink toward later stages
        layers = [stage.layers for stage in spec.stages[:6]]
        layers[-1] += spec.stages[6].layers  # the split-off 7th stage counts with the 6th
        gains = [new / stage.layers for new, stage in zip(layers, v2_s.stages)]
        assert gains == sorted(gains)


@pytest.mark.parametrize("name", sorted(PUBLISHED_V1))
def test_b1_b4_b7_from_b0_match_published_params(name):
    scaled = efficientnet_v1(get_spec("efficientnet-b0"), name)
    params = params_of(scaled)
    assert abs(params / PUBLISHED_V1[name] - 1) < 0.005
    assert scaled.eval_image_size == EFFICIENTNET_V1_COEFFICIENTS[name][2]


@pytest.mark.parametrize("target", ["m", "l", "xl"])
def test_regularization_is_the_published_recipe(v2_s, target):
    published = get_spec(f"efficientnetv2-{target}")
    scaled = scale_spec(v2_s, target)
    assert scaled.progressive == published.progressive
    assert scaled.dropout == published.dropout
    assert scaled.drop_path_rate == published.drop_path_rate


def test_target_s_is_the_base_with_s_recipe(v2_s):
    searched = v2_s.replace(progressive=None, dropout=0.0, drop_path_rate=0.0, name="searched")
    scaled = scale_spec(searched, "s")
    assert scaled.stages == v2_s.stages
    assert (scaled.train_image_size, scaled.eval_image_size) == (300, 384)
    assert scaled.progressive == v2_s.progressive and scaled.dropout == v2_s.dropout == 0.2
    assert scaled.drop_path_rate == 0.2


def test_custom_phi_interpolates_between_targets(v2_s):
    half = scale_spec(v2_s, phi=0.5)
    assert half.progressive.max_randaug == 17.5 and half.dropout == 0.25
    assert len(half.stages) == 6  # the extra stage only comes with M and up
    assert v2_s.num_blocks < half.num_blocks < scale_spec(v2_s, "m").num_blocks
    assert scale_spec(v2_s, "m", phi=0.5) == half  # phi wins over target


def test_extra_stage_split_matches_published_m_l_xl():
    # Published last stage + extra stage: M 18 + 5, L 25 + 7, XL 32 + 8.
    for total, extra in ((23, 5), (32, 7), (40, 8)):
        assert round_repeats(total, EXTRA_STAGE_SHARE) == extra


def test_extra_stage_can_be_turned_off(v2_s):
    scaled = scale_spec(v2_s, "m", extra_stage=False)
    assert len(scaled.stages) == 6
    assert v2_s.num_blocks < scaled.num_blocks == scale_spec(v2_s, "m").num_blocks
    assert params_of(v2_s) < params_of(scaled) < params_of(scale_spec(v2_s, "m"))


def test_scaled_layers_clamps_earlier_stages():
    layers = [10, 3, 1, 1]
    result = scaled_layers(layers, [1.2, 1.25, 1.3, 1.35])
    gains = [new / old for new, old in zip(result, layers)]
    assert gains == sorted(gains)
    assert all(new >= old for new, old in zip(result, layers))
    assert result[-1] == 2  # the last stage always gets what its multiplier asks (rounded up)
    assert scaled_layers([2, 4, 15], [1.0, 1.0, 1.0]) == [2, 4, 15]


def test_image_sizes_cap_and_train_fraction(v2_s):
    assert image_sizes(v2_s, 1.25 ** 3, 512) == (384, 512)  # XL as published under a 512 cap
    assert image_sizes(v2_s, 1.25 ** 3, 480) == (384, 480)
    assert image_sizes(v2_s, 1.0, 320) == (300, 320)
    small = v2_s.replace(train_image_size=64, eval_image_size=64, progressive=None)
    assert image_sizes(small, 1.25, 480) == (80, 80)  # a step of 8 at 80 px; train keeps the base's ratio 1
    assert scale_spec(v2_s, "xl", max_image_size=400).eval_image_size == 400


@pytest.mark.parametrize("rule", ["v2", "compound"])
def test_a_32px_base_grows_its_image_size(v2_s, rule):
    """A fixed step of 32 rounded 32 x 1.25 back to 32: a searched 32 px base grew only in width and depth."""
    base = v2_s.replace(train_image_size=32, eval_image_size=32, progressive=None)
    family = [scale_spec(base, target, rule=rule) for target in ("s", "m", "l", "xl")]
    evals = [spec.eval_image_size for spec in family]
    trains = [spec.train_image_size for spec in family]
    assert evals[0] == trains[0] == 32
    assert all(a < b for a, b in zip(evals, evals[1:])), evals
    assert all(a < b for a, b in zip(trains, trains[1:])), trains  # trained at its eval size, it keeps that
    if rule == "v2":
        assert evals == [32, 40, 52, 64]


@pytest.mark.parametrize("train, evaluate", [(32, 32), (32, 40), (64, 96), (100, 128), (224, 224)])
def test_image_sizes_grow_with_phi_and_hold_the_cap(v2_s, train, evaluate):
    base = v2_s.replace(train_image_size=train, eval_image_size=evaluate, progressive=None)
    for cap in (evaluate, evaluate + 8, 2 * evaluate, 480):
        sizes = [image_sizes(base, 1.25 ** (step / 4), cap) for step in range(0, 17)]
        assert all(train <= t <= e <= max(cap, evaluate) for t, e in sizes[1:])
        assert sizes == sorted(sizes)
        assert all(e <= cap for _, e in sizes)
    # Uncapped, each unit of phi moves the eval size by at least one step.
    evals = [image_sizes(base, 1.25 ** phi, 4096)[1] for phi in range(4)]
    assert all(a < b for a, b in zip(evals, evals[1:])), evals


def test_image_step_is_at_most_an_eighth_and_32_from_256():
    assert [image_step(size) for size in (8, 32, 63, 64, 127, 128, 255, 256, 750)] == [4, 4, 4, 8, 8, 16, 16, 32, 32]
    assert [round_image_size(size) for size in (40.0, 50.0, 62.5, 257.6, 480.0, 600.0)] == [40, 52, 64, 256, 480, 608]
    sizes = [round_image_size(size / 10) for size in range(100, 8000)]
    assert sizes == sorted(sizes)  # steps change only at sizes both steps divide, so rounding never goes back


def test_compound_rule_is_efficientnet_scaling():
    b0 = get_spec("efficientnet-b0")
    scaled = scale_spec(b0, "m", rule="compound", max_image_size=1000)
    reference = scale_uniform(b0, 1.1, 1.2, rounding="v1")
    assert scaled.stages == reference.stages and scaled.head_channels == reference.head_channels
    assert scaled.eval_image_size == 256  # 224 x 1.15 = 257.6, to a multiple of 32


@pytest.mark.parametrize("kwargs, message", [
    (dict(target="q"), "unknown target"),
    (dict(target=None), "give a target"),
    (dict(phi=-0.5), ">= 0"),
    (dict(phi=MAX_PHI + 1), "absurd"),
    (dict(phi=math.nan), "finite"),
    (dict(target="m", rule="uniform"), "unknown rule"),
    (dict(target="m", max_image_size=256), "smaller than the base's train size 300"),
    (dict(target="m", max_image_size=0), "positive integer"),
])
def test_bad_requests_raise_scale_error(v2_s, kwargs, message):
    with pytest.raises(ScaleError, match=message):
        scale_spec(v2_s, **kwargs)


def test_phi_that_overflows_a_base_is_a_scale_error(v2_s):
    deep = v2_s.replace(stages=v2_s.stages[:-1] + (dataclasses.replace(v2_s.stages[-1], layers=60),))
    with pytest.raises(ScaleError, match="out of range"):
        scale_spec(deep, "xl")


def test_scaled_spec_round_trips_and_table_lists_every_stage(tmp_path):
    b0 = get_spec("efficientnet-b0")
    scaled = scale_spec(b0, "m")
    save_spec(scaled, tmp_path / "m.json")
    assert load_spec(tmp_path / "m.json") == scaled
    table = comparison_table(b0, scaled)
    assert f"{params_of(scaled):,}" in table and "5,288,548" in table
    assert f"@ {scaled.eval_image_size}" in table and "stage 7" in table and "5 -> 20" in table
    assert set(TARGETS) == {"s", "m", "l", "xl"}
