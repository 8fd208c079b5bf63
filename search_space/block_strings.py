"""The official block-string notation of google/automl, e.g. ``r6_k3_s2_e4_i64_o128_se0.25``.

r = layers, k = kernel, s = stride of the stage's first block (``s2`` or the V1 form ``s22``),
e = expansion ratio, i/o = input/output channels, se = squeeze-excitation ratio (absent: none),
c = conv type (0 = MBConv, the default; 1 = Fused-MBConv).
"""

from __future__ import annotations

import re

from effnas.errors import SpecError
from effnas.search_space.spec import StageSpec

_TOKEN = re.compile(r"^(se|[rksieoc])(\d+(?:\.\d+)?)$")
_REQUIRED = ("r", "k", "s", "e", "i", "o")


def decode_block_string(text: str) -> StageSpec:
    """Parse one official block string into a validated :class:`StageSpec`."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError(f"empty or non-string block string {text!r}")
    values: dict[str, str] = {}
    for token in text.strip().split("_"):
        match = _TOKEN.match(token)
        if match is None:
            raise SpecError(f"block string {text!r}: cannot read token {token!r}")
        key, value = match.groups()
        if key in values:
            raise SpecError(f"block string {text!r}: token {key!r} given twice")
        values[key] = value
    missing = [key for key in _REQUIRED if key not in values]
    if missing:
        raise SpecError(f"block string {text!r}: missing {missing[0]!r} (needs r, k, s, e, i, o)")
    stride = values["s"]
    if len(stride) == 2 and stride[0] == stride[1]:  # V1 writes square strides as s22 / s11
        stride = stride[0]
    conv_type = values.get("c", "0")
    if conv_type not in ("0", "1"):
        raise SpecError(f"block string {text!r}: c must be 0 (MBConv) or 1 (Fused-MBConv), got c{conv_type}")

    def as_int(key: str, raw: str) -> int:
        number = float(raw)
        if not number.is_integer():
            raise SpecError(f"block string {text!r}: {key} must be an integer, got {raw}")
        return int(number)

    stage = StageSpec(
        op="fused" if conv_type == "1" else "mbconv",
        kernel=as_int("k", values["k"]),
        stride=as_int("s", stride),
        expand_ratio=as_int("e", values["e"]),
        in_channels=as_int("i", values["i"]),
        out_channels=as_int("o", values["o"]),
        layers=as_int("r", values["r"]),
        se_ratio=float(values.get("se", 0.0)),
    )
    stage.validate(f"block string {text!r}")
    return stage


def encode_block_string(stage: StageSpec) -> str:
    """Write a stage in the official notation (``c1`` only for Fused-MBConv, ``se`` only when used)."""
    parts = [f"r{stage.layers}", f"k{stage.kernel}", f"s{stage.stride}", f"e{stage.expand_ratio}",
             f"i{stage.in_channels}", f"o{stage.out_channels}"]
    if stage.op == "fused":
        parts.append("c1")
    if stage.se_ratio > 0:
        short = f"{stage.se_ratio:g}"  # "0.25" as officially written; full precision when that would round
        parts.append(f"se{short if float(short) == stage.se_ratio else repr(float(stage.se_ratio))}")
    return "_".join(parts)
