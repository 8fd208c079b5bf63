"""The search runner end to end on real (tiny) trials: budget, outputs, resume, interruption, failures."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from effnas.nas.search.budget import counted_trials
from effnas.nas.search.backends.local import LocalBackend
from effnas.nas.search.session import Search
from effnas.nas.search.settings import SearchConfig, SearchError, SearchRecipe, SearchRuntime
from effnas.results.storage import StorageError, open_storage
from effnas.search_space import load_spec
from tests.cli_driver import run_commands

TINY = {"data": "synthetic:240x16", "epochs": 1, "batch_size": 32}
SPACE = {"width": 0.25, "depth": 0.25, "image_size": 32, "head_channels": 32}


def config(tmp_path, budget=3, controller="random", trial=TINY, **runtime):
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    return SearchConfig(SearchRecipe(controller=controller, space=str(space), trial=trial),
                        SearchRuntime(out=str(tmp_path / "run"), budget=budget, progress=False, **runtime))


@pytest.mark.slow
def test_search_runs_to_budget_and_writes_outputs(tmp_path):
    summary = Search(config(tmp_path, budget=3)).run(LocalBackend())
    run = tmp_path / "run"
    study = optuna.load_study(study_name="effnas", storage=f"sqlite:///{run / 'study.db'}")
    assert counted_trials(study) == 3 == summary.counted
    reference = study.user_attrs["reference"]
    assert reference["params"] > 0 and reference["step_time_ms"] > 0
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        attrs = trial.user_attrs
        assert 0.0 <= attrs["accuracy"] <= 1.0 and attrs["params"] > 0 and attrs["reward"] > 0
        assert set(trial.params) == {f"s{i}_{d}" for i in range(6) for d in ("op", "kernel", "expand", "layers", "se")}
    frame = pd.read_csv(run / "trials.csv")
    assert len(frame) == len(study.trials)
    best = json.loads((run / "best.json").read_text())
    assert best["metrics"]["reward"] == max(t.user_attrs.get("reward", 0) for t in study.trials)
    assert load_spec(run / "best.json").num_classes == 10
    assert isinstance(json.loads((run / "pareto.json").read_text()), (list, dict))
    # Where the search process's own time went, part by part; together no more than its wall time.
    assert set(summary.costs) == {"start", "reference", "propose", "store", "run_files", "progress"}
    assert all(seconds >= 0 for seconds in summary.costs.values())
    assert summary.costs["reference"] > 0 and sum(summary.costs.values()) <= summary.seconds


@pytest.mark.slow
def test_a_workers_next_candidate_is_queued_before_the_run_files_are_written(tmp_path):
    """A worker's next candidate waits in its queue, and the bookkeeping after a trial (store, ask, run files,
    progress, on_trial) happens while the worker trains it."""
    seen = []

    def on_trial(trial):
        study = optuna.load_study(study_name="effnas", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
        seen.append((trial.number, [t.number for t in study.get_trials(states=(TrialState.RUNNING,))]))

    Search(config(tmp_path, budget=3, workers=1), on_trial=on_trial).run(LocalBackend())
    assert [number for number, _ in seen] == [0, 1, 2]
    assert [running for _, running in seen] == [[1, 2], [2], []]  # running and queued, within the budget


@pytest.mark.slow
def test_resume_extends_to_new_budget_and_recovers_dead_trials(tmp_path):
    """With early stopping on (2 epochs): stopped trials count, so the resumed search ends at exactly the budget."""
    trial = {**TINY, "epochs": 2}
    Search(config(tmp_path, budget=2, trial=trial)).run(LocalBackend())
    storage_url = f"sqlite:///{tmp_path / 'run' / 'study.db'}"
    study = optuna.load_study(study_name="effnas", storage=storage_url)
    # A trial left RUNNING by a search process that was killed (a pid that no longer exists).
    orphan = study.ask()
    for name, distribution in Search(config(tmp_path, budget=2, trial=trial)).space.distributions().items():
        orphan.suggest_categorical(name, distribution.choices)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan.set_user_attr("worker", f"{socket.gethostname()}:{int(dead.stdout)}")
    summary = Search(config(tmp_path, budget=4, trial=trial)).run(LocalBackend())
    study = optuna.load_study(study_name="effnas", storage=storage_url)
    assert summary.counted == counted_trials(study) == 4
    interrupted = study.trials[orphan.number]
    assert interrupted.state == TrialState.FAIL and interrupted.user_attrs["interrupted"] is True
    retries = [t for t in study.trials if t.user_attrs.get("retry_of") == orphan.number]
    assert len(retries) == 1 and retries[0].params == interrupted.params
    assert retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    for done in study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)):
        assert done.intermediate_values == {}  # a 2-epoch proxy has the cost bound alone, no Hyperband reports
        assert (done.user_attrs["epochs"] < 2) == (done.state == TrialState.PRUNED)
    assert summary.best["metrics"]["epochs"] == 2  # never a stopped trial


@pytest.mark.slow
def test_failed_trial_is_recorded_with_reason_and_not_lost(tmp_path):
    search = Search(config(tmp_path, budget=2))
    search.prepare(lambda spec: {"step_time_ms": 1.0, "params": 1000, "accuracy": 0.5})
    trial, _spec, _ = search.propose()
    search.record(trial, None, "TrialError: loss became NaN at epoch 1", 1.5)
    frozen = search.study.trials[trial.number]
    assert frozen.state == TrialState.FAIL
    assert frozen.user_attrs["fail_reason"].startswith("TrialError: loss became NaN")
    assert counted_trials(search.study) == 1  # a candidate's own failure counts against the budget


@pytest.mark.slow
def test_changed_settings_refuse_to_mix_studies(tmp_path):
    Search(config(tmp_path, budget=1)).run(LocalBackend())
    with pytest.raises(SearchError, match="different settings"):
        Search(config(tmp_path, budget=1, controller="tpe"))


def test_bad_storage_url_is_one_line_error():
    with pytest.raises(StorageError, match="cannot open storage"):
        open_storage("postgresql://nobody@127.0.0.1:1/none")


BAD_ARGUMENTS = [
    (["--budget", "0"], "--budget must be a positive"),
    (["--controller", "genius"], "unknown controller"),
    (["--data", "imagefolder:/no/such/dir"], "/no/such/dir"),
    (["--space", "/no/such/space.json"], "no such space file"),
]


@pytest.fixture(scope="module")
def bad_argument_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-arguments")
    plan = [{"id": str(index), "argv": ["search", "--out", str(root / str(index)), "--quiet", *args], "cwd": root}
            for index, (args, _) in enumerate(BAD_ARGUMENTS)]
    return run_commands(plan, root)


@pytest.mark.slow  # a CLI process for the refusals
@pytest.mark.parametrize("index", range(len(BAD_ARGUMENTS)))
def test_cli_bad_arguments(bad_argument_results, index):
    result, message = bad_argument_results[str(index)], BAD_ARGUMENTS[index][1]
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_cli_image_size_is_the_size_best_json_says_the_trial_trained_at(tmp_path):
    """--image-size overrides the space's; the sampled spec carries it, so best.json states the size trained at."""
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "effnas.nas", "search", "--out", str(out), "--quiet",
                             "--budget", "1", "--controller", "random", "--space", str(space),
                             "--data", "synthetic:200x16", "--epochs", "1", "--batch-size", "32", "--workers", "1",
                             "--threads", "1", "--device", "cpu", "--image-size", "64"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    best = json.loads((out / "best.json").read_text())
    assert best["spec"]["train_image_size"] == best["spec"]["eval_image_size"] == 64
    study = optuna.load_study(study_name="effnas", storage=f"sqlite:///{out / 'study.db'}")
    trained = study.get_trials(states=(TrialState.COMPLETE,))
    assert trained and all(t.user_attrs["image_size"] == 64 for t in trained)  # the size the trials measured at
    assert study.user_attrs["reference"]["spec"]["train_image_size"] == 64


