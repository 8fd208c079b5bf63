"""Writing output files: atomically, and when the disk refuses, as one line that names the file and why.

Every file a command writes (run files, specs, reports, checkpoints, metrics) goes through
:func:`atomic_write`: a temporary file beside the target, then ``os.replace``, so a reader sees the old
file or the new one, never half of one; a failed write removes its temporary file. A failure that is
the disk's (full, read-only, over quota, not permitted) becomes a :class:`WriteError`, which the CLI
prints as ``nas CMD: error: cannot write PATH: no space left on device`` with exit code 2.

An output path is written *through*, never replaced: a symlink's target is the file written (the link stays), and
a path that is not a regular file (a directory, a FIFO, a device node, ``/``) is refused in one line, so no
rename ever turns a device or a FIFO into a regular file, even as root (:func:`output_target`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import Callable

from effnas.errors import EffnasError

# errno -> how the one-line error says it.
DISK_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EFBIG: "file too large",
}
LOW_SPACE_BYTES = 64 * 1024  # less than this free is a full disk: nothing useful fits any more


class WriteError(EffnasError):
    """An output that could not be written because of the disk (full, read-only) or its permissions."""


def disk_problem(path: str | Path) -> str | None:
    """What stops writes into ``path`` (a folder, or a file's folder) right now: a read-only file system,
    a full disk, no write permission; None when nothing visibly does (or the folder does not exist)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    if stats.f_flag & os.ST_RDONLY:
        return DISK_ERRNOS[errno.EROFS]
    free_blocks = stats.f_bfree if os.geteuid() == 0 else stats.f_bavail  # root may use the reserved blocks
    if stats.f_blocks and free_blocks * stats.f_frsize < LOW_SPACE_BYTES:  # no blocks at all: /proc, some FUSE
        return DISK_ERRNOS[errno.ENOSPC]
    if not os.access(folder, os.W_OK):
        return DISK_ERRNOS[errno.EACCES]
    return None


def write_failure(path: str | Path, error: BaseException) -> WriteError | None:
    """The :class:`WriteError` for ``error`` raised while writing ``path``, or None when the disk is not to
    blame (a bug, which should surface as one). Some writers hide the errno (``torch.save`` raises a
    RuntimeError on a full disk), so then the file system itself is asked."""
    reason = DISK_ERRNOS.get(getattr(error, "errno", None) or -1) or disk_problem(path)
    return WriteError(f"cannot write {path}: {reason}") if reason else None


def _temporary(path: Path, pid: int) -> Path:
    return path.with_name(f".{path.name}.{pid}.tmp")  # per process: several may share a folder


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str | Path, names: tuple[str, ...]) -> list[str]:
    """Delete the temporary copies of ``names`` that :func:`atomic_write` left in ``folder`` when its process
    was killed mid-write (the target itself is always whole); a live process's copy is left alone."""
    removed = []
    for name in names:
        for tmp in Path(folder).glob(f".{name}.*.tmp"):
            pid = tmp.name[len(name) + 2:-4]
            if pid.isdigit() and not process_alive(int(pid)):
                tmp.unlink(missing_ok=True)
                removed.append(tmp.name)
    return removed


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def output_target(path: str | Path, what: str = "") -> Path:
    """The file a write to ``path`` really changes: ``path`` itself, or the end of its symlink chain. Refused in
    one line (:class:`WriteError`) unless that is an existing regular file or a new name in an existing folder
    we may write: replacing a directory, FIFO, socket or device node by rename would destroy it (as root
    even ``/dev/null``). ``what`` names the option in the error (``--out``)."""
    shown = f"{what} {path}" if what else str(path)
    target = Path(os.path.realpath(Path(path).expanduser()))
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as error:  # a symlink loop, a path through a file, no permission to look
        raise WriteError(f"cannot write {shown}: {error.strerror or error}") from None
    if mode is not None and not stat.S_ISREG(mode):
        raise WriteError(f"cannot write {shown}: {_kind(mode)}, not a regular file (give a file name)")
    if not target.parent.is_dir():
        raise WriteError(f"cannot write {shown}: directory {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK):
        raise WriteError(f"cannot write {shown}: {disk_problem(target.parent) or DISK_ERRNOS[errno.EACCES]}")
    probe = _temporary(target, os.getpid())  # the name atomic_write will use: can it be made there (root in /proc)?
    try:
        probe.unlink(missing_ok=True)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600))
        probe.unlink()
    except OSError as error:
        reason = DISK_ERRNOS.get(error.errno or -1) or disk_problem(target.parent) or error.strerror or str(error)
        raise WriteError(f"cannot write {shown}: {reason}") from None
    return target


