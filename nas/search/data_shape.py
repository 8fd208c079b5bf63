"""What the search process needs to know of the data: its number of classes and image channels, which every
candidate's spec carries. The trials load the data themselves, in their workers; the search process reads only
what tells the shape, where the source can say without its images:

- ``digits``: the bundled set, always 10 classes of 1 channel;
- ``synthetic[:N[xS]]``: generated, always 10 classes of 3 channels (the argument is still checked);
- ``idx:DIR``: the labels file (a few bytes per image) and the images file's header, checked as a full read
  checks them.

Anything else (another source, a ``:N`` subset, an IDX set named by prefix, images that are not uint8, labels a
split would refuse), and any problem found on the way, falls back to :func:`~effnas.nas.training.data.load_data`,
which reads the whole set and fails with its own one-line message, before the search writes anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from effnas.errors import EffnasError
from effnas.nas.training.sources import SOURCES


@dataclass(frozen=True)
class DataShape:
    num_classes: int
    channels: int


def data_shape(source: str, seed: int, val_fraction: float, data_size: int) -> DataShape:
    """The classes and channels of ``source`` (the ``--data`` value), reading as little of it as it allows."""
    try:
        shape = _without_images(source)
    except EffnasError:  # load_data says what is wrong, in its own words
        shape = None
    if shape is not None:
        return shape
    from effnas.nas.training.data import load_data  # torch: only where the images must be read

    data = load_data(source, seed=seed, val_fraction=val_fraction, data_size=data_size)
    return DataShape(data.num_classes, data.channels)


def _without_images(source: str) -> DataShape | None:
    """The shape from constants or headers; None where the source cannot say it without its images."""
    from effnas.nas.training import readers

    kind, _, arg = source.strip().partition(":") if isinstance(source, str) else ("", "", "")
    kind = kind.lower()
    if kind == "digits" and not arg:
        return DataShape(10, SOURCES[kind].channels)
    if kind == "synthetic":
        readers.synthetic_shape(arg)  # a bad argument or a set too big: raises, and load_data words it
        return DataShape(readers.SYNTHETIC_CLASSES, SOURCES[kind].channels)
    if kind == "idx" and arg and Path(arg).expanduser().is_dir():  # no ':N' subset, no prefix: a plain folder
        return _idx_shape(Path(arg).expanduser(), readers)
    return None


def _idx_shape(path: Path, readers) -> DataShape | None:
    """An IDX training set's shape from its labels and the images file's header (``idx._read_pair``'s checks)."""
    from effnas.nas.training import idx

    images_file, labels_file = idx.find_training_pair(path)
    images_header, labels_header = idx.read_header(images_file), idx.read_header(labels_file)
    if (len(images_header.shape), len(labels_header.shape)) != (3, 1) or images_header.dtype != np.uint8 \
            or images_header.shape[0] != labels_header.shape[0]:
        return None
    labels, num_classes = readers.check_labels(idx.read_idx(labels_file, labels_header), labels_header.shape[0],
                                               f"idx: {labels_file}")
    counts = np.unique(labels, return_counts=True)[1]
    if len(counts) < 2 or counts.max() < 2:  # a split would refuse it: load_data says so
        return None
    return DataShape(num_classes, SOURCES["idx"].channels)