@pytest.mark.slow
def test_sigterm_stops_the_cli_search_like_ctrl_c(tmp_path):
    """kill (SIGTERM) ends `nas search` as Ctrl-C does: running trials recorded interrupted, exit 130, resumable."""
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "effnas.nas", "search", "--out", str(out), "--quiet",
                                "--budget", "50", "--controller", "random", "--space", str(space), "--data",
                                "synthetic:400x16", "--epochs", "3", "--batch-size", "32", "--workers", "1",
                                "--threads", "1", "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    # Trials of a few seconds: the one seen running is still running when the signal lands, also on a loaded machine.
    storage = f"sqlite:///{out / 'study.db'}"
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.2)
        try:
            study = optuna.load_study(study_name="effnas", storage=storage) if (out / "study.db").exists() else None
        except Exception:  # noqa: BLE001 - the search is still creating the study
            continue
        if study is not None and study.get_trials(states=(TrialState.RUNNING,)):
            break
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-2000:]
    assert "stopped early" in stdout
    study = optuna.load_study(study_name="effnas", storage=storage)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert [t for t in study.trials if t.user_attrs.get("interrupted")]


def test_trial_asked_but_never_named_is_recovered(tmp_path, monkeypatch):
    """A search killed between asking for a trial and naming itself on it leaves an unnamed RUNNING trial."""
    import effnas.nas.search.budget as runner
    monkeypatch.setattr(runner, "UNOWNED_GRACE_S", 0.1)
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(study_name="effnas", storage=storage, direction="maximize")
    unnamed = study.ask()
    named = study.ask()
    named.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # this live process: left alone
    assert runner.recover_interrupted(study, storage) == [unnamed.number]
    assert study.trials[unnamed.number].user_attrs["interrupted"] is True
    assert study.trials[named.number].state == TrialState.RUNNING


