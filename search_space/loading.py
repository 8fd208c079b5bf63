"""Specs from and to files and plain data: JSON objects, official block strings, run directories, zoo names.

Kept apart from :mod:`effnas.search_space.spec` so that the spec's data classes depend on nothing, and the
block-string decoder and the published models can build on them without an import circle.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from effnas.errors import EffnasError, SpecError, shown
from effnas.search_space.block_strings import decode_block_string
from effnas.search_space.published import get_spec
from effnas.search_space.spec import ArchSpec, ProgressiveRecipe, StageSpec, require_int
from effnas.writes import atomic_write


MAX_INPUT_BYTES = 1 << 20  # a spec or space file: the largest real one is a few KB
MAX_JSON_DEPTH = 32  # nesting of a spec or space file: real ones nest 4 deep
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def read_input(path: str | Path, what: str = "file", error: type[EffnasError] = SpecError,
               missing: str = "") -> str:
    """The text of a spec or space file, read only when it is a regular file of at most :data:`MAX_INPUT_BYTES`:
    a FIFO must not hang the command and ``/dev/zero`` must not fill its memory. Opened without blocking, and
    checked again on the open file, so nothing swapped in between the look and the read gets through."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise error(f"{path}: {missing or 'no such ' + what}") from None
    except OSError as problem:
        raise error(f"{path}: cannot read the {what} ({problem.strerror or problem})") from None
    info = os.fstat(fd)
    problem_text = ("is a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
                    if not stat.S_ISREG(info.st_mode) else None)
    if problem_text or info.st_size > MAX_INPUT_BYTES:
        os.close(fd)
        if problem_text:
            raise error(f"{path}: {problem_text}, expected a {what}")
        raise error(f"{path}: {info.st_size:,} bytes, more than a {what} may have ({MAX_INPUT_BYTES:,})")
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(MAX_INPUT_BYTES + 1)
        except OSError as problem:
            raise error(f"{path}: cannot read the {what} ({problem.strerror or problem})") from None
    if len(data) > MAX_INPUT_BYTES:  # grew after the look
        raise error(f"{path}: more than {MAX_INPUT_BYTES:,} bytes, more than a {what} may have")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as problem:
        raise error(f"{path}: not UTF-8 text ({problem.reason} at byte {problem.start})") from None


def check_depth(data: Any, where: str, error: type[EffnasError] = SpecError, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse data nested deeper than ``limit`` (lists and objects), without recursion of our own."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list, tuple)):
            if depth > limit:
                raise error(f"{where}: nested more than {limit} levels deep")
            stack.extend((child, depth + 1) for child in (value.values() if isinstance(value, dict) else value))


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(text: str, where: str, error: type[EffnasError] = SpecError) -> Any:
    """JSON with bounds: nesting checked before parsing (a million ``[`` would overflow the parser's recursion),
    ``NaN``/``Infinity`` refused, and Python's cap on an integer's digits answered in one line."""
    depth = deepest = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub('""', text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    if deepest > MAX_JSON_DEPTH:
        raise error(f"{where}: nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as problem:
        raise error(f"{where}: not valid JSON ({problem.msg} at line {problem.lineno})") from None
    except (ValueError, RecursionError) as problem:  # NaN, a 5000-digit integer
        raise error(f"{where}: not valid JSON ({str(problem).splitlines()[0][:120]})") from None


_STAGE_FIELDS = {f.name for f in dataclasses.fields(StageSpec)}
_STAGE_REQUIRED = {f.name for f in dataclasses.fields(StageSpec) if f.default is dataclasses.MISSING}
_ARCH_FIELDS = {f.name for f in dataclasses.fields(ArchSpec)}
_PROGRESSIVE_FIELDS = {f.name for f in dataclasses.fields(ProgressiveRecipe)}


def _check_keys(path: str, data: Any, allowed: set[str], required: set[str]) -> None:
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SpecError(f"{path}: unknown field {shown(unknown[0])} (allowed: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(data))
    if missing:
        raise SpecError(f"{path}: missing field {missing[0]!r}")


_STAGE_INT_FIELDS = ("kernel", "stride", "expand_ratio", "in_channels", "out_channels", "layers")
_ARCH_INT_FIELDS = ("stem_channels", "stem_stride", "head_channels", "num_classes", "train_image_size", "eval_image_size",
                    "image_channels")


def _stage_from_data(path: str, data: Any) -> StageSpec:
    if isinstance(data, str):
        try:
            return decode_block_string(data)
        except SpecError as error:
            raise SpecError(f"{path}: {error}") from None
    _check_keys(path, data, _STAGE_FIELDS, _STAGE_REQUIRED)
    if not isinstance(data["op"], str):
        raise SpecError(f"{path}.op: must be a string, got {shown(data['op'])}")
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
    data = parse_json(read_input(path, "spec JSON file", missing="no such file"), str(path))
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
    if len(text) > MAX_INPUT_BYTES:
        raise SpecError(f"spec JSON: more than {MAX_INPUT_BYTES:,} characters")
    return spec_from_dict(parse_json(text, "spec JSON"))


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
