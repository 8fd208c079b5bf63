"""Image classification data for proxy trials and ``nas train``, held whole in memory.

Every source becomes one :class:`ImageData`: uint8 images ``[N, C, H, W]`` and int64 labels, split into
train, validation and test. Two rules for every source:

- **the validation split is always carved out of the training data**, stratified by class and fixed by
  ``seed``: it is what the search selects on;
- **the test split is the source's own** (``idx:``'s ``t10k-`` files, CIFAR's ``test_batch``, an ``.npz``'s
  ``x_test``/``y_test``, an image folder's ``test/`` beside ``train/``), read only when a finished model asks
  for its final score (:meth:`ImageData.test_split`); a source without one has ``TEST_FRACTION`` of its images
  held out before anything else, the same ones whatever the run's seed, so no search or training sees them.

Images keep their own channel count (digits are
grayscale, 1 channel); the trial builds its network with the data's channels, so no compute is spent on
replicated planes.

Sources (``--data``, each an entry of :data:`effnas.nas.training.sources.SOURCES`):
  ``digits``                 scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes)
  ``synthetic[:N[xS]]``      N deterministic S-px RGB images of 10 class-dependent patterns (default 2000x32)
  ``cifar:DIR``              CIFAR-10 ``data_batch_1..5`` or CIFAR-100 ``train`` python pickles
  ``imagefolder:DIR``        ``DIR/<class>/<image>`` (or ``DIR/train/<class>/...`` with ``DIR/test/<class>/...``),
                             read with PIL as RGB and resized to ``data_size``
  ``npz:FILE``               arrays ``x`` ([N,H,W], [N,H,W,C] or [N,C,H,W]) and ``y`` (int labels)
  ``idx:DIR``                MNIST, Fashion-MNIST, KMNIST or EMNIST IDX files, 1 channel (:mod:`.idx`)

A file source takes ``:N`` after its path (``idx:DIR:5000``) to keep N images, each class its share,
the same ones whatever the seed: CPU runs stay short on a real data set.

:func:`to_device` then moves a split to the training device once, resizes it there and normalises it,
so the training loop only ever indexes device tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from effnas.nas.training.readers import DataError
from effnas.nas.training.sources import SOURCES, source_usages

SUBSET_SEED = 0  # a ':N' subset is part of the data set's identity, not of a run's seed
TEST_SEED = 0  # so is a held-out test split
TEST_FRACTION = 0.15  # of each class, held out as the test split of a source that has none of its own
MIN_CLASS_FOR_TEST = 3  # images a class needs before one is held out: one to test, one to validate, one to train


@dataclass(frozen=True)
class ImageData:
    """A dataset split for training: uint8 images ``[N, C, H, W]``, int64 labels."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    name: str
    test_origin: str = "none"  # where test_split() reads from: "the source's own test files" or "held out"
    _read_test: Callable[[], tuple[np.ndarray, np.ndarray] | None] | None = field(default=None, repr=False, compare=False)

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    def test_split(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The test images and labels, read now and only now: the final score of a finished model."""
        if self._read_test is None:
            raise DataError(f"data: {self.name}: has no test split")
        found = self._read_test()
        if found is None:
            raise DataError(f"data: {self.name}: its test files could not be found")
        x, y = found
        if x.shape[1:] != self.train_x.shape[1:]:
            raise DataError(f"data: {self.name}: the test images are {list(x.shape[1:])}, the training images "
                            f"{list(self.train_x.shape[1:])}")
        if len(y) and int(y.max()) >= self.num_classes:
            raise DataError(f"data: {self.name}: test label {int(y.max())} is beyond the training data's "
                            f"{self.num_classes} classes")
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64))


@dataclass(frozen=True)
class DeviceData:
    """Float images on the training device, resized and normalised with the train split's statistics."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    mean: torch.Tensor
    std: torch.Tensor
    image_size: int
    name: str

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])


# ----------------------------------------------------------------------------- entry points
def load_data(source: str, seed: int = 0, val_fraction: float = 0.2, data_size: int = 64) -> ImageData:
    """Read ``source`` and split it; ``data_size`` is the common size imagefolder images are resized to."""
    if not isinstance(source, str) or not source.strip():
        raise DataError(f"data: empty source (expected one of {source_usages()})")
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"data: val_fraction must be in (0, 1), got {val_fraction}")
    kind, _, arg = source.strip().partition(":")
    kind = kind.lower()
    name = source.strip()
    read_test: Callable[[], tuple[np.ndarray, np.ndarray] | None] | None = None
    entry = SOURCES.get(kind)
    if entry is None or (arg and not entry.argument):
        raise DataError(f"data: unknown source {source!r} (expected one of {source_usages()})")
    if not entry.takes_path:
        x, y, num_classes = entry.read(arg, data_size)
    else:
        if not arg:
            raise DataError(f"data: {kind}: needs a path, e.g. '{kind}:{entry.argument}'")
        arg, limit = _path_and_limit(kind, arg)
        path = Path(arg).expanduser()
        if not path.exists() and not (entry.prefix and path.parent.is_dir()):  # idx:DIR/PREFIX picks a set
            raise DataError(f"data: {kind}: {path}: no such file or directory")
        x, y, num_classes = entry.read(path, data_size)
        if entry.has_test is not None and entry.read_test is not None and entry.has_test(path):
            read_test = lambda: entry.read_test(path, data_size, num_classes)  # noqa: E731
        if limit is not None:
            x, y = _subset(x, y, limit)
    if read_test is not None:
        return _split(x, y, num_classes, seed, val_fraction, name, "the source's own test files", read_test)
    if len(y) == 0 or np.unique(y, return_counts=True)[1].min() < MIN_CLASS_FOR_TEST:
        return _split(x, y, num_classes, seed, val_fraction, name)  # too small to hold any out: no test split
    keep, test = _stratified(y, TEST_FRACTION, np.random.default_rng(TEST_SEED))
    held_x, held_y = x[test], y[test]
    return _split(x[keep], y[keep], num_classes, seed, val_fraction, name,
                  f"held out ({TEST_FRACTION:.0%} of the images, the same for every run)", lambda: (held_x, held_y))


