"""Fault suite, disks: a full or read-only output directory under every command that writes.

Each case runs the real CLI (``nas ...``, through tests/cli_driver.py: one process runs every case's command in
turn) inside a private mount namespace (``unshare -m``), where the directory it writes to (the case's ``disk/``)
is a small tmpfs filled with a filler file, or a read-only bind mount; the mounts exist only in that namespace
and vanish with it. Still inside, each directory's contents are then copied out (``after/``) and compared with
what was there before: the study's rows (SQL dump) and
``PRAGMA integrity_check``, the run files byte for byte, checkpoints loaded with ``weights_only=True``, and
no temporary files left. Making mounts needs root (CAP_SYS_ADMIN) and unshare(1): elsewhere the cases skip.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

from effnas.writes import LOW_SPACE_BYTES
from tests.cli_driver import ROOT
from tests.test_faults_inputs import assert_one_line_error

pytestmark = pytest.mark.slow  # real full and read-only disks under whole searches and training runs

SPACE = {"width": 0.25, "depth": 0.25, "image_size": 32, "head_channels": 32}
TINY = {"stem_channels": 8, "head_channels": 32, "train_image_size": 16, "eval_image_size": 16, "name": "tiny",
        "dropout": 0.1, "stages": ["r1_k3_s1_e1_i8_o8_c1", "r1_k3_s2_e2_i8_o16_se0.25"]}
TRAIN_ARGS = ["--data", "synthetic:200x8", "--epochs", "2", "--stages", "2", "--batch-size", "32",
              "--min-image-size", "8", "--device", "cpu", "--quiet"]
SQLITE_SIDE_FILES = ("-wal", "-shm")  # SQLite's own companions of study.db: compared through the SQL dump
FULL = r"[Nn]o space left on device"
READ_ONLY = r"[Rr]ead-only file system"


def nas_argv(*argv: str) -> list[str]:
    return [sys.executable, "-m", "effnas.nas", *argv]


def search_argv(root: Path, out: Path, budget: int) -> list[str]:
    return nas_argv("search", "--data", "synthetic:200x16", "--epochs", "1", "--batch-size", "32", "--workers", "1",
                    "--threads", "1", "--space", str(root / "space.json"), "--device", "cpu", "--controller", "random",
                    "--quiet", "--budget", str(budget), "--out", str(out))


def train_argv(root: Path, out: Path, *extra: str) -> list[str]:
    return nas_argv("train", "--arch", str(root / "tiny.json"), "--out", str(out), *TRAIN_ARGS, *extra)


# ----------------------------------------------------------------------------- the private mounts
def mount_namespaces_work(scratch: Path) -> str | None:
    """None when this machine lets us make a tmpfs and a read-only bind mount in a private mount namespace
    (and the read-only one really refuses writes, even as root); else why not."""
    if shutil.which("unshare") is None:
        return "unshare(1) is not installed"
    tmpfs, bound = scratch / "tmpfs", scratch / "bound"
    tmpfs.mkdir()
    bound.mkdir()
    script = (f"mount -t tmpfs -o size=64k tmpfs {tmpfs} && mount --bind {bound} {bound} && "
              f"mount -o remount,bind,ro {bound} {bound} && ! touch {bound}/probe 2>/dev/null")
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        return f"cannot make private mounts here (needs root and mount namespaces): {result.stderr.strip()[:200]}"
    return None


@dataclass
class Disk:
    """What the command writes to: ``full`` (tmpfs with ``free_kib`` left, 0 = full; or a function of the seed
    folder giving it) or ``read-only``."""

    kind: str
    free_kib: int | Callable[[Path], int] = 0


def less_than_a_checkpoint(seed: Path) -> int:
    """KiB free that pass nas train's check of its --out (64 KiB) but cannot hold the next ``last.pt``."""
    checkpoint_kib = (seed / "last.pt").stat().st_size // 1024
    free = (LOW_SPACE_BYTES // 1024 + checkpoint_kib) // 2 // 4 * 4  # tmpfs counts whole 4 KiB pages
    assert LOW_SPACE_BYTES // 1024 < free < checkpoint_kib - 4, f"a {checkpoint_kib} KiB checkpoint leaves no room"
    return free


def mount_script(disk: Disk, folder: Path, seed: Path | None) -> list[str]:
    """Shell lines that make ``folder`` the case's disk, holding a copy of ``seed`` as ``run/`` (a read-only
    folder gets its copy now, before it is mounted)."""
    if disk.kind == "read-only":
        if seed is not None:
            shutil.copytree(seed, folder / "run")
        return [f"mount --bind {folder} {folder}", f"mount -o remount,bind,ro {folder} {folder}"]
    lines = [f"mount -t tmpfs -o size=2m tmpfs {folder}"]
    if seed is not None:
        lines.append(f"cp -a {seed} {folder}/run")
    filler = folder / ".filler"
    free_kib = disk.free_kib(seed) if callable(disk.free_kib) else disk.free_kib
    if free_kib:
        avail = f"$(df -k --output=avail {folder} | tail -1)"
        lines.append(f"dd if=/dev/zero of={filler} bs=1k count=$(({avail} - {free_kib})) 2>/dev/null")
    else:
        lines.append(f"dd if=/dev/zero of={filler} bs=4k 2>/dev/null || true")  # until ENOSPC
    return lines


def run_on_disks(root: Path, cases: list["Case"]) -> dict[str, dict]:
    """Make every case's disk (``root/<case>/disk``) in one private mount namespace, run every command there one
    after another through the real CLI in one driver process (tests/cli_driver.py: ``main(argv)`` in the case's
    folder, so torch is imported once, not once a case), then copy what each disk holds to ``root/<case>/after``.
    """
    lines, plan = ["set -e"], []
    for case in cases:
        case_dir = root / case.id
        folder = case_dir / "disk"
        folder.mkdir(parents=True)
        lines += mount_script(case.disk, folder, root / f"seed-{case.seed}" if case.seed else None)
        plan.append({"id": case.id, "argv": case.argv(root, folder)[3:], "cwd": str(case_dir)})  # no python -m
    plan_file, results_file = root / "plan.json", root / "results.json"
    plan_file.write_text(json.dumps(plan))
    lines += ["set +e", f"cd {ROOT} && {shlex.join([sys.executable, '-m', 'tests.cli_driver', str(plan_file), str(results_file)])}"]
    for case in cases:
        folder = root / case.id / "disk"
        lines += [f"rm -f {folder}/.filler 2>/dev/null", f"cp -a {folder}/. {root / case.id}/after"]
    driver = subprocess.run(["unshare", "-m", "sh", "-c", "\n".join(lines)], capture_output=True, text=True,
                            timeout=600, cwd=root)
    assert results_file.exists(), f"mount set-up or driver failed: {driver.stderr[-3000:]}"
    return {r["id"]: {"result": subprocess.CompletedProcess(r["argv"], r["rc"], r["stdout"], r["stderr"]),
                      "disk": root / r["id"] / "disk", "after": root / r["id"] / "after"}
            for r in json.loads(results_file.read_text())}


# ----------------------------------------------------------------------------- what a folder holds
def study_dump(db: Path) -> tuple[list[str], list[tuple]]:
    """Every row of a study (SQL dump) and its integrity check, read from a copy so the original stays as is."""
    work = db.parent.parent / f"dump-{db.parent.name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    for source in db.parent.glob(db.name + "*"):  # study.db and any -wal / -shm beside it
        shutil.copy2(source, work / source.name)
    with contextlib.closing(sqlite3.connect(work / db.name)) as connection:
        return list(connection.iterdump()), connection.execute("PRAGMA integrity_check").fetchall()


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes), SQLite's side files left out."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.endswith(SQLITE_SIDE_FILES)}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or ".write-test" in p.name)


