"""The official block-string notation: decoding, encoding, and round-trips over every zoo stage."""

from __future__ import annotations

import pytest

from effnas.search_space import get_spec, zoo_names
from effnas.search_space import SpecError, StageSpec, decode_block_string, encode_block_string

# Official strings as written in google/automl (V2 configs and the V1 builder).
OFFICIAL_V2 = ["r2_k3_s1_e1_i24_o24_c1", "r4_k3_s2_e4_i24_o48_c1", "r6_k3_s2_e4_i64_o128_se0.25",
               "r15_k3_s2_e6_i160_o256_se0.25", "r7_k3_s1_e6_i384_o640_se0.25"]


def test_decode_reads_every_field():
    stage = decode_block_string("r6_k3_s2_e4_i64_o128_se0.25")
    assert stage == StageSpec(op="mbconv", kernel=3, stride=2, expand_ratio=4, in_channels=64, out_channels=128,
                              layers=6, se_ratio=0.25)
    fused = decode_block_string("r2_k3_s1_e1_i24_o24_c1")
    assert fused.op == "fused" and fused.se_ratio == 0.0 and fused.layers == 2


def test_v1_square_strides_and_token_order():
    assert decode_block_string("r2_k5_s22_e6_i24_o40_se0.25").stride == 2
    assert decode_block_string("r1_k3_s11_e1_i32_o16_se0.25").stride == 1
    assert decode_block_string("o24_i16_e6_s2_k3_r2_c0") == decode_block_string("r2_k3_s2_e6_i16_o24")


@pytest.mark.parametrize("text", OFFICIAL_V2)
def test_official_strings_encode_back_unchanged(text):
    assert encode_block_string(decode_block_string(text)) == text


@pytest.mark.parametrize("name", zoo_names())
def test_every_zoo_stage_round_trips(name):
    for stage in get_spec(name).stages:
        text = encode_block_string(stage)
        assert decode_block_string(text) == stage
        assert ("_c1" in text) == (stage.op == "fused")
        assert ("_se" in text) == (stage.se_ratio > 0)


def test_unusual_se_ratio_round_trips_exactly():
    stage = StageSpec("mbconv", 3, 1, 4, 8, 8, 1, se_ratio=1 / 3)
    assert decode_block_string(encode_block_string(stage)) == stage
    assert encode_block_string(stage.__class__("mbconv", 3, 1, 4, 8, 8, 1, se_ratio=0.5)).endswith("_se0.5")


@pytest.mark.parametrize("text, expected", [
    ("", "empty"),
    ("r2_k3_s1_e1_i24", "missing 'o'"),
    ("r2_k3_s1_e1_i24_o24_x9", "token 'x9'"),
    ("r2_r3_k3_s1_e1_i24_o24", "'r' given twice"),
    ("r2_k3_s1_e1_i24_o24_c2", "c must be 0"),
    ("r2_k3.5_s1_e1_i24_o24", "k must be an integer"),
    ("r0_k3_s1_e1_i24_o24", ".layers"),
    ("r2_k4_s1_e1_i24_o24", ".kernel"),
    ("r2_k3_s3_e1_i24_o24", ".stride"),
    ("r2_k3_s1_e1_i24_o24_se1.5", ".se_ratio"),
])
def test_bad_block_strings_are_one_line_errors(text, expected):
    with pytest.raises(SpecError) as error:
        decode_block_string(text)
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_non_string_is_rejected():
    with pytest.raises(SpecError, match="non-string"):
        decode_block_string(42)  # type: ignore[arg-type]


def test_baselines_are_written_as_official_block_strings():
    assert [encode_block_string(stage) for stage in get_spec("mnasnet-a1").stages] == [
        "r1_k3_s1_e1_i32_o16", "r2_k3_s2_e6_i16_o24", "r3_k5_s2_e3_i24_o40_se0.25", "r4_k3_s2_e6_i40_o80",
        "r2_k3_s1_e6_i80_o112_se0.25", "r3_k5_s2_e6_i112_o160_se0.25", "r1_k3_s1_e6_i160_o320"]
    assert [encode_block_string(stage) for stage in get_spec("mobilenetv2").stages][:3] == [
        "r1_k3_s1_e1_i32_o16", "r2_k3_s2_e6_i16_o24", "r3_k3_s2_e6_i24_o32"]
