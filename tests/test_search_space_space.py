"""The search space: exact size, sampling through Optuna, specs that build, files and their errors."""

from __future__ import annotations

import itertools
import re
import json

import optuna
import pytest
import torch

from effnas.models import build_model
from effnas.search_space.published import get_spec
from effnas.search_space import scale_uniform
from effnas.search_space import SearchSpace, SpaceError, default_space, load_space
from effnas.errors import EffnasError

optuna.logging.set_verbosity(optuna.logging.WARNING)

TINY = {"name": "tiny", "backbone": ["r1_k3_s1_e1_i8_o8_c1", "r2_k3_s2_e4_i8_o16"], "width": 1.0, "depth": 1.0,
        "image_size": 16, "head_channels": 32,
        "choices": {"kernel": [3, 5], "expand": [1, 4]},
        "stages": {"1": {"op": ["fused", "mbconv"], "layers": [1, 3]}}}


def brute_force_count(space: SearchSpace) -> int:
    """Distinct specs over every combination of every parameter."""
    names = space.param_names()
    specs = {space.spec_from_params(dict(zip(names, values)))
             for values in itertools.product(*(space.choices(n) for n in names))}
    return len(specs)


def test_size_matches_brute_force_enumeration() -> None:
    space = SearchSpace.from_dict(TINY)
    assert space.stages[0].layers == (1, 2)  # offsets -1..+1 around 1 layer, clamped at 1
    assert space.stages[1].layers == (1, 3)
    # per stage: kernel x expand x layers for fused, and twice that (SE on/off) for MBConv
    assert space.size() == brute_force_count(space) == (8 + 16) * (8 + 16)


def test_size_counts_se_only_for_mbconv() -> None:
    fused_only = SearchSpace.from_dict({**TINY, "stages": {}, "choices": {"op": ["fused"]}})
    assert fused_only.size() == brute_force_count(fused_only) == (2 * 3 * 2) * (2 * 3 * 3)
    first = {name: fused_only.choices(name)[0] for name in fused_only.param_names()}
    spec_on = fused_only.spec_from_params({**first, "s0_se": True})
    assert all(stage.se_ratio == 0 for stage in spec_on.stages)
    assert "s0_se" not in fused_only.active_params({"s0_op": "fused"})


def test_default_space_is_the_paper_space_on_a_proxy_backbone() -> None:
    space = default_space()
    expected = scale_uniform(get_spec("efficientnetv2-s").replace(progressive=None), 0.25, 0.5, rounding="v2")
    assert [(s.in_channels, s.out_channels, s.stride) for s in space.backbone.stages] == \
        [(s.in_channels, s.out_channels, s.stride) for s in expected.stages]
    assert space.backbone.train_image_size == 32 and space.backbone.head_channels == 320
    assert len(space.distributions()) == 6 * 5
    # Stages are independent, so the size is the product of per-stage brute-force counts.
    per_stage = []
    for index, allowed in enumerate(space.stages):
        stages = set()
        for op, kernel, expand, layers, se in itertools.product(allowed.op, allowed.kernel, allowed.expand,
                                                                allowed.layers, allowed.se):
            params = {**space.params_from_spec(space.backbone), f"s{index}_op": op, f"s{index}_kernel": kernel,
                      f"s{index}_expand": expand, f"s{index}_layers": layers, f"s{index}_se": se}
            stages.add(space.spec_from_params(params).stages[index])
        per_stage.append(len(stages))
    assert space.size() == torch.tensor(per_stage).prod().item() == 16_529_940_864
    assert "16,529,940,864" in space.describe()


def test_backbone_is_a_point_of_the_space() -> None:
    space = default_space()
    params = space.params_from_spec(space.backbone)
    assert space.spec_from_params(params).stages == space.backbone.stages


def test_sample_through_optuna_builds_and_maps_back() -> None:
    space = default_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    specs = []
    for _ in range(4):
        trial = study.ask()
        spec = space.sample(trial, num_classes=10)
        assert set(trial.params) == set(space.param_names())
        assert space.spec_from_params(trial.params, num_classes=10) == spec
        assert space.spec_from_params(space.params_from_spec(spec), num_classes=10) == spec
        model = build_model(spec).eval()
        with torch.no_grad():
            assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
        study.tell(trial, 0.0)
        specs.append(spec)
    assert len(set(specs)) > 1


def test_round_trip_through_dict_and_files(tmp_path) -> None:
    space = SearchSpace.from_dict(TINY)
    assert SearchSpace.from_dict(json.loads(json.dumps(space.to_dict()))) == space
    path = tmp_path / "space.json"
    path.write_text(json.dumps(TINY))
    assert load_space(path) == space
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    assert load_space(empty) == default_space()


def test_yaml_space_file(tmp_path) -> None:
    yaml = pytest.importorskip("yaml")
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(TINY))
    assert load_space(path) == SearchSpace.from_dict(TINY)


def test_other_backbones() -> None:
    b0 = SearchSpace.from_dict({"backbone": "efficientnet-b0", "width": 0.5, "image_size": 64})
    assert len(b0.stages) == 7 and b0.backbone.stem_channels == 16
    inline = SearchSpace.from_dict({"backbone": SearchSpace.from_dict(TINY).backbone.to_dict(),
                                    "width": 1.0, "depth": 1.0})
    assert [s.out_channels for s in inline.backbone.stages] == [8, 16]


