"""Reading studies back: locations, errors, the trials table, and queries on it.

``make_run`` writes a real Optuna SQLite study in the run-directory format the search runner uses:
real specs (a width-reduced EfficientNetV2-S with per-stage choices), real parameter counts from
``build_model``; accuracy and step time are drawn at random, since this tests reading, not training.
"""

from __future__ import annotations

import atexit
import math
import random
import shutil
import sqlite3
import tempfile
from pathlib import Path

import optuna
import pytest

from effnas.models import build_model
from effnas.search_space import get_spec
from effnas.results import (ResultsError, best_by_reward, best_under, choice_frequencies, completed, open_study,
                     spec_of, state_counts, study_info, top_trials, trial_row, trials_frame)
from effnas.search_space import scale_uniform
from effnas.search_space import ArchSpec, StageSpec, spec_from_dict

optuna.logging.set_verbosity(optuna.logging.WARNING)

CHOICES = {"op": ("mbconv", "fused"), "kernel": (3, 5), "expand": (1, 4, 6), "layers": (1, 2, 3), "se": (0.0, 0.25)}
FIELD = {"op": "op", "kernel": "kernel", "expand": "expand_ratio", "layers": "layers", "se": "se_ratio"}
_PARAM_CACHE: dict[ArchSpec, int] = {}


def backbone() -> ArchSpec:
    return scale_uniform(get_spec("efficientnetv2-s", num_classes=10), 0.25, 0.25, name="proxy",
                         train_image_size=32, eval_image_size=32, progressive=None)


def spec_from_params(base: ArchSpec, params: dict) -> ArchSpec:
    stages = []
    for i, stage in enumerate(base.stages):
        values = {FIELD[kind]: params[f"s{i}_{kind}"] for kind in CHOICES}
        stages.append(StageSpec(stride=stage.stride, in_channels=stage.in_channels,
                                out_channels=stage.out_channels, **values))
    return base.replace(stages=tuple(stages))


def count_params(spec: ArchSpec) -> int:
    if spec not in _PARAM_CACHE:
        _PARAM_CACHE[spec] = sum(p.numel() for p in build_model(spec).parameters())
    return _PARAM_CACHE[spec]


def make_run(root: Path, trials: int = 24, failed: int = 3, interrupted: int = 1, multi: bool = False,
             seed: int = 0, name: str = "run") -> Path:
    """A run directory with ``study.db`` holding completed, failed and interrupted trials."""
    rng = random.Random(seed)
    run = root / name
    run.mkdir(parents=True, exist_ok=True)
    base = backbone()
    directions = ["maximize", "minimize", "minimize"] if multi else ["maximize"]
    study = optuna.create_study(storage=f"sqlite:///{run / 'study.db'}", study_name="effnas", directions=directions)
    ref = {"accuracy": 0.8, "step_time_ms": 10.0, "params": count_params(base)}
    study.set_user_attr("settings", {"controller": "nsga2" if multi else "tpe", "budget": trials, "data": "digits",
                                     "image_size": 32, "epochs": 1, "seed": seed})
    study.set_user_attr("reference", ref)
    stage_count = len(base.stages)
    distributions = {f"s{i}_{kind}": optuna.distributions.CategoricalDistribution(values)
                     for i in range(stage_count) for kind, values in CHOICES.items()}
    for number in range(trials + failed + interrupted):
        params = {name: rng.choice(dist.choices) for name, dist in distributions.items()}
        spec = spec_from_params(base, params)
        attrs = {"spec": spec.to_dict(), "engine": "eager"}
        if number < trials:
            size = count_params(spec)
            accuracy = round(rng.uniform(0.5, 0.99), 2)  # rounded: ties happen
            step = round(5 + size / 2e4 * rng.uniform(0.5, 1.5), 1)
            reward = accuracy * (step / ref["step_time_ms"]) ** -0.07 * (size / ref["params"]) ** -0.05
            attrs.update(accuracy=accuracy, step_time_ms=step, step_time_spread=0.05, timed_steps=20, params=size,
                         macs=size * 10, flops=size * 20, reward=reward, duration_s=rng.uniform(1, 3))
            values = [accuracy, step, size] if multi else [reward]
            state = optuna.trial.TrialState.COMPLETE
        else:
            values, state = None, optuna.trial.TrialState.FAIL
            if number < trials + failed:
                attrs["fail_reason"] = "diverged: loss is nan" if number % 2 else "out of memory\nCUDA details"
            else:
                attrs["interrupted"] = True
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, values=values,
                                                  user_attrs=attrs, state=state))
    return run


_SHARED: dict[str, Path] = {}


