"""`nas train`'s defaults learn on small data: a short run on digits ends well above chance, and a searched
winner trained for its proxy's epochs is at least as accurate as its proxy trial measured."""

from __future__ import annotations

import json

import pytest

import effnas
from effnas.nas.training.train import TrainConfig, effective_recipe, train
from effnas.search_space import load_arch, spec_from_dict

SMALL = {"stem_channels": 16, "head_channels": 128, "train_image_size": 16, "eval_image_size": 16, "name": "small",
         "stages": ["r1_k3_s1_e1_i16_o16_c1", "r2_k3_s2_e4_i16_o32_c1", "r2_k3_s2_e4_i32_o48_se0.25"]}
NO_AUGMENTATION = {"randaug": (0.0, 0.0), "mixup": (0.0, 0.0), "flip": False}
SPACE = {"width": 0.25, "depth": 0.25, "image_size": 32, "head_channels": 64}


def quiet(*_: object) -> None:
    pass


@pytest.mark.slow
def test_a_small_net_reaches_90_percent_on_digits_within_8_epochs_with_the_defaults(tmp_path):
    metrics = train(spec_from_dict(SMALL), TrainConfig(data="digits", epochs=8, **NO_AUGMENTATION), tmp_path,
                    device="cpu", progress=False, log=quiet)
    assert metrics["top1"] >= 0.90, metrics["top1"]


def test_the_defaults_adapt_to_the_data_size_and_the_run_length():
    small, small_scale = effective_recipe(TrainConfig(epochs=8), train_images=1_149)
    tiny, _ = effective_recipe(TrainConfig(epochs=8), train_images=300)
    large, large_scale = effective_recipe(TrainConfig(epochs=100), train_images=60_000)
    assert small.batch_size == 64 and small.stages == 4 and small_scale < 0.05
    assert tiny.batch_size == 16  # halved until an epoch has enough steps
    assert small.label_smoothing < 0.01 and small.crop_min_area > 0.95
    assert large.batch_size == 64 and large_scale == 1.0
    assert large.label_smoothing == 0.1 and large.crop_min_area == 0.5
    chosen, _ = effective_recipe(TrainConfig(epochs=2, batch_size=64, label_smoothing=0.2), train_images=1_149)
    assert chosen.batch_size == 64 and chosen.label_smoothing == 0.2 and chosen.stages == 2  # the user's choices stay


@pytest.mark.slow
def test_a_searched_winner_trained_for_its_proxy_epochs_is_as_accurate_as_its_proxy(tmp_path):
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    run = tmp_path / "run"
    effnas.search(budget=1, controller="random", space=str(space), data="digits", epochs=3, workers=1, threads=1,
                  device="cpu", out=run, quiet=True)  # in this process: its workers' server is the suite's
    proxy_accuracy = json.loads((run / "best.json").read_text())["metrics"]["accuracy"]
    metrics = train(load_arch(run), TrainConfig(data="digits", epochs=3, **NO_AUGMENTATION), tmp_path / "train",
                    device="cpu", progress=False, log=quiet)
    assert metrics["top1"] >= proxy_accuracy, (metrics["top1"], proxy_accuracy)
