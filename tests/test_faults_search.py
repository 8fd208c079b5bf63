"""Fault suite, `nas search`: kill -9 at several moments and resume, time limits, divergence, refused resumes.

One study is built by a chain of killed runs (module fixture ``chain``) and then resumed to the end; each
kill point is checked on its own. Everything runs the real CLI (``python -m nas search``) in its own process
group, killed with ``os.killpg(..., SIGKILL)`` so the worker processes die with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.test_faults_inputs import assert_one_line_error

ROOT = Path(__file__).resolve().parents[1]
SPACE = {"width": 0.25, "depth": 0.25, "image_size": 32, "head_channels": 32}
BUDGET = 3


def search_argv(out: Path, *extra: str, budget: int = BUDGET) -> list[str]:
    return [sys.executable, "-m", "nas", "search", "--data", "synthetic:200x16", "--epochs", "1", "--batch-size",
            "32", "--workers", "1", "--space", str(out.parent / "space.json"), "--device", "cpu", "--controller",
            "random", "--quiet", "--budget", str(budget), "--out", str(out), *extra]


def query(db: Path, sql: str) -> list[tuple]:
    """Read the live study without locking it for the writer; None-safe while it is being created."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
            return connection.execute(sql).fetchall()
    except sqlite3.Error:
        return []


def count(db: Path, sql: str) -> int:
    rows = query(db, sql)
    return rows[0][0] if rows else 0


def has_attr(db: Path, key: str) -> bool:
    return count(db, f"SELECT COUNT(*) FROM study_user_attributes WHERE key = '{key}'") > 0


def finished(db: Path) -> int:
    return count(db, "SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'FAIL')")


def run_and_kill(out: Path, ready, settle: float = 0.0, limit: float = 120) -> dict:
    """Start the search, wait until ``ready(db)``, wait ``settle`` s more, kill -9 its whole process group."""
    log = (out.parent / f"log-{time.time_ns()}.txt").open("w")
    process = subprocess.Popen(search_argv(out), stdout=log, stderr=subprocess.STDOUT, cwd=out.parent,
                               start_new_session=True)
    db, deadline = out / "study.db", time.monotonic() + limit
    while not ready(db):
        assert process.poll() is None, f"search ended (rc {process.returncode}) before the kill point"
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.05)
    time.sleep(settle)
    alive = process.poll() is None
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    log.close()
    return {"alive_at_kill": alive, "snapshot": snapshot(out)}


def snapshot(out: Path) -> dict:
    """What a killed search left: integrity, trial states, and whether each output file is valid."""
    db = out / "study.db"
    state = {"integrity": query(db, "PRAGMA integrity_check"), "files": {},
             "trials": query(db, "SELECT number, state FROM trials ORDER BY number"),
             "reference": has_attr(db, "reference"),
             "leftovers": sorted(p.name for p in out.glob(".*.tmp"))}
    for name in ("trials.csv", "pareto.json", "best.json"):
        path = out / name
        if path.exists():
            state["files"][name] = valid_file(path)
    return state


def valid_file(path: Path) -> bool | str:
    from search_space import load_spec

    try:
        if path.suffix == ".csv":
            pd.read_csv(path)
        elif path.name == "best.json":
            load_spec(path)
        else:
            assert isinstance(json.loads(path.read_text()), list)
        return True
    except Exception as error:  # noqa: BLE001 - any failure to read is what this looks for
        return f"{type(error).__name__}: {error}"


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """kill during the reference -> resume, kill mid-trial -> resume, kill right after a trial is recorded
    (while the result files are being rewritten) -> resume to the end."""
    root = tmp_path_factory.mktemp("kill")
    (root / "space.json").write_text(json.dumps(SPACE))
    out = root / "run"
    steps = {}
    # 1. The study exists and the backbone reference is training in the worker: no reference stored yet.
    steps["reference"] = run_and_kill(out, lambda db: has_attr(db, "identity"), settle=1.5)
    # 2. A candidate is training (a RUNNING trial exists).
    steps["mid_trial"] = run_and_kill(
        out, lambda db: count(db, "SELECT COUNT(*) FROM trials WHERE state = 'RUNNING'") > 0, settle=1.0)
    # 3. The instant a trial's result files are rewritten: write_outputs() is still writing pareto.json /
    # best.json. (On a fast machine a trial may already have finished before kill 2, so wait for a *new* write.)
    results = out / "trials.csv"
    before = results.stat().st_mtime_ns if results.exists() else None
    steps["after_record"] = run_and_kill(out, lambda db: results.exists() and results.stat().st_mtime_ns != before)
    final = subprocess.run(search_argv(out), capture_output=True, text=True, cwd=root, timeout=300)
    steps["final"] = {"result": final, "snapshot": snapshot(out)}
    return out, steps


def test_kill_during_reference_then_resume(chain):
    _, steps = chain
    step = steps["reference"]
    assert step["alive_at_kill"] and step["snapshot"]["integrity"] == [("ok",)]
    assert step["snapshot"]["reference"] is False and step["snapshot"]["trials"] == []