def shared_run() -> Path:
    """One standard run per test process (Optuna's SQLite writes cost ~0.2 s a trial); treat it as read-only."""
    if "run" not in _SHARED:
        root = Path(tempfile.mkdtemp(prefix="effnas-results-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _SHARED["run"] = make_run(root)
    return _SHARED["run"]


@pytest.fixture
def run_dir() -> Path:
    return shared_run()


def test_open_study_accepts_run_dir_db_file_and_url(run_dir):
    for location in (run_dir, run_dir / "study.db", f"sqlite:///{run_dir / 'study.db'}", str(run_dir)):
        study = open_study(location)
        assert study.study_name == "effnas" and len(study.trials) == 28


@pytest.mark.parametrize("make_location, message", [
    (lambda tmp: tmp / "nowhere", "no such study"),
    (lambda tmp: tmp, "no study.db"),
    (lambda tmp: f"sqlite:///{tmp / 'absent.db'}", "no such study"),
])
def test_missing_study_is_a_results_error(tmp_path, make_location, message):
    with pytest.raises(ResultsError, match=message):
        open_study(make_location(tmp_path))
    assert not (tmp_path / "absent.db").exists()  # opening must never create a database


def test_empty_study_and_foreign_files_are_refused_without_touching_them(tmp_path):
    optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="effnas")
    with pytest.raises(ResultsError, match="no trials"):
        open_study(tmp_path)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE notes (x)")
    before = other.read_bytes()
    with pytest.raises(ResultsError, match="not an Optuna study"):
        open_study(other)
    assert other.read_bytes() == before
    text = tmp_path / "text.db"
    text.write_text("hello, not a database " * 20)
    with pytest.raises(ResultsError, match="not an SQLite database"):
        open_study(text)
    with pytest.raises(ResultsError, match="cannot open storage"):
        open_study("postgresql://nobody@127.0.0.1:9/none")


def test_journal_storage_opens_too(tmp_path):
    from optuna.storages.journal import JournalFileBackend

    path = tmp_path / "journal.log"
    study = optuna.create_study(storage=optuna.storages.JournalStorage(JournalFileBackend(str(path))),
                                study_name="effnas", direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"accuracy": 0.5}))
    frame = trials_frame(open_study(f"journal:{path}"))
    assert frame["reward"].tolist() == [0.5] and frame["accuracy"].tolist() == [0.5]
    with pytest.raises(ResultsError, match="no such journal file"):
        open_study(f"journal:{tmp_path / 'absent.log'}")


def test_trials_frame_has_every_trial_with_choices_metrics_and_failures(run_dir):
    study = open_study(run_dir)
    frame = trials_frame(study)
    assert list(frame["number"]) == list(range(28))
    assert list(frame.columns[:7]) == ["number", "state", "s0_op", "s0_kernel", "s0_expand", "s0_layers", "s0_se"]
    assert frame["state"].value_counts().to_dict() == {"COMPLETE": 24, "FAIL": 4}
    assert len(completed(frame)) == 24
    for trial in study.trials:
        row = frame.loc[trial.number]
        assert spec_of(row) == spec_from_dict(trial.user_attrs["spec"])
        assert row["s3_kernel"] == trial.params["s3_kernel"]
        if trial.state.name == "COMPLETE":
            assert row["reward"] == pytest.approx(trial.value)
            assert row["params"] == count_params(spec_of(row))
            assert row["blocks"].split()[0].startswith(f"r{trial.params['s0_layers']}_k{trial.params['s0_kernel']}")
        else:
            assert math.isnan(row["accuracy"])
    assert frame["interrupted"].sum() == 1
    assert state_counts(frame) == {"completed": 24, "stopped early": 0, "failed": 3, "interrupted": 1, "running": 0,
                                   "waiting": 0, "reused": 0}
    assert frame["fail_reason"].notna().sum() == 3
    info = study_info(study)
    assert info["settings"]["controller"] == "tpe" and info["states"] == {"COMPLETE": 24, "FAIL": 4}


def test_multi_objective_study_reads_the_same(tmp_path):
    frame = trials_frame(open_study(make_run(tmp_path, trials=6, failed=1, interrupted=0, multi=True)))
    assert len(completed(frame)) == 6 and frame["reward"].notna().sum() == 6


def test_best_by_reward_and_under_budgets_match_brute_force(run_dir):
    frame = trials_frame(open_study(run_dir))
    done = completed(frame)
    assert best_by_reward(frame)["reward"] == done["reward"].max()
    limit = float(done["params"].median())
    pick = best_under(frame, max_params=limit)
    assert pick["params"] <= limit and pick["reward"] == done.loc[done["params"] <= limit, "reward"].max()
    step_limit = float(done["step_time_ms"].quantile(0.3))
    pick = best_under(frame, max_params=limit, max_step_time_ms=step_limit)
    fits = done[(done["params"] <= limit) & (done["step_time_ms"] <= step_limit)]
    assert pick["number"] == fits.sort_values(["reward", "number"], ascending=[False, True]).iloc[0]["number"]
    with pytest.raises(ResultsError, match="no completed trial has params <= 1"):
        best_under(frame, max_params=1)


def test_trial_row_refuses_failed_and_unknown_trials(run_dir):
    frame = trials_frame(open_study(run_dir))
    assert trial_row(frame, 5)["number"] == 5
    with pytest.raises(ResultsError, match="trial 25 is FAIL: diverged"):
        trial_row(frame, 25)
    with pytest.raises(ResultsError, match="no trial 99"):
        trial_row(frame, 99)


def test_choice_frequencies_compare_top_trials_with_all(run_dir):
    frame = trials_frame(open_study(run_dir))
    shares = choice_frequencies(frame, 0.1)
    top = top_trials(frame, 0.1)
    assert len(top) == 3 and top["reward"].min() >= completed(frame)["reward"].nlargest(3).min()
    for (stage, kind), part in shares.groupby(["stage", "kind"]):
        assert part["all"].sum() == pytest.approx(1.0) and part["top"].sum() == pytest.approx(1.0)
        column = f"s{stage}_{kind}"
        for row in part.itertuples():
            assert row.top == pytest.approx((top[column] == row.choice).mean())
    assert set(shares["kind"]) == set(CHOICES)