@pytest.mark.parametrize("data, field", [
    ({"widht": 0.5}, "unknown field 'widht'"),
    ({"width": -1}, "width"),
    ({"depth": "x"}, "depth"),
    ({"backbone": "efficientnetv2-q"}, "backbone"),
    ({"backbone": ["r1_k3_s9_e1_i8_o8"]}, "backbone"),
    ({"image_size": 8}, "image_size"),
    ({"choices": {"op": ["mbconv", "conv"]}}, "choices.op[1]"),
    ({"choices": {"kernel": [3, 4]}}, "choices.kernel[1]"),
    ({"choices": {"expand": []}}, "choices.expand"),
    ({"choices": {"se": [True, True]}}, "choices.se[1]"),
    ({"choices": {"se": ["yes"]}}, "choices.se[0]"),
    ({"choices": {"layers": [1, 2]}}, "choices: unknown field 'layers'"),
    ({"stages": [{}, {}]}, "stages"),
    ({"stages": {"9": {}}}, "stages: unknown field '9'"),
    ({"stages": {"2": {"layers": [1], "layer_offsets": [0]}}}, "stages.2"),
    ({"stages": {"2": {"layers": [0, 1]}}}, "stages.2.layers[0]"),
    ([1, 2], "space"),
])
def test_malformed_space_names_the_field(data, field) -> None:
    with pytest.raises(SpaceError) as info:
        SearchSpace.from_dict(data)
    message = str(info.value)
    assert field in message and "\n" not in message
    assert isinstance(info.value, EffnasError)


@pytest.mark.parametrize("name, text, fragment", [
    ("missing.json", None, "no such space file"),
    ("bad.json", "{\"width\": ", "not valid JSON"),
    ("bad_field.json", "{\"width\": 0}", "bad_field.json: width"),
])
def test_space_file_errors(tmp_path, name, text, fragment) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(SpaceError, match=fragment):
        load_space(path)


def test_params_outside_the_space_are_rejected() -> None:
    space = SearchSpace.from_dict(TINY)
    params = {name: space.choices(name)[0] for name in space.param_names()}
    with pytest.raises(SpaceError, match="s1_layers"):
        space.spec_from_params({**params, "s1_layers": 2})
    with pytest.raises(SpaceError, match="s0_kernel: missing"):
        space.spec_from_params({k: v for k, v in params.items() if k != "s0_kernel"})
    with pytest.raises(SpaceError, match="stage 1 layers=2 is outside the space"):
        space.params_from_spec(space.backbone)  # its 2-layer stage 1 is not among the choices [1, 3]


def test_the_small_images_space_keeps_the_full_image_for_its_stem_and_ends_on_a_4_by_4_map():
    from effnas.search_space.space import load_space

    space = load_space("small-images")
    backbone = space.backbone
    assert len(space.stages) == 3 and backbone.train_image_size == 28 and backbone.head_channels == 256
    assert [s.out_channels for s in backbone.stages] == [24, 48, 64] and [s.layers for s in backbone.stages] == [1, 2, 2]
    assert backbone.stem_stride == 1 and [s.stride for s in backbone.stages] == [2, 2, 2]
    assert -(-28 // backbone.total_stride) == 4
    params = {name: space.choices(name)[-1] for name in space.param_names()}
    assert space.spec_from_params(params).stem_stride == 1  # every candidate keeps the space's stem
    assert "stem stride 1" in space.describe()


def test_a_space_file_sets_the_stem_stride_and_refuses_others() -> None:
    assert SearchSpace.from_dict(TINY).backbone.stem_stride == 2
    assert SearchSpace.from_dict({**TINY, "stem_stride": 1}).backbone.stem_stride == 1
    with pytest.raises(SpaceError, match="stem_stride"):
        SearchSpace.from_dict({**TINY, "stem_stride": 4})



def test_whole_network_width_and_activation_are_decisions_only_where_offered() -> None:
    plain = SearchSpace.from_dict(TINY)
    assert not any(name.startswith("net_") for name in plain.param_names())  # old studies' parameters stay valid
    space = SearchSpace.from_dict({**TINY, "network": {"width": [1.0, 2.0], "activation": ["silu", "relu"]}})
    assert space.param_names()[-2:] == ["net_width", "net_activation"]
    assert space.size() == brute_force_count(space) == plain.size() * 4
    params = {**{name: space.choices(name)[0] for name in space.param_names()}, "net_width": 2.0,
              "net_activation": "relu"}
    wide = space.spec_from_params(params)
    assert wide.stem_channels == 16 and [s.out_channels for s in wide.stages] == [16, 32]
    assert wide.head_channels == space.backbone.head_channels and wide.activation == "relu"
    assert space.params_from_spec(wide) == params  # a stored winner maps back (resumed and seeded searches)
    assert build_model(wide)(torch.zeros(2, 3, 16, 16)).shape == (2, wide.num_classes)
    assert SearchSpace.from_dict(space.to_dict()).network == space.network
    assert max(space.spec_from_params(p).stem_channels for p in space.largest_params()) == 16
    assert "whole network: width {1.0,2.0}  activation {silu,relu}" in space.describe()


@pytest.mark.parametrize("network, fragment", [
    ({"width": [0.5]}, "network.width: must include 1"),
    ({"width": [1, 9]}, "network.width[1]"),
    ({"width": []}, "network.width: must be a non-empty list"),
    ({"activation": ["gelu"]}, "network.activation[0]: unknown activation 'gelu'"),
    ({"activation": ["relu", "relu"]}, "network.activation: duplicate"),
    ({"depth": [1]}, "network: unknown field 'depth'"),
])
def test_bad_whole_network_choices_name_the_field(network, fragment) -> None:
    with pytest.raises(SpaceError, match=re.escape(fragment)):
        SearchSpace.from_dict({**TINY, "network": network})
