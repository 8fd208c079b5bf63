"""IDX files, the format MNIST, Fashion-MNIST, KMNIST and EMNIST are published in (``--data idx:DIR``).

An IDX file is a 4-byte magic (two zero bytes, an element type, the number of dimensions), one
big-endian uint32 per dimension, then the elements, row-major and big-endian; usually gzipped.
A header is only a claim, so every size is checked against the file before anything is allocated:
a plain file must be exactly header + data long, a gzipped one must be small enough for deflate
to hold the data (at most about 1032 bytes out per byte in), and decompression stops after the
bytes the header claims. Anything else is a one-line :class:`IdxError` naming the file.

The training pair (``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte``, gzipped or not, optionally
behind a prefix such as EMNIST's ``emnist-balanced-``) is what the search and training read. The test pair
beside it (``t10k-`` or ``test-``) is read only by :func:`read_test_set`, for a finished model's final score.
EMNIST stores each image transposed (column-major), so files named ``emnist-*`` are transposed back on reading.
"""

from __future__ import annotations

import gzip
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from effnas.errors import EffnasError

# Element types of the IDX format, all big-endian.
IDX_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
MAX_DIMS = 4
MAX_BYTES = 8 << 30  # data sets are held whole in memory; EMNIST byclass, the largest, is 0.55 GB
DEFLATE_MAX_RATIO = 1032  # deflate cannot expand one compressed byte into more than this
_CHUNK = 1 << 22
_TRAIN = re.compile(r"^(?P<prefix>.*?)train-(?P<part>images|labels)[-.]idx(?P<dims>[13])-ubyte(?P<gz>\.gz)?$")


class IdxError(EffnasError):
    """An IDX file that is missing, malformed or claims more data than it holds."""


@dataclass(frozen=True)
class IdxHeader:
    """What an IDX file's header claims, already checked against the file's size."""

    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int
    gzipped: bool

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _open(path: Path) -> tuple[BinaryIO, bool]:
    """The file, decompressing when it starts with gzip's magic (names ending .gz are not trusted)."""
    try:
        with path.open("rb") as probe:
            gzipped = probe.read(2) == b"\x1f\x8b"
        return (gzip.open(path, "rb") if gzipped else path.open("rb")), gzipped
    except OSError as error:
        raise IdxError(f"{path}: cannot open ({error.strerror or error})") from None


def _read_exact(handle: BinaryIO, count: int, path: Path, what: str) -> bytes:
    try:
        data = handle.read(count)
    except (OSError, EOFError, zlib.error) as error:
        raise IdxError(f"{path}: unreadable {what} ({error})") from None
    if len(data) != count:
        raise IdxError(f"{path}: truncated {what} ({len(data)} of {count} bytes)")
    return data


def read_header(path: Path) -> IdxHeader:
    """Parse and check the header; refuses sizes the file cannot hold before any data is read."""
    handle, gzipped = _open(path)
    with handle:
        magic = _read_exact(handle, 4, path, "header")
        if magic[:2] != b"\0\0" or magic[2] not in IDX_TYPES or not 1 <= magic[3] <= MAX_DIMS:
            raise IdxError(f"{path}: not an IDX file (magic 0x{magic.hex()}; expected 0x0000TTDD with a known "
                           f"type TT and 1..{MAX_DIMS} dimensions DD)")
        dims = _read_exact(handle, 4 * magic[3], path, "header")
    header = IdxHeader(IDX_TYPES[magic[2]], tuple(int(d) for d in np.frombuffer(dims, ">u4")), 4 + len(dims),
                       gzipped)
    size = path.stat().st_size
    claims = f"header claims {list(header.shape)} {header.dtype.name} ({header.nbytes:,} bytes)"
    if header.nbytes > MAX_BYTES:
        raise IdxError(f"{path}: {claims}, more than the {MAX_BYTES >> 30} GiB a data set may take in memory")
    if gzipped and header.nbytes > DEFLATE_MAX_RATIO * size + 1024:
        raise IdxError(f"{path}: {claims}, more than a {size:,}-byte gzip file can hold")
    if not gzipped and size != header.offset + header.nbytes:
        problem = "truncated" if size < header.offset + header.nbytes else "trailing bytes after the data"
        raise IdxError(f"{path}: {problem}: {claims}, the file holds {size - header.offset:,}")
    return header


