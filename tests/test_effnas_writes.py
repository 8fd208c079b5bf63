"""effnas.writes, effnas.nas.cli.main.disk_error_message and effnas.results.storage's disk errors: which failures are the disk's,
how they read, and that a failed atomic write leaves neither a temporary file nor a changed target.

SQLite's own limit (``PRAGMA max_page_count``) makes a real "database or disk is full" without a full disk; the
real full and read-only disks, through the CLI, are in tests/test_faults_disk.py."""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from pathlib import Path

import pytest

from effnas.nas.cli.main import disk_error_message
from effnas.writes import (WriteError, atomic_write, disk_problem, ensure_writable_dir, sqlite_disk_problem,
                                 write_failure)


def fill_sqlite(db: Path) -> sqlite3.Error:
    """A real SQLITE_FULL: the database may not grow past a few pages."""
    with contextlib.closing(sqlite3.connect(db)) as connection:
        connection.execute("CREATE TABLE t (x TEXT)")
        connection.execute("PRAGMA max_page_count = 3")
        try:
            for _ in range(100):
                connection.execute("INSERT INTO t VALUES (?)", ("x" * 4000,))
            connection.commit()
        except sqlite3.Error as error:
            return error
    raise AssertionError("the database never filled")


# ----------------------------------------------------------------------------- atomic_write
def test_atomic_write_text_bytes_and_writer(tmp_path):
    atomic_write(tmp_path / "a.txt", "text")
    atomic_write(tmp_path / "b.bin", b"\x00\x01")
    atomic_write(tmp_path / "c.txt", lambda tmp: tmp.write_text("by writer"))
    assert [(tmp_path / n).read_bytes() for n in ("a.txt", "b.bin", "c.txt")] == [b"text", b"\x00\x01", b"by writer"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.txt"]


def test_atomic_write_disk_failure_is_write_error_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "last.pt"
    target.write_text("old")

    def fills_the_disk(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteError, match=rf"^cannot write {target}: no space left on device$"):
        atomic_write(target, fills_the_disk)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_atomic_write_other_failure_surfaces_and_cleans_up(tmp_path):
    def buggy(tmp: Path) -> None:
        tmp.write_text("half")
        raise ValueError("a bug, not the disk")

    with pytest.raises(ValueError, match="a bug"):
        atomic_write(tmp_path / "x.json", buggy)
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- classifying failures
@pytest.mark.parametrize("code, reason", [
    (errno.ENOSPC, "no space left on device"), (errno.EDQUOT, "disk quota exceeded"),
    (errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied")])
def test_write_failure_names_the_file_and_the_reason(tmp_path, code, reason):
    failure = write_failure(tmp_path / "f", OSError(code, "ignored"))
    assert isinstance(failure, WriteError) and str(failure) == f"cannot write {tmp_path / 'f'}: {reason}"


def test_write_failure_is_none_on_a_healthy_disk(tmp_path):
    assert disk_problem(tmp_path) is None and disk_problem(tmp_path / "new-file") is None
    assert write_failure(tmp_path / "f", RuntimeError("unexpected pos 64 vs 0")) is None
    assert write_failure(tmp_path / "f", OSError(errno.ENOENT, "No such file or directory")) is None
    assert disk_problem(tmp_path / "no" / "such" / "folder") is None  # nothing to ask: not a disk problem


def test_sqlite_disk_problem_reads_real_sqlite_errors(tmp_path):
    assert sqlite_disk_problem(fill_sqlite(tmp_path / "full.db")) == "no space left on device"
    db = tmp_path / "ro.db"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.commit()
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
        with pytest.raises(sqlite3.OperationalError) as caught:
            connection.execute("INSERT INTO t VALUES (1)")
    assert sqlite_disk_problem(caught.value, db) == "read-only database"  # the folder itself is writable
    with pytest.raises(sqlite3.OperationalError) as syntax:
        sqlite3.connect(":memory:").execute("SELEC 1")
    assert sqlite_disk_problem(syntax.value) is None and sqlite_disk_problem(ValueError("x")) is None


def test_sqlite_disk_problem_through_sqlalchemy(tmp_path):
    from sqlalchemy import create_engine, exc, text

    engine = create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    with engine.connect() as connection, pytest.raises(exc.OperationalError) as caught:
        connection.execute(text("CREATE TABLE t (x TEXT)"))
        connection.execute(text("PRAGMA max_page_count = 3"))
        for _ in range(100):
            connection.execute(text("INSERT INTO t VALUES (:x)"), {"x": "x" * 4000})
    assert sqlite_disk_problem(caught.value) == "no space left on device"


# ----------------------------------------------------------------------------- ensure_writable_dir
def test_ensure_writable_dir_creates_and_leaves_no_probe(tmp_path):
    folder = ensure_writable_dir(tmp_path / "a" / "b")
    assert folder.is_dir() and not list(folder.iterdir())


def test_ensure_writable_dir_under_a_file_is_one_line_and_creates_nothing(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(WriteError, match=r"cannot write to run directory .*file/x/y: Not a directory"):
        ensure_writable_dir(tmp_path / "file" / "x" / "y", "run directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


# ----------------------------------------------------------------------------- the CLI's last resort
def test_disk_error_message_finds_the_disk_under_wrappers(tmp_path):
    from optuna.exceptions import StorageInternalError

    assert disk_error_message(OSError(errno.ENOSPC, "No space", "/runs/x/trials.csv")) == \
        "cannot write /runs/x/trials.csv: no space left on device"
    assert disk_error_message(OSError(errno.EROFS, "Read-only")) == "cannot write: read-only file system"
    try:  # what Optuna raises on a full disk: StorageInternalError from SQLAlchemy's error from sqlite3's
        try:
            raise fill_sqlite(tmp_path / "full.db")
        except sqlite3.Error as error:
            raise StorageInternalError("An exception is raised during the commit.") from error
    except StorageInternalError as wrapped:
        assert disk_error_message(wrapped) == "cannot write the study's database: no space left on device"
    try:  # an error raised while handling a disk error (a library's clean-up) still reads as the disk's
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded", "/q")
        except OSError:
            raise RuntimeError("clean-up failed too")  # noqa: B904
    except RuntimeError as late:
        assert disk_error_message(late) == "cannot write /q: disk quota exceeded"
    assert disk_error_message(OSError(errno.ENOENT, "No such file", "/x")) is None
    assert disk_error_message(ValueError("a bug")) is None


def test_storage_names_the_study_when_sqlite_fills_mid_search(tmp_path):
    """effnas.results.storage turns SQLITE_FULL during any Optuna call into a StorageError naming study.db."""
    import optuna
    from sqlalchemy import event

    from effnas.results.storage import StorageError, open_storage

    db = tmp_path / "study.db"
    storage = open_storage(f"sqlite:///{db}")
    study = optuna.create_study(storage=storage, study_name="s")
    event.listen(storage.engine, "connect", lambda connection, _: connection.execute("PRAGMA max_page_count = 40"))
    storage.engine.dispose()
    with pytest.raises(StorageError, match=rf"^cannot write the study {db}: no space left on device$"):
        for i in range(200):
            study.set_user_attr(f"k{i}", "x" * 3000)
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_stale_temporaries_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    import os
    import subprocess
    import sys

    from effnas.writes import remove_stale_temporaries

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / f".best.json.{dead}.tmp").write_text("{")
    (tmp_path / f".best.json.{os.getpid()}.tmp").write_text("{")  # a live writer's copy
    (tmp_path / f".other.json.{dead}.tmp").write_text("{")  # not one of the names asked about
    assert remove_stale_temporaries(tmp_path, ("best.json",)) == [f".best.json.{dead}.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f".best.json.{os.getpid()}.tmp",
                                                                  f".other.json.{dead}.tmp"])
