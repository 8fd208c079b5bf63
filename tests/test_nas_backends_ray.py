"""The search on a real local Ray (2 CPUs): budget and outputs as the local backend, a killed worker, stop/resume,
refused options."""

import json
import logging
import os
import signal
import threading
import time

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from effnas.nas.search.budget import counted_trials
from effnas.nas.search.backends.local import LocalBackend
from effnas.nas.search.session import Search
from effnas.nas.search.settings import SearchConfig, SearchError, SearchRecipe, SearchRuntime
from effnas.search_space import load_spec

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a real Ray instance and several searches: about a minute on 2 cores

from effnas.nas.search.backends.ray import RayBackend, RayOptions, Resources, _resolve_resources  # noqa: E402  (quiet Ray)

TINY = {"data": "synthetic:240x16", "epochs": 1, "batch_size": 32}
SPACE = {"width": 0.25, "depth": 0.25, "image_size": 32, "head_channels": 32}
ONE_CPU = RayOptions(cpus_per_trial=1)
LONGER = {**TINY, "data": "synthetic:1200x16"}  # trials that train for seconds, so a kill can land inside one


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One Ray instance for the module (start-up takes seconds); the backend uses it and leaves it running."""
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()


def config(tmp_path, budget, name="run", workers=2, trial=TINY, **runtime):
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    return SearchConfig(SearchRecipe(controller="random", space=str(space), trial=trial),
                        SearchRuntime(out=str(tmp_path / name), budget=budget, workers=workers, progress=False,
                                      **runtime))


def extreme_params(space, largest: bool, op: str = "mbconv") -> dict:
    """Every size decision at its largest (SE, most of everything) or its smallest, every stage ``op``."""
    params = {}
    for name, distribution in space.distributions().items():
        choices = list(distribution.choices)
        if name.endswith("_op"):
            params[name] = op if op in choices else choices[0]
        else:
            params[name] = max(choices) if largest else min(choices)
    return params


def run_ray(search, options):
    return search.run(RayBackend(options))


def load(tmp_path, name="run"):
    return optuna.load_study(study_name="effnas", storage=f"sqlite:///{tmp_path / name / 'study.db'}")


def form(run_dir, study):
    """What a backend's outputs look like, without the values: files, columns, attribute names."""
    best = json.loads((run_dir / "best.json").read_text())
    return {"files": sorted(p.name for p in run_dir.iterdir() if p.is_file() and not p.name.startswith(".")),
            "columns": list(pd.read_csv(run_dir / "trials.csv").columns), "study_attrs": sorted(study.user_attrs),
            "best": sorted(best), "best_metrics": sorted(best["metrics"]),
            "pareto": type(json.loads((run_dir / "pareto.json").read_text())).__name__}


