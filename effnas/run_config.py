"""The run file: ``config.yaml`` in every run directory, the options a run was started with, and reading it back.

``effnas.search``, ``effnas.train`` and ``effnas.compare`` (so the ``nas`` commands too) write their keyword
arguments after defaults into ``RUN/config.yaml``, one section per command, with the effnas and torch versions and
the device the run resolved. A compare written into its search's run directory adds its section beside the
search's. ``nas search --config RUN/config.yaml`` (likewise train and compare) runs from the file, flags on the
command line overriding it; in Python, ``effnas.search(**read_run_config(path, "search"))``.

    # effnas run file: nas search --config config.yaml reruns it; flags given with it override its options
    search:
      options: {budget: 2, controller: tpe, data: digits, out: runs/tpe-digits, ...}
      effnas: 0.1.0
      torch: 2.13.0
      device: cpu
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Iterable, Mapping

from effnas.errors import EffnasError
from effnas.outputs import RUN_CONFIG_HEADER
from effnas.writes import atomic_write

CONFIG_FILE = "config.yaml"
COMMANDS = ("search", "train", "compare")
SECTION_KEYS = ("options", "effnas", "torch", "device")


class RunConfigError(EffnasError):
    """A run file that cannot be read: not YAML, not a run file, an unknown option."""


# ----------------------------------------------------------------------------- writing
def _plain(value: Any) -> Any:
    """``value`` as YAML's plain types: paths as text, tuples as lists, a spec object as its dict (a reference
    network as its name)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if hasattr(value, "reference"):  # ReferenceSpec: the network by name
        return str(value.reference)
    if hasattr(value, "to_dict"):  # ArchSpec
        return _plain(value.to_dict())
    return str(value)


def _sections(path: Path) -> dict[str, Any]:
    """The sections already in ``path`` that another command wrote (kept beside the new one); nothing when the file
    is missing or unreadable (it is replaced)."""
    import yaml

    try:
        held = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return {key: value for key, value in held.items() if key in COMMANDS} if isinstance(held, dict) else {}


def write_run_config(run_dir: str | Path, command: str, options: Mapping[str, Any], device: str = "auto") -> Path:
    """Write (atomically) ``command``'s section of ``run_dir/config.yaml``: ``options`` as given after defaults,
    the effnas and torch versions, and ``device`` resolved (``auto`` becomes cuda or cpu). Returns the path."""
    import yaml

    path = Path(run_dir).expanduser() / CONFIG_FILE
    sections = _sections(path)
    sections[command] = {"options": {name: _plain(value) for name, value in options.items()},
                         "effnas": _effnas_version(), "torch": _torch_version(), "device": _resolved(device)}
    text = (f"{RUN_CONFIG_HEADER}: nas {command} --config {CONFIG_FILE} reruns it; flags given with it override its "
            "options\n" + yaml.safe_dump(sections, sort_keys=False, default_flow_style=False))
    atomic_write(path, text)
    return path


def _effnas_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("effnas")
    except PackageNotFoundError:  # run from a source tree without installing
        return "unknown"


def _torch_version() -> str:
    """torch's installed version (``2.13.0+cpu``, as ``torch.__version__`` says it), read without importing it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return "unknown"


def _resolved(device: str) -> str:
    from effnas.nas.training.choices import EngineError
    from effnas.nas.training.devices import device_name

    try:
        return device_name(device)
    except EngineError:
        return str(device)


# ----------------------------------------------------------------------------- reading
def read_run_config(path: str | Path, command: str, known: Iterable[str] | None = None,
                    what: str = "--config") -> dict[str, Any]:
    """``command``'s options in the run file ``path``, each named as the Python API's keyword. Bad YAML, a file that
    is not a run file or lacks the command, an option not in ``known`` (the API function's keywords, when given):
    :class:`RunConfigError`, one line."""
    import yaml

    shown = f"{what} {path}" if what else str(path)
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RunConfigError(f"{shown}: cannot read it: {getattr(error, 'strerror', None) or error}") from None
    try:
        held = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).split("\n", 1)[0]
        raise RunConfigError(f"{shown}: not valid YAML{where}: {problem}") from None
    if not isinstance(held, dict):
        raise RunConfigError(f"{shown}: not a run file (expected sections {', '.join(COMMANDS)})")
    unknown = [key for key in held if key not in COMMANDS]
    if unknown:
        raise RunConfigError(f"{shown}: unknown section {unknown[0]!r}{_close(unknown[0], COMMANDS)} "
                             f"(expected {', '.join(COMMANDS)})")
    if command not in held:
        raise RunConfigError(f"{shown}: no {command!r} section (it holds {', '.join(map(str, held)) or 'none'})")
    section = held[command]
    if not isinstance(section, dict) or not isinstance(section.get("options", {}), dict):
        raise RunConfigError(f"{shown}: {command}: expected a mapping with 'options'")
    extra = [key for key in section if key not in SECTION_KEYS]
    if extra:
        raise RunConfigError(f"{shown}: {command}: unknown key {extra[0]!r}{_close(extra[0], SECTION_KEYS)}")
    options = dict(section.get("options") or {})
    known = None if known is None else list(known)
    for name in options:
        if known is not None and name not in known:
            raise RunConfigError(f"{shown}: {command}: unknown option {name!r}{_close(str(name), known)}")
    return options


def _close(word: str, known: Any) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
