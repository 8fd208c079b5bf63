"""Every data source reads real files written here, in the formats users actually have."""

import gzip
import os
import pickle
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from effnas.nas.training.data import DataError, ImageData, load_data, to_device
from effnas.errors import EffnasError



def _every_image(data) -> tuple[torch.Tensor, torch.Tensor]:
    """Train, validation and test images and labels together: a split loses or invents none."""
    test_x, test_y = data.test_split()
    return torch.cat([data.train_x, data.val_x, test_x]), torch.cat([data.train_y, data.val_y, test_y])


def _count(data) -> int:
    return len(_every_image(data)[1])

def _assert_valid(data: ImageData, channels: int, size: int, classes: int) -> None:
    for x, y in ((data.train_x, data.train_y), (data.val_x, data.val_y)):
        assert x.dtype == torch.uint8 and y.dtype == torch.int64
        assert x.shape[1:] == (channels, size, size) and len(x) == len(y) > 0
        assert 0 <= int(y.min()) and int(y.max()) < classes
    assert data.num_classes == classes


# ----------------------------------------------------------------------------- digits / synthetic
def test_digits_stratified_split_fixed_by_seed():
    data = load_data("digits", seed=3, val_fraction=0.2)
    _assert_valid(data, 1, 8, 10)
    assert _count(data) == 1797
    assert int(data.train_x.max()) == 255  # 0..16 scaled to the full uint8 range
    counts = torch.bincount(data.val_y, minlength=10)
    # 15 % of each ~180-image class is held out as the test split, then 20 % of the rest validates
    assert int(counts.min()) >= 29 and int(counts.max()) <= 32
    test_counts = torch.bincount(data.test_split()[1], minlength=10)
    assert int(test_counts.min()) >= 26 and int(test_counts.max()) <= 28
    assert torch.equal(load_data("digits", seed=4).test_split()[0], data.test_split()[0])  # whatever the seed
    again, other = load_data("digits", seed=3), load_data("digits", seed=4)
    assert torch.equal(again.val_x, data.val_x) and torch.equal(again.val_y, data.val_y)
    assert not torch.equal(other.val_x, data.val_x)


def test_synthetic_is_deterministic_and_sized():
    a, b = load_data("synthetic:200x16"), load_data("synthetic:200x16")
    _assert_valid(a, 3, 16, 10)
    assert _count(a) == 200
    assert torch.equal(a.train_x, b.train_x)
    # Class patterns differ: the per-class mean images are far apart compared with pixel noise.
    means = torch.stack([a.train_x[a.train_y == c].float().mean(0) for c in range(10)])
    assert (means[0] - means[5]).abs().mean() > 10


@pytest.mark.parametrize("source", ["synthetic:5", "synthetic:abc", "synthetic:100x2", "mnist", "cifar", "",
                                    "digits:x", "idx", "idx:/no/such/dir", "npz:/no/such.npz:100"])
def test_bad_sources_raise_one_line_data_errors(source):
    with pytest.raises(DataError) as info:
        load_data(source)
    assert isinstance(info.value, EffnasError) and "\n" not in str(info.value)


def test_bad_val_fraction():
    with pytest.raises(DataError, match="val_fraction"):
        load_data("digits", val_fraction=1.0)


# ----------------------------------------------------------------------------- CIFAR pickles
def _write_cifar_batch(path, count, labels_key, classes, rng):
    # The official batches: a pickled dict with bytes keys, 'data' uint8 [N, 3072] (R, G, B planes).
    batch = {b"batch_label": b"training batch", labels_key: rng.integers(0, classes, count).tolist(),
             b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
             b"filenames": [b"img_%d.png" % i for i in range(count)]}
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=2)
    return batch


