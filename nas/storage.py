"""Opening the study's storage: SQLite (the default, in WAL mode), any SQLAlchemy URL, or an Optuna journal.

A storage that cannot be opened is the user's problem to fix, so it is a one-line error, never a traceback.
"""

from __future__ import annotations

import time
from typing import Any

import optuna

from search_space import EffnasError


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
        raise StorageError(f"cannot open storage {url}: {message}") from None


def _rdb_storage(url: str, engine_kwargs: dict[str, Any]) -> optuna.storages.RDBStorage:
    """Processes started together on a new database race to create Optuna's tables: the losers retry."""
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    for attempt in range(5):
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
            if url.startswith("sqlite"):
                _write_ahead_log(storage.engine)
            return storage
        except (IntegrityError, OperationalError, ProgrammingError) as error:
            if attempt == 4 or not (isinstance(error, IntegrityError) or "already exists" in str(error)):
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _write_ahead_log(engine: Any) -> None:
    """Every Optuna call (each suggested parameter, each attribute) is its own SQLite commit. In WAL mode with
    ``synchronous=NORMAL`` a commit needs no fsync, which halves the storage's share of a trial; a kill -9
    still loses nothing committed and never corrupts the file (only a power cut may drop the last commits)."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA journal_mode=WAL")  # stored in the file: every later reader uses it
    engine.dispose()  # reopen the pool's connections with the pragma above
