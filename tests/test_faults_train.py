"""Fault suite, `nas train`: kill -9 mid-run and --resume ends with the same weights as an uninterrupted run;
checkpoints are never half-written and a broken or foreign checkpoint is a one-line error."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.cli_driver import run_commands
from tests.test_faults_inputs import assert_one_line_error

pytestmark = pytest.mark.slow  # training runs killed and resumed

ROOT = Path(__file__).resolve().parents[1]
# The tiny network and settings of tests/test_nas_train_run.py, with more epochs so a kill lands mid-run.
TINY = {"stem_channels": 8, "head_channels": 32, "train_image_size": 16, "eval_image_size": 16, "name": "tiny",
        "dropout": 0.1, "stages": ["r1_k3_s1_e1_i8_o8_c1", "r1_k3_s2_e2_i8_o16_se0.25"]}
ARGS = ["--data", "synthetic:200x8", "--epochs", "6", "--stages", "2", "--batch-size", "32", "--min-image-size", "8",
        "--randaug", "2", "6", "--mixup", "0", "0.4", "--dropout", "0", "0.2", "--seed", "3", "--device", "cpu",
        "--threads", "1", "--quiet"]  # threads fixed: the default follows the cores free at the start, and another
# thread count sums in another order, so the killed-and-resumed run would not end bit for bit as the full one


def train_argv(root: Path, out: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "effnas.nas", "train", "--arch", str(root / "tiny.json"), "--out", str(root / out),
            *ARGS, *extra]


def loads_safely(path: Path) -> bool:
    try:
        torch.load(path, weights_only=True)
        return True
    except Exception:  # noqa: BLE001
        return False


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run and, at the same time, a run killed (whole process group, SIGKILL) just after its
    first checkpoint, then resumed."""
    root = tmp_path_factory.mktemp("train")
    (root / "tiny.json").write_text(json.dumps(TINY))
    full = subprocess.Popen(train_argv(root, "full"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = subprocess.Popen(train_argv(root, "killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    checkpoint, deadline = root / "killed" / "last.pt", time.monotonic() + 180
    while not checkpoint.exists():
        assert killed.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.02)
    alive = killed.poll() is None
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    after_kill = {"alive": alive, "files": sorted(p.name for p in (root / "killed").iterdir()),
                  "loads": {p.name: loads_safely(p) for p in (root / "killed").glob("*.pt")},
                  "epoch": torch.load(checkpoint, weights_only=True)["epoch"]}
    full_out, full_err = full.communicate(timeout=300)
    assert full.returncode == 0, full_err[-2000:]
    gone = subprocess.Popen(["true"])  # a finished process's pid: the writer of a copy a kill left mid-write
    gone.wait()
    for name in ("metrics.csv", "last.pt"):
        (root / "killed" / f".{name}.{gone.pid}.tmp").write_bytes(b"half")
    resumed = subprocess.run(train_argv(root, "killed", "--resume"), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    return root, after_kill, full_out, resumed.stdout


def test_kill_mid_run_leaves_only_loadable_checkpoints(runs):
    _, after_kill, _, _ = runs
    assert after_kill["alive"] and "final.pt" not in after_kill["files"]
    assert after_kill["loads"]["last.pt"] and all(after_kill["loads"].values())
    assert after_kill["epoch"] < 6


def test_resume_after_kill_ends_with_the_same_weights(runs):
    root, _, full_out, resumed_out = runs
    for name in ("final.pt", "last.pt"):
        expected = torch.load(root / "full" / name, weights_only=True)
        actual = torch.load(root / "killed" / name, weights_only=True)
        assert expected["model"].keys() == actual["model"].keys()
        for key, tensor in expected["model"].items():
            assert torch.equal(tensor, actual["model"][key]), f"{name}: {key} differs after kill + resume"
    assert full_out.split(" after ")[0] == resumed_out.split(" after ")[0]  # the same top-1 (EMA and raw)
    assert not list((root / "killed").glob("*.tmp"))


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def broken_copy(root: Path, name: str, damage) -> Path:
    folder = root / name
    folder.mkdir()
    data = (root / "full" / "last.pt").read_bytes()
    (folder / "last.pt").write_bytes(damage(data))
    return folder


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


TRAIN_REFUSALS = [  # (id, folder name under root or a damage function, extra args, pattern, fault)
    ("resume-different-epochs", "full", ["--resume", "--epochs", "7"], r"different 'epochs' setting",
     "nas train --resume with a different --epochs"),
    ("new-run-over-existing", "full", [], r"already holds a run", "nas train into a folder holding a run, no --resume"),
    ("resume-without-checkpoint", "empty", ["--resume"], r"no checkpoint to resume from", "--resume with no checkpoint"),
    ("resume-truncated-checkpoint", lambda data: data[: len(data) // 2], ["--resume"],
     r"not a readable checkpoint|a file effnas did not write", "--resume from a truncated last.pt"),
    ("resume-malicious-checkpoint", lambda data: pickle.dumps({"format": 1, "x": _Evil()}), ["--resume"],
     r"not a readable checkpoint|a file effnas did not write",
     "--resume from a last.pt that is a malicious pickle (weights_only refuses it)"),
]


@pytest.fixture(scope="module")
def train_refusals(runs):
    """Each refused ``nas train`` through the real CLI, all in one subprocess (:mod:`tests.cli_driver`); each case's
    folder hashed before and after."""
    root = runs[0]
    plan, folders, before = [], {}, {}
    for case_id, source, extra, _, _ in TRAIN_REFUSALS:
        if callable(source):
            folder = broken_copy(root, case_id, source)
        else:
            folder = root / source
            folder.mkdir(exist_ok=True)
        folders[case_id], before[case_id] = folder, digest(folder)
        plan.append({"id": case_id, "argv": train_argv(root, folder.name, *extra)[3:], "cwd": root})
    results = run_commands(plan, root)
    return {name: (result, before[name], digest(folders[name])) for name, result in results.items()}


@pytest.mark.parametrize("case", TRAIN_REFUSALS, ids=[c[0] for c in TRAIN_REFUSALS])
def test_refused_train_leaves_files_untouched(case, train_refusals, runs):
    result, before, after = train_refusals[case[0]]
    assert_one_line_error(result, case[3])
    assert after == before and not (runs[0] / "PWNED").exists()


FAULTS = [
    ("train-kill-mid-run", "kill -9 of nas train right after its first checkpoint",
     "every .pt left loads with weights_only=True; no final.pt"),
    ("train-resume-after-kill", "nas train --resume after the kill",
     "final and last weights bit-identical to an uninterrupted run; copies a killed write left are removed"),
    *[(c[0], c[4], "exit 2, one-line error; files byte-identical") for c in TRAIN_REFUSALS],
]
