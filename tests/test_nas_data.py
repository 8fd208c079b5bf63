"""Every data source reads real files written here, in the formats users actually have."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from effnas.nas.training.data import DataError, ImageData, load_data, to_device
from effnas.errors import EffnasError


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
    assert len(data.train_x) + len(data.val_x) == 1797
    assert int(data.train_x.max()) == 255  # 0..16 scaled to the full uint8 range
    counts = torch.bincount(data.val_y, minlength=10)
    assert int(counts.min()) >= 34 and int(counts.max()) <= 38  # about 20 % of each ~180-image class
    again, other = load_data("digits", seed=3), load_data("digits", seed=4)
    assert torch.equal(again.val_x, data.val_x) and torch.equal(again.val_y, data.val_y)
    assert not torch.equal(other.val_x, data.val_x)


def test_synthetic_is_deterministic_and_sized():
    a, b = load_data("synthetic:200x16"), load_data("synthetic:200x16")
    _assert_valid(a, 3, 16, 10)
    assert len(a.train_x) + len(a.val_x) == 200
    assert torch.equal(a.train_x, b.train_x)
    # Class patterns differ: the per-class mean images are far apart compared with pixel noise.
    means = torch.stack([a.train_x[a.train_y == c].float().mean(0) for c in range(10)])
    assert (means[0] - means[5]).abs().mean() > 10


@pytest.mark.parametrize("source", ["synthetic:5", "synthetic:abc", "synthetic:100x2", "mnist", "cifar", "",
                                    "digits:x"])
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
    _write_cifar_batch(root / "test_batch", 10, b"labels", 10, rng)  # never read: validation comes from train
    data = load_data(f"cifar:{tmp_path}", seed=0, val_fraction=0.25)  # parent folder also accepted
    _assert_valid(data, 3, 32, 10)
    assert len(data.train_x) + len(data.val_x) == 60
    # Pixel layout survives: every stored image is one of the written rows, reshaped to [3, 32, 32].
    written = {bytes(row) for b in batches for row in b[b"data"]}
    assert all(bytes(img.flatten().numpy()) in written for img in data.val_x)


def test_cifar100_train_file(tmp_path):
    _write_cifar_batch(tmp_path / "train", 120, b"fine_labels", 100, np.random.default_rng(1))
    data = load_data(f"cifar:{tmp_path}")
    _assert_valid(data, 3, 32, 100)


def test_cifar_rejects_foreign_pickles_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="no CIFAR-10"):
        load_data(f"cifar:{tmp_path}")
    with pytest.raises(DataError, match="no such file"):
        load_data(f"cifar:{tmp_path / 'nope'}")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "data_batch_1", "wb") as handle:
        pickle.dump({b"data": Evil(), b"labels": [0]}, handle)
    with pytest.raises(DataError, match="refusing to load builtins.print"):
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
    assert len(data.train_x) + len(data.val_x) == 9
    x = torch.cat([data.train_x, data.val_x]).float()
    y = torch.cat([data.train_y, data.val_y])
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
