"""What an output may replace: the one rule every command follows before it writes a file or fills a folder.

Losing a study to a slip of the keyboard (``nas report RUN --out RUN/study.db``) or a user's own ``trials.csv`` to
a search aimed at the wrong folder costs far more than a refusal, so before a write the file already there is
recognised by its content (:func:`file_kind`):

- a study or database (SQLite, an Optuna journal) or any file effnas did not write is never replaced;
- a file effnas wrote for another purpose (a spec where a report goes, a checkpoint where a spec goes) is replaced
  only with ``--force``; one of the same kind (re-running the same command) is replaced as it always was;
- a folder given as a run directory must be empty, or a run of the same kind holding only files effnas wrote.

Each refusal is an :class:`OutputRefused` (one line, exit code 2) that names the path. Recognising a file reads at
most its first bytes (a JSON file up to :data:`JSON_LIMIT`) and never opens what is not a regular file.
"""

from __future__ import annotations

import json
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from effnas.errors import EffnasError
from effnas.writes import output_target

HEAD_BYTES = 64 * 1024  # enough to recognise every kind but a JSON document
JSON_LIMIT = 64 * 1024 * 1024  # a JSON file larger than this is not one effnas wrote
MAX_ENTRIES = 2000  # files looked at in one run directory (its subfolders included) before giving up on it

# kind -> how a message names it. "sqlite" and "journal" are studies: never replaced, --force or not.
KINDS = {
    "sqlite": "an SQLite database", "journal": "an Optuna journal",
    "spec": "an architecture spec", "report": "a search report (HTML)", "training-plot": "a training plot (HTML)",
    "trials-table": "a search's trials table (CSV)", "pareto": "a search's Pareto front (JSON)",
    "checkpoint": "a training checkpoint", "training-metrics": "a training run's metrics (JSON)",
    "metrics-log": "a training run's metrics log (CSV)", "compare-table": "nas compare's table (CSV)",
    "compare-results": "nas compare's results (JSON)",
    "onnx-model": "an ONNX model (nas export)", "torchscript-model": "a TorchScript model (nas export)",
    "run-config": "a run file (config.yaml)",
}
# The first line of every run file (effnas/run_config.py): what makes a config.yaml effnas's own.
RUN_CONFIG_HEADER = "# effnas run file"
STUDY_KINDS = ("sqlite", "journal")
_CSV_HEADERS = (("number,state,", "trials-table"), ("epoch,stage,image_size,", "metrics-log"),
                ("model,kind,test_top1,", "compare-table"), ("model,kind,top1,", "compare-table"))
# Files a command or SQLite keeps beside its outputs for a while: locks, temporaries, write probes.
_HOUSEKEEPING = re.compile(r"^\..+\.(lock|\d+\.tmp)$|^\.write-test\.\d+$")
_STUDY_SIDE_FILES = ("-wal", "-shm", "-journal", ".lock")


class OutputRefused(EffnasError):
    """An output path that holds something the command must not replace."""


@dataclass(frozen=True)
class RunKind:
    """A run directory of one command: the names that make a folder such a run, and what the command writes under
    each of its own names (another name may hold any file effnas wrote: a report, a spec from nas best)."""

    label: str
    markers: tuple[str, ...]
    files: dict[str, str]
    others: tuple[str, ...]  # names that mark a run of an incompatible kind


_SEARCH_MARKERS = ("study.db", "trials.csv", "pareto.json")
_COMPARE_MARKERS = ("compare.json", "compare.csv")
_TRAIN_MARKERS = ("last.pt", "final.pt", "metrics.csv")
_RUN_CONFIG = "config.yaml"  # every run's run file; a train or compare writes it before its first other file
RUN_KINDS = {
    "search": RunKind("a search run (nas search)", _SEARCH_MARKERS,
                      {"study.db": "sqlite", "trials.csv": "trials-table", "pareto.json": "pareto", "best.json": "spec",
                       _RUN_CONFIG: "run-config"},
                      _TRAIN_MARKERS),
    "train": RunKind("a training run (nas train)", (*_TRAIN_MARKERS, _RUN_CONFIG),
                     {"last.pt": "checkpoint", "final.pt": "checkpoint", "metrics.json": "training-metrics",
                      "metrics.csv": "metrics-log", "training.html": "training-plot", _RUN_CONFIG: "run-config"},
                     (*_SEARCH_MARKERS, *_COMPARE_MARKERS)),
    # "compare": the folder of its model runs, all a compare stopped before its first table has written
    "compare": RunKind("a search run or nas compare's output",
                       (*_SEARCH_MARKERS, *_COMPARE_MARKERS, "compare", _RUN_CONFIG),
                       {"compare.csv": "compare-table", "compare.json": "compare-results", _RUN_CONFIG: "run-config"},
                       _TRAIN_MARKERS),
}