def test_cifar10_batches(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    batches = [_write_cifar_batch(root / f"data_batch_{i}", 30, b"labels", 10, rng) for i in (1, 2)]
    test = _write_cifar_batch(root / "test_batch", 10, b"labels", 10, rng)  # the test split: validation is train's
    data = load_data(f"cifar:{tmp_path}", seed=0, val_fraction=0.25)  # parent folder also accepted
    _assert_valid(data, 3, 32, 10)
    assert len(data.train_x) + len(data.val_x) == 60
    # Pixel layout survives: every stored image is one of the written rows, reshaped to [3, 32, 32].
    written = {bytes(row) for b in batches for row in b[b"data"]}
    assert all(bytes(img.flatten().numpy()) in written for img in data.val_x)
    test_x, test_y = data.test_split()
    assert data.test_origin == "the source's own test files" and test_y.tolist() == test[b"labels"]
    assert [bytes(img.flatten().numpy()) for img in test_x] == [bytes(row) for row in test[b"data"]]


def test_npz_and_imagefolder_bring_their_own_test_split(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (40, 6, 6), dtype=np.uint8), np.arange(40) % 4
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x[:8], y_test=y[:8])
    data = load_data(f"npz:{tmp_path / 'd.npz'}")
    assert _count(data) == 48 and torch.equal(data.test_split()[1], torch.from_numpy(y[:8]).long())
    for split, count in (("train", 3), ("test", 2)):
        for name in ("cat", "dog"):
            (tmp_path / "photos" / split / name).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 255, (9, 9, 3), dtype=np.uint8)).save(
                    tmp_path / "photos" / split / name / f"{i}.png")
    photos = load_data(f"imagefolder:{tmp_path / 'photos'}", data_size=8)
    assert photos.num_classes == 2 and len(photos.train_y) + len(photos.val_y) == 6
    assert photos.test_origin == "the source's own test files" and photos.test_split()[1].tolist() == [0, 0, 1, 1]


def test_cifar100_train_file(tmp_path):
    _write_cifar_batch(tmp_path / "train", 120, b"fine_labels", 100, np.random.default_rng(1))
    data = load_data(f"cifar:{tmp_path}")
    _assert_valid(data, 3, 32, 100)


def test_cifar_rejects_foreign_pickles_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="no CIFAR-10"):
        load_data(f"cifar:{tmp_path}")
    with pytest.raises(DataError, match="no such file"):
        load_data(f"cifar:{tmp_path / 'nope'}")

    class Evil:  # os.system, not print: a Ray imported by an earlier test replaces builtins.print
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "data_batch_1", "wb") as handle:
        pickle.dump({b"data": Evil(), b"labels": [0]}, handle)
    with pytest.raises(DataError, match=r"refusing to load (posix|os)\.system"):
        load_data(f"cifar:{tmp_path}")


# ----------------------------------------------------------------------------- image folders
def test_imagefolder_with_truncated_file(tmp_path):
    rng = np.random.default_rng(2)
    for name, colour in (("cat", 0), ("dog", 2)):
        folder = tmp_path / name
        folder.mkdir()
        for i in range(4):
            pixels = rng.integers(0, 60, (20 + i, 24, 3), dtype=np.uint8)
            pixels[..., colour] += 190
            Image.fromarray(pixels).save(folder / f"{i}.png")
    Image.fromarray(np.zeros((10, 10), np.uint8), mode="L").save(tmp_path / "dog" / "gray.png")  # -> RGB
    good = (tmp_path / "cat" / "0.png").read_bytes()
    (tmp_path / "cat" / "broken.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "cat" / "notes.txt").write_text("not an image, ignored")
    with pytest.warns(UserWarning, match="broken.png"):
        data = load_data(f"imagefolder:{tmp_path}", val_fraction=0.25, data_size=12)
    _assert_valid(data, 3, 12, 2)
    assert _count(data) == 9
    x, y = _every_image(data)
    x = x.float()
    # Sorted class names give labels: cat = 0 (red images), dog = 1 (blue images, plus one black).
    assert x[y == 0][:, 0].mean() > 150 and x[y == 1][:, 2].mean() > 100


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError, match="no class sub-folders"):
        load_data(f"imagefolder:{tmp_path}")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a" / "x.png")
    with pytest.raises(DataError, match="class folder has no readable images"):
        load_data(f"imagefolder:{tmp_path}")