def _write_new(tmp: Path, data: bytes) -> None:
    """Create ``tmp`` afresh (a leftover of a dead process with our pid is removed first) without following a
    symlink planted at its name, and write ``data``."""
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def atomic_write(path: str | Path, content: str | bytes | Callable[[Path], None]) -> None:
    """Write ``content`` (text, bytes, or a function that writes the file it is given) to ``path`` through a
    temporary file in the same folder; on failure the temporary file is removed and ``path`` is untouched.
    A symlink is written through; a path that is not a regular file is refused (see :func:`output_target`)."""
    shown = Path(path)
    path = output_target(path)
    tmp = _temporary(path, os.getpid())
    try:
        if isinstance(content, str):
            _write_new(tmp, content.encode("utf-8"))
        elif isinstance(content, bytes):
            _write_new(tmp, content)
        else:
            content(tmp)
        os.replace(tmp, path)
    except Exception as error:
        failure = write_failure(shown, error)  # asked before the temporary file frees its space
        with contextlib.suppress(OSError):  # on a read-only disk even the clean-up fails; nothing was made
            tmp.unlink(missing_ok=True)
        if failure is None:
            raise
        raise failure from None


def ensure_writable_dir(folder: str | Path, what: str = "") -> Path:
    """Create ``folder`` (and its parents) and make sure a file can be written there now, so a command fails
    in one line before it spends any time, rather than at its first write. On failure nothing is left behind.
    ``what`` names the folder in the error ("run directory")."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    created = [p for p in [folder, *folder.parents] if p not in (existing, *existing.parents)]
    problem = disk_problem(existing) if existing.is_dir() else None
    if problem is None:
        probe = folder / f".write-test.{os.getpid()}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            problem = DISK_ERRNOS.get(error.errno or -1) or error.strerror or str(error)
            with contextlib.suppress(OSError):
                probe.unlink(missing_ok=True)
    if problem is None:
        return folder
    for made in created:  # innermost first: the folders this call made, now empty again
        with contextlib.suppress(OSError):
            made.rmdir()
    raise WriteError(f"cannot write to {what + ' ' if what else ''}{folder}: {problem}")


# SQLite's primary result codes that can mean the disk: SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN.
_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN = 8, 10, 13, 14


def sqlite_disk_problem(error: BaseException, database: str | Path | None = None) -> str | None:
    """The disk's part in an SQLite error (``sqlite3.Error``, or SQLAlchemy's wrapper of one), or None.

    SQLite says "database or disk is full" for a full disk but only "disk I/O error" when its shared-memory
    file cannot grow, and "unable to open database file" on a read-only folder; for those the folder of
    ``database`` is asked what stops writes there."""
    error = getattr(error, "orig", None) or error  # sqlalchemy.exc.DBAPIError keeps the driver's error here
    code = getattr(error, "sqlite_errorcode", None)
    if code is None:
        return None
    code &= 0xFF  # extended codes carry the primary code in their low byte
    if code == _SQLITE_FULL:
        return DISK_ERRNOS[errno.ENOSPC]
    if code in (_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CANTOPEN):
        problem = disk_problem(database) if database is not None else None
        return problem or ("read-only database" if code == _SQLITE_READONLY else None)
    return None
