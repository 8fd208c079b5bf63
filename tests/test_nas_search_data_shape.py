"""The search process reads the data's classes and channels without its images where the source can say (digits,
synthetic, an IDX folder), the same numbers a full load gives, and loads the rest (which also words any error)."""

import gzip

import numpy as np
import pytest

from effnas.nas.search.data_shape import DataShape, data_shape
from effnas.nas.training import data as data_module
from effnas.nas.training.data import load_data
from effnas.nas.training.readers import DataError


def _idx(path, array, gz):
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    with (gzip.open if gz else open)(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(params=[False, True], ids=["plain", "gzip"])
def idx_folder(tmp_path, request):
    suffix = ".gz" if request.param else ""
    images = np.random.default_rng(0).integers(0, 256, (40, 6, 6))
    _idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, request.param)
    _idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", np.arange(40) % 7, request.param)
    return tmp_path


def _without_loading(monkeypatch):
    monkeypatch.setattr(data_module, "load_data", lambda *a, **k: pytest.fail("the whole data set was loaded"))


def test_digits_synthetic_and_idx_are_read_without_their_images(monkeypatch, idx_folder):
    sources = ["digits", "synthetic", "synthetic:40x8", f"idx:{idx_folder}"]
    loaded = {source: load_data(source) for source in sources}
    _without_loading(monkeypatch)
    for source in sources:
        assert data_shape(source, 0, 0.2, 64) == DataShape(loaded[source].num_classes, loaded[source].channels)


def test_a_subset_or_another_source_is_loaded(idx_folder, tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((20, 5, 5, 3), np.uint8), y=np.arange(20) % 4)
    assert data_shape(f"idx:{idx_folder}:20", 0, 0.2, 64) == DataShape(7, 1)
    assert data_shape(f"npz:{tmp_path / 'd.npz'}", 0, 0.2, 64) == DataShape(4, 3)


@pytest.mark.parametrize("source, message", [("synthetic:3", "need N >= 20"), ("digits:1", "unknown source"),
                                             ("nope", "unknown source")])
def test_a_bad_source_is_load_datas_one_line_error(source, message):
    with pytest.raises(DataError, match=message):
        data_shape(source, 0, 0.2, 64)


def test_idx_labels_a_split_would_refuse_are_loaded_and_refused(tmp_path):
    _idx(tmp_path / "train-images-idx3-ubyte", np.zeros((5, 4, 4)), False)
    _idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5), False)  # one class
    with pytest.raises(DataError, match="only 1 class"):
        data_shape(f"idx:{tmp_path}", 0, 0.2, 64)