# ----------------------------------------------------------------------------- npz
@pytest.mark.parametrize("shape,channels", [((40, 9, 9), 1), ((40, 9, 9, 3), 3), ((40, 3, 9, 9), 3)])
def test_npz_layouts(tmp_path, shape, channels):
    rng = np.random.default_rng(3)
    x = rng.random(shape, dtype=np.float32)  # floats in [0, 1] are scaled to 0..255
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(40) % 4)
    data = load_data(f"npz:{tmp_path / 'd.npz'}")
    _assert_valid(data, channels, 9, 4)
    assert int(data.train_x.max()) > 200


@pytest.mark.parametrize("arrays,message", [
    (dict(x=np.zeros((10, 4, 4), np.uint8), y=np.array([0, 1] * 4 + [-1, 0])), "labels must be in"),
    (dict(x=np.zeros((10, 4, 4), np.uint8), y=np.arange(9) % 2), "10 images but 9 labels"),
    (dict(x=np.zeros((10, 4, 4), np.uint8), y=np.full(10, 0.5)), "labels must be integers"),
    (dict(x=np.zeros((10, 4, 4), np.uint8), y=np.zeros(10, int)), "at least 2"),
    (dict(x=np.zeros((0, 4, 4), np.uint8), y=np.zeros(0, int)), "empty"),
    (dict(x=np.full((10, 4, 4), 300.0), y=np.arange(10) % 2), "pixel values"),
    (dict(x=np.zeros((10, 4, 4), np.uint8)), "missing array 'y'"),
    (dict(x=np.zeros((10, 8, 8, 8), np.uint8), y=np.arange(10) % 2), "channel axis"),
])
def test_npz_errors(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_data(f"npz:{tmp_path / 'd.npz'}")


def test_npz_not_a_zip(tmp_path):
    (tmp_path / "d.npz").write_text("hello")
    with pytest.raises(DataError, match="not a readable"):
        load_data(f"npz:{tmp_path / 'd.npz'}")


# ----------------------------------------------------------------------------- IDX (the MNIST family)
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


def _idx_bytes(array: np.ndarray, shape: tuple[int, ...] | None = None, magic: bytes | None = None) -> bytes:
    """An IDX file as published: 0x0000, type 0x08 (ubyte), dimension count, big-endian sizes, data."""
    shape = array.shape if shape is None else shape
    header = magic or bytes([0, 0, 0x08, len(shape)])
    return header + struct.pack(f">{len(shape)}I", *shape) + array.astype(np.uint8).tobytes()


def _write_idx(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def _write_set(folder: Path, images: np.ndarray, labels: np.ndarray, prefix: str = "", suffix: str = "",
               split: str = "train") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _write_idx(folder / f"{prefix}{split}-images-idx3-ubyte{suffix}", _idx_bytes(images))
    _write_idx(folder / f"{prefix}{split}-labels-idx1-ubyte{suffix}", _idx_bytes(labels))


def _digit_like(count: int = 40, height: int = 6, width: int = 5, classes: int = 4, seed: int = 5):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, height, width), dtype=np.uint8), np.arange(count, dtype=np.uint8) % classes


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip_reads_only_the_training_files(tmp_path, suffix):
    images, labels = _digit_like(height=7, width=7)
    _write_set(tmp_path, images, labels, suffix=suffix)
    _write_set(tmp_path, np.full((10, 7, 7), 255, np.uint8), np.full(10, 9, np.uint8), split="t10k", suffix=suffix)
    data = load_data(f"idx:{tmp_path}", val_fraction=0.25)
    _assert_valid(data, 1, 7, 4)  # one channel, nothing replicated to RGB; the t10k label 9 never seen
    assert len(data.train_x) + len(data.val_x) == 40
    written = {bytes(image) + bytes([label]) for image, label in zip(images.reshape(40, -1), labels)}
    for x, y in ((data.train_x, data.train_y), (data.val_x, data.val_y)):
        assert {bytes(i.flatten().numpy()) + bytes([int(l)]) for i, l in zip(x, y)} <= written


