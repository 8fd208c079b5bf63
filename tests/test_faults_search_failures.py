"""Fault suite, `nas search` against a finished study: refused commands, candidates over the time limit, divergence.

A module fixture runs one short search to the end (``FINISHED`` trials); every case starts from a copy of it,
through the real CLI (``python -m effnas.nas search``) or, for divergence, the same runner in a subprocess. A refused
command must be one line, exit 2, and leave every study row and run file as it was; a failing candidate must be
recorded FAIL with its reason while the search still reaches its budget. (kill -9: test_faults_search.py.)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.cli_driver import run_commands
from tests.test_faults_inputs import assert_one_line_error
from tests.test_faults_search import ROOT, SPACE, load, search_argv, valid_file

pytestmark = pytest.mark.slow  # whole searches past their time limit or diverging, and resumed ones

FINISHED = 2  # trials of the finished study; each case resumes it


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A search run to its budget, uninterrupted: its study holds the reference and FINISHED trials."""
    root = tmp_path_factory.mktemp("finished")
    (root / "space.json").write_text(json.dumps(SPACE))
    out = root / "run"
    result = subprocess.run(search_argv(out, budget=FINISHED), capture_output=True, text=True, cwd=root,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


# ----------------------------------------------------------------------------- refused commands
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
def refusals(finished):
    """Each refused command against its own copy of the finished study, all through the real CLI in one subprocess
    (:mod:`tests.cli_driver`); hashes before and after."""
    out = finished
    root = out.parent / "refusals"
    root.mkdir()
    plan, before = [], {}
    for case in REFUSALS:
        case_root = root / case[0]
        case_root.mkdir()
        (case_root / "space.json").write_text(json.dumps(SPACE))
        (case_root / "bad-space.json").write_text(json.dumps({**SPACE, "width": "wide"}))
        study = case_root / "run"
        shutil.copytree(out, study)
        before[case[0]] = digest(study)
        argv = search_argv(study, budget=FINISHED)[3:] + case[1](case_root)  # argparse: a repeated flag's last wins
        plan.append({"id": case[0], "argv": argv, "cwd": case_root})
    results = run_commands(plan, root)
    return {name: (result, before[name], digest(root / name / "run")) for name, result in results.items()}


@pytest.mark.parametrize("case", REFUSALS, ids=[c[0] for c in REFUSALS])
def test_refused_command_leaves_the_study_untouched(case, refusals):
    result, before, after = refusals[case[0]]
    assert_one_line_error(result, case[2])
    assert before == after and "study.db" in before


# ----------------------------------------------------------------------------- candidates that fail
def test_candidates_over_the_time_limit_fail_with_reason_and_the_search_finishes(finished):
    """Resume the finished study with a larger budget and a tiny --trial-timeout (the stored reference is
    reused): the new candidates fail, named as such, and the search still reaches its budget."""
    out = finished
    run = out.parent / "timeout" / "run"
    shutil.copytree(out, run)
    (run.parent / "space.json").write_text(json.dumps(SPACE))
    result = subprocess.run(search_argv(run, "--trial-timeout", "0.01", budget=FINISHED + 2), capture_output=True,
                            text=True, cwd=run.parent, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    study = load(run)
    failed = [t for t in study.trials if t.state.name == "FAIL" and not t.user_attrs.get("interrupted")]
    assert len(failed) == 2 and all("time limit of 0.01 s" in t.user_attrs["fail_reason"] for t in failed)
    assert "fail" in pd.read_csv(run / "trials.csv").to_csv().lower()


def test_reference_over_the_time_limit_is_a_one_line_error(tmp_path):
    (tmp_path / "space.json").write_text(json.dumps(SPACE))
    result = subprocess.run(search_argv(tmp_path / "run", "--trial-timeout", "0.01"), capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert_one_line_error(result, r"backbone itself failed .*time limit of 0.01 s")


def test_diverging_candidates_are_recorded_failed_and_the_search_finishes(finished):
    """`nas search` has no --lr flag, so this drives the same runner (effnas.nas.search.session.Search, real worker
    processes) with a learning rate of 1e12; the reference is the one the finished search measured."""
    out = finished
    run = out.parent / "diverge" / "run"
    script = f"""
import optuna, sys
from effnas.nas.search.backends.local import LocalBackend
from effnas.nas.search.session import Search
from effnas.nas.search.settings import SearchConfig, SearchRecipe, SearchRuntime
reference = optuna.load_study(study_name="effnas", storage="sqlite:///{out / 'study.db'}").user_attrs["reference"]
recipe = SearchRecipe(controller="random", space="{out.parent / 'space.json'}",
                      trial={{"data": "synthetic:200x16", "epochs": 1, "batch_size": 32, "lr": 1e12}})
search = Search(SearchConfig(recipe, SearchRuntime(out="{run}", budget=2, workers=1, device="cpu", threads=1,
                                                   progress=False)))
search.study.set_user_attr("reference", reference)
print(search.run(LocalBackend()).counted)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("2")
    study = load(run)
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]
    # The reason is the trial's own message, as the report shows it: no "TrialError: " before it.
    assert all(t.user_attrs["fail_reason"].startswith("diverged: ") for t in study.trials), [
        t.user_attrs["fail_reason"] for t in study.trials]
    assert valid_file(run / "trials.csv") is True and not (run / "best.json").exists()


FAULTS = [
    *[(c[0], c[3], "exit 2, one-line error; every study row and run file unchanged") for c in REFUSALS],
    ("candidate-timeout", "candidates over --trial-timeout 0.01", "recorded FAIL 'exceeded the time limit'; "
     "search reaches its budget"),
    ("reference-timeout", "the backbone reference over --trial-timeout", "exit 2, one-line error"),
    ("candidate-diverges", "candidates trained with lr 1e12 (NaN/inf loss)",
     "recorded FAIL 'diverged'; search finishes"),
]
