"""Specs from and to files and plain data: JSON objects, official block strings, run directories, zoo names.

Kept apart from :mod:`effnas.search_space.spec` so that the spec's data classes depend on nothing, and the
block-string decoder and the published models can build on them without an import circle.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from effnas.errors import SpecError
from effnas.search_space.block_strings import decode_block_string
from effnas.search_space.published import get_spec
from effnas.search_space.spec import ArchSpec, ProgressiveRecipe, StageSpec, require_int
from effnas.writes import atomic_write


_STAGE_FIELDS = {f.name for f in dataclasses.fields(StageSpec)}
_STAGE_REQUIRED = {f.name for f in dataclasses.fields(StageSpec) if f.default is dataclasses.MISSING}
_ARCH_FIELDS = {f.name for f in dataclasses.fields(ArchSpec)}
_PROGRESSIVE_FIELDS = {f.name for f in dataclasses.fields(ProgressiveRecipe)}


def _check_keys(path: str, data: Any, allowed: set[str], required: set[str]) -> None:
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SpecError(f"{path}: unknown field {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(data))
    if missing:
        raise SpecError(f"{path}: missing field {missing[0]!r}")


_STAGE_INT_FIELDS = ("kernel", "stride", "expand_ratio", "in_channels", "out_channels", "layers")
_ARCH_INT_FIELDS = ("stem_channels", "head_channels", "num_classes", "train_image_size", "eval_image_size",
                    "image_channels")


def _stage_from_data(path: str, data: Any) -> StageSpec:
    if isinstance(data, str):
        try:
            return decode_block_string(data)
        except SpecError as error:
            raise SpecError(f"{path}: {error}") from None
    _check_keys(path, data, _STAGE_FIELDS, _STAGE_REQUIRED)
    if not isinstance(data["op"], str):
        raise SpecError(f"{path}.op: must be a string, got {data['op']!r}")
    values = dict(data)
    for name in _STAGE_INT_FIELDS:
        values[name] = require_int(f"{path}.{name}", values[name])
    stage = StageSpec(**values)
    stage.validate(path)
    return stage


def spec_from_dict(data: Any) -> ArchSpec:
    """Build and validate a spec from plain data (stages as objects or official block strings)."""
    _check_keys("spec", data, _ARCH_FIELDS, {"stages", "stem_channels"})
    stages_data = data["stages"]
    if not isinstance(stages_data, list):
        raise SpecError(f"stages: expected a list, got {type(stages_data).__name__}")
    stages = tuple(_stage_from_data(f"stages[{i}]", s) for i, s in enumerate(stages_data))
    fields = {k: v for k, v in data.items() if k not in ("stages", "progressive")}
    for name in _ARCH_INT_FIELDS:
        if name in fields:
            fields[name] = require_int(name, fields[name])
    progressive = data.get("progressive")
    if progressive is not None:
        _check_keys("progressive", progressive, _PROGRESSIVE_FIELDS, _PROGRESSIVE_FIELDS)
        progressive = ProgressiveRecipe(**progressive)
    return ArchSpec(stages=stages, progressive=progressive, **fields)


def load_spec(path: str | Path) -> ArchSpec:
    """Read a spec file; also accepts files that wrap the spec (``best.json``: ``{"spec": ...}``)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a directory, expected a spec JSON file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"{path}: cannot read ({error})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise SpecError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    if isinstance(data, dict) and "spec" in data and "stages" not in data:
        data = data["spec"]
    try:
        return spec_from_dict(data)
    except SpecError as error:
        raise SpecError(f"{path}: {error}") from None


def save_spec(spec: ArchSpec, path: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Write a spec (optionally wrapped with ``extra`` keys such as metrics) atomically."""
    path = Path(path)
    payload: dict[str, Any] = spec.to_dict() if extra is None else {"spec": spec.to_dict(), **extra}
    try:
        atomic_write(path, json.dumps(payload, indent=2) + "\n")
    except OSError as error:  # not the disk's fault (a folder where the file should be, ...): still one line
        raise SpecError(f"cannot write {path}: {error.strerror or error}") from None


def spec_from_json(text: str) -> ArchSpec:
    """A spec from JSON text (stages as objects or block strings)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise SpecError(f"not valid JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    return spec_from_dict(data)


def load_arch(reference: str | Path) -> ArchSpec:
    """The one way a command names an architecture: a spec JSON file (``best.json`` and ``nas scale``'s output
    included), a run directory holding ``best.json``, or a zoo name such as ``efficientnetv2-s``."""
    text = str(reference)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "best.json").is_file():
            raise SpecError(f"{path}: a directory without best.json; give a spec file, a run directory or a zoo name")
        return load_spec(path / "best.json")
    if path.suffix.lower() == ".json" or path.exists() or "/" in text:
        return load_spec(path)
    try:
        return get_spec(text)
    except SpecError as error:
        raise SpecError(f"{error}; or give a spec .json file or a run directory") from None