def read_idx(path: Path, header: IdxHeader | None = None) -> np.ndarray:
    """The array in ``path``, native byte order; decompresses no more than the header claims."""
    header = header or read_header(path)
    data = np.empty(header.nbytes, dtype=np.uint8)
    handle, _ = _open(path)
    with handle:
        _read_exact(handle, header.offset, path, "header")
        view, filled = memoryview(data), 0
        try:
            while filled < header.nbytes:
                got = handle.readinto(view[filled:filled + _CHUNK])
                if not got:
                    break
                filled += got
            extra = handle.read(1) if header.gzipped else b""
        except (OSError, EOFError, zlib.error) as error:
            raise IdxError(f"{path}: truncated or corrupt after {filled:,} of {header.nbytes:,} data bytes "
                           f"({error})") from None
    if filled < header.nbytes:
        raise IdxError(f"{path}: truncated: header claims {header.nbytes:,} data bytes, the file holds {filled:,}")
    if extra:
        raise IdxError(f"{path}: trailing bytes after the {header.nbytes:,} data bytes the header claims")
    array = data.view(header.dtype).reshape(header.shape)
    return array if header.dtype.itemsize == 1 else array.astype(header.dtype.newbyteorder("="))


def find_training_pair(path: Path) -> tuple[Path, Path]:
    """(images, labels) of the one training set at ``path``: a folder (or its only sub-folder holding
    IDX files), or ``DIR/PREFIX`` to pick one of several sets, e.g. ``gzip/emnist-balanced``."""
    prefix = None
    if not path.is_dir():
        if not path.parent.is_dir():
            raise IdxError(f"{path}: no such file or directory")
        path, prefix = path.parent, path.name
    sets = _training_sets(path)
    if not sets:
        children = [child for child in sorted(path.iterdir()) if child.is_dir() and _training_sets(child)]
        if len(children) == 1:
            path, sets = children[0], _training_sets(children[0])
    if prefix is not None:
        sets = {key: files for key, files in sets.items() if key.rstrip("-_.") == prefix.rstrip("-_.")}
    where = path / prefix if prefix else path
    if not sets:
        raise IdxError(f"{where}: no train-images-idx3-ubyte[.gz] with train-labels-idx1-ubyte[.gz] found")
    if len(sets) > 1:
        names = ", ".join(key.rstrip("-_.") or "(no prefix)" for key in sorted(sets))
        raise IdxError(f"{where}: several IDX training sets ({names}); choose one as idx:{path}/NAME")
    files = next(iter(sets.values()))
    if "labels" not in files or "images" not in files:
        have, missing = ("images", "labels") if "images" in files else ("labels", "images")
        raise IdxError(f"{files[have]}: no matching train-{missing} file beside it")
    return files["images"], files["labels"]


def _training_sets(folder: Path) -> dict[str, dict[str, Path]]:
    """prefix -> {"images": file, "labels": file}; a plain file beats its .gz (no decompression)."""
    sets: dict[str, dict[str, Path]] = {}
    try:
        files = sorted(folder.iterdir(), key=lambda f: (f.name.endswith(".gz"), f.name))
    except OSError as error:
        raise IdxError(f"{folder}: cannot list ({error.strerror or error})") from None
    for file in files:
        match = _TRAIN.match(file.name)
        if match and file.is_file() and (match["part"] == "images") == (match["dims"] == "3"):
            sets.setdefault(match["prefix"], {}).setdefault(match["part"], file)
    return sets


def is_transposed(path: Path) -> bool:
    """EMNIST writes each image column by column; its files are the ones named ``emnist-*``."""
    return path.name.lower().startswith("emnist-")


def read_training_set(path: Path) -> tuple[np.ndarray, np.ndarray, Path]:
    """Images [N, H, W] upright, labels [N] and the labels file, checking shapes and counts from the
    headers before either body is read."""
    images_file, labels_file = find_training_pair(path)
    return _read_pair(images_file, labels_file)


def read_test_set(path: Path) -> tuple[np.ndarray, np.ndarray, Path] | None:
    """The test pair beside the training pair at ``path`` (``t10k-`` or ``test-`` in place of ``train-``),
    checked as the training pair is; None when the folder has none."""
    pair = find_test_pair(path)
    return None if pair is None else _read_pair(*pair)


def find_test_pair(path: Path) -> tuple[Path, Path] | None:
    """(images, labels) of the test set beside the training set at ``path``, by name alone; None if absent."""
    images_file, labels_file = find_training_pair(path)
    for test_name in ("t10k-", "test-"):
        images, labels = (file.with_name(file.name.replace("train-", test_name, 1))
                          for file in (images_file, labels_file))
        if images.is_file() and labels.is_file():
            return images, labels
    return None


def _read_pair(images_file: Path, labels_file: Path) -> tuple[np.ndarray, np.ndarray, Path]:
    images_header, labels_header = read_header(images_file), read_header(labels_file)
    for file, header, want in ((images_file, images_header, 3), (labels_file, labels_header, 1)):
        if len(header.shape) != want:
            raise IdxError(f"{file}: expected {want} dimension(s), the header says {list(header.shape)}")
    if images_header.shape[0] != labels_header.shape[0]:
        raise IdxError(f"{labels_file}: {labels_header.shape[0]:,} labels for the {images_header.shape[0]:,} "
                       f"images in {images_file.name}")
    labels, images = read_idx(labels_file, labels_header), read_idx(images_file, images_header)
    return (images.transpose(0, 2, 1) if is_transposed(images_file) else images), labels, labels_file

