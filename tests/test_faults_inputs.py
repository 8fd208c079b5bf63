"""Fault suite, bad inputs: the real CLI in subprocesses; each case is a one-line error, exit 2, nothing written.

``FAULTS`` lists every case of this module (and the table in docs/faults.md is built from the FAULTS of every
``tests/test_faults_*.py`` module): run ``EFFNAS_WRITE_FAULTS=1 pytest tests/test_faults_inputs.py`` to refresh it.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.cli_driver import run_commands

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "faults.md"
GOOD_STAGE = "r1_k3_s1_e1_i8_o8_c1"
TINY = {"stem_channels": 8, "head_channels": 32, "train_image_size": 16, "eval_image_size": 16, "name": "tiny",
        "stages": [GOOD_STAGE, "r1_k3_s2_e2_i8_o16_se0.25"]}


def nas(*argv: str, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "effnas.nas", *argv], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd)


def assert_one_line_error(result: subprocess.CompletedProcess, pattern: str, warnings_allowed: bool = False) -> None:
    """Exit 2, stderr is exactly one ``nas X: error: ...`` line matching ``pattern``, no traceback (before it,
    with ``warnings_allowed``, only the warnings that name skipped files)."""
    import re

    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if warnings_allowed:
        lines = [line for line in lines if "skipping unreadable image" not in line and not line.startswith("  ")]
    assert len(lines) == 1 and lines[0].startswith("nas ") and ": error: " in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert re.search(pattern, lines[0]), lines[0]


# ----------------------------------------------------------------------------- spec files (nas profile / scale / train)
def spec(**changes) -> str:
    return json.dumps({**TINY, **changes})


SPEC_CASES = [  # (id, file text, expected error pattern, what the fault is)
    ("spec-wrong-type", spec(stem_channels="eight"), r"stem_channels", "spec field of the wrong type"),
    ("spec-missing-field", json.dumps({"stem_channels": 8}), r"missing field 'stages'", "spec without 'stages'"),
    ("spec-unknown-field", spec(width=2.0), r"unknown field 'width'", "spec with an unknown field"),
    ("spec-negative", spec(stem_channels=-8), r"stem_channels: must be > 0, got -8", "negative channel count"),
    ("spec-huge-channels", spec(stages=["r1_k3_s1_e1_i8_o999999999_c1"]), r"out_channels: must be <= ",
     "absurdly wide stage (10^9 channels)"),
    ("spec-huge-image", spec(train_image_size=10**12), r"train_image_size: must be <= ", "image size 10^12"),
    ("spec-bad-block-string", spec(stages=["r1_k-3_s1_e1_i8_o8_c1"]), r"cannot read token 'k-3'",
     "malformed block string"),
    ("spec-no-stages", spec(stages=[]), r"at least one stage", "spec with an empty stage list"),
    ("spec-not-object", "[1, 2]", r"expected a JSON object", "spec JSON that is a list"),
    ("spec-truncated-json", spec()[:-20], r"not valid JSON", "truncated spec JSON"),
]


@pytest.mark.parametrize("case", SPEC_CASES, ids=[c[0] for c in SPEC_CASES])
def test_bad_spec_is_one_line_error_in_profile(case, cli_results):
    case_dir, result = cli_results[case[0]]
    assert_one_line_error(result, case[2])
    assert sorted(p.name for p in case_dir.iterdir()) == ["spec.json"]  # nothing written


CLI_CASES = [  # (id, argv, pattern, fault)
    ("zoo-unknown", ["profile", "efficientnetv2-q", "--no-time"], r"unknown zoo model 'efficientnetv2-q'",
     "unknown zoo name"),
    ("spec-missing-file", ["profile", "no/such/spec.json", "--no-time"], r"no such file", "spec path that does not exist"),
    ("profile-negative-size", ["profile", "efficientnet-b0", "--no-time", "--image-size", "-5"], r"image_size",
     "negative --image-size"),
    ("profile-one-class", ["profile", "efficientnet-b0", "--no-time", "--num-classes", "1"], r"num_classes",
     "--num-classes 1"),
    ("scale-bad-base", ["scale", "--base", "{SPEC}", "--target", "m"], r"missing field 'stages'",
     "nas scale --base with a broken spec"),
    ("scale-negative-phi", ["scale", "--base", "efficientnet-b0", "--phi", "-3"], r"phi must be >= 0",
     "nas scale --phi -3"),
    ("scale-unknown-target", ["scale", "--base", "efficientnet-b0", "--target", "zz"], r"unknown target 'zz'",
     "nas scale --target zz"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_cli_input_is_one_line_error(case, cli_results):
    case_dir, result = cli_results[case[0]]
    assert_one_line_error(result, case[2])
    assert sorted(p.name for p in case_dir.iterdir()) == ["spec.json"]  # nothing written


# ----------------------------------------------------------------------------- search-space files (nas search)
SPACE_CASES = [  # (id, file text, expected error pattern, what the fault is)
    ("space-unknown-field", json.dumps({"widht": 0.5}), r"unknown field 'widht'", "space JSON with an unknown field"),
    ("space-wrong-type", json.dumps({"width": "wide"}), r"width: must be a number", "space width of the wrong type"),
    ("space-negative", json.dumps({"width": -1}), r"width: must be in \(0.0, 8.0\], got -1", "negative space width"),
    ("space-huge", json.dumps({"image_size": 10**8}), r"image_size: must be in \[32, 4096\]",
     "space image size 10^8"),
    ("space-stages-not-object", json.dumps({"stages": "abc"}), r"stages: expected an object",
     "space 'stages' that is a string"),
]


@pytest.mark.parametrize("case", SPACE_CASES, ids=[c[0] for c in SPACE_CASES])
def test_bad_space_is_one_line_error_in_search(case, cli_results):
    case_dir, result = cli_results[case[0]]
    assert_one_line_error(result, case[2])
    assert sorted(p.name for p in case_dir.iterdir()) == ["space.json"]  # no run directory, no study


# ----------------------------------------------------------------------------- data sets (nas search / nas train)
def _npz(path: Path, x, y) -> str:
    with path.open("wb") as handle:
        np.savez(handle, x=x, y=y)
    return f"npz:{path}"


def _images(n: int, size: int = 12) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


class _Evil:  # unpickling this would run a shell command: the CIFAR reader must refuse it
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _evil_cifar(root: Path) -> str:
    folder = root / "cifar"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": [0]}))
    return f"cifar:{folder}"


def _all_bad_imagefolder(root: Path) -> str:
    folder = root / "folder"
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
        (folder / name / "x.png").write_bytes(b"not a png at all")
    return f"imagefolder:{folder}"


DATA_CASES = [  # (id, builder(tmp) -> --data value, pattern, fault)
    ("npz-labels-out-of-range", lambda t: _npz(t / "d.npz", _images(20), np.array([-1] + [0, 1] * 9 + [1])),
     r"labels must be in \[0, ", "npz labels out of range (-1)"),
    ("npz-length-mismatch", lambda t: _npz(t / "d.npz", _images(20), np.arange(19) % 2), r"20 images but 19 labels",
     "npz with 20 images and 19 labels"),
    ("npz-empty", lambda t: _npz(t / "d.npz", _images(0), np.zeros(0, dtype=np.int64)), r"dataset is empty",
     "empty npz dataset"),
    ("npz-one-class", lambda t: _npz(t / "d.npz", _images(20), np.zeros(20, dtype=np.int64)), r"only 1 class",
     "npz with a single class"),
    ("npz-one-image-per-class", lambda t: _npz(t / "d.npz", _images(3), np.arange(3)),
     r"too few images for a validation split", "every class has a single image"),
    ("npz-nan-pixels", lambda t: _npz(t / "d.npz", np.full((20, 8, 8), np.nan), np.arange(20) % 2), r"NaN",
     "npz images containing NaN"),
    ("npz-object-array", lambda t: (t / "d.npz").write_bytes(_pickled_npz()) and f"npz:{t / 'd.npz'}",
     r"not a readable .npz", "npz holding pickled objects (never unpickled)"),
    ("npz-garbage", lambda t: (t / "d.npz").write_bytes(b"PK\x03\x04garbage") and f"npz:{t / 'd.npz'}",
     r"not a readable .npz", "corrupt .npz file"),
    ("imagefolder-no-readable", _all_bad_imagefolder, r"no readable images", "ImageFolder of non-image files only"),
    ("cifar-malicious-pickle", _evil_cifar, r"not a CIFAR python batch .*refusing to load",
     "CIFAR batch that is a malicious pickle (refused, nothing runs)"),
    ("data-unknown-source", lambda t: "mnist", r"unknown source 'mnist'", "unknown --data source"),
]


def _pickled_npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.array([{"a": 1}], dtype=object), y=np.array([0]))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory):
    """Every bad-input command through the real CLI, in one subprocess (:mod:`tests.cli_driver`), each in its own
    directory."""
    root = tmp_path_factory.mktemp("inputs")
    plan, folders = [], {}

    def argv_for(kind: str, case: tuple, case_dir: Path) -> list[str]:
        if kind == "data":
            return ["search", "--data", case[1](case_dir), "--out", str(case_dir / "run"), "--device", "cpu",
                    "--quiet"]
        if kind == "space":
            (case_dir / "space.json").write_text(case[1])
            return ["search", "--space", str(case_dir / "space.json"), "--out", str(case_dir / "run"), "--device",
                    "cpu", "--quiet"]
        if kind == "spec":
            (case_dir / "spec.json").write_text(case[1])
            return ["profile", str(case_dir / "spec.json"), "--no-time"]
        (case_dir / "spec.json").write_text(json.dumps({"stem_channels": 8}))
        return [str(case_dir / "spec.json") if a == "{SPEC}" else a for a in case[1]]

    jobs = ([("data", c) for c in DATA_CASES] + [("spec", c) for c in SPEC_CASES] + [("cli", c) for c in CLI_CASES]
            + [("space", c) for c in SPACE_CASES])
    for kind, case in jobs:
        folders[case[0]] = case_dir = root / case[0]
        case_dir.mkdir()
        plan.append({"id": case[0], "argv": argv_for(kind, case, case_dir), "cwd": case_dir})
    return {name: (folders[name], result) for name, result in run_commands(plan, root).items()}


@pytest.mark.parametrize("case", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data_is_one_line_error_and_writes_nothing(case, cli_results):
    case_dir, result = cli_results[case[0]]
    assert_one_line_error(result, case[2], warnings_allowed=case[0].startswith("imagefolder"))
    assert not (case_dir / "run").exists() and not (case_dir / "PWNED").exists()


@pytest.mark.slow  # a search process over a folder of images
def test_unreadable_images_are_skipped_with_a_warning_naming_each(tmp_path):
    from PIL import Image

    folder = tmp_path / "folder"
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (folder / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / name / f"{i}.png")
    good = (folder / "cat" / "0.png").read_bytes()
    (folder / "cat" / "truncated.png").write_bytes(good[: len(good) // 3])
    (folder / "dog" / "notes.jpg").write_text("this is text, not a JPEG")
    (folder / "dog" / "README.txt").write_text("not an image extension: ignored silently")
    from tests.test_faults_hostile import png_header

    (folder / "dog" / "bomb.png").write_bytes(png_header(20_000, 20_000))  # a header claiming 400 M pixels
    arch = tmp_path / "tiny.json"
    arch.write_text(json.dumps(TINY))
    result = nas("train", "--arch", str(arch), "--data", f"imagefolder:{folder}", "--epochs", "1", "--stages", "1",
                 "--batch-size", "4", "--device", "cpu", "--out", str(tmp_path / "run"), "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "truncated.png" in result.stderr and "notes.jpg" in result.stderr and "README" not in result.stderr
    assert "bomb.png" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "run" / "final.pt").is_file()


def test_bad_arch_for_train_is_one_line_error(tmp_path):
    (tmp_path / "a.json").write_text(spec(stem_channels=0))
    assert_one_line_error(nas("train", "--arch", str(tmp_path / "a.json"), "--out", str(tmp_path / "run"),
                              cwd=tmp_path), r"stem_channels: must be > 0")
    assert not (tmp_path / "run").exists()


NOTHING_WRITTEN = "exit 2, one-line error, nothing written"
FAULTS = ([(c[0], c[3], NOTHING_WRITTEN) for c in SPEC_CASES + CLI_CASES + SPACE_CASES]
          + [(c[0], c[3], "exit 2, one-line error, run directory not created") for c in DATA_CASES]
          + [("imagefolder-unreadable-files", "truncated PNG, a text file named .jpg and a PNG whose header claims 20,000 x 20,000 pixels in an "
              "ImageFolder",
              "skipped with a warning naming each file; training runs"),
             ("train-bad-arch", "nas train --arch with stem_channels 0", "exit 2, one-line error, nothing written")])


# ----------------------------------------------------------------------------- the table in docs/faults.md
def render_table() -> str:
    lines = ["# Faults and bad inputs", "",
             "Every fault and bad input that the fault suite (`tests/test_faults_*.py`) tries, and what happens. "
             "Each row is a test that runs the real `nas` command in a subprocess. Generated from the suite's "
             "`FAULTS` lists: `EFFNAS_WRITE_FAULTS=1 pytest tests/test_faults_inputs.py -k table`.", ""]
    for module in sorted(path.stem for path in Path(__file__).parent.glob("test_faults_*.py")):
        faults = importlib.import_module(f"tests.{module}").FAULTS
        lines += [f"## {module}.py ({len(faults)})", "", "| case | fault or bad input | outcome |", "|---|---|---|"]
        lines += [f"| `{case}` | {what} | {outcome} |" for case, what, outcome in faults]
        lines.append("")
    return "\n".join(lines)


def test_docs_table_is_current():
    table = render_table()
    if os.environ.get("EFFNAS_WRITE_FAULTS"):
        DOC.write_text(table)
    assert DOC.read_text() == table, "docs/faults.md is stale: EFFNAS_WRITE_FAULTS=1 pytest tests/test_faults_inputs.py"
    assert table.count("\n| `") >= 25
