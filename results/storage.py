"""Opening the study's storage: SQLite (the default, in WAL mode), any SQLAlchemy URL, or an Optuna journal.

A storage that cannot be opened is the user's problem to fix, so it is a one-line error, never a traceback.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import json
import os
import shutil
import sqlite3
import stat
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
from optuna.storages.journal import JournalFileBackend
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from effnas.errors import EffnasError, did_you_mean_path
from effnas.writes import sqlite_disk_problem


STUDY_FILE = "study.db"  # a run directory's study, unless the search was given --storage


class StorageError(EffnasError):
    """A storage URL that cannot be opened (bad URL, server down, missing directory or driver)."""


class ResultsError(EffnasError):
    """A study that cannot be read (missing, empty, not an effnas study)."""


def search_storage_url(run_dir: str | Path, storage: str | None = None) -> str:
    """Where a search keeps its study: ``--storage`` if given, else ``RUN_DIR/study.db``."""
    return storage or f"sqlite:///{Path(run_dir).resolve() / STUDY_FILE}"


def redact(url: str) -> str:
    """A storage URL fit for a message: its password replaced by ``***``."""
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL (journal:PATH, a path): nothing secret in it
        return url
    return parsed.render_as_string(hide_password=True) if parsed.password else url


@functools.lru_cache(maxsize=1)
def _optuna_tables() -> frozenset[str]:
    """The tables Optuna makes, read off a fresh in-memory storage (its public API), so a newer Optuna's count too."""
    engine = optuna.storages.RDBStorage("sqlite:///:memory:").engine
    try:
        return frozenset(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _existing_regular_file(path: Path, opened: str, kind: str) -> bool:
    """Whether ``path`` holds a non-empty regular file to look into; a missing or empty one is a new store (whether
    it can be made is asked later), anything but a regular file is refused (a FIFO would hang, a device be written)."""
    try:
        status = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as error:
        raise StorageError(f"{path}: cannot open {opened} ({error.strerror or error})") from None
    if not stat.S_ISREG(status.st_mode):
        raise StorageError(f"{path}: not a regular file, so not {kind}")
    return status.st_size > 0


def refuse_foreign_sqlite(path: str | Path) -> None:
    """Refuse, before Optuna adds its tables to it, a database file that is not ours to write: not a regular file
    (a FIFO would hang SQLite, a device would be written to), not SQLite, or holding tables that are not Optuna's
    (another program's database: a search must not mix its tables into it). A missing or empty file, or one
    that another search process is creating Optuna's tables in right now, is fine."""
    path = Path(path)
    if not _existing_regular_file(path, "the study", "a study database"):
        return
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=60)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.OperationalError as error:  # locked, unreadable: SQLite's own answer, for open_storage to give
        if "not a database" not in str(error):
            return
        raise StorageError(f"{path}: not an SQLite database, refusing to write a study into it") from None
    except sqlite3.DatabaseError:
        raise StorageError(f"{path}: not an SQLite database, refusing to write a study into it") from None
    foreign = sorted(name for name in tables - _optuna_tables() if not name.startswith("sqlite_"))
    if foreign:
        raise StorageError(f"{path}: another program's SQLite database (it has a table {foreign[0]!r} that Optuna "
                           "does not make); refusing to add a study to it: give another --out or --storage")


def refuse_foreign_journal(path: str | Path) -> None:
    """Refuse, before Optuna appends its first line to it, a journal file that is not one: not a regular file, or a
    file whose first line is not an Optuna journal operation (a text file, another program's JSON lines, an SQLite
    database). A missing or empty file is a new journal. Read-only: the file keeps every byte."""
    path = Path(path)
    if not _existing_regular_file(path, "the journal", "an Optuna journal"):
        return
    try:
        with path.open("rb") as handle:
            first = handle.readline(1 << 20)
    except OSError as error:
        raise StorageError(f"{path}: cannot read the journal ({error.strerror or error})") from None
    if not first:
        return
    try:
        operation = json.loads(first)
    except ValueError:
        operation = None
    if not (isinstance(operation, dict) and "op_code" in operation):
        what = ("an SQLite database, not an Optuna journal (sqlite:///PATH opens one)" if first.startswith(b"SQLite format 3")
                else "a file that is not an Optuna journal")
        raise StorageError(f"{path}: {what}; refusing to use it as a study (it is left as it is)")