def to_device(data: ImageData, image_size: int, device: str | torch.device,
              dtype: torch.dtype = torch.float32, chunk: int = 4096) -> DeviceData:
    """Resize both splits to ``image_size`` on ``device`` (bilinear, antialiased when shrinking), then
    normalise each channel by the train split's mean and std. Done once, in chunks to bound memory."""
    if int(image_size) < 1:
        raise DataError(f"data: image_size must be >= 1, got {image_size}")
    device = torch.device(device)

    def prepare(x: torch.Tensor) -> torch.Tensor:
        out = torch.empty((x.shape[0], x.shape[1], image_size, image_size), dtype=torch.float32, device=device)
        for start in range(0, x.shape[0], chunk):
            part = x[start:start + chunk].to(device, non_blocking=True).float().div_(255.0)
            if part.shape[-2:] != (image_size, image_size):
                shrink = part.shape[-1] > image_size or part.shape[-2] > image_size
                part = F.interpolate(part, size=(image_size, image_size), mode="bilinear",
                                     align_corners=False, antialias=shrink)
            out[start:start + chunk] = part
        return out

    train_x, val_x = prepare(data.train_x), prepare(data.val_x)
    mean = train_x.mean(dim=(0, 2, 3))
    std = train_x.std(dim=(0, 2, 3)).clamp_min(1e-3)  # a constant channel must not divide by zero

    def normalise(x: torch.Tensor) -> torch.Tensor:
        return x.sub_(mean[None, :, None, None]).div_(std[None, :, None, None]).to(dtype)

    return DeviceData(train_x=normalise(train_x), train_y=data.train_y.to(device),
                      val_x=normalise(val_x), val_y=data.val_y.to(device), num_classes=data.num_classes,
                      mean=mean, std=std, image_size=int(image_size), name=data.name)


# ----------------------------------------------------------------------------- splitting
def _stratified(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(kept, taken) indices: each class gives ``round(n * fraction)`` of its images, at least one and never all."""
    taken = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        count = min(len(members) - 1, max(1, round(len(members) * fraction)))
        taken.append(rng.permutation(members)[:count])
    taken_index = np.sort(np.concatenate(taken)) if taken else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(y), dtype=bool)
    mask[taken_index] = False
    return np.flatnonzero(mask), taken_index


def _split(x: np.ndarray, y: np.ndarray, num_classes: int, seed: int, val_fraction: float, name: str,
           test_origin: str = "none", read_test: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None
           ) -> ImageData:
    """Stratified split: each class gives ``round(n * val_fraction)`` (at least one) of its images."""
    if len(x) == 0:
        raise DataError(f"data: {name}: the dataset is empty")
    present = np.unique(y)
    if len(present) < 2:
        raise DataError(f"data: {name}: found only {len(present)} class; classification needs at least 2")
    train_index, val_index = _stratified(y, val_fraction, np.random.default_rng(seed))
    if len(val_index) == 0:
        raise DataError(f"data: {name}: too few images for a validation split (need 2 of some class)")

    def tensors(index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.from_numpy(np.ascontiguousarray(x[index])),
                torch.from_numpy(y[index].astype(np.int64)))

    train_x, train_y = tensors(train_index)
    val_x, val_y = tensors(val_index)
    return ImageData(train_x, train_y, val_x, val_y, int(num_classes), name, test_origin, read_test)


def _path_and_limit(kind: str, arg: str) -> tuple[str, int | None]:
    """``PATH[:N]``: a trailing ``:N`` asks for N images (a path that exists as written wins)."""
    head, sep, tail = arg.rpartition(":")
    if not sep or not tail.isdigit() or Path(arg).expanduser().exists():
        return arg, None
    if int(tail) < 2:
        raise DataError(f"data: {kind}:{arg}: ':N' keeps N images; N must be >= 2")
    return head, int(tail)


def _subset(x: np.ndarray, y: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``limit`` images, each class keeping its share (largest remainders), in file order."""
    if limit >= len(y):
        return x, y
    classes, counts = np.unique(y, return_counts=True)
    quota = counts * (limit / len(y))
    take = np.floor(quota).astype(np.int64)
    take[np.argsort(take - quota, kind="stable")[:limit - int(take.sum())]] += 1
    rng = np.random.default_rng(SUBSET_SEED)
    index = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == label))[:count]
                                    for label, count in zip(classes, take)]))
    return x[index], y[index]