# ----------------------------------------------------------------------------- recognising a file
def _json_kind(value: object) -> str | None:
    if isinstance(value, dict):  # a training run's metrics also hold its spec: asked first
        if {"schedule", "recipe", "spec"} <= value.keys():
            return "training-metrics"
        if {"rows", "curves"} <= value.keys():
            return "compare-results"
        if isinstance(value.get("stages"), list) or (isinstance(value.get("spec"), dict)
                                                    and isinstance(value["spec"].get("stages"), list)):
            return "spec"
        return None
    if isinstance(value, list) and all(isinstance(p, dict) and {"blocks", "spec"} <= p.keys() for p in value):
        return "pareto"
    return None


def _text_kind(path: Path, head: bytes, size: int) -> str | None:
    text = head.decode("utf-8", errors="replace")
    stripped = text.lstrip()
    first_line = stripped.split("\n", 1)[0]
    if stripped.startswith("{") and '"op_code"' in first_line:  # one JSON operation per line
        try:
            if "op_code" in json.loads(first_line):
                return "journal"
        except ValueError:
            pass
    if stripped.startswith(("{", "[")):
        if size > JSON_LIMIT:
            return None
        try:
            return _json_kind(json.loads(head if size <= len(head) else path.read_bytes()))
        except (ValueError, RecursionError, OSError):
            return None
    if stripped[:15].lower().startswith(("<!doctype html", "<html")):
        if "<title>effnas report: " in text:
            return "report"
        if size <= JSON_LIMIT and b"nas train: " in path.read_bytes():  # plotly's page keeps its title at the end
            return "training-plot"
        return None
    if text.startswith(RUN_CONFIG_HEADER):
        return "run-config"
    for header, kind in _CSV_HEADERS:
        if text.startswith(header):
            return kind
    return None


def file_kind(path: str | Path) -> str | None:
    """What ``path`` holds, as far as effnas is concerned: a key of :data:`KINDS`, ``"empty"`` for an empty file,
    or None for anything effnas did not write (or that cannot be read, or is not a regular file)."""
    path = Path(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            return None
        with path.open("rb") as handle:
            head = handle.read(HEAD_BYTES)
    except OSError:
        return None
    if not head:
        return "empty"
    if head.startswith(b"SQLite format 3\x00"):
        return "sqlite"
    if head.startswith(b"PK\x03\x04"):  # torch.save's zip: one folder with data.pkl and the tensors
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()[:10_000]
        except (zipfile.BadZipFile, OSError, ValueError):
            return None
        if any("/code/" in n or n.startswith("code/") for n in names):  # TorchScript: nas export's, or another's
            return "torchscript-model" if any(n.endswith("/extra/effnas.json") for n in names) else None
        return "checkpoint" if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names) else None
    if head[:1] == b"\x08" and b"\x12\x06effnas" in head[:16]:  # ONNX: ir_version, then nas export's producer
        return "onnx-model"
    return _text_kind(path, head, info.st_size)


def _described(kind: str | None) -> str:
    return KINDS.get(kind or "", "a file effnas did not write")


# ----------------------------------------------------------------------------- one output file
def claim_output(path: str | Path, kind: str, what: str = "", force: bool = False) -> Path:
    """The file to write ``kind`` to at ``path`` (see :func:`effnas.writes.output_target`), once it is sure that
    nothing is lost by replacing what is there: nothing, an empty file, a file of the same kind, or (``force``) a
    file effnas wrote for another purpose. A study or a file effnas did not write is refused, ``force`` or not."""
    shown = f"{what} {path}" if what else str(path)
    target = output_target(path, what)
    if not target.exists():
        return target
    found = file_kind(target)
    if found in (kind, "empty"):
        return target
    if found in STUDY_KINDS:
        raise OutputRefused(f"refusing to write {shown}: it holds {_described(found)}, a study; effnas never "
                            "replaces one (give another path)")
    if found is None:
        raise OutputRefused(f"refusing to write {shown}: it holds a file effnas did not write; effnas never "
                            "replaces one (give another path)")
    if not force:
        raise OutputRefused(f"refusing to write {shown}: it holds {_described(found)}, not {_described(kind)}; "
                            "give another path, or --force to replace it")
    return target


