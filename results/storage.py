"""Opening the study's storage: SQLite (the default, in WAL mode), any SQLAlchemy URL, or an Optuna journal.

A storage that cannot be opened is the user's problem to fix, so it is a one-line error, never a traceback.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sqlite3
import time
import weakref
from pathlib import Path
from typing import Any

import optuna

from effnas.errors import EffnasError
from effnas.writes import sqlite_disk_problem


class StorageError(EffnasError):
    """A storage URL that cannot be opened (bad URL, server down, missing directory or driver)."""


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``; a URL that cannot connect is a one-line error, not a traceback."""
    try:
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
        engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
        return _rdb_storage(url, engine_kwargs)
    except Exception as error:  # noqa: BLE001 - SQLAlchemy/driver errors vary widely
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if url.startswith("sqlite:///"):  # "disk I/O error" on a full disk: say what is wrong with it
            message = sqlite_disk_problem(error, url.removeprefix("sqlite:///")) or message
        raise StorageError(f"cannot open storage {url}: {message}") from None


def _rdb_storage(url: str, engine_kwargs: dict[str, Any]) -> optuna.storages.RDBStorage:
    """Processes started together on a new database race to create Optuna's tables: the losers retry."""
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    for attempt in range(5):
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
            if url.startswith("sqlite"):
                _name_disk_errors(storage.engine)
                _write_ahead_log(storage.engine)
            return storage
        except (IntegrityError, OperationalError, ProgrammingError) as error:
            if attempt == 4 or not (isinstance(error, IntegrityError) or "already exists" in str(error)):
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _name_disk_errors(engine: Any) -> None:
    """A write the disk refuses mid-search (SQLite: "database or disk is full") is a one-line error naming the
    study's file, not a traceback; SQLite has rolled that transaction back, so the study keeps all before it."""
    from sqlalchemy import event

    database = engine.url.database if engine.url.database not in (None, "", ":memory:") else None

    @event.listens_for(engine, "handle_error")
    def _disk_error(context: Any) -> None:
        problem = sqlite_disk_problem(context.original_exception, database)
        if problem:
            raise StorageError(f"cannot write the study {database}: {problem}")


def _write_ahead_log(engine: Any) -> None:
    """Every Optuna call (each suggested parameter, each attribute) is its own SQLite commit. In WAL mode with
    ``synchronous=NORMAL`` a commit needs no fsync, which halves the storage's share of a trial; a kill -9
    still loses nothing committed and never corrupts the file (only a power cut may drop the last commits)."""
    from sqlalchemy import event

    path = engine.url.database
    if not path or path == ":memory:" or not os.path.isfile(path):
        return

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA journal_mode=WAL")  # stored in the file: every later reader uses it
    engine.dispose()  # reopen the pool's connections with the pragma above
    atexit.register(_single_file_at_exit, weakref.ref(engine), os.path.abspath(path))


def _single_file_at_exit(engine_ref: "weakref.ref[Any]", path: str) -> None:
    """While in WAL mode the latest commits live in ``study.db-wal`` beside the database, and a reader that cannot
    write the run directory needs the log's index ``study.db-shm`` there too (SQLite cannot create it; ``nas report``
    and ``nas best`` then read a private copy, other tools fail). So the last process to leave the study normally
    merges the log back and makes ``study.db`` an ordinary self-contained file again, as copied, archived or
    read-only shared run directories expect. After a kill -9 the log stays, and the next opener replays it."""
    engine = engine_ref()
    if engine is not None:
        engine.dispose()  # close this process's pooled connections, or the switch below sees the study busy
    if not os.path.isfile(path):
        return
    try:
        with contextlib.closing(sqlite3.connect(Path(path).as_uri() + "?mode=rw", uri=True, timeout=0)) as db:
            db.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.Error:
        pass  # another process still has the study open: it does this when it leaves
