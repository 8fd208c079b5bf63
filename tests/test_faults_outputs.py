"""Fault suite, outputs aimed at what the user keeps: every command that writes, pointed at a study, at a folder of
the user's files, at a file effnas wrote for another purpose, or given a storage URL that names a foreign file.

Each case runs the real CLI (every case in one subprocess, :mod:`tests.cli_driver`) in its own folder, which holds
a run (an Optuna ``study.db``, ``trials.csv``, ``best.json``), the user's ``notes.txt`` and a folder of their files,
a spec, a report and a checkpoint. A refusal is one line, exit code 2, naming the path, and every byte in the
folder is what it was, nothing added. The rule itself lives in :mod:`effnas.outputs`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from tests.cli_driver import run_commands
from tests.test_faults_inputs import TINY, assert_one_line_error

pytestmark = pytest.mark.slow  # one module fixture runs a search and trains a model for every case

SEARCH = ["search", "--device", "cpu", "--quiet", "--budget", "1", "--epochs", "1", "--data", "synthetic:60x8"]
SCALE = ["scale", "--base", "tiny.json", "--target", "m"]
REPORT_PAGE = "<!DOCTYPE html>\n<html><head><title>effnas report: run</title></head><body></body></html>\n"

# (id, fault, argv (run in the case's folder), pattern of the one line; None: exit 0, outcome)
CASES = [
    # --- --out aimed at a study
    ("search-out-study", "nas search --out RUN/study.db (a study file)", [*SEARCH, "--out", "run/study.db"],
     r"--out run/study.db as a run directory: it holds an SQLite database, not a folder",
     "exit 2, one line naming it; every byte kept, no run created"),
    ("report-out-study", "nas report RUN --out RUN/study.db (the study it reports on)",
     ["report", "run", "--out", "run/study.db"], r"--out run/study.db: it holds an SQLite database, a study",
     "exit 2, one line naming it; the study keeps every byte"),
    ("best-out-study-force", "nas best RUN --out RUN/study.db --force", ["best", "run", "--out", "run/study.db",
                                                                       "--force"],
     r"--out run/study.db: it holds an SQLite database, a study; effnas never replaces one",
     "exit 2, one line: --force never replaces a study; every byte kept"),
    ("scale-out-journal", "nas scale --out an Optuna journal file", [*SCALE, "--out", "study.log"],
     r"--out study.log: it holds an Optuna journal, a study", "exit 2, one line naming it; every byte kept"),
    # --- --out aimed at a folder of the user's files
    ("search-out-user-folder", "nas search --out a folder of the user's files (their own trials.csv among them)",
     [*SEARCH, "--out", "mine"], r"--out mine as a run directory: it holds mine/notes.txt, a file effnas did not",
     "exit 2, one line naming the first such file; their trials.csv keeps every byte"),
    ("report-out-user-folder", "nas report RUN --out a folder of the user's files", ["report", "run", "--out", "mine"],
     r"--out mine: a directory", "exit 2, one line; nothing written in the folder"),
    ("best-out-user-folder", "nas best RUN --out a folder of the user's files", ["best", "run", "--out", "mine"],
     r"--out mine: a directory", "exit 2, one line; nothing written in the folder"),
    ("scale-out-user-folder", "nas scale --out a folder of the user's files", [*SCALE, "--out", "mine"],
     r"--out mine: a directory", "exit 2, one line; nothing written in the folder"),
    ("search-out-run-with-notes", "nas search resumed in its run directory after the user added notes.txt there",
     [*SEARCH, "--out", "noted"], r"--out noted as a run directory: it holds noted/notes.txt",
     "exit 2, one line; the study and the notes keep every byte"),
    # --- --out aimed at a file of another kind
    ("search-out-spec-file", "nas search --out a spec file", [*SEARCH, "--out", "tiny.json"],
     r"--out tiny.json as a run directory: it holds an architecture spec, not a folder",
     "exit 2, one line; the spec keeps every byte"),
    ("search-out-training-run", "nas search --out a training run (last.pt)", [*SEARCH, "--out", "trained"],
     r"--out trained as a run directory: it holds last.pt of another kind of run",
     "exit 2, one line; the checkpoint keeps every byte"),
    ("report-out-spec", "nas report RUN --out a spec file (HTML over a spec)", ["report", "run", "--out", "tiny.json"],
     r"--out tiny.json: it holds an architecture spec, not a search report .*--force",
     "exit 2, one line offering --force; the spec keeps every byte"),
    ("best-out-report", "nas best RUN --out a search report", ["best", "run", "--out", "report.html"],
     r"--out report.html: it holds a search report \(HTML\), not an architecture spec",
     "exit 2, one line; the report keeps every byte"),
    ("scale-out-checkpoint", "nas scale --out a checkpoint (a spec over a checkpoint)", [*SCALE, "--out", "last.pt"],
     r"--out last.pt: it holds a training checkpoint, not an architecture spec",
     "exit 2, one line; the checkpoint keeps every byte"),
    ("scale-out-user-file", "nas scale --out the user's notes.txt", [*SCALE, "--out", "notes.txt"],
     r"--out notes.txt: it holds a file effnas did not write", "exit 2, one line; the notes keep every byte"),
    ("scale-force-over-report", "nas scale --out a search report --force", [*SCALE, "--out", "report.html", "--force"],
     None, "replaced by the spec (effnas wrote the report); every other byte kept"),
    # --- nas train and nas compare
    ("train-out-study-run", "nas train --out a search run (its study beside it)",
     ["train", "--arch", "tiny.json", "--data", "synthetic:60x8", "--epochs", "1", "--out", "run"],
     r"--out run as a run directory: it holds .* (not a training run|another kind of run)",
     "exit 2, one line; the study keeps every byte"),
    ("train-out-user-folder", "nas train --out a folder of the user's files",
     ["train", "--arch", "tiny.json", "--data", "synthetic:60x8", "--epochs", "1", "--out", "mine"],
     r"--out mine as a run directory: it holds mine/notes.txt, a file effnas did not",
     "exit 2, one line naming the first such file; nothing written"),
    ("train-out-spec-file", "nas train --out a spec file", ["train", "--arch", "tiny.json", "--out", "tiny.json"],
     r"--out tiny.json as a run directory: it holds an architecture spec, not a folder",
     "exit 2, one line; the spec keeps every byte"),
    ("compare-out-user-folder", "nas compare RUN --out a folder of the user's files",
     ["compare", "run", "--data", "synthetic:60x8", "--against", "none", "--out", "mine"],
     r"--out mine as a run directory: it holds mine/notes.txt, a file effnas did not",
     "exit 2, one line naming the first such file; nothing written"),
    ("compare-out-training-run", "nas compare RUN --out a training run (last.pt)",
     ["compare", "run", "--data", "synthetic:60x8", "--against", "none", "--out", "trained"],
     r"--out trained as a run directory: it holds last.pt of another kind of run",
     "exit 2, one line; the checkpoint keeps every byte"),
    ("compare-out-study-file", "nas compare RUN --out RUN/study.db (a study file)",
     ["compare", "run", "--data", "synthetic:60x8", "--against", "none", "--out", "run/study.db"],
     r"--out run/study.db as a run directory: it holds an SQLite database, not a folder",
     "exit 2, one line naming it; every byte kept"),
    # --- storage URLs aimed at a foreign file
    ("search-storage-journal-text", "nas search --storage journal:notes.txt (the user's text file)",
     [*SEARCH, "--storage", "journal:notes.txt", "--out", "new"], r"notes.txt: a file that is not an Optuna journal",
     "exit 2, one line before a byte is written: the notes keep every byte, no run directory"),
    ("search-storage-journal-sqlite", "nas search --storage journal:RUN/study.db (an SQLite study)",
     [*SEARCH, "--storage", "journal:run/study.db", "--out", "new"], r"study.db: an SQLite database, not an Optuna journal",
     "exit 2, one line; the study keeps every byte, no run directory"),
    ("search-storage-sqlite-text", "nas search --storage sqlite:///notes.txt",
     [*SEARCH, "--storage", "sqlite:///{case}/notes.txt", "--out", "new"], r"notes.txt: not an SQLite database",
     "exit 2, one line; the notes keep every byte, no run directory"),
    ("report-storage-journal-text", "nas report journal:notes.txt", ["report", "journal:notes.txt", "--format", "json"],
     r"notes.txt: a file that is not an Optuna journal", "exit 2, one line; the notes keep every byte"),
    ("best-storage-journal-text", "nas best journal:notes.txt", ["best", "journal:notes.txt"],
     r"notes.txt: a file that is not an Optuna journal", "exit 2, one line; the notes keep every byte"),
]


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` (links and folders included) by its bytes."""
    found = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        found[name] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def user_files(case: Path, study: Path) -> None:
    """What a user keeps: a run, their notes and folder of files, a spec, a report, a checkpoint, a journal."""
    for run in ("run", "noted"):
        (case / run).mkdir()
        shutil.copyfile(study, case / run / "study.db")
        (case / run / "trials.csv").write_text("number,state,reward\n0,COMPLETE,1.0\n")
        (case / run / "best.json").write_text(json.dumps({"spec": TINY, "metrics": {}}))
    (case / "noted" / "notes.txt").write_text("what I tried on this run\n")
    (case / "notes.txt").write_text("my notes, not a journal\n")
    (case / "mine").mkdir()
    (case / "mine" / "trials.csv").write_text("my,own,table\n1,2,3\n")
    (case / "mine" / "notes.txt").write_text("mine\n")
    (case / "tiny.json").write_text(json.dumps(TINY))
    (case / "report.html").write_text(REPORT_PAGE)
    with zipfile.ZipFile(case / "last.pt", "w") as archive:  # torch.save's layout, without torch
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    (case / "trained").mkdir()
    shutil.copyfile(case / "last.pt", case / "trained" / "last.pt")
    (case / "study.log").write_text(json.dumps({"op_code": 0, "worker_id": "w", "study_name": "effnas"}) + "\n")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    import optuna

    from effnas.results.record import STUDY_NAME

    root = tmp_path_factory.mktemp("outputs")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = root / "template.db"
    optuna.create_study(study_name=STUDY_NAME, storage=f"sqlite:///{study}").optimize(
        lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    plan, before = [], {}
    for case_id, _, argv, _, _ in CASES:
        case = root / case_id
        case.mkdir()
        user_files(case, study)
        before[case_id] = fingerprint(case)
        plan.append({"id": case_id, "argv": [a.replace("{case}", str(case)) for a in argv], "cwd": case})
    results = run_commands(plan, root)
    return {case_id: (root / case_id, before[case_id], result) for case_id, result in results.items()}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_output_aimed_at_what_the_user_keeps_is_refused_and_every_byte_kept(case, outcomes):
    case_dir, before, result = outcomes[case[0]]
    after = fingerprint(case_dir)
    if case[3] is None:  # --force over a file effnas wrote: replaced by the spec, nothing else touched
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert json.loads((case_dir / "report.html").read_text())["stages"]
        assert {k: v for k, v in after.items() if k != "report.html"} == \
            {k: v for k, v in before.items() if k != "report.html"}
        return
    assert_one_line_error(result, case[3])
    assert after == before, sorted(set(after.items()) ^ set(before.items()))


FAULTS = [(c[0], c[1], c[4]) for c in CASES]