def test_idx_emnist_names_are_transposed_back_and_pick_a_set(tmp_path):
    images, labels = _digit_like(height=6, width=5)  # not square: a missed transpose changes the shape
    stored = images.transpose(0, 2, 1)  # EMNIST writes each image column by column
    _write_set(tmp_path / "gzip", stored, labels, prefix="emnist-letters-", suffix=".gz")
    _write_set(tmp_path / "gzip", stored[:20], labels[:20] % 2, prefix="emnist-digits-", suffix=".gz")
    with pytest.raises(DataError, match=r"several IDX training sets \(emnist-digits, emnist-letters\)"):
        load_data(f"idx:{tmp_path}")  # the archive's gzip/ folder is looked into, as CIFAR's is
    data = load_data(f"idx:{tmp_path / 'gzip' / 'emnist-letters'}", val_fraction=0.25)
    assert data.train_x.shape[1:] == (1, 6, 5) and data.num_classes == 4
    x = _every_image(data)[0][:, 0].numpy()
    assert {bytes(image) for image in x} == {bytes(image) for image in images}


def test_idx_subset_keeps_class_shares_whatever_the_seed(tmp_path):
    images, labels = _digit_like(count=200, classes=4)
    labels[:50] = 0  # classes hold 87, 37, 38, 38 of the 200 images
    _write_set(tmp_path, images, labels)
    data = load_data(f"idx:{tmp_path}:50", seed=1)
    y = _every_image(data)[1]
    assert len(y) == 50 and torch.bincount(y).tolist() == [22, 9, 10, 9]  # 21.75, 9.25, 9.5, 9.5: largest remainders
    other = load_data(f"idx:{tmp_path}:50", seed=2)
    assert sorted(bytes(i.flatten().numpy()) for i in _every_image(data)[0]) == \
        sorted(bytes(i.flatten().numpy()) for i in _every_image(other)[0])
    assert _count(load_data(f"idx:{tmp_path}:5000")) == 200
    np.savez(tmp_path / "d.npz", x=images, y=labels)
    subset = load_data(f"npz:{tmp_path / 'd.npz'}:20")  # every file source takes ':N'
    assert _count(subset) == 20
    with pytest.raises(DataError, match="N must be >= 2"):
        load_data(f"idx:{tmp_path}:1")


