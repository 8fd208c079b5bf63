"""The architecture spec: validation with one-line errors naming the field, JSON round-trips, immutability."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest

from effnas.search_space import ArchSpec, ProgressiveRecipe, SpecError, StageSpec, load_spec, save_spec, spec_from_dict, spec_from_json


def tiny_spec_dict() -> dict:
    """A valid three-stage spec small enough to build and train in milliseconds (total stride 8)."""
    return {
        "name": "tiny",
        "stem_channels": 8,
        "stages": [
            {"op": "fused", "kernel": 3, "stride": 1, "expand_ratio": 1, "in_channels": 8, "out_channels": 8,
             "layers": 1},
            {"op": "fused", "kernel": 3, "stride": 2, "expand_ratio": 4, "in_channels": 8, "out_channels": 16,
             "layers": 2},
            {"op": "mbconv", "kernel": 5, "stride": 2, "expand_ratio": 4, "in_channels": 16, "out_channels": 24,
             "layers": 2, "se_ratio": 0.25},
        ],
        "head_channels": 64,
        "num_classes": 10,
        "train_image_size": 32,
        "eval_image_size": 48,
    }


def _set(path: tuple, value):
    def mutate(data: dict) -> dict:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return data
    return mutate


# (case id, mutation of tiny_spec_dict, text the one-line error must contain). Shared with the CLI tests.
MALFORMED = [
    ("unknown-op", _set(("stages", 0, "op"), "conv"), "stages[0].op"),
    ("even-kernel", _set(("stages", 1, "kernel"), 4), "stages[1].kernel"),
    ("zero-kernel", _set(("stages", 1, "kernel"), 0), "stages[1].kernel"),
    ("negative-kernel", _set(("stages", 2, "kernel"), -3), "stages[2].kernel"),
    ("zero-layers", _set(("stages", 1, "layers"), 0), "stages[1].layers"),
    ("zero-out-channels", _set(("stages", 1, "out_channels"), 0), "stages[1].out_channels"),
    ("negative-in-channels", _set(("stages", 0, "in_channels"), -8), "stages[0].in_channels"),
    ("zero-stem-channels", _set(("stem_channels",), 0), "stem_channels"),
    ("train-image-below-one-pixel", _set(("train_image_size",), 4), "train_image_size"),
    ("eval-image-below-one-pixel", _set(("eval_image_size",), 7), "eval_image_size"),
    ("channel-mismatch", _set(("stages", 2, "in_channels"), 12), "stages[2].in_channels"),
    ("stem-mismatch", _set(("stem_channels",), 16), "stages[0].in_channels"),
    ("bad-block-string", _set(("stages", 0), "r0_k3_s1_e1_i8_o8_c1"), "stages[0]"),
    ("unknown-field", _set(("stages", 0, "kernal"), 3), "kernal"),
    ("missing-field", lambda d: {k: v for k, v in d.items() if k != "stem_channels"}, "stem_channels"),
    ("no-stages", _set(("stages",), []), "stages"),
    ("unknown-activation", _set(("activation",), "gelu"), "activation"),
    ("non-string-activation", _set(("activation",), 6), "activation"),
    ("stem-stride-3", _set(("stem_stride",), 3), "stem_stride"),
    ("stem-stride-string", _set(("stem_stride",), "1"), "stem_stride"),
]


def test_tiny_spec_is_valid():
    spec = spec_from_dict(tiny_spec_dict())
    assert spec.total_stride == 8 and spec.num_blocks == 5
    assert spec.stages[2].has_se and not spec.stages[0].has_se


@pytest.mark.parametrize("case, mutate, field", MALFORMED, ids=[case for case, _, _ in MALFORMED])
def test_malformed_spec_gives_one_line_error_naming_the_field(case, mutate, field):
    with pytest.raises(SpecError) as error:
        spec_from_dict(mutate(tiny_spec_dict()))
    message = str(error.value)
    assert field in message
    assert "\n" not in message


def test_image_size_error_says_how_small_is_too_small():
    with pytest.raises(SpecError, match=r"train_image_size: 4 px .* total stride 8; use at least 8"):
        spec_from_dict(_set(("train_image_size",), 4)(tiny_spec_dict()))


def test_dataclasses_validate_when_built_directly():
    spec = spec_from_dict(tiny_spec_dict())
    with pytest.raises(SpecError, match=r"^stage\.kernel: must be a positive odd integer, got 2$"):
        StageSpec("mbconv", 2, 1, 1, 8, 8, 1).validate()
    with pytest.raises(SpecError, match=r"stages\[1\]\.in_channels: 9 does not match stages\[0\]\.out_channels"):
        ArchSpec(stages=(spec.stages[0], dataclasses.replace(spec.stages[1], in_channels=9)), stem_channels=8)
    with pytest.raises(SpecError, match=r"^dropout"):
        spec.replace(dropout=1.0)
    with pytest.raises(SpecError, match=r"^progressive\.min_image_size"):
        spec.replace(progressive=ProgressiveRecipe(64, 5, 15, 0.0, 0.0, 0.1, 0.3))  # above train size 32


def test_json_round_trip_keeps_every_field():
    data = tiny_spec_dict()
    data["progressive"] = {"min_image_size": 16, "min_randaug": 5, "max_randaug": 15, "min_mixup": 0.0,
                           "max_mixup": 0.2, "min_dropout": 0.1, "max_dropout": 0.3}
    spec = spec_from_dict(data)
    again = spec_from_json(spec.to_json())
    assert again == spec
    assert again.to_dict() == spec.to_dict()
    assert json.loads(spec.to_json())["stages"][2]["se_ratio"] == 0.25


@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_activation_round_trips_and_the_default_is_not_written(activation):
    spec = spec_from_dict(tiny_spec_dict())
    assert spec.activation == "silu" and "activation" not in spec.to_dict()  # stored specs stay identical
    other = spec_from_json(spec.replace(activation=activation).to_json())
    assert other.activation == activation and json.loads(other.to_json())["activation"] == activation
    assert other != spec and other.replace(activation="silu") == spec


def test_stem_stride_round_trips_halves_the_total_stride_and_the_default_is_not_written():
    spec = spec_from_dict(tiny_spec_dict())
    assert spec.stem_stride == 2 and "stem_stride" not in spec.to_dict()  # stored specs stay identical
    full = spec_from_json(spec.replace(stem_stride=1).to_json())
    assert full.stem_stride == 1 and json.loads(full.to_json())["stem_stride"] == 1
    assert full.total_stride == spec.total_stride // 2
    assert spec_from_dict({**tiny_spec_dict(), "stem_stride": 1.0}).stem_stride == 1  # JSON's 1.0 is an integer


def test_stages_may_be_written_as_block_strings():
    data = tiny_spec_dict()
    data["stages"] = ["r1_k3_s1_e1_i8_o8_c1", "r2_k3_s2_e4_i8_o16_c1", "r2_k5_s2_e4_i16_o24_se0.25"]
    assert spec_from_dict(data) == spec_from_dict(tiny_spec_dict())


def test_save_and_load_spec_plain_and_wrapped(tmp_path):
    spec = spec_from_dict(tiny_spec_dict())
    save_spec(spec, tmp_path / "spec.json")
    assert load_spec(tmp_path / "spec.json") == spec
    save_spec(spec, tmp_path / "best.json", extra={"metrics": {"accuracy": 0.5}})
    wrapped = json.loads((tmp_path / "best.json").read_text())
    assert wrapped["metrics"] == {"accuracy": 0.5}
    assert load_spec(tmp_path / "best.json") == spec
    assert not list(tmp_path.glob("*.tmp"))


def test_load_spec_errors_are_one_line(tmp_path):
    (tmp_path / "broken.json").write_text("{\"stages\": [")
    bad = tiny_spec_dict()
    bad["stages"][1]["kernel"] = 2
    (tmp_path / "bad.json").write_text(json.dumps({"spec": bad, "metrics": {}}))
    cases = [(tmp_path / "missing.json", "no such file"), (tmp_path, "is a directory"),
             (tmp_path / "broken.json", "not valid JSON"), (tmp_path / "bad.json", "stages[1].kernel")]
    for path, text in cases:
        with pytest.raises(SpecError) as error:
            load_spec(path)
        assert text in str(error.value) and "\n" not in str(error.value)
        assert str(path) in str(error.value)


def test_spec_is_immutable_and_hashable():
    data = tiny_spec_dict()
    spec = spec_from_dict(data)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.stem_channels = 16
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.stages[0].kernel = 5
    assert isinstance(spec.stages, tuple)
    data["stages"][0]["kernel"] = 5  # the caller's data no longer reaches into the spec
    assert spec.stages[0].kernel == 3
    twin = spec_from_dict(copy.deepcopy(tiny_spec_dict()))
    assert hash(twin) == hash(spec) and len({spec, twin}) == 1
    wider = spec.replace(head_channels=128)
    assert wider.head_channels == 128 and spec.head_channels == 64


def test_float_integers_from_json_are_accepted_but_fractions_are_not():
    data = tiny_spec_dict()
    data["stages"][0]["kernel"] = 3.0
    assert spec_from_dict(data).stages[0].kernel == 3
    data["stages"][0]["kernel"] = 3.5
    with pytest.raises(SpecError, match=r"stages\[0\]\.kernel: must be an integer"):
        spec_from_dict(data)
