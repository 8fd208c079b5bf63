"""effnas.load: a training run, its final.pt or a spec without weights back as a module in eval mode, with the
preprocessing its own evaluation used; a path that holds none of these is one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import effnas
from effnas.errors import EffnasError
from effnas.inference import LoadError, Preprocessing

TINY = {"stem_channels": 8, "head_channels": 32, "train_image_size": 16, "eval_image_size": 16, "name": "tiny",
        "stages": ["r1_k3_s1_e1_i8_o8_c1", "r1_k3_s2_e2_i8_o16_se0.25"]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny network trained for one epoch on digits (shared by the export tests too)."""
    folder = tmp_path_factory.mktemp("trained")
    spec = folder / "tiny.json"
    spec.write_text(json.dumps(TINY))
    result = effnas.train(spec, data="digits", epochs=1, batch_size=64, out=folder / "run", device="cpu",
                          threads=1, quiet=True)
    return result


def test_a_training_run_loads_with_its_weights_and_its_own_evaluation(trained):
    from effnas.nas.training.augment import channel_stats, eval_batch
    from effnas.nas.training.data import load_data

    loaded = effnas.load(trained.run_dir)
    model, preprocess = loaded  # unpacks
    assert loaded.trained and not model.training and loaded.data == "digits"
    assert preprocess.image_size == trained.metrics["eval_image_size"] == 16 and preprocess.channels == 1
    data = load_data("digits")
    mean, std = channel_stats(data.train_x)
    assert preprocess.mean == pytest.approx(tuple(mean.tolist())) and preprocess.std == pytest.approx(tuple(std.tolist()))
    images = data.val_x[:64]
    assert torch.allclose(preprocess(images), eval_batch(images, 16, mean, std), atol=1e-6)
    # the run's own validation top-1, from the EMA weights, is what these weights score
    with torch.no_grad():
        correct = (model(eval_batch(data.val_x, 16, mean, std)).argmax(1) == data.val_y).float().mean().item()
    assert correct == pytest.approx(trained.metrics["top1"], abs=1e-6)
    same = effnas.load(trained.run_dir / "final.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), same.model.state_dict().values()))
    assert torch.equal(loaded.predict(images), same.predict(images.numpy()))  # arrays as tensors
    assert torch.equal(loaded.predict(images[:, 0]), loaded.predict(images))  # [N, H, W] for one channel


def test_a_spec_without_weights_loads_freshly_initialised(tmp_path):
    (tmp_path / "spec.json").write_text(json.dumps(TINY))
    loaded = effnas.load(tmp_path / "spec.json")
    assert not loaded.trained and not loaded.model.training
    assert loaded.preprocessing == Preprocessing(16, 3, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert loaded.predict(np.zeros((2, 3, 20, 20), dtype=np.uint8)).shape == (2,)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "best.json").write_text(json.dumps({"spec": TINY, "metrics": {}}))
    assert effnas.load(tmp_path / "run").spec.name == "tiny"
    assert effnas.load("resnet20").spec.name == "resnet20"


def test_an_unfinished_run_points_to_its_checkpoint(trained, tmp_path):
    folder = tmp_path / "unfinished"
    folder.mkdir()
    shutil.copy(trained.run_dir / "last.pt", folder / "last.pt")
    with pytest.raises(LoadError, match="no final.pt yet"):
        effnas.load(folder)
    assert effnas.load(folder / "last.pt").trained


def test_moved_training_data_is_one_line_naming_the_way_out(trained, tmp_path):
    state = torch.load(trained.run_dir / "final.pt", weights_only=True)
    state["config"]["data"] = f"idx:{tmp_path / 'gone'}"
    torch.save(state, tmp_path / "final.pt")
    with pytest.raises(LoadError, match="give data=SOURCE") as error:
        effnas.load(tmp_path / "final.pt")
    assert "\n" not in str(error.value)
    assert effnas.load(tmp_path / "final.pt", data="digits").preprocessing == effnas.load(trained.run_dir).preprocessing


@pytest.mark.parametrize("make", ["missing", "empty-dir", "text", "torch-file", "bad-json"])
def test_what_holds_no_network_is_a_one_line_error(tmp_path, make):
    path = {"missing": tmp_path / "nope" / "final.pt", "empty-dir": tmp_path, "text": tmp_path / "notes.txt",
            "torch-file": tmp_path / "other.pt", "bad-json": tmp_path / "spec.json"}[make]
    if make == "text":
        path.write_text("hello\n")
    elif make == "torch-file":
        torch.save({"weights": torch.zeros(2)}, path)
    elif make == "bad-json":
        path.write_text("{not json")
    with pytest.raises(EffnasError) as error:
        effnas.load(path)
    assert "\n" not in str(error.value)


def test_images_of_the_wrong_shape_are_one_line(tmp_path):
    prep = Preprocessing(16, 1, (0.5,), (0.2,))
    with pytest.raises(LoadError, match=r"expected \[N, 1, H, W\]"):
        prep(np.zeros((2, 3, 8, 8), dtype=np.uint8))
    assert prep.resize(np.full((2, 8, 8), 255, dtype=np.uint8)).max().item() == pytest.approx(1.0)
