"""Base vs scaled target side by side: params, MACs, image sizes, recipe and every stage.

Counting uses :func:`effnas.models.profile.count_spec`, which builds the network on the ``meta`` device: shapes
only, so even an XL-sized target is counted without allocating its weights. Not imported by ``scaling/__init__``:
counting needs torch, which the rule itself does not.
"""

from __future__ import annotations

from typing import Any

from effnas.models.profile import count_spec
from effnas.scaling.rules import image_step, round_image_size, train_eval_ratio
from effnas.search_space import ArchSpec


def measure(spec: ArchSpec) -> dict[str, Any]:
    """Params and MACs (multiply-adds at the spec's eval size, the papers' "FLOPs") of a spec."""
    result = count_spec(spec)
    return {"params": result["params"], "macs": result["macs"], "image_size": result["image_size"]}


def _recipe(spec: ArchSpec) -> tuple[str, str, str]:
    recipe = spec.progressive
    if recipe is None:
        return "-", "-", "-"
    return (f"{recipe.min_randaug:g} -> {recipe.max_randaug:g}", f"{recipe.min_mixup:g} -> {recipe.max_mixup:g}",
            f"{recipe.min_dropout:g} -> {recipe.max_dropout:g} (from {recipe.min_image_size} px)")


def _stage(spec: ArchSpec, index: int) -> str:
    if index >= len(spec.stages):
        return "-"
    stage = spec.stages[index]
    se = f" se{stage.se_ratio:g}" if stage.se_ratio > 0 else ""
    return (f"{stage.layers:>2} x {stage.out_channels:<4} {stage.op} k{stage.kernel} s{stage.stride} "
            f"e{stage.expand_ratio}{se}")


def comparison_rows(base: ArchSpec, target: ArchSpec) -> list[tuple[str, str, str]]:
    """(label, base, target) rows for :func:`format_table`."""
    counts = [measure(base), measure(target)]
    rows = [("", base.name or "base", target.name or "target"),
            ("params", *(f"{c['params']:,}" for c in counts)),
            ("GMACs (paper 'FLOPs') @ eval", *(f"{c['macs'] / 1e9:.3f} @ {c['image_size']}" for c in counts)),
            ("train / eval image size", *(f"{s.train_image_size} / {s.eval_image_size}" for s in (base, target))),
            ("dropout / stochastic depth", *(f"{s.dropout:g} / {s.drop_path_rate:g}" for s in (base, target)))]
    recipes = [_recipe(base), _recipe(target)]
    for index, label in enumerate(("RandAugment", "mixup", "progressive dropout")):
        rows.append((label, recipes[0][index], recipes[1][index]))
    rows.append(("stem / head channels", *(f"{s.stem_channels} / {s.head_channels}" for s in (base, target))))
    for index in range(max(len(base.stages), len(target.stages))):
        rows.append((f"stage {index}: layers x channels", _stage(base, index), _stage(target, index)))
    rows.append(("total layers", str(base.num_blocks), str(target.num_blocks)))
    return rows


def format_table(rows: list[tuple[str, str, str]]) -> str:
    """Fixed-width columns, one row per line."""
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    return "\n".join(f"{label:<{widths[0]}}  {left:<{widths[1]}}  {right}".rstrip()
                     for label, left, right in rows)


def comparison_table(base: ArchSpec, target: ArchSpec) -> str:
    """The table ``nas scale`` prints."""
    return format_table(comparison_rows(base, target))


def image_size_line(base: ArchSpec, target: ArchSpec, resolution: float, max_image_size: int) -> str:
    """One line saying how the image sizes moved and why (rounding step, cap), for ``nas scale``."""
    sizes = (f"image size: train {base.train_image_size} -> {target.train_image_size}, "
             f"eval {base.eval_image_size} -> {target.eval_image_size}")
    if resolution == 1.0:
        shrunk = target.eval_image_size < base.eval_image_size
        capped = f"; capped by --max-image-size {max_image_size}" if shrunk else ""
        return f"{sizes} (phi 0 keeps the base's sizes{capped})"
    wanted = base.eval_image_size * resolution
    note = f"{base.eval_image_size} x {resolution:.3g} = {wanted:.0f}, to a multiple of {image_step(wanted)}"
    if target.eval_image_size == max_image_size < round_image_size(wanted):
        note += f", capped by --max-image-size {max_image_size}"
    return f"{sizes} ({note}; train {train_eval_ratio(base):.2g} x eval, rounded down)"
