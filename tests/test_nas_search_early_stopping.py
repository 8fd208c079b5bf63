"""Early stopping and repeated architectures: a stopped trial is recorded with its rung and never becomes best, the
rule stops what falls behind, and a repeated proposal is not trained again. (A resumed search with early stopping
reaching exactly its budget: tests/test_nas_search.py; on Ray: tests/test_nas_backends_ray.py.)"""

import json

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from effnas.nas.search import early_stopping
from effnas.nas.search import repeats as repeats_module
from effnas.nas.search import trial as trial_module
from effnas.nas.search.budget import counted_trials
from effnas.nas.search.early_stopping import Decision, EarlyStopping, NeverStop
from effnas.nas.search.backends.local import LocalBackend
from effnas.nas.search.session import Search
from effnas.nas.search.settings import SearchConfig, SearchRecipe, SearchRuntime
from effnas.nas.search.trial import run_trial
from effnas.results.analysis import state_counts
from effnas.results.storage import open_storage
from effnas.search_space import ArchSpec, StageSpec
from effnas.results.study import trials_frame

TINY = {"data": "synthetic:240x16", "epochs": 2, "batch_size": 32}
SPACE = {"width": 0.25, "depth": 0.25, "image_size": 32, "head_channels": 32}
REFERENCE = {"step_time_ms": 10.0, "params": 1000, "accuracy": 0.5}
BACKBONE = ArchSpec(stages=(StageSpec("fused", 3, 1, 1, 8, 8, 1), StageSpec("mbconv", 3, 2, 1, 8, 16, 1)),
                    stem_channels=8, head_channels=32, num_classes=10, dropout=0.0, drop_path_rate=0.0,
                    train_image_size=16, eval_image_size=16, name="tiny").to_dict()


def config(tmp_path, budget=3, controller="random", space=SPACE, early_stopping=True, **runtime):
    path = tmp_path / "space.json"
    path.write_text(json.dumps(space))
    return SearchConfig(SearchRecipe(controller=controller, space=str(path), trial=TINY, early_stopping=early_stopping),
                        SearchRuntime(out=str(tmp_path / "run"), budget=budget, progress=False, **runtime))


