"""The data sources, by name: one entry each in :data:`SOURCES`, with what the rest of the code asks of it.

A name -> entry table in the manner of Ray Tune's scheduler table: :func:`~effnas.nas.training.data.load_data`
reads a ``--data NAME[:ARGUMENT]`` through its entry's reader, the ``--data`` help of ``nas search``, ``nas train``
and ``nas compare`` lists the table, and the training recipe asks it whether flips suit a source. Adding a source
is its reader (in :mod:`.readers`, or anywhere) plus one :func:`register_source` line. The readers load numpy and
torch; they are imported only when a source is read, so listing the table (as every ``nas`` command's parser
does) stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class DataSource:
    """One ``--data`` kind, ``NAME[:ARGUMENT]``, and what the rest of the code asks of it."""

    name: str
    read: Callable[[Any, int], tuple[np.ndarray, np.ndarray, int]]  # (path or argument, data_size) -> x, y, classes
    argument: str = ""  # as --help shows it: 'DIR' or 'FILE' for a path, e.g. '[:N[xS]]' else; '' takes none
    takes_path: bool = True  # NAME:PATH[:N]: a file or folder, and ':N' keeps a stratified subset of N images
    channels: int | None = None  # of its images; None: the file's own
    has_test: Callable[[Path], bool] | None = None  # finds its own test split by file names (None: it has none)
    read_test: Callable[[Path, int, int], tuple[np.ndarray, np.ndarray] | None] | None = None  # (path, size, classes)
    flips: bool = True  # horizontal flips suit its images (not digits or characters: a mirrored glyph is none)
    prefix: bool = False  # PATH may also be a file-name prefix in an existing folder (idx:DIR/PREFIX picks a set)

    @property
    def usage(self) -> str:
        return f"{self.name}:{self.argument}[:N]" if self.takes_path else f"{self.name}{self.argument}"


SOURCES: dict[str, DataSource] = {}


def register_source(source: DataSource) -> DataSource:
    """Add ``source`` to the table (a name is taken once)."""
    if source.name in SOURCES:
        raise ValueError(f"data source {source.name!r} is already registered")
    SOURCES[source.name] = source
    return source


def source_usages() -> str:
    """Every source's form, comma-separated, for messages."""
    return ", ".join(source.usage for source in SOURCES.values())


def data_help(default: str) -> str:
    """The ``--data`` help of every command that reads data."""
    return (f"{' | '.join(source.usage for source in SOURCES.values())}; a file source takes :N for a stratified "
            f"subset of N training images (default: {default})")


class _SourceNames:
    """The names of the registered sources whose entry passes ``test``, read when asked (so a source registered
    later counts too)."""

    def __init__(self, test: Callable[[DataSource], bool]) -> None:
        self._test = test

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in SOURCES and self._test(SOURCES[name])

    def __iter__(self) -> Iterator[str]:
        return (name for name, source in SOURCES.items() if self._test(source))

    def __repr__(self) -> str:
        return repr(tuple(self))


NO_FLIP_SOURCES = _SourceNames(lambda source: not source.flips)


# ----------------------------------------------------------------------------- the built-in sources
def _readers() -> ModuleType:
    from effnas.nas.training import readers  # numpy and torch: when a source is read, not when one is listed

    return readers


register_source(DataSource("digits", lambda arg, size: _readers().digits(), takes_path=False, channels=1,
                           flips=False))
register_source(DataSource("synthetic", lambda arg, size: _readers().synthetic(*_readers().synthetic_shape(arg)),
                           "[:N[xS]]", takes_path=False, channels=3))
register_source(DataSource("cifar", lambda path, size: _readers().cifar(path), "DIR", channels=3,
                           has_test=lambda path: _readers().cifar_has_test(path),
                           read_test=lambda path, size, classes: _readers().cifar_test(path)))
register_source(DataSource("imagefolder", lambda path, size: _readers().imagefolder_train(path, size), "DIR",
                           channels=3, has_test=lambda path: _readers().has_split_folders(path),
                           read_test=lambda path, size, classes: _readers().imagefolder_test(path, size, classes)))
register_source(DataSource("npz", lambda path, size: _readers().npz(path), "FILE",
                           has_test=lambda path: _readers().npz_has_test(path),
                           read_test=lambda path, size, classes: _readers().npz_test(path)))
register_source(DataSource("idx", lambda path, size: _readers().idx(path), "DIR", channels=1,
                           has_test=lambda path: _readers().idx_has_test(path),
                           read_test=lambda path, size, classes: _readers().idx_test(path), flips=False, prefix=True))
