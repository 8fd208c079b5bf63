"""The study's SQLite storage: WAL while a search runs, one self-contained file once every process has left, and
a study a kill -9 left in WAL mode still read (``nas best``, ``nas report``) from a read-only disk."""

import contextlib
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from effnas.results.storage import open_storage

ROOT = Path(__file__).resolve().parents[1]

# A process that writes three trials, then exits normally or dies like kill -9 (no atexit, nothing closed).
WRITER = """
import os, sys, optuna
from effnas.results.storage import open_storage
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(study_name="effnas", storage=open_storage(sys.argv[1]), load_if_exists=True)
for i in range(3):
    trial = study.ask()
    trial.suggest_int("x", 0, 9)
    trial.set_user_attr("spec", {"i": i})
    if len(sys.argv) > 3:  # what nas best and nas report need: a real architecture and its metrics
        from effnas.search_space import get_spec
        trial.set_user_attr("spec", get_spec("efficientnetv2-s").to_dict())
        for name, value in dict(accuracy=0.5 + i / 10, step_time_ms=10.0 - i, params=1000 + i, reward=i).items():
            trial.set_user_attr(name, value)
    study.tell(trial, float(i))
if sys.argv[2] == "kill":
    os._exit(0)
"""


def write_trials(db: Path, ending: str, *metrics: str) -> None:
    subprocess.run([sys.executable, "-c", WRITER, f"sqlite:///{db}", ending, *metrics], cwd=ROOT, check=True,
                   timeout=120)


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


def read_only_mounts_work(folder: Path) -> str | None:
    """None when a read-only bind mount can be made in a private mount namespace (root; not in every container).
    chmod is no test here: the tests run as root, whom file modes do not stop."""
    if shutil.which("unshare") is None:
        return "unshare(1) is not installed"
    script = f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} {folder} && ! touch {folder}/x"
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=30)
    return None if result.returncode == 0 else f"cannot make a read-only mount here: {result.stderr.strip()[:200]}"


@pytest.mark.slow  # four commands in a private mount namespace
def test_a_killed_study_is_read_from_a_read_only_directory(tmp_path):
    """kill -9 leaves study.db-wal (the last commits) and study.db-shm (its index); SQLite reads both in place from
    a read-only directory, but cannot make a missing -shm there: then effnas reads a private copy. Every committed
    trial shows in either case; a bare study.db whose commits were all in the log is one line, exit 2."""
    run = tmp_path / "run"
    run.mkdir()
    write_trials(run / "study.db", "kill", "metrics")
    copies = {"all": ("study.db", "study.db-wal", "study.db-shm"), "no-shm": ("study.db", "study.db-wal"),
              "db-only": ("study.db",)}
    for name, files in copies.items():
        (tmp_path / name).mkdir()
        for file in files:
            shutil.copyfile(run / file, tmp_path / name / file)
    if reason := read_only_mounts_work(tmp_path / "db-only"):
        pytest.skip(reason)
    (tmp_path / "tmp").mkdir()
    commands = [("all", "best"), ("no-shm", "best"), ("no-shm", "report --format csv"), ("db-only", "best")]
    lines = ["set -e", *(f"mount --bind {tmp_path / n} {tmp_path / n} && mount -o remount,bind,ro {tmp_path / n} "
                         f"{tmp_path / n}" for n in copies), "set +e", f"export TMPDIR={tmp_path / 'tmp'}"]
    for index, (name, command) in enumerate(commands):
        lines.append(f"{sys.executable} -m effnas.nas {command} {tmp_path / name} >{tmp_path}/{index}.out "
                     f"2>{tmp_path}/{index}.err; echo $? >{tmp_path}/{index}.rc")
    setup = subprocess.run(["unshare", "-m", "sh", "-c", "\n".join(lines)], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert setup.returncode == 0, setup.stderr[-1500:]
    out, err, rc = ([(tmp_path / f"{i}.{kind}").read_text() for i in range(len(commands))]
                    for kind in ("out", "err", "rc"))
    for index in range(3):
        assert rc[index].strip() == "0" and err[index] == "", (commands[index], err[index])
    assert '"reward": 2' in out[0] and '"reward": 2' in out[1]  # the best of the three, committed only to the log
    assert len(out[2].splitlines()) == 4 and out[2].count("COMPLETE") == 3  # header and all three trials
    assert rc[3].strip() == "2" and len(err[3].splitlines()) == 1 and "no study named" in err[3], err[3]
    assert list((tmp_path / "tmp").iterdir()) == []  # the private copy is gone with the process
    assert sorted(p.name for p in (tmp_path / "no-shm").iterdir()) == ["study.db", "study.db-wal"]


def test_a_journal_is_probed_read_only_and_a_foreign_file_keeps_every_byte(tmp_path):
    from effnas.results.storage import StorageError

    journal = tmp_path / "study.log"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name="effnas", storage=open_storage(f"journal:{journal}")).ask()
    reopened = optuna.load_study(study_name="effnas", storage=open_storage(f"journal:{journal}"))  # Optuna's own
    assert len(reopened.trials) == 1
    for name, text in (("notes.txt", b"my notes\n"), ("lines.jsonl", b'{"event": "login"}\n'), ("bin", b"\x00\xff")):
        (tmp_path / name).write_bytes(text)
        with pytest.raises(StorageError, match="not an Optuna journal"):
            open_storage(f"journal:{tmp_path / name}")
        assert (tmp_path / name).read_bytes() == text
    assert not list(tmp_path.glob("*.lock")) and not list(tmp_path.glob(".*.lock"))