def _hostile(tmp_path: Path, case: str) -> str:
    """Write a training pair broken in one way; returns the name of the file the error must name."""
    images, labels = _digit_like()
    image_file, label_file = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
    good_images, good_labels = _idx_bytes(images), _idx_bytes(labels)
    files = {image_file: good_images, label_file: good_labels}
    if case == "10^12 elements":
        files[image_file] = _idx_bytes(images[:1], shape=(10 ** 6, 10 ** 3, 10 ** 3))
    elif case == "gzip claims gigabytes":
        image_file += ".gz"
        files = {image_file: _idx_bytes(images[:1], shape=(4000, 1000, 1000)), label_file: good_labels}
    elif case == "truncated":
        files[image_file] = good_images[:-7]
    elif case == "truncated gzip":
        image_file += ".gz"
        files = {image_file: good_images, label_file: good_labels}
    elif case == "trailing bytes":
        files[image_file] = good_images + b"\0"
    elif case == "gzip holds more than claimed":
        image_file += ".gz"  # decompression stops at the claim plus one byte, however much follows
        files = {image_file: good_images + bytes(50_000_000), label_file: good_labels}
    elif case == "wrong magic":
        files[label_file] = b"\x1f\x00" + good_labels[2:]
    elif case == "unknown type":
        files[image_file] = bytes([0, 0, 0x07, 3]) + good_images[4:]
    elif case == "count mismatch":
        files[label_file] = _idx_bytes(labels[:39])
    elif case == "labels with 3 dimensions":
        files[label_file] = _idx_bytes(images)
    for name, data in files.items():
        payload = gzip.compress(data) if name.endswith(".gz") else data
        if case == "truncated gzip" and name == image_file:
            payload = payload[: len(payload) // 2]
        (tmp_path / name).write_bytes(payload)
    return label_file if case in ("wrong magic", "count mismatch", "labels with 3 dimensions") else image_file


@pytest.mark.parametrize("case, message", [
    ("10^12 elements", "more than the 8 GiB"),
    ("gzip claims gigabytes", "more than a .*-byte gzip file can hold"),
    ("truncated", "truncated"),
    ("truncated gzip", "truncated"),
    ("trailing bytes", "trailing bytes"),
    ("gzip holds more than claimed", "trailing bytes"),
    ("wrong magic", "not an IDX file"),
    ("unknown type", "not an IDX file"),
    ("count mismatch", "39 labels for the 40 images"),
    ("labels with 3 dimensions", "expected 1 dimension"),
])
def test_idx_hostile_files_are_refused_in_one_line_before_allocating(tmp_path, case, message):
    name = _hostile(tmp_path, case)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=message) as info:
            load_data(f"idx:{tmp_path}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "\n" not in str(info.value) and name in str(info.value)
    assert peak < 20 << 20  # nothing sized by the header's claim was allocated


def test_idx_missing_partner_file(tmp_path):
    images, _ = _digit_like()
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", _idx_bytes(images))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: no matching train-labels file"):
        load_data(f"idx:{tmp_path}")
    with pytest.raises(DataError, match="no train-images-idx3-ubyte"):
        load_data(f"idx:{tmp_path / 'emnist-balanced'}")


@pytest.mark.skipif(not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist():
    from effnas.nas.training.idx import read_idx

    data = load_data(f"idx:{FASHION_MNIST}")
    _assert_valid(data, 1, 28, 10)
    assert (len(data.train_x), len(data.val_x)) == (48_000, 12_000)  # 60,000 training images, 20 % held out
    assert torch.bincount(data.val_y).tolist() == [1_200] * 10  # 6,000 of each class
    assert data.test_origin == "the source's own test files"
    assert read_idx(FASHION_MNIST / "t10k-images-idx3-ubyte.gz").shape == (10_000, 28, 28)
    assert torch.equal(data.test_split()[0][:, 0], torch.from_numpy(read_idx(FASHION_MNIST / "t10k-images-idx3-ubyte.gz")))
    assert np.bincount(read_idx(FASHION_MNIST / "t10k-labels-idx1-ubyte.gz")).tolist() == [1_000] * 10
    small = load_data(f"idx:{FASHION_MNIST}:2000")
    assert len(small.train_x) + len(small.val_x) == 2000 and small.test_split()[0].shape[0] == 10_000 and torch.bincount(small.val_y).tolist() == [40] * 10


# ----------------------------------------------------------------------------- to_device
def test_to_device_resizes_and_normalises():
    data = load_data("synthetic:100x16")
    up = to_device(data, 24, "cpu")
    assert up.train_x.shape == (len(data.train_x), 3, 24, 24) and up.train_x.dtype == torch.float32
    assert torch.allclose(up.train_x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(up.train_x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)
    assert up.val_x.shape[1:] == (3, 24, 24) and torch.equal(up.val_y, data.val_y)
    down = to_device(data, 8, "cpu", chunk=7)  # chunked antialiased shrink equals one-shot
    one = to_device(data, 8, "cpu")
    assert torch.allclose(down.train_x, one.train_x, atol=1e-5) and down.channels == 3
