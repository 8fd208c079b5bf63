"""Readers of each data source: raw arrays (uint8 images ``[N, C, H, W]``, int64 labels, class count) from
scikit-learn's digits, generated patterns, CIFAR pickles, image folders, ``.npz`` files and IDX files, each
validated so a bad file is a one-line :class:`DataError`. The table of sources (:mod:`.sources`) names them,
and :mod:`effnas.nas.training.data` splits what they read."""

from __future__ import annotations

import math
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import numpy as np

from effnas.errors import EffnasError, escape_controls
from effnas.nas.training.idx import MAX_BYTES as IDX_MAX_BYTES
from effnas.nas.training.idx import IdxError, find_test_pair, read_test_set, read_training_set

SYNTHETIC_DEFAULT = (2000, 32)
SYNTHETIC_CLASSES = 10
MAX_CLASSES = 100_000
MAX_IMAGE_PIXELS = 50_000_000  # one image file's width x height: a header may claim far more than it holds
MAX_DATA_SIZE = 1024  # imagefolder's --data-size, as synthetic's S
DEFLATE_MAX_RATIO = 1032  # deflate cannot expand one compressed byte into more than this


def data_limit() -> int:
    """Bytes a data set may take in memory, checked before it is read: it is held whole (and copied once to the
    device), so at most half this machine's memory and never more than the largest IDX set allowed (8 GiB)."""
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        physical = 2 * IDX_MAX_BYTES
    return min(IDX_MAX_BYTES, physical // 2)


def check_data_bytes(nbytes: int, name: str) -> None:
    """Refuse a data set whose size, known from a header or a request before anything is allocated, exceeds
    :func:`data_limit`."""
    limit = data_limit()
    if nbytes > limit:
        raise DataError(f"data: {name}: would take {nbytes / 2**30:,.2f} GiB in memory, more than the "
                        f"{limit / 2**30:.2f} GiB a data set may take here (half this machine's memory, at most 8 GiB)")


class DataError(EffnasError):
    """A data source that cannot be read or cannot be trained on."""


def to_uint8(x: np.ndarray, name: str) -> np.ndarray:
    """Images as uint8 0..255: floats in [0, 1] are scaled, other numbers must already be in 0..255."""
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind not in "fiub":
        raise DataError(f"data: {name}: images must be numbers, got dtype {x.dtype}")
    values = x.astype(np.float64)
    if not np.isfinite(values).all():
        raise DataError(f"data: {name}: images contain NaN or infinite values")
    low, high = (values.min(), values.max()) if values.size else (0.0, 0.0)
    if x.dtype.kind == "f" and low >= 0.0 and high <= 1.0:
        values = values * 255.0
    elif low < 0.0 or high > 255.0:
        raise DataError(f"data: {name}: pixel values must be in [0, 1] or [0, 255], got [{low:g}, {high:g}]")
    return np.rint(values).astype(np.uint8)


def check_labels(y: np.ndarray, count: int, name: str) -> tuple[np.ndarray, int]:
    """Validate integer class labels ``0..K-1``; returns them as int64 with ``K``."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"data: {name}: labels must be a 1-D array, got shape {tuple(y.shape)}")
    if len(y) != count:
        raise DataError(f"data: {name}: {count} images but {len(y)} labels")
    if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise DataError(f"data: {name}: labels must be integers, got dtype {y.dtype}")
    if len(y) == 0:
        return y.astype(np.int64), 0
    if y.min() < 0 or y.max() >= MAX_CLASSES:
        raise DataError(f"data: {name}: labels must be in [0, {MAX_CLASSES}), got range [{y.min()}, {y.max()}]")
    return y.astype(np.int64), int(y.max()) + 1


# ----------------------------------------------------------------------------- sources
def digits() -> tuple[np.ndarray, np.ndarray, int]:
    from sklearn.datasets import load_digits  # scikit-learn's import is slow; only this source needs it

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # [N, 1, 8, 8], 0..16 -> 0..255
    return images, bunch.target.astype(np.int64), 10


def synthetic_shape(arg: str) -> tuple[int, int]:
    if not arg:
        return SYNTHETIC_DEFAULT
    count, _, size = arg.lower().partition("x")
    try:
        n, s = int(count), int(size) if size else SYNTHETIC_DEFAULT[1]
    except ValueError:
        raise DataError(f"data: synthetic:{arg}: expected synthetic:N or synthetic:NxS (e.g. synthetic:50000x32)") \
            from None
    if n < 2 * SYNTHETIC_CLASSES or not 4 <= s <= 1024:
        raise DataError(f"data: synthetic:{arg[:40]}: need N >= {2 * SYNTHETIC_CLASSES} images and 4 <= S <= 1024 px")
    check_data_bytes(n * s * s * 3, f"synthetic:{arg[:40]}")  # N x S x S x 3 bytes, refused before generating
    return n, s


def synthetic(count: int, size: int, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray, int]:
    """Oriented colour gratings: class c sets orientation, frequency and colour; each image draws its own
    phase, contrast and pixel noise. Learnable, not trivial, and identical on every machine (fixed seed)."""
    import torch  # here only: reading a data set's shape (a search's own process) must not pay for it

    generator = torch.Generator().manual_seed(12345)
    classes = torch.arange(SYNTHETIC_CLASSES, dtype=torch.float32)
    angle = classes * (torch.pi / SYNTHETIC_CLASSES)
    frequency = 1.5 + (classes % 3)
    colour = torch.rand((SYNTHETIC_CLASSES, 3), generator=generator) * 0.8 + 0.2
    y = torch.arange(count) % SYNTHETIC_CLASSES
    y = y[torch.randperm(count, generator=generator)]
    grid = torch.linspace(0.0, 1.0, size)
    rows, cols = torch.meshgrid(grid, grid, indexing="ij")
    images = torch.empty((count, 3, size, size), dtype=torch.uint8)
    for start in range(0, count, chunk):
        label = y[start:start + chunk]
        n = len(label)
        phase = torch.rand((n, 1, 1), generator=generator) * 2 * torch.pi
        contrast = torch.rand((n, 1, 1, 1), generator=generator) * 0.5 + 0.5
        direction = (cols * torch.cos(angle[label])[:, None, None] + rows * torch.sin(angle[label])[:, None, None])
        wave = torch.sin(2 * torch.pi * frequency[label][:, None, None] * direction + phase)[:, None]
        pixels = 0.5 + 0.35 * contrast * wave * colour[label][:, :, None, None]
        pixels += 0.12 * torch.randn((n, 3, size, size), generator=generator)
        images[start:start + n] = pixels.clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    return images.numpy(), y.numpy().astype(np.int64), SYNTHETIC_CLASSES


class _CifarUnpickler(pickle.Unpickler):
    """Unpickle only what CIFAR's batches contain (dicts, lists, bytes and numpy arrays): a batch file is
    the one pickle effnas ever reads, and a crafted one must not be able to run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def __init__(self, handle, limit: int, **kwargs) -> None:
        super().__init__(handle, **kwargs)
        self.limit = limit  # bytes one array may claim: the file holds its data, so at most the file's size

    def find_class(self, module: str, name: str):  # type: ignore[override]
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        found = super().find_class(module, name)
        if name == "_reconstruct":  # allocates the shape it is asked for: check the claim first
            return self._bounded(found)
        return found

    def _bounded(self, reconstruct):
        def bounded(subtype, shape, dtype):
            dims = shape if isinstance(shape, (tuple, list)) else (shape,)
            if not all(isinstance(d, int) and 0 <= d for d in dims):
                raise pickle.UnpicklingError("an array with an invalid shape")
            itemsize = np.dtype(dtype).itemsize if isinstance(dtype, (str, bytes, np.dtype)) else 1
            if math.prod(dims) * max(1, itemsize) > self.limit:
                raise pickle.UnpicklingError(f"an array of {math.prod(dims):,} elements, more than the file holds")
            return reconstruct(subtype, shape, dtype)
        return bounded


def _read_cifar_batch(path: Path) -> dict:
    try:
        size = path.stat().st_size
        check_data_bytes(size, f"cifar: {path}")
        with path.open("rb") as handle:
            batch = _CifarUnpickler(handle, limit=size + 4096, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, MemoryError,
            IndexError, KeyError, RecursionError) as error:
        raise DataError(f"data: cifar: {path}: not a CIFAR python batch ({str(error)[:200]})") from None
    if not isinstance(batch, dict) or b"data" not in batch:
        raise DataError(f"data: cifar: {path}: not a CIFAR python batch (no 'data' entry)")
    return batch


def cifar(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """CIFAR-10 (``data_batch_1..5``, 10 classes) or CIFAR-100 (``train``, 100 fine classes)."""
    path = _cifar_folder(path)
    files = sorted(path.glob("data_batch_[0-9]*"))
    if files:
        label_key, num_classes = b"labels", 10
    elif (path / "train").is_file():
        files, label_key, num_classes = [path / "train"], b"fine_labels", 100
    else:
        raise DataError(f"data: cifar: {path}: no CIFAR-10 'data_batch_*' or CIFAR-100 'train' file found")
    x, y = _cifar_batches(files, label_key, num_classes)
    return x, y, num_classes


def cifar_test(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """CIFAR-10's ``test_batch`` or CIFAR-100's ``test``, when the folder holds it."""
    path = _cifar_folder(path)
    if (path / "test_batch").is_file():
        return _cifar_batches([path / "test_batch"], b"labels", 10)
    if (path / "test").is_file():
        return _cifar_batches([path / "test"], b"fine_labels", 100)
    return None


def _cifar_folder(path: Path) -> Path:
    """The folder holding the batches: ``path`` itself or the folder the archive unpacks to inside it."""
    if path.is_dir() and not any((path / f).exists() for f in ("data_batch_1", "train")):
        for child in ("cifar-10-batches-py", "cifar-100-python"):  # the folder the archive unpacks to
            if (path / child).is_dir():
                path = path / child
                break
    if not path.is_dir():
        raise DataError(f"data: cifar: {path}: expected the directory holding the CIFAR python batches")
    return path


def _cifar_batches(files: list[Path], label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for file in files:
        batch = _read_cifar_batch(file)
        data = np.asarray(batch[b"data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(f"data: cifar: {file}: 'data' must be uint8 [N, 3072], got {data.dtype} "
                            f"{list(data.shape)}")
        if label_key not in batch:
            raise DataError(f"data: cifar: {file}: no {label_key.decode()!r} entry")
        images.append(data.reshape(-1, 3, 32, 32))
        label, _ = check_labels(np.asarray(batch[label_key]), len(data), f"cifar: {file}")
        if len(label) and label.max() >= num_classes:
            raise DataError(f"data: cifar: {file}: label {label.max()} out of range for {num_classes} classes")
        labels.append(label)
    return np.concatenate(images), np.concatenate(labels)


def imagefolder(path: Path, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``DIR/<class>/<image>``: classes are the sorted sub-folder names; unreadable files are skipped."""
    from PIL import Image, UnidentifiedImageError  # only this source decodes image files

    if not path.is_dir():
        raise DataError(f"data: imagefolder: {path}: not a directory")
    if not 1 <= int(size) <= MAX_DATA_SIZE:
        raise DataError(f"data: imagefolder: data_size must be in [1, {MAX_DATA_SIZE}], got {size}")
    extensions = {ext.lower() for ext in Image.registered_extensions()}
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"data: imagefolder: {path}: no class sub-folders (expected DIR/<class>/<image>)")
    listing = [(label, sorted(f for f in class_dir.rglob("*") if f.is_file() and f.suffix.lower() in extensions))
               for label, class_dir in enumerate(class_dirs)]
    check_data_bytes(sum(len(files) for _, files in listing) * size * size * 3, f"imagefolder: {path}")
    images, labels = [], []
    for label, files in listing:
        for file in files:
            try:
                with Image.open(file) as image:
                    width, height = image.size  # the header's claim: checked before a pixel is decoded
                    if width * height > MAX_IMAGE_PIXELS:
                        raise ValueError(f"its header claims {width} x {height} pixels, more than "
                                         f"{MAX_IMAGE_PIXELS:,}")
                    rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            except (OSError, UnidentifiedImageError, ValueError, SyntaxError, MemoryError,
                    Image.DecompressionBombError, EOFError, IndexError, TypeError) as error:
                warnings.warn(escape_controls(f"imagefolder: skipping unreadable image {file} ({str(error)[:200]})"),
                              stacklevel=2)
                continue
            images.append(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))
            labels.append(label)
    if not images:
        raise DataError(f"data: imagefolder: {path}: no readable images in {len(class_dirs)} class folder(s)")
    missing = sorted(set(range(len(class_dirs))) - set(labels))
    if missing:
        raise DataError(f"data: imagefolder: {class_dirs[missing[0]]}: class folder has no readable images")
    return np.stack(images), np.asarray(labels, dtype=np.int64), len(class_dirs)


def npz(path: Path, keys: tuple[str, str] = ("x", "y")) -> tuple[np.ndarray, np.ndarray, int]:
    """``x``: [N,H,W] (grayscale), [N,H,W,C] or [N,C,H,W] with C in 1..4; ``y``: integer labels."""
    name = f"npz: {path}"
    _check_npz_sizes(path, name, keys)
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in keys if key not in archive.files]
            if missing:
                raise DataError(f"data: {name}: missing array {missing[0]!r} (found: {', '.join(archive.files)})")
            x, y = archive[keys[0]], archive[keys[1]]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, MemoryError) as error:
        raise DataError(f"data: {name}: not a readable .npz file ({str(error)[:200]})") from None
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[3] <= 4:
            x = x.transpose(0, 3, 1, 2)
        elif x.shape[1] > 4:
            raise DataError(f"data: {name}: cannot tell the channel axis of x with shape {list(x.shape)} "
                            "(expected [N,H,W], [N,H,W,C] or [N,C,H,W] with C <= 4)")
    else:
        raise DataError(f"data: {name}: x must have 3 or 4 dimensions, got shape {list(x.shape)}")
    labels, num_classes = check_labels(y, len(x), name)
    return np.ascontiguousarray(to_uint8(x, name)), labels, num_classes


def npz_test(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The archive's own test split, ``x_test`` and ``y_test``, checked as ``x`` and ``y`` are."""
    x, y, _ = npz(path, ("x_test", "y_test"))
    return x, y


def _check_npz_sizes(path: Path, name: str, keys: tuple[str, str] = ("x", "y")) -> None:
    """Before numpy allocates anything: each ``x``/``y`` member's ``.npy`` header, its shape and dtype, must fit
    in the bytes the zip says the member holds, those must be within deflate's reach of its compressed bytes (a
    member claiming gigabytes from a few kilobytes is a bomb or a lie), and the two arrays within
    :func:`data_limit`. Anything else (not a zip, no header) is left for np.load to refuse in its own words."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            total = 0
            for info in archive.infolist():
                if info.filename not in (f"{keys[0]}.npy", f"{keys[1]}.npy"):
                    continue
                if info.file_size > max(info.compress_size, 1) * DEFLATE_MAX_RATIO + 1024:
                    raise DataError(f"data: {name}: {info.filename} claims {info.file_size:,} bytes from "
                                    f"{info.compress_size:,} compressed, more than deflate can hold")
                check_data_bytes(info.file_size, name)
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(member)
                nbytes = math.prod(shape) * dtype.itemsize
                if nbytes > info.file_size:
                    raise DataError(f"data: {name}: {info.filename}'s header claims {math.prod(shape):,} elements "
                                    f"({nbytes:,} bytes), more than the file's {info.file_size:,} bytes hold")
                total += nbytes
            check_data_bytes(total, name)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, RuntimeError, NotImplementedError):
        return  # np.load gives its own one-line answer


def idx_test(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The ``t10k-`` (or ``test-``) pair beside the training pair, when the folder holds it."""
    try:
        found = read_test_set(path)
    except IdxError as error:
        raise DataError(f"data: idx: {error}") from None
    if found is None:
        return None
    images, labels, labels_file = found
    labels, _ = check_labels(labels, len(images), f"idx: {labels_file}")
    return np.ascontiguousarray(to_uint8(images, f"idx: {labels_file}")[:, None]), labels


def idx(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """MNIST-family IDX training files (:mod:`.idx`): grayscale, so [N, 1, H, W]."""
    try:
        images, labels, labels_file = read_training_set(path)
    except IdxError as error:
        raise DataError(f"data: idx: {error}") from None
    labels, num_classes = check_labels(labels, len(images), f"idx: {labels_file}")
    return np.ascontiguousarray(to_uint8(images, f"idx: {path}")[:, None]), labels, num_classes


# ----------------------------------------------------------------------------- own test splits, by file names
def has_split_folders(path: Path) -> bool:
    """An image folder with ``train/`` and ``test/`` trains on the first and tests on the second."""
    return (path / "train").is_dir() and (path / "test").is_dir()


def imagefolder_train(path: Path, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    return imagefolder(path / "train" if has_split_folders(path) else path, size)


def imagefolder_test(path: Path, size: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    x, y, classes = imagefolder(path / "test", size)
    if classes != num_classes:
        raise DataError(f"data: imagefolder: {path / 'test'}: {classes} class folders, the train/ folder has "
                        f"{num_classes}")
    return x, y


def cifar_has_test(path: Path) -> bool:
    folders = [path, path / "cifar-10-batches-py", path / "cifar-100-python"]
    return any((folder / name).is_file() for folder in folders for name in ("test_batch", "test"))


def npz_has_test(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return {"x_test.npy", "y_test.npy"} <= set(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def idx_has_test(path: Path) -> bool:
    try:
        return find_test_pair(path) is not None
    except IdxError:
        return False