def load(tmp_path):
    return optuna.load_study(study_name="effnas", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")


def metrics(accuracy, epochs):
    return {"accuracy": accuracy, "step_time_ms": 10.0, "params": 1000, "epochs": epochs}


def test_a_stopped_trial_is_recorded_with_its_rung_and_never_becomes_best(tmp_path):
    search = Search(config(tmp_path))
    search.prepare(lambda spec: REFERENCE)
    stopped, _, _ = search.propose()
    finished, _, _ = search.propose()
    search.storage.set_trial_intermediate_value(stopped._trial_id, 1, 0.9)  # as the trial's rule reports it
    search.record(stopped, metrics(0.9, epochs=1), None, 1.0)  # better after 1 epoch than the other after 2
    search.record(finished, metrics(0.6, epochs=2), None, 2.0)
    study = load(tmp_path)
    assert study.trials[stopped.number].state == TrialState.PRUNED
    assert study.trials[stopped.number].user_attrs["epochs"] == 1
    assert counted_trials(study) == 2  # a stopped trial cost training: it counts, and is not a failure
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert best["metrics"]["accuracy"] == 0.6 and search.best()["trial"] == finished.number
    assert [row["trial"] for row in json.loads((tmp_path / "run" / "pareto.json").read_text())] == [finished.number]
    table = pd.read_csv(tmp_path / "run" / "trials.csv").set_index("number")
    assert table.loc[stopped.number, "state"] == "PRUNED" and table.loc[stopped.number, "epochs"] == 1
    counts = state_counts(trials_frame(study))  # what the report's cards and summary say
    assert counts["stopped early"] == 1 and counts["completed"] == 1 and counts["failed"] == 0


def test_the_rule_stops_only_what_falls_behind_in_a_bracket_that_stops(tmp_path):
    """Hyperband on the reward, read from the study: a trial in a bracket that stops at epoch 2 (the first rung)
    goes on only when it leads that bracket there; the other bracket's trials always finish. Step time enters the
    reward."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="effnas", storage=open_storage(url), direction="maximize")

    def report(accuracy, step_time_ms=10.0):
        trial = study.ask()
        rule = EarlyStopping(url, trial._trial_id, ref_step_time_ms=10.0, ref_params=1000, reward_w=-0.07,
                             reward_v=-0.05, epochs=9)
        assert rule.hyperband and rule.falls_behind(1, accuracy, step_time_ms, 1000) is False  # no rung yet
        stop = rule.falls_behind(2, accuracy, step_time_ms, 1000)
        loaded, storage, pruner = early_stopping._study(url, 9, 3)
        bracket = pruner._get_bracket_id(loaded, storage.get_trial(trial._trial_id))
        study.tell(trial, state=TrialState.PRUNED)
        return bracket, stop

    outcomes = [report(0.9 - 0.01 * index) for index in range(10)]  # each worse than every one before it
    stopping = [stop for bracket, stop in outcomes if bracket == 0]
    assert len(stopping) >= 3 and stopping[0] is False and all(stopping[1:])  # the first sets the bar
    assert not any(stop for bracket, stop in outcomes if bracket != 0)
    # The best accuracy so far, but four times slower than the reference: a reward of 0.95 * 4**-0.07 = 0.86,
    # behind the first trial's 0.9, so a bracket-0 trial stops; at the reference's speed it leads and goes on.
    slow = fast = None
    while slow is None or fast is None:
        bracket, stop = report(0.95, 40.0) if slow is None else report(0.95)
        if bracket == 0:
            slow, fast = (stop, fast) if slow is None else (slow, stop)
    assert slow is True and fast is False


def test_a_trial_whose_costs_alone_lose_to_the_best_finished_one_cannot_win(tmp_path):
    """The bound: even at accuracy 1, a trial twice as slow and twice as large as the reference reaches
    2**-0.07 * 2**-0.05 = 0.92, below a finished 0.95, so it cannot win; at the reference's costs its ceiling is
    1.0 and it goes on. A 3-epoch proxy has no Hyperband: the bound decides alone."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="effnas", storage=open_storage(url), direction="maximize")

    def rule_for(trial):
        return EarlyStopping(url, trial._trial_id, ref_step_time_ms=10.0, ref_params=1000, reward_w=-0.07,
                             reward_v=-0.05, epochs=3)

    first = study.ask()
    assert rule_for(first).cannot_win(20.0, 2000) is False  # nothing finished yet: no bar
    assert not rule_for(first).hyperband and rule_for(first).falls_behind(1, 0.01, 20.0, 2000) is False
    study.tell(first, 0.95)
    trial = study.ask()
    assert rule_for(trial).cannot_win(20.0, 2000) is True
    assert rule_for(trial).cannot_win(10.0, 1000) is False
    assert rule_for(trial).cannot_win(10.0, 1000 * 2 ** 3) is True  # size alone: 8**-0.05 = 0.90


def test_a_hopeless_trial_stops_a_few_steps_into_its_first_epoch(tmp_path):
    """A real trial against a study whose best finished reward no candidate can reach: it stops after its first
    timed window (two warm-up steps, then its share of the timed steps), with no whole epoch trained and the
    accuracy it reached recorded; against a study with a low best it trains every epoch and evaluates no epoch
    early (a 3-epoch proxy has no Hyperband). A lone worker (no lock), which times every step, stops as early."""
    results = {}
    for best, lock in ((10.0, "device.lock"), (0.0, "device.lock"), (10.0, None)):
        url = f"sqlite:///{tmp_path / f'study-{best}-{lock}.db'}"
        study = optuna.create_study(study_name="effnas", storage=open_storage(url), direction="maximize")
        study.tell(study.ask(), best)
        trial = study.ask()
        rule = EarlyStopping(url, trial._trial_id, ref_step_time_ms=1.0, ref_params=1000, reward_w=-0.07,
                             reward_v=-0.05, epochs=3)
        settings = {**TINY, "epochs": 3, "timing_steps": 6, "device": "cpu", "threads": 1,
                    "timing_lock": lock and str(tmp_path / lock), "early_stopping": rule.to_dict()}
        results[best, lock] = run_trial(BACKBONE, settings, seed=0)
        assert study.trials[trial.number].intermediate_values == {}
    hopeless, promising, alone = results[10.0, "device.lock"], results[0.0, "device.lock"], results[10.0, None]
    assert promising["epochs"] == 3 and promising["train_steps"] % 3 == 0
    assert hopeless["epochs"] == 0 and hopeless["train_steps"] == 2 + 2 < promising["train_steps"] // 3
    assert hopeless["timed_steps"] == 2 and 0.0 <= hopeless["accuracy"] <= 1.0
    assert promising["timed_steps"] == 6
    assert alone["epochs"] == 0 and alone["train_steps"] == 2 + 2 and alone["timed_steps"] == 2


class StopAtFirstWindow:
    """A rule in the trial's terms only: it says stop the first time it is asked."""

    may_stop = True

    def __init__(self):
        self.asked = []

    def on_window(self, step_time_ms, params):
        self.asked.append(("window", step_time_ms, params))
        return Decision.STOP

    def on_epoch(self, epoch, accuracy, step_time_ms, params):
        self.asked.append(("epoch", epoch))
        return Decision.CONTINUE


def test_a_trial_stops_where_its_rule_first_says_stop(monkeypatch):
    """The trial only asks: a rule that answers STOP at the first timed window (two warm-up steps, then the
    window's first two of six timed steps over three epochs) ends a real digits trial there, measured and evaluated,
    with no whole epoch trained. A trial without a rule asks NeverStop, which always says continue."""
    rule = StopAtFirstWindow()
    monkeypatch.setattr(trial_module, "stopping_for", lambda settings: rule)
    settings = {"data": "digits", "epochs": 3, "batch_size": 32, "timing_steps": 6, "device": "cpu", "threads": 1}
    metrics = run_trial(BACKBONE, settings, seed=0)
    assert [asked[0] for asked in rule.asked] == ["window"] and rule.asked[0][1:] == (
        metrics["step_time_ms"], metrics["params"])
    assert metrics["epochs"] == 0 and metrics["train_steps"] == 2 + 2 and metrics["timed_steps"] == 2
    assert 0.0 <= metrics["accuracy"] <= 1.0
    never = NeverStop()
    assert never.on_window(1.0, 1) is never.on_epoch(1, lambda: 1 / 0, 1.0, 1) is Decision.CONTINUE


@pytest.mark.slow
def test_a_repeated_architecture_is_not_trained_again(tmp_path, monkeypatch):
    """A space of one architecture: the first proposal trains, every later one reuses its record at no cost,
    and the search ends when the controller keeps proposing only what the study has."""
    one = {**SPACE, "choices": {"op": ["mbconv"], "kernel": [3], "expand": [1], "layer_offsets": [0], "se": [False]}}
    monkeypatch.setattr(repeats_module, "MAX_REPEATS", 5)
    summary = Search(config(tmp_path, budget=3, space=one, workers=1, early_stopping=False)).run(LocalBackend())
    study = load(tmp_path)
    trained = [t for t in study.trials if "reuse_of" not in t.user_attrs]
    copies = [t for t in study.trials if "reuse_of" in t.user_attrs]
    assert len(trained) == 1 and summary.counted == counted_trials(study) == 1
    assert len(copies) == 5 and summary.reused == 5
    for copy in copies:
        assert copy.state == TrialState.COMPLETE and copy.user_attrs["reuse_of"] == trained[0].number
        assert copy.user_attrs["accuracy"] == trained[0].user_attrs["accuracy"] and copy.value == trained[0].value
        assert copy.user_attrs["duration_s"] == 0.0
    assert summary.best["trial"] == trained[0].number
    assert state_counts(trials_frame(study))["reused"] == 5 and state_counts(trials_frame(study))["completed"] == 1


def test_run_files_are_refreshed_at_most_every_interval_while_trials_finish(tmp_path):
    """The loop's refresh skips a write within RUN_FILES_EVERY of the last (each write reads the whole study);
    ``record`` and the end of a search always write."""
    search = Search(config(tmp_path, budget=4))
    search.prepare(lambda spec: REFERENCE)
    trials = [search.propose()[0] for _ in range(3)]
    table = tmp_path / "run" / "trials.csv"
    search.record(trials[0], metrics(0.6, epochs=2), None, 1.0)  # written at once
    search.store(trials[1], metrics(0.7, epochs=2), None, 1.0)
    search.publish([trials[1].number])  # within the interval of the last write: skipped

    def completed() -> int:
        return int((pd.read_csv(table)["state"] == "COMPLETE").sum())

    assert completed() == 1
    search.store(trials[2], metrics(0.8, epochs=2), None, 1.0)
    search.publish([trials[2].number], every=0.0)  # an interval of 0 (record's, and the search's end): written
    assert completed() == 3 and json.loads((tmp_path / "run" / "best.json").read_text())["metrics"][
        "accuracy"] == 0.8