@pytest.mark.slow
def test_nsga2_tells_its_study_accuracy_and_each_cost_the_reward_weighs(tmp_path):
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    recipe = SearchRecipe(controller="nsga2", space=str(space), trial=TINY, reward_v=0.0)  # params do not matter
    Search(SearchConfig(recipe, SearchRuntime(out=str(tmp_path / "run"), budget=2, progress=False))).run(LocalBackend())
    study = optuna.load_study(study_name="effnas", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 2
    assert all(t.values == [t.user_attrs["accuracy"], t.user_attrs["step_time_ms"]] for t in done)


@pytest.mark.slow
def test_each_process_joining_a_study_takes_its_own_recorded_seed_stream(tmp_path):
    """Processes on one study (started together, or a resume) propose from different streams; the study records
    each stream, so what a run proposed can be replayed."""
    from effnas.nas.search.streams import STREAMS_ATTR, STREAM_STRIDE, stream_seed

    reference = {"step_time_ms": 1.0, "params": 1000, "accuracy": 0.5}
    searches = [Search(config(tmp_path, budget=4, controller="tpe", seed=3)) for _ in range(2)]
    for search in searches:
        search.prepare(lambda spec: reference)
    assert [s.stream["index"] for s in searches] == [0, 1]
    assert [s.stream["seed"] for s in searches] == [3, 3 + STREAM_STRIDE]
    first, second = (search.propose()[0] for search in searches)
    assert first.params != second.params  # with one stream, both would have drawn the same first candidate
    recorded = searches[0].study.user_attrs[STREAMS_ATTR]
    assert [(r["index"], r["seed"]) for r in recorded] == [(0, 3), (1, 3 + STREAM_STRIDE)]
    assert all(r["worker"].endswith(f":{os.getpid()}") for r in recorded)
    for controller in ("rl", "evolution"):  # these draw by trial number (unique in a study): the seed must not move
        assert stream_seed(controller, 3, 5) == 3
    assert stream_seed("random", 3, 0) == 3 and stream_seed("nsga2", 3, 2) == 3 + 2 * STREAM_STRIDE