def refuse_foreign_database(url: str) -> None:
    """Refuse, before Optuna creates its tables there, a database server's database that holds another program's
    tables (as :func:`refuse_foreign_sqlite` does for a file). One that cannot be reached is left to
    :func:`open_storage`, which says why in one line."""
    try:
        engine = create_engine(url, poolclass=NullPool)
    except Exception:  # noqa: BLE001 - a bad URL or a missing driver: open_storage reports it
        return
    try:
        tables = set(inspect(engine).get_table_names())
    except Exception:  # noqa: BLE001 - server down, no permission: open_storage reports it
        return
    finally:
        engine.dispose()
    foreign = sorted(tables - _optuna_tables())
    if foreign:
        raise StorageError(f"{redact(url)}: the database holds a table {foreign[0]!r} that Optuna does not make; "
                           "refusing to add a study to another program's database: give another --storage")


def probe_storage(url: str) -> None:
    """Refuse, reading only, a storage URL whose target holds something other than a study of its kind (see
    :func:`refuse_foreign_sqlite`, :func:`refuse_foreign_journal`, :func:`refuse_foreign_database`): called before
    anything is created or written."""
    if url.startswith("sqlite:///"):
        refuse_foreign_sqlite(url.removeprefix("sqlite:///"))
    elif url.startswith("journal:"):
        refuse_foreign_journal(url.removeprefix("journal:"))
    elif "://" in url and not url.startswith("sqlite"):
        refuse_foreign_database(url)


def storage_file(url: str) -> Path | None:
    """The file a SQLite or journal URL keeps its study in; None for a database server."""
    for prefix in ("sqlite:///", "journal:"):
        if url.startswith(prefix):
            return Path(url.removeprefix(prefix))
    return None


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``; a URL that cannot connect is a one-line error, not a traceback; a SQLite or
    journal file that is not an Optuna study (nor new) is refused before Optuna writes a byte into it."""
    probe_storage(url)
    try:
        if url.startswith("journal:"):
            return optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
        engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
        return _rdb_storage(url, engine_kwargs)
    except Exception as error:  # noqa: BLE001 - SQLAlchemy/driver errors vary widely
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if url.startswith("sqlite:///"):  # "disk I/O error" on a full disk: say what is wrong with it
            message = sqlite_disk_problem(error, url.removeprefix("sqlite:///")) or message
        raise StorageError(f"cannot open storage {redact(url)}: {message.replace(url, redact(url))}") from None


def _rdb_storage(url: str, engine_kwargs: dict[str, Any]) -> optuna.storages.RDBStorage:
    """Processes started together on a new database race to create Optuna's tables: the losers retry."""
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


# ----------------------------------------------------------------------------- reading a study back
def _sqlite_url(path: Path) -> str:
    if not path.exists():
        raise ResultsError(f"{path}: no such study (expected a run directory with {STUDY_FILE}, "
                           f"a .db file or a storage URL){did_you_mean_path(path)}")
    if path.is_dir():
        db = path / STUDY_FILE
        if not db.is_file():
            raise ResultsError(f"{path}: no {STUDY_FILE} in this directory (if the search used --storage, "
                               "pass that URL instead)")
        path = db
    # Refuse files that are not Optuna databases before Optuna would create its tables inside them.
    try:
        with contextlib.closing(_sqlite_reader(path.resolve())()) as connection:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.OperationalError as error:  # locked, unreadable
        raise ResultsError(f"{path}: cannot read the study ({error})") from None
    except sqlite3.DatabaseError as error:
        raise ResultsError(f"{path}: not an SQLite database ({error})") from None
    if "studies" not in tables:
        raise ResultsError(f"{path}: not an Optuna study database (no 'studies' table)")
    return f"sqlite:///{path.resolve()}"


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


_READERS: dict[tuple, Callable[[], sqlite3.Connection]] = {}


def _sqlite_reader(path: Path) -> Callable[[], sqlite3.Connection]:
    """Opens the study ``path`` read-only, also where neither it nor its directory may be written.

    A search killed with kill -9 leaves its latest commits in ``study.db-wal``, indexed by ``study.db-shm``. SQLite
    reads such a study in place with ``mode=ro`` when both files are there, even on a read-only disk. Without the
    ``-shm`` (copied without it, or only the .db) SQLite would have to create one and cannot, and ``immutable=1``
    would silently skip the log's trials: so then the study and its log are copied to a private temporary
    directory and read there, which shows every committed trial. One reader per state of the files, so checking
    the study and opening it read the same copy.
    """
    uri = f"{path.as_uri()}?mode=ro"
    if _writable(path):
        return functools.partial(sqlite3.connect, uri, uri=True, check_same_thread=False)
    files = [Path(f"{path}{suffix}") for suffix in ("", "-wal", "-shm")]
    key = (path, *((f.stat().st_mtime_ns, f.stat().st_size) if f.exists() else None for f in files))
    if key not in _READERS:
        _READERS[key] = _read_only_reader(path, uri)
    return _READERS[key]