# ----------------------------------------------------------------------------- a run directory
def _is_side_file(name: str, own: set[str]) -> bool:
    return bool(_HOUSEKEEPING.match(name)) or any(name == o + s for o in own for s in _STUDY_SIDE_FILES)


def _first_foreign(folder: Path, run: RunKind | None, own: set[str], studies: set[str],
                   budget: list[int]) -> str | None:
    """The first entry below ``folder`` that effnas did not write, as a message names it (the path and why), or
    None. ``run`` names what each known top-level file must hold; subfolders (nas compare's model runs, a search or
    a nas train --out inside a search) are checked file by file."""
    for entry in sorted(folder.iterdir()):
        budget[0] -= 1
        if budget[0] < 0:
            return f"{folder} (more than {MAX_ENTRIES} files to check)"
        name = entry.name
        if _is_side_file(name, studies) or (run is not None and name in own):
            continue
        if entry.is_symlink():
            return f"{entry}, a symlink effnas did not make"
        if entry.is_dir():
            found = _first_foreign(entry, None, set(), {"study.db"}, budget)
            if found:
                return found
            continue
        expected = run.files.get(name) if run is not None else None
        if expected in STUDY_KINDS or name == "study.db":
            continue  # a search's study: its storage's own checks read it when it is opened
        found = file_kind(entry)
        if found is None:
            kind = "not a regular file" if not entry.is_file() else "a file effnas did not write"
            return f"{entry}, {kind}"
        if found in STUDY_KINDS:
            return f"{entry}, {_described(found)} that is not this run's study"
        if expected is not None and found not in (expected, "empty"):
            return f"{entry}, {_described(found)} where {_described(expected)} belongs"
    return None


def claim_run_dir(folder: str | Path, kind: str, what: str = "--out", own_files: Iterable[str | Path] = ()) -> Path:
    """``folder`` as the run directory of a ``kind`` run (a key of :data:`RUN_KINDS`): refused in one line unless it
    does not exist yet, is empty, or is such a run holding only files effnas wrote, so that resuming keeps working
    and nothing of the user's is overwritten or mixed in. ``own_files`` are storage files the run was told to keep
    there (``--storage journal:RUN/study.log``). Creates nothing."""
    run = RUN_KINDS[kind]
    folder = Path(folder).expanduser()
    shown = f"{what} {folder}" if what else str(folder)
    if not folder.exists() and not folder.is_symlink():
        return folder
    if not folder.is_dir():
        raise OutputRefused(f"refusing to use {shown} as a run directory: it holds {_described(file_kind(folder))}, "
                            "not a folder (give a folder)")
    own = {Path(f).name for f in own_files if Path(f).expanduser().resolve().parent == folder.resolve()}
    studies = own | {name for name, held in run.files.items() if held in STUDY_KINDS}  # their -wal, -shm, locks
    try:
        visible = [e.name for e in folder.iterdir() if not _is_side_file(e.name, studies) and e.name not in own]
        foreign = _first_foreign(folder, run, own, studies, [MAX_ENTRIES]) if visible else None
    except OSError as error:
        raise OutputRefused(f"cannot use {shown} as a run directory: {error.strerror or error}") from None
    if not visible:
        return folder
    if foreign:
        raise OutputRefused(f"refusing to use {shown} as a run directory: it holds {foreign}; effnas never "
                            "overwrites or mixes into a folder of other files (give a new or empty folder)")
    clash = [name for name in run.others if (folder / name).exists()]
    if clash:
        raise OutputRefused(f"refusing to use {shown} as a run directory: it holds {clash[0]} of another kind of run, "
                            f"so it is not {run.label} (give a new or empty folder)")
    if not any((folder / marker).exists() for marker in run.markers):
        raise OutputRefused(f"refusing to use {shown} as a run directory: it holds files ({sorted(visible)[0]}) "
                            f"but is not {run.label} (give a new or empty folder)")
    return folder
