"""A controller and a data source are each one registry entry: a toy of each, registered here and in no other
file, shows in the commands' --help and runs a 1-trial search."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest

from effnas.nas.cli.main import main
from effnas.nas.search.backends.local import LocalBackend
from effnas.nas.search.controllers import CONTROLLERS, register_controller
from effnas.nas.search.controllers.base import SpaceSampler
from effnas.nas.search.session import Search
from effnas.nas.search.settings import SearchConfig, SearchRecipe, SearchRuntime, build_space
from effnas.nas.training.recipe import flips_by_default
from effnas.nas.training.sources import SOURCES, DataSource, register_source

TOY_CONTROLLER, TOY_SOURCE = "toy-first", "toy-bars"
SPACE = {"width": 0.25, "depth": 0.25, "image_size": 32, "head_channels": 16}


class FirstChoice(SpaceSampler):
    """Proposes every decision's first choice: the smallest controller there is."""

    def propose(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict:
        return {name: distribution.choices[0] for name, distribution in self.space.distributions().items()}


def bars(argument: str, data_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """60 grayscale 8-px images: a horizontal bar (class 0) or a vertical one (class 1) at a random place."""
    rng = np.random.default_rng(0)
    x = np.zeros((60, 1, 8, 8), dtype=np.uint8)
    y = np.arange(60, dtype=np.int64) % 2
    for index, (label, place) in enumerate(zip(y, rng.integers(0, 8, 60))):
        if label:
            x[index, 0, :, place] = 255
        else:
            x[index, 0, place, :] = 255
    return x, y, 2


def register_toys() -> None:
    """The two registry lines a new controller and a new source take (once per process)."""
    if TOY_CONTROLLER not in CONTROLLERS:
        register_controller(TOY_CONTROLLER, about="every decision's first choice")(
            lambda space, seed: FirstChoice(space, seed))
    if TOY_SOURCE not in SOURCES:
        register_source(DataSource(TOY_SOURCE, bars, takes_path=False, channels=1, flips=False))


def run_toy_trial(spec: dict, settings: dict, seed: int) -> dict:
    """The trial a worker runs: worker processes start fresh, so they register the toys as a plug-in's module
    would be imported there."""
    from effnas.nas.search.trial import run_trial

    register_toys()
    return run_trial(spec, settings, seed)


@pytest.fixture
def toys():
    register_toys()
    yield
    CONTROLLERS.pop(TOY_CONTROLLER)
    SOURCES.pop(TOY_SOURCE)


def help_of(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare words


def test_toys_show_in_help(toys, capsys):
    search = help_of("search", capsys)
    assert f"{TOY_CONTROLLER} every decision's first choice" in search and f"| {TOY_SOURCE};" in search
    assert "idx:DIR[:N]" in search and "takes :N for a stratified subset" in search
    for command in ("train", "compare"):
        text = help_of(command, capsys)
        assert f"| {TOY_SOURCE};" in text and "idx:DIR[:N]" in text and "takes :N" in text
    assert not flips_by_default(TOY_SOURCE) and flips_by_default("cifar:x") and not flips_by_default("idx:x")


@pytest.mark.slow  # a whole search
def test_toys_run_a_one_trial_search(toys, tmp_path):
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    recipe = SearchRecipe(controller=TOY_CONTROLLER, space=str(space),
                          trial={"data": TOY_SOURCE, "epochs": 1, "batch_size": 16})
    runtime = SearchRuntime(out=str(tmp_path / "run"), budget=1, workers=1, threads=1, device="cpu", progress=False)
    summary = Search(SearchConfig(recipe, runtime)).run(LocalBackend(function=f"{__name__}:run_toy_trial"))
    assert summary.counted == 1 and summary.best is not None
    study = optuna.load_study(study_name="effnas", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    (trial,) = study.trials
    assert trial.params == {name: d.choices[0] for name, d in build_space(str(space), None).distributions().items()}
    assert trial.user_attrs["spec"]["image_channels"] == 1 and trial.user_attrs["spec"]["num_classes"] == 2