def test_kill_mid_trial_leaves_a_running_trial_that_resume_reruns(chain):
    out, steps = chain
    snap = steps["mid_trial"]["snapshot"]
    assert steps["mid_trial"]["alive_at_kill"] and snap["integrity"] == [("ok",)] and snap["reference"]
    running = [number for number, state in snap["trials"] if state == "RUNNING"]
    assert len(running) == 1
    study = load(out)
    cut = study.trials[running[0]]
    assert cut.state.name == "FAIL" and cut.user_attrs["interrupted"] is True
    retries = [t for t in study.trials if t.user_attrs.get("retry_of") == cut.number]
    assert len(retries) == 1 and retries[0].params == cut.params and retries[0].state.name == "COMPLETE"


def test_kill_right_after_a_trial_is_recorded_leaves_valid_files(chain):
    _, steps = chain
    snap = steps["after_record"]["snapshot"]
    assert steps["after_record"]["alive_at_kill"] and snap["integrity"] == [("ok",)]
    assert snap["files"] and all(ok is True for ok in snap["files"].values()), snap["files"]
    for step in steps.values():  # at every kill point: whatever files exist are complete and valid
        assert all(ok is True for ok in step["snapshot"]["files"].values()), step["snapshot"]["files"]


def load(out: Path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name="effnas", storage=f"sqlite:///{out / 'study.db'}")


def test_resumed_study_has_exactly_the_budget_and_complete_files(chain):
    out, steps = chain
    result = steps["final"]["result"]
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{BUDGET}/{BUDGET} trials" in result.stdout
    snap = steps["final"]["snapshot"]
    assert snap["integrity"] == [("ok",)] and snap["leftovers"] == []
    assert set(snap["files"]) == {"trials.csv", "pareto.json", "best.json"} and all(
        ok is True for ok in snap["files"].values())
    study = load(out)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    counted = [t for t in study.trials if t.state.name == "COMPLETE"
               or (t.state.name == "FAIL" and not t.user_attrs.get("interrupted"))]
    assert len(counted) == BUDGET and not [t for t in study.trials if t.state.name == "RUNNING"]
    assert sum(bool(t.user_attrs.get("interrupted")) for t in study.trials) >= 1
    table = pd.read_csv(out / "trials.csv")
    assert set(int(n) for n in table["number"]) <= set(numbers) and table["number"].is_unique
    best = json.loads((out / "best.json").read_text())
    rewards = [t.user_attrs["reward"] for t in study.trials if t.state.name == "COMPLETE"]
    assert best["metrics"]["reward"] == pytest.approx(max(rewards))


# ----------------------------------------------------------------------------- refusals against a finished study
def digest(out: Path) -> dict[str, str]:
    """Hashes of the run files, and of the study's full SQL dump: every row, not SQLite's header bytes (opening
    a database may bump its change counter or journal mode without changing any row)."""
    hashes = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())
              if p.is_file() and p.name != "study.db" and not p.name.startswith("study.db-")}
    connection = sqlite3.connect(out / "study.db")
    try:
        hashes["study.db"] = hashlib.sha256("\n".join(connection.iterdump()).encode()).hexdigest()
    finally:
        connection.close()
    return hashes


def _bad_npz(root: Path) -> str:
    path = root / "bad.npz"
    with path.open("wb") as handle:
        np.savez(handle, x=np.zeros((10, 8, 8), np.uint8), y=np.arange(9))
    return str(path)


REFUSALS = [  # (id, extra args (or a function of the root), error pattern, fault)
    ("resume-different-epochs", lambda r: ["--epochs", "2"], r"different settings \(epochs\)",
     "resume with a different --epochs"),
    ("resume-different-controller", lambda r: ["--controller", "tpe"], r"different settings \(controller\)",
     "resume with a different --controller"),
    ("resume-bad-data", lambda r: ["--data", f"npz:{_bad_npz(r)}"], r"10 images but 9 labels",
     "resume pointed at a broken .npz"),
    ("budget-zero", lambda r: ["--budget", "0"], r"--budget must be a positive", "--budget 0"),
    ("budget-not-a-number", lambda r: ["--budget", "ten"], r"invalid int value", "--budget ten"),
    ("workers-zero", lambda r: ["--workers", "0"], r"--workers must be at least 1", "--workers 0"),
    ("timeout-negative", lambda r: ["--trial-timeout", "-1"], r"--trial-timeout must be positive",
     "--trial-timeout -1"),
    ("space-bad", lambda r: ["--space", str(r / "bad-space.json")], r"bad-space.json", "space JSON with a wrong type"),
    ("storage-unreachable", lambda r: ["--storage", "postgresql://nobody@127.0.0.1:9/effnas"], r"cannot open storage",
     "storage URL that cannot connect"),
    ("storage-bad-sqlite-path", lambda r: ["--storage", "sqlite:////no/such/dir/study.db"], r"cannot open storage",
     "sqlite storage in a directory that does not exist"),
    ("out-under-a-file", lambda r: ["--out", str(r / "space.json" / "run")], r"cannot write to run directory",
     "--out below a regular file (unwritable)"),
]