def assert_names(result: subprocess.CompletedProcess, pattern: str, path: Path) -> None:
    assert_one_line_error(result, pattern)
    assert str(path) in result.stderr, f"the error does not name {path}: {result.stderr}"


def valid_run_files(run: Path) -> None:
    json.loads((run / "pareto.json").read_text())
    assert "spec" in json.loads((run / "best.json").read_text())
    assert (run / "trials.csv").read_text().startswith("number,state,"), (run / "trials.csv").read_text()[:200]


# ----------------------------------------------------------------------------- the cases
@dataclass
class Case:
    id: str
    disk: Disk
    seed: str | None  # "run" (a finished 1-trial search), "train" (a run stopped after epoch 1) or None
    argv: Callable[[Path, Path], list[str]]  # (root, disk folder) -> the command
    pattern: str
    fault: str
    outcome: str


MID_TRIAL = "search-disk-fills-mid-trial"
SEARCH_CASES = [
    Case("search-resume-disk-full", Disk("full"), "run", lambda r, d: search_argv(r, d / "run", 2),
         rf"cannot write to run directory .*: {FULL}", "nas search resumed into a run directory on a full disk",
         "exit 2, one-line error naming the run directory and the full disk; study rows and run files unchanged"),
    Case(MID_TRIAL, Disk("full", free_kib=96), "run", lambda r, d: search_argv(r, d / "run", 2),
         FULL, "nas search resumed with 96 KiB free: the disk fills during the next trial",
         "exit 2, one-line error; study intact with every earlier trial and the cut-off one left RUNNING for the "
         "next run to recover; run files valid, no temporary file"),
    Case("search-fresh-out-disk-full", Disk("full"), None, lambda r, d: search_argv(r, d / "new", 2),
         rf"cannot write to run directory .*: {FULL}", "nas search --out on a full disk (a new run)",
         "exit 2, one-line error; nothing created (no run directory, no empty study.db)"),
    Case("search-fresh-out-read-only", Disk("read-only"), None, lambda r, d: search_argv(r, d / "new", 2),
         READ_ONLY, "nas search --out in a read-only directory", "exit 2, one-line error; nothing created"),
    Case("search-resume-read-only", Disk("read-only"), "run", lambda r, d: search_argv(r, d / "run", 2),
         READ_ONLY, "nas search resumed with its run directory read-only",
         "exit 2, one-line error; study and run files unchanged"),
]
TRAIN_CASES = [
    Case("train-out-disk-full", Disk("full"), None, lambda r, d: train_argv(r, d / "train"), FULL,
         "nas train --out on a full disk", "exit 2, one-line error before any training; nothing created"),
    Case("train-out-read-only", Disk("read-only"), None, lambda r, d: train_argv(r, d / "train"), READ_ONLY,
         "nas train --out in a read-only directory", "exit 2, one-line error; nothing created"),
    Case("train-resume-checkpoint-fills-disk", Disk("full", free_kib=less_than_a_checkpoint), "train",
         lambda r, d: train_argv(r, d / "run", "--resume"), FULL,
         "nas train --resume with more than 64 KiB free but less than the next checkpoint (~94 KiB)",
         "exit 2, one-line error; last.pt byte-identical to before and loads with weights_only=True; no temp file"),
]
OUTPUT_CASES = [  # (command, argv builder for an output file in the disk folder)
    ("scale", lambda r, out: nas_argv("scale", "--base", str(r / "tiny.json"), "--target", "m", "--out", str(out)),
     "m.json"),
    ("best", lambda r, out: nas_argv("best", str(r / "read-run"), "--out", str(out)), "best.json"),
    ("report", lambda r, out: nas_argv("report", str(r / "read-run"), "--out", str(out)), "report.html"),
]
WHERE = {"full": "on a full disk", "read-only": "in a read-only directory"}
WRITE_CASES = [
    Case(f"{command}-out-{disk.kind}", disk, None, lambda r, d, build=build, name=name: build(r, d / name),
         pattern, f"nas {command} --out {WHERE[disk.kind]}",
         "exit 2, one-line error naming the file; no file, no partial or temporary file")
    for command, build, name in OUTPUT_CASES
    for disk, pattern in ((Disk("full"), FULL), (Disk("read-only"), READ_ONLY))
    if (command, disk.kind) != ("report", "read-only")  # the case below: where a read-only report usually is
] + [
    Case("report-in-read-only-run", Disk("read-only"), "run", lambda r, d: nas_argv("report", str(d / "run")),
         rf"report\.html: {READ_ONLY}", "nas report of a run directory on a read-only disk (report.html goes there)",
         "the study is read; exit 2, one-line error naming report.html; the run directory unchanged"),
]
CASES = SEARCH_CASES + TRAIN_CASES + WRITE_CASES


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every case's outcome: the seeds first (a 1-trial search, which the resume cases and nas best / nas report
    read; a training run stopped after epoch 1), side by side, then every case (see :func:`run_on_disks`)."""
    root = tmp_path_factory.mktemp("disk")
    reason = mount_namespaces_work(tmp_path_factory.mktemp("probe"))
    if reason:
        pytest.skip(reason)
    (root / "space.json").write_text(json.dumps(SPACE))
    (root / "tiny.json").write_text(json.dumps(TINY))

    def make_seed(name: str) -> None:
        argv = (search_argv(root, root / "seed-run", 1) if name == "run"
                else train_argv(root, root / "seed-train", "--stop-after", "1"))
        result = subprocess.run(argv, capture_output=True, text=True, timeout=240, cwd=root)
        assert result.returncode == 0, f"seed {name} failed: {result.stderr[-2000:]}"
        if name == "train":
            (root / "seed-train" / "training.html").unlink()  # a page of plotly: too big for the small disk
        else:
            shutil.copytree(root / "seed-run", root / "read-run")  # what nas best / report read, not the seed

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(make_seed, ("run", "train")))
    return root, run_on_disks(root, CASES)


def case_outcome(outcomes, case: Case) -> tuple[Path, dict]:
    root, found = outcomes
    return root, found[case.id]


@pytest.mark.parametrize("case", [c for c in SEARCH_CASES if c.id != MID_TRIAL], ids=lambda c: c.id)
def test_search_on_a_bad_disk_is_one_line_and_changes_nothing(case, outcomes):
    root, outcome = case_outcome(outcomes, case)
    assert_names(outcome["result"], case.pattern, outcome["disk"])
    after = outcome["after"]
    if case.seed is None:
        assert not list(after.iterdir())  # no run directory, no study
        return
    seed, run = root / "seed-run", after / "run"
    assert files(run) == files(seed)  # the run files byte for byte
    rows, integrity = study_dump(run / "study.db")
    assert integrity == [("ok",)]
    assert rows == study_dump(seed / "study.db")[0]
    assert not leftovers(run)


def test_search_disk_filling_mid_trial_keeps_the_study(outcomes):
    """SQLite rolls the refused commit back; the trial it cut off stays RUNNING, which the next run recovers as it
    does after a kill -9 (tests/test_faults_search.py)."""
    case = next(c for c in SEARCH_CASES if c.id == MID_TRIAL)
    root, outcome = case_outcome(outcomes, case)
    assert_names(outcome["result"], case.pattern, outcome["disk"])
    run = outcome["after"] / "run"
    assert not leftovers(run)
    valid_run_files(run)
    rows, integrity = study_dump(run / "study.db")
    assert integrity == [("ok",)]
    seed_rows = study_dump(root / "seed-run" / "study.db")[0]
    trial_rows = [row for row in seed_rows if row.startswith('INSERT INTO "trial')]
    assert trial_rows and set(trial_rows) <= set(rows), "a trial stored before the disk filled is gone"
    with contextlib.closing(sqlite3.connect(f"file:{run / 'study.db'}?mode=ro", uri=True)) as connection:
        states = connection.execute("SELECT state FROM trials ORDER BY number").fetchall()
    assert states[-1] == ("RUNNING",) and len(states) == 2, f"the disk did not fill during trial 1: {states}"


@pytest.mark.parametrize("case", TRAIN_CASES, ids=lambda c: c.id)
def test_train_on_a_bad_disk_keeps_complete_checkpoints(case, outcomes):
    root, outcome = case_outcome(outcomes, case)
    assert_names(outcome["result"], case.pattern, outcome["disk"])
    after = outcome["after"]
    assert not leftovers(after)
    if case.seed is None:
        assert not list(after.iterdir())  # not even the --out folder
        return
    run = after / "run"
    assert files(run) == files(root / "seed-train")  # last.pt and metrics.csv as they were
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["epoch"] == 1


@pytest.mark.parametrize("case", WRITE_CASES, ids=lambda c: c.id)
def test_output_to_a_bad_disk_leaves_no_file(case, outcomes):
    root, outcome = case_outcome(outcomes, case)
    assert_names(outcome["result"], case.pattern, outcome["disk"])
    if case.seed is None:
        assert not list(outcome["after"].iterdir())  # neither the file nor a partial or temporary one
    else:
        assert files(outcome["after"] / "run") == files(root / f"seed-{case.seed}")


FAULTS = [(c.id, c.fault, c.outcome) for c in CASES]