def _read_only_reader(path: Path, uri: str) -> Callable[[], sqlite3.Connection]:
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as probe:
            probe.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return functools.partial(sqlite3.connect, uri, uri=True, check_same_thread=False)
    except sqlite3.OperationalError:  # "unable to open database file": a log whose index cannot be made here
        if Path(f"{path}-shm").exists():
            raise
    folder = Path(tempfile.mkdtemp(prefix="effnas-study-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    try:
        for suffix in ("", "-wal"):  # the database first; no writer runs (it would have made the -shm)
            if Path(f"{path}{suffix}").exists():
                shutil.copyfile(f"{path}{suffix}", folder / f"{STUDY_FILE}{suffix}")
    except OSError as error:
        raise ResultsError(f"{path}: SQLite cannot read this study where it is (its directory is read-only and "
                           f"study.db-shm is missing), and copying it to {folder} failed ({error.strerror}); "
                           "copy the run directory somewhere writable and read it there") from None
    return functools.partial(sqlite3.connect, folder / STUDY_FILE, check_same_thread=False)


STUDY_LOCK_KEY = 0x45464E41  # PostgreSQL advisory-lock key of an effnas study (any constant works; one per URL)


@contextlib.contextmanager
def study_lock(url: str) -> Iterator[None]:
    """Held by one process of a shared study at a time, on every host that shares it: what is decided from
    the study and then written to it (the reference, the next trial and whether the budget allows it, whether
    its architecture was already trained) must not be decided twice at once.

    SQLite and journal files: ``flock`` on a hidden file beside them (one host, or a file system with working
    locks). PostgreSQL: a session advisory lock; MySQL: ``GET_LOCK``. Another database: no lock, and processes
    that share a study may then, rarely, train one architecture twice.
    """
    if url.startswith(("sqlite:///", "journal:")):
        path = Path(url.removeprefix("sqlite:///").removeprefix("journal:"))
        try:
            handle = open(path.with_name(f".{path.name}.lock"), "a+")
        except OSError:  # a read-only directory: nobody else can write this study either
            yield
            return
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    backend = make_url(url).get_backend_name()
    if backend not in ("postgresql", "mysql"):
        yield
        return
    take, release = (("SELECT pg_advisory_lock(:key)", "SELECT pg_advisory_unlock(:key)") if backend == "postgresql"
                     else ("SELECT GET_LOCK(:key, -1)", "SELECT RELEASE_LOCK(:key)"))
    key = STUDY_LOCK_KEY if backend == "postgresql" else f"effnas-{STUDY_LOCK_KEY}"
    try:
        connection = _lock_engine(url).connect()
    except Exception as error:  # noqa: BLE001 - server gone: the user's to fix, without the password
        raise StorageError(f"cannot lock the study in {redact(url)}: "
                           f"{_first_line(error).replace(url, redact(url))}") from None
    with connection:
        connection.execute(text(take), {"key": key})
        try:
            yield
        finally:
            connection.execute(text(release), {"key": key})
            connection.commit()


@functools.lru_cache(maxsize=4)
def _lock_engine(url: str) -> Any:
    """One connection pool per process for :func:`study_lock` (a lock lives in its database session)."""
    return create_engine(url, poolclass=NullPool)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def storage_url(location: str | Path) -> str:
    """The storage URL for a run directory, a ``.db`` file or a URL.

    URLs: ``sqlite:///PATH``, any SQLAlchemy URL (``postgresql://...``) or ``journal:PATH`` (an Optuna
    journal file, as ``nas search --storage journal:PATH`` writes on shared file systems).
    """
    text = str(location)
    if text.startswith("journal:"):
        path = Path(text[len("journal:"):]).expanduser()
        if not path.is_file():
            raise ResultsError(f"{path}: no such journal file")
        refuse_foreign_journal(path)
        return f"journal:{path}"
    if "://" not in text:
        return _sqlite_url(Path(text).expanduser())
    if text.startswith("sqlite:///"):
        return _sqlite_url(Path(text[len("sqlite:///"):]))
    return text


def open_reader(url: str) -> optuna.storages.BaseStorage:
    if url.startswith("journal:"):
        return optuna.storages.JournalStorage(JournalFileBackend(url[len("journal:"):]))
    path = Path(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else None
    if path is not None and not _writable(path):  # read-only run directories, kill -9's log included
        return optuna.storages.RDBStorage(url, engine_kwargs={"creator": _sqlite_reader(path.resolve())},
                                          skip_table_creation=True)
    return optuna.storages.RDBStorage(url)