@pytest.fixture(scope="module")
def refusals(chain):
    """Each refused command against a copy of the finished study, all at once; hashes before and after."""
    out, _ = chain
    root = out.parent / "refusals"
    root.mkdir()

    def one(case):
        case_root = root / case[0]
        case_root.mkdir()
        (case_root / "space.json").write_text(json.dumps(SPACE))
        (case_root / "bad-space.json").write_text(json.dumps({**SPACE, "width": "wide"}))
        study = case_root / "run"
        shutil.copytree(out, study)
        before = digest(study)
        argv = search_argv(study) + case[1](case_root)  # argparse keeps the last value of a repeated flag
        result = subprocess.run(argv, capture_output=True, text=True, cwd=case_root, timeout=120)
        return case[0], (result, before, digest(study))

    with ThreadPoolExecutor(3) as pool:
        return dict(pool.map(one, REFUSALS))


@pytest.mark.parametrize("case", REFUSALS, ids=[c[0] for c in REFUSALS])
def test_refused_command_leaves_the_study_untouched(case, refusals):
    result, before, after = refusals[case[0]]
    assert_one_line_error(result, case[2])
    assert before == after and "study.db" in before


# ----------------------------------------------------------------------------- candidates that fail
def test_candidates_over_the_time_limit_fail_with_reason_and_the_search_finishes(chain):
    """Resume the finished study with a larger budget and a tiny --trial-timeout (the stored reference is
    reused): the new candidates fail, named as such, and the search still reaches its budget."""
    out, _ = chain
    run = out.parent / "timeout" / "run"
    shutil.copytree(out, run)
    (run.parent / "space.json").write_text(json.dumps(SPACE))
    result = subprocess.run(search_argv(run, "--trial-timeout", "0.2", budget=BUDGET + 2), capture_output=True,
                            text=True, cwd=run.parent, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    study = load(run)
    failed = [t for t in study.trials if t.state.name == "FAIL" and not t.user_attrs.get("interrupted")]
    assert len(failed) == 2 and all("time limit of 0.2 s" in t.user_attrs["fail_reason"] for t in failed)
    assert "fail" in pd.read_csv(run / "trials.csv").to_csv().lower()


def test_reference_over_the_time_limit_is_a_one_line_error(tmp_path):
    (tmp_path / "space.json").write_text(json.dumps(SPACE))
    result = subprocess.run(search_argv(tmp_path / "run", "--trial-timeout", "0.2"), capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert_one_line_error(result, r"backbone itself failed .*time limit of 0.2 s")


def test_diverging_candidates_are_recorded_failed_and_the_search_finishes(chain):
    """`nas search` has no --lr flag, so this drives the same runner (nas.search.Search, real worker
    processes) with a learning rate of 1e12; the reference is the one measured by the killed chain."""
    out, _ = chain
    run = out.parent / "diverge" / "run"
    script = f"""
import optuna, sys
from nas.search import Search, SearchConfig
from nas.trial import TrialSettings
reference = optuna.load_study(study_name="effnas", storage="sqlite:///{out / 'study.db'}").user_attrs["reference"]
trial = TrialSettings.from_dict({{**TrialSettings().to_dict(), "data": "synthetic:200x16", "epochs": 1,
                                  "batch_size": 32, "device": "cpu", "lr": 1e12}}).to_dict()
search = Search(SearchConfig(out="{run}", budget=2, controller="random", space="{out.parent / 'space.json'}",
                             workers=1, trial=trial), progress=False)
search.study.set_user_attr("reference", reference)
print(search.run().counted)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("2")
    study = load(run)
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]
    assert all("diverged" in t.user_attrs["fail_reason"] for t in study.trials), [
        t.user_attrs["fail_reason"] for t in study.trials]
    assert valid_file(run / "trials.csv") is True and not (run / "best.json").exists()


FAULTS = [
    ("kill-during-reference", "kill -9 of the process group while the backbone reference trains",
     "nothing stored; resume measures the reference again"),
    ("kill-mid-trial", "kill -9 while a candidate trains",
     "trial marked interrupted (not counted); resume re-runs the same architecture"),
    ("kill-after-record", "kill -9 the instant a trial is recorded (files being rewritten)",
     "study, trials.csv, pareto.json, best.json all valid (atomic writes)"),
    ("resume-to-budget", "resume after three kills", "exactly the budget of counted trials, unique numbers, "
     "PRAGMA integrity_check ok, complete files"),
    *[(c[0], c[3], "exit 2, one-line error; every study row and run file unchanged") for c in REFUSALS],
    ("candidate-timeout", "candidates over --trial-timeout 0.2", "recorded FAIL 'exceeded the time limit'; "
     "search reaches its budget"),
    ("reference-timeout", "the backbone reference over --trial-timeout", "exit 2, one-line error"),
    ("candidate-diverges", "candidates trained with lr 1e12 (NaN/inf loss)",
     "recorded FAIL 'diverged'; search finishes"),
]
