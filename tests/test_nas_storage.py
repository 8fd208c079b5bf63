"""The study's SQLite storage: WAL while a search runs, one self-contained file once every process has left."""

import contextlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna

from nas.storage import open_storage

ROOT = Path(__file__).resolve().parents[1]

# A process that writes three trials, then exits normally or dies like kill -9 (no atexit, nothing closed).
WRITER = """
import os, sys, optuna
from nas.storage import open_storage
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(study_name="effnas", storage=open_storage(sys.argv[1]), load_if_exists=True)
for i in range(3):
    trial = study.ask()
    trial.suggest_int("x", 0, 9)
    trial.set_user_attr("spec", {"i": i})
    study.tell(trial, float(i))
if sys.argv[2] == "kill":
    os._exit(0)
"""


def write_trials(db: Path, ending: str) -> None:
    subprocess.run([sys.executable, "-c", WRITER, f"sqlite:///{db}", ending], cwd=ROOT, check=True, timeout=120)


def read_only(db: Path, sql: str) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
        return connection.execute(sql).fetchall()


def test_sqlite_runs_in_wal_mode_with_normal_sync(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    with storage.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL (FULL is 2)
    storage.engine.dispose()


def test_a_normal_exit_leaves_one_self_contained_file(tmp_path):
    db = tmp_path / "study.db"
    write_trials(db, "exit")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.db"]
    assert read_only(db, "PRAGMA journal_mode") == [("delete",)]  # readable without writing the directory
    copy = tmp_path / "copy" / "study.db"
    copy.parent.mkdir()
    copy.write_bytes(db.read_bytes())
    assert read_only(copy, "SELECT count(*) FROM trials WHERE state = 'COMPLETE'") == [(3,)]


def test_after_a_kill_the_log_stays_and_nothing_committed_is_lost(tmp_path):
    db = tmp_path / "study.db"
    write_trials(db, "kill")
    assert {"study.db-wal", "study.db-shm"} <= {p.name for p in tmp_path.iterdir()}
    assert read_only(db, "SELECT count(*) FROM trials WHERE state = 'COMPLETE'") == [(3,)]
    write_trials(db, "exit")  # a resume replays the log, adds to it, and leaves one file again
    assert read_only(db, "PRAGMA integrity_check") == [("ok",)]
    assert read_only(db, "SELECT count(*) FROM trials WHERE state = 'COMPLETE'") == [(6,)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.db"]


def test_a_process_leaving_while_another_holds_the_study_keeps_wal(tmp_path):
    db = tmp_path / "study.db"
    storage = open_storage(f"sqlite:///{db}")
    optuna.create_study(study_name="effnas", storage=storage)
    write_trials(db, "exit")  # exits normally while this process still has the study open
    assert read_only(db, "PRAGMA journal_mode") == [("wal",)]
    study = optuna.load_study(study_name="effnas", storage=storage)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 3
    storage.engine.dispose()


def test_journal_storage_is_left_as_it_is(tmp_path):
    storage = open_storage(f"journal:{tmp_path / 'study.log'}")
    assert isinstance(storage, optuna.storages.JournalStorage)
    optuna.create_study(study_name="effnas", storage=storage).optimize(lambda t: t.suggest_float("x", 0, 1), 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.log"]