def ray_worker_pids(title: str) -> list[int]:
    """Ray names its worker processes by what they run: ``ray::train_candidate`` while a trial trains."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                name = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if name.strip() == title:
                pids.append(int(entry))
    return pids


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (0 once it is gone)."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def computing(pid: int, window: float = 0.3) -> bool:
    """Whether a worker is busy (training) rather than idle between tasks under a stale title."""
    before = cpu_seconds(pid)
    time.sleep(window)
    return cpu_seconds(pid) - before >= window / 3


def kill_first_training_worker(killed: list[int], tmp_path) -> None:
    """SIGKILL the Ray worker of the first candidate (the reference trial, which runs the same task, is spared).

    The kill waits until a candidate has been running for half a second, then kills one worker titled for training
    that is computing, so it lands inside a trial rather than just after one returned (the trials here train long
    enough, ``LONGER``, for that)."""
    deadline, first_seen = time.time() + 180, {}
    while time.time() < deadline and not killed:
        try:
            study = load(tmp_path) if (tmp_path / "run" / "study.db").exists() else None
            running = [] if study is None or "reference" not in study.user_attrs else \
                study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        except Exception:  # noqa: BLE001 - the search is still creating the study
            running = []
        now = time.time()
        for trial in running:
            first_seen.setdefault(trial.number, now)
        if not any(now - first_seen[trial.number] >= 0.5 for trial in running):
            time.sleep(0.05)
            continue
        busy = [pid for pid in ray_worker_pids("ray::train_candidate") if computing(pid, window=0.1)]
        if busy:
            os.kill(busy[0], signal.SIGKILL)
            killed.append(busy[0])
        time.sleep(0.05)


def test_ray_search_survives_a_killed_worker_and_matches_the_local_backend(tmp_path):
    killed: list[int] = []
    threading.Thread(target=kill_first_training_worker, args=(killed, tmp_path), daemon=True).start()
    summary = run_ray(Search(config(tmp_path, budget=3, trial=LONGER)), ONE_CPU)
    assert killed, "no trial was seen training in a Ray worker"
    study = load(tmp_path)
    assert summary.counted == counted_trials(study) == 3 and not summary.stopped_early
    assert len(study.trials) == 3  # no surplus candidates were asked for
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 1 and failed[0].user_attrs["fail_reason"].startswith("Ray worker died: ")
    assert "died unexpectedly" in failed[0].user_attrs["fail_reason"]  # Ray's own account, in one line
    by_ray = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(by_ray) == 2 and all(t.user_attrs["reward"] > 0 for t in by_ray)
    assert load_spec(tmp_path / "run" / "best.json").num_classes == 10
    ray_form = form(tmp_path / "run", study)

    # The local backend continues the same study (one more trial, timed as Ray timed: 2 workers of 1 thread) and
    # leaves outputs of the same form.
    Search(config(tmp_path, budget=4, workers=2, trial=LONGER)).run(LocalBackend())
    study = load(tmp_path)
    assert counted_trials(study) == 4 and form(tmp_path / "run", study) == ray_form
    by_local = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if t.number >= 3]
    assert len(by_local) == 1
    assert all(set(t.user_attrs) == set(by_local[0].user_attrs) for t in by_ray)


def test_stop_and_resume_under_ray_lose_nothing(tmp_path):
    counted_at_stop: list[int] = []

    def ctrl_c(_trial):  # Ctrl-C as soon as the first result is stored, while the next candidate trains
        if not counted_at_stop:  # (warm workers may finish two trials in one poll: both are stored first)
            counted_at_stop.append(counted_trials(load(tmp_path)))
            # What Python's SIGINT handler raises, raised here: a signal lands wherever the main thread next
            # checks for one, which may be inside Ray's own code rather than in the search loop.
            raise KeyboardInterrupt

    first = run_ray(Search(config(tmp_path, budget=3), on_trial=ctrl_c), ONE_CPU)
    assert first.stopped_early and first.counted == counted_at_stop[0] < 3
    stopped = load(tmp_path)
    before = {t.number: (t.state, t.params, t.values, t.user_attrs) for t in stopped.trials
              if t.state != TrialState.WAITING}
    interrupted = [t.number for t in stopped.trials if t.user_attrs.get("interrupted")]
    assert interrupted, "the stop should have cut off a running trial"

    second = run_ray(Search(config(tmp_path, budget=3)), ONE_CPU)
    study = load(tmp_path)
    assert second.counted == counted_trials(study) == 3 and not second.stopped_early
    assert {n: (t.state, t.params, t.values, t.user_attrs) for n, t in enumerate(study.trials) if n in before} == before
    retried = {t.user_attrs["retry_of"]: t for t in study.trials if "retry_of" in t.user_attrs}
    for number in interrupted:  # every cut-off architecture was evaluated again
        assert retried[number].params == study.trials[number].params
        assert retried[number].state in (TrialState.COMPLETE, TrialState.FAIL)
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    assert study.user_attrs["reference"] == stopped.user_attrs["reference"]  # measured once


def test_resources_default_to_what_the_cluster_fits_and_impossible_requests_are_refused(tmp_path):
    assert _resolve_resources(RayOptions(), "auto") == Resources(1.0, 0.0, 2)  # 2 CPUs: 2 trials
    assert _resolve_resources(RayOptions(cpus_per_trial=2), "cpu").workers == 1
    assert _resolve_resources(RayOptions(), "cpu", workers=3).workers == 3  # more may queue, as asked
    search = Search(config(tmp_path, budget=1))
    with pytest.raises(SearchError, match="--cpus-per-trial 64 but no Ray node has more than 2 CPUs"):
        run_ray(search, RayOptions(cpus_per_trial=64))
    with pytest.raises(SearchError, match="--gpus-per-trial"):
        run_ray(search, RayOptions(gpus_per_trial=1))
    with pytest.raises(SearchError, match="--device cuda but the Ray cluster has no GPUs"):
        _resolve_resources(RayOptions(), "cuda")


def test_a_trial_over_the_time_limit_is_ended_by_its_watchdog_and_named(tmp_path):
    with pytest.raises(SearchError, match="backbone itself failed .*time limit of 0.05 s"):
        run_ray(Search(config(tmp_path, budget=1, workers=1, trial_timeout=0.05)), ONE_CPU)


def test_ray_trials_stop_early_by_the_same_rule_as_local_ones(tmp_path):
    """Each Ray task asks the study whether it can still win and stops when it cannot: recorded as the local
    backend records it (PRUNED, the whole epochs it trained). The rule is the cost bound: with a params exponent
    of -10, the space's largest candidates cannot reach, even at full accuracy, the reward its smallest one
    finished with, so after the small one each large one stops after its first timed window, within epoch 1."""
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    recipe = SearchRecipe(controller="random", space=str(space), trial={**TINY, "epochs": 2}, reward_w=0.0,
                          reward_v=-10.0)
    search = Search(SearchConfig(recipe, SearchRuntime(out=str(tmp_path / "run"), budget=3, workers=1,
                                                       progress=False)))
    for largest, op in ((False, "mbconv"), (True, "fused"), (True, "mbconv")):  # three different architectures
        search.study.enqueue_trial(extreme_params(search.space, largest, op))
    summary = run_ray(search, ONE_CPU)
    study = load(tmp_path)
    assert summary.counted == counted_trials(study) == 3 and summary.stopped == len(
        study.get_trials(states=(TrialState.PRUNED,))) == 2
    for trial in study.trials:
        assert (trial.user_attrs["epochs"] < 2) == (trial.state == TrialState.PRUNED)
