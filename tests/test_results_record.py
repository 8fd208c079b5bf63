"""The trial record: one definition of a trial's metrics, of "best", and rewards that the stored numbers prove."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from effnas.results import best_by_reward, open_study, trials_frame
from effnas.results.record import (STUDY_NAME, RecordError, Reference, TrialMetrics, best_trial, rank_key)

SPACE = {"width": 0.25, "depth": 0.25, "image_size": 32, "head_channels": 32}
PAPER_W, PAPER_V = -0.07, -0.05  # written out here, not imported: a flipped sign in the code must fail this test


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A real search of four tiny trials through the CLI."""
    root = tmp_path_factory.mktemp("record")
    space = root / "space.json"
    space.write_text(json.dumps(SPACE))
    result = subprocess.run([sys.executable, "-m", "effnas.nas", "search", "--budget", "4", "--controller", "random",
                             "--space", str(space), "--data", "synthetic:160x16", "--epochs", "1", "--batch-size",
                             "32", "--workers", "1", "--threads", "1", "--out", str(root / "run"), "--quiet"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return root / "run"


@pytest.mark.slow  # reads a real 4-trial search, run once for the module
def test_every_stored_reward_is_the_papers_formula_of_the_stored_metrics(searched):
    study = open_study(searched)
    reference = study.user_attrs["reference"]
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert len(completed) >= 3
    for trial in completed:
        attrs = trial.user_attrs
        expected = (attrs["accuracy"] * (attrs["step_time_ms"] / reference["step_time_ms"]) ** PAPER_W
                    * (attrs["params"] / reference["params"]) ** PAPER_V)
        assert attrs["reward"] == pytest.approx(expected, rel=1e-12)
    # and the formula is not trivially satisfied: candidates differ from the reference in size
    assert any(trial.user_attrs["params"] != reference["params"] for trial in completed)


@pytest.mark.slow  # reads a real 4-trial search, run once for the module
def test_the_summary_best_and_best_json_agree(searched):
    study = open_study(searched)
    top = best_trial(study.get_trials(deepcopy=False))
    assert top is not None
    assert int(best_by_reward(trials_frame(study))["number"]) == top.number
    best_json = json.loads((searched / "best.json").read_text())
    assert best_json["metrics"]["trial"] == top.number


@pytest.mark.slow  # reads a real 4-trial search, run once for the module
def test_stored_metrics_read_back_as_the_record(searched):
    study = open_study(searched)
    assert study.study_name == STUDY_NAME
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        metrics = TrialMetrics.from_trial(trial)
        assert metrics is not None and metrics.params == trial.user_attrs["params"]
        assert TrialMetrics.from_dict(metrics.to_dict()) == metrics


def test_an_unknown_or_missing_metric_is_refused():
    with pytest.raises(RecordError, match="unknown metric 'top5'"):
        TrialMetrics.from_dict({"accuracy": 0.5, "step_time_ms": 3.0, "params": 10, "top5": 0.9})
    with pytest.raises(RecordError, match="step_time_ms is missing"):
        TrialMetrics.from_dict({"accuracy": 0.5, "params": 10})


def test_a_trial_functions_result_is_read_as_the_record():
    record = TrialMetrics(accuracy=0.5, step_time_ms=3.0, params=10, engine="eager")
    assert TrialMetrics.from_result(record) == record == TrialMetrics.from_result(record.to_dict())
    with pytest.raises(RecordError, match="params is missing"):
        TrialMetrics.from_result(TrialMetrics(accuracy=0.5, step_time_ms=3.0, params=None))
    with pytest.raises(RecordError, match="expected TrialMetrics or a mapping of its fields, got list"):
        TrialMetrics.from_result([0.5, 3.0, 10])


def test_rank_key_prefers_reward_then_accuracy_then_the_earlier_trial():
    assert sorted([rank_key(0.9, 0.8, 3), rank_key(0.95, 0.7, 5), rank_key(0.9, 0.85, 7), rank_key(0.9, 0.8, 1)]) == [
        rank_key(0.95, 0.7, 5), rank_key(0.9, 0.85, 7), rank_key(0.9, 0.8, 1), rank_key(0.9, 0.8, 3)]
    assert rank_key(math.nan, 0.99, 0) > rank_key(0.1, 0.1, 9)  # a trial without a reward never wins


def test_reward_of_a_record_uses_the_reference():
    metrics = TrialMetrics(accuracy=0.8, step_time_ms=20.0, params=2_000)
    reference = Reference(step_time_ms=10.0, params=1_000, accuracy=0.7)
    assert metrics.reward(reference, PAPER_W, PAPER_V) == pytest.approx(0.8 * 2 ** PAPER_W * 2 ** PAPER_V)


def test_best_trial_ignores_failed_and_unrewarded_trials():
    study = optuna.create_study(direction="maximize")
    for value, state, attrs in [(0.99, TrialState.FAIL, {}), (0.5, TrialState.COMPLETE, {"reward": 0.5}),
                                (0.7, TrialState.COMPLETE, {})]:
        trial = study.ask()
        for key, item in {"accuracy": value, "step_time_ms": 1.0, "params": 5, **attrs}.items():
            trial.set_user_attr(key, item)
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
    assert best_trial(study.get_trials()).number == 1


def test_the_record_names_the_tables_columns_as_old_studies_have_them():
    """trials.csv's columns and the attribute names are on disk in every study: derived from the record's field
    metadata, they must stay as they were."""
    from effnas.results.record import COUNT_METRICS, TABLE_METRICS, TEXT_METRICS, TRIAL_COLUMNS
    from effnas.results.study import trials_frame as frame_of

    assert TRIAL_COLUMNS == ("accuracy", "step_time_ms", "step_time_spread", "timed_steps", "params", "macs",
                             "flops", "reward", "epochs", "reuse_of", "engine", "duration_s", "device", "threads",
                             "workers", "timing")
    assert TABLE_METRICS == TRIAL_COLUMNS[:7] and set(COUNT_METRICS) == {"params", "macs", "flops", "timed_steps"}
    assert TEXT_METRICS == ("engine", "device", "timing")
    empty = frame_of(optuna.create_study())
    assert list(empty.columns) == ["number", "state", *TRIAL_COLUMNS, "unsteady", "fail_reason", "interrupted",
                                   "spec", "blocks"]


def test_best_is_one_rule_for_the_study_and_the_table():
    """A stopped trial, a reused record, a trial missing an objective and a failure are never best, whether asked
    of the study's trials or of the table; among the rest the reward, then the accuracy, then the number decide."""
    from effnas.results.record import REUSE_ATTR, eligible
    from effnas.results.study import completed

    study = optuna.create_study(direction="maximize")
    cases = [  # (state, reward, accuracy, extra attributes)
        (TrialState.PRUNED, 0.99, 0.99, {}), (TrialState.COMPLETE, 0.98, 0.9, {REUSE_ATTR: 0}),
        (TrialState.COMPLETE, 0.97, None, {}), (TrialState.FAIL, None, None, {"fail_reason": "x"}),
        (TrialState.COMPLETE, 0.6, 0.5, {}), (TrialState.COMPLETE, 0.6, 0.7, {}), (TrialState.COMPLETE, 0.6, 0.7, {})]
    for state, reward, accuracy, extra in cases:
        trial = study.ask()
        attrs = {"reward": reward, "accuracy": accuracy, "step_time_ms": 1.0, "params": 5, **extra}
        for key, item in attrs.items():
            if item is not None:
                trial.set_user_attr(key, item)
        study.tell(trial, reward if state == TrialState.COMPLETE else None, state=state)
    frame = trials_frame(study)
    assert best_trial(study.get_trials()).number == int(best_by_reward(frame)["number"]) == 5
    assert completed(frame)["number"].tolist() == [4, 5, 6]
    assert eligible("COMPLETE", math.nan, 0.5, 1.0, 5) and not eligible("COMPLETE", None, math.nan, 1.0, 5)
