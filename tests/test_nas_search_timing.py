"""Step times measured alike: the timing discipline each trial records, unsteady trials flagged, the GPU lock
draining queued work, one timing plan and one lock path for every backend, and a resume under other timing
conditions refused with the study left untouched."""

import fcntl
import json
import subprocess
import sys
import tempfile

import optuna
import pandas as pd
import pytest
import torch
from optuna.trial import TrialState

from effnas.nas.search.backends import local as local_module
from effnas.nas.search.backends.base import BackendSetup
from effnas.nas.search.backends.local import LocalBackend
from effnas.nas.search.session import Search
from effnas.nas.search.settings import SearchConfig, SearchError, SearchRecipe, SearchRuntime
from effnas.nas.search.device_sharing import (DeviceLock, DeviceSharing, TimingPlan, device_lock_path, segments,
                                              timing_lock_path, timing_windows)
from effnas.nas.search.trial import run_trial
from effnas.results.html_report import _front_table
from effnas.results.record import UNSTEADY_SPREAD, TrialMetrics
from effnas.results.study import trials_frame

TINY = {"data": "synthetic:240x16", "epochs": 1, "batch_size": 32}
SPACE = {"width": 0.25, "depth": 0.25, "image_size": 32, "head_channels": 32}


def config(tmp_path, budget=2, **runtime):
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    runtime = {"device": "cpu", "threads": 1, "workers": 2, **runtime}
    return SearchConfig(SearchRecipe(controller="random", space=str(space), trial=TINY),
                        SearchRuntime(out=str(tmp_path / "run"), budget=budget, progress=False, **runtime))


def load(tmp_path):
    return optuna.load_study(study_name="effnas", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")


def snapshot(tmp_path):
    study = load(tmp_path)
    trials = [(t.number, t.state.name, t.user_attrs, t.params) for t in study.get_trials(deepcopy=False)]
    files = {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir() if path.suffix in (".csv", ".json")}
    return study.user_attrs, trials, files


@pytest.fixture(scope="module")
def two_worker_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("timing")
    Search(config(tmp_path, budget=2)).run(LocalBackend())
    return tmp_path


@pytest.mark.slow
def test_reference_and_candidates_are_timed_alike_and_say_how(two_worker_run):
    study = load(two_worker_run)
    reference = study.user_attrs["reference"]
    assert reference["conditions"] == {"device": "cpu", "engine": "auto", "threads": 1, "workers": 2,
                                       "timing": "exclusive"}
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 2
    for trial in done:
        attrs = trial.user_attrs
        assert (attrs["timing"], attrs["threads"], attrs["workers"], attrs["device"]) == ("exclusive", 1, 2, "cpu")
        assert attrs["timed_steps"] == min(20, attrs["train_steps"] - 2)  # the locked tail, as on a GPU
    frame = pd.read_csv(two_worker_run / "run" / "trials.csv")
    assert {"device", "engine", "threads", "workers", "timing", "unsteady"} <= set(frame.columns)
    assert set(frame["timing"]) == {"exclusive"} and set(frame["device"]) == {"cpu"}


@pytest.mark.parametrize("change", [{"engine": "eager"}, {"threads": 2}, {"workers": 1}],
                         ids=["engine", "threads", "workers"])
@pytest.mark.slow
def test_a_resume_under_other_timing_conditions_is_refused_untouched(two_worker_run, change):
    before = snapshot(two_worker_run)
    name, value = next(iter(change.items()))
    with pytest.raises(SearchError, match=f"{name} .* -> {value}"):
        Search(config(two_worker_run, budget=4, **change)).run(LocalBackend())
    assert snapshot(two_worker_run) == before


@pytest.mark.slow
def test_the_cli_refuses_in_one_line_with_exit_2(two_worker_run):
    before = snapshot(two_worker_run)
    result = subprocess.run([sys.executable, "-m", "effnas.nas", "search", "--out", str(two_worker_run / "run"),
                             "--quiet", "--budget", "4", "--controller", "random", "--space",
                             str(two_worker_run / "space.json"), "--data", TINY["data"], "--epochs", "1",
                             "--batch-size", "32", "--workers", "2", "--threads", "1", "--device", "cpu",
                             "--engine", "eager"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1 and "engine auto -> eager" in result.stderr
    assert snapshot(two_worker_run) == before


def test_an_unsteady_trial_is_flagged_in_the_table_the_report_and_one_warning(tmp_path, capsys):
    search = Search(config(tmp_path, budget=3))
    search.prepare(lambda spec: {"step_time_ms": 10.0, "params": 1000, "accuracy": 0.5, "step_time_spread": 0.1})
    metrics = {"step_time_ms": 10.0, "params": 1000, "accuracy": 0.5}
    for spread in (0.1, UNSTEADY_SPREAD + 0.3):
        trial, _, _ = search.propose()
        search.store(trial, {**metrics, "step_time_spread": spread}, None, 1.0)
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "trial 1's step time is too unsteady to rank" in err
    frame = trials_frame(search.study)
    assert frame["unsteady"].tolist() == [False, True]
    assert TrialMetrics(**metrics, step_time_spread=0.8).unsteady and not TrialMetrics(**metrics).unsteady
    frame = frame.assign(reward=0.5, macs=1.0, blocks="")
    table = _front_table(frame)
    assert table.count("unsteady</span>") == 1


def test_cpu_timing_windows_are_spread_over_the_epochs():
    """Locked CPU trials time a short window at the start of every epoch (one outside burst spoils one of them,
    and the cost is known a few steps in); a GPU times the run's tail."""
    assert timing_windows(3, 22, 9, spread=True) == [range(2, 5), range(0, 3), range(0, 3)]
    assert timing_windows(1, 6, 4, spread=True) == [range(2, 6)]  # two untimed warm-up steps first
    assert timing_windows(3, 22, 20, spread=False) == [range(22, 22), range(22, 22), range(2, 22)]
    # a lone CPU worker's window is a whole epoch: split so the early-stopping rule is asked a few steps in
    assert segments(range(2, 22), 22, 3) == [(False, range(0, 2)), (True, range(2, 5)), (True, range(5, 22))]
    assert segments(range(2, 5), 22, 3) == [(False, range(0, 2)), (True, range(2, 5)), (False, range(5, 22))]


def test_the_plan_says_which_steps_are_timed_and_what_each_run_holds(tmp_path):
    """A locked CPU trial: a short timed window in each epoch held exclusively, every untimed step shared on its
    own. A GPU: one shared section per untimed run, the timed tail exclusive, a short last epoch's window moved
    back to end with it."""
    cpu = DeviceSharing(str(tmp_path / "device.lock"), torch.device("cpu"))
    plan = TimingPlan(cpu, timing_steps=4, epochs=2, steps_per_epoch=6, total=12, early_stopping=False)
    epochs = list(plan.epochs())
    assert [(epoch.number, epoch.last) for epoch in epochs] == [(1, False), (2, True)]
    assert [(s.timed, s.steps) for s in epochs[0].segments] == [
        (False, range(0, 1)), (False, range(1, 2)), (True, range(2, 4)), (False, range(4, 5)), (False, range(5, 6))]
    for segment in epochs[0].segments + epochs[1].segments:
        assert segment.hold == (cpu.exclusive if segment.timed else cpu.shared)
        assert (segment.measure == plan.timer.measure) is segment.timed
    gpu = DeviceSharing(str(tmp_path / "device.lock"), torch.device("cuda:0"))
    plan = TimingPlan(gpu, timing_steps=4, epochs=2, steps_per_epoch=6, total=9, early_stopping=False)
    assert [[(s.timed, s.steps, s.hold == (gpu.exclusive if s.timed else gpu.shared)) for s in epoch.segments]
            for epoch in plan.epochs()] == [[(False, range(0, 6), True)], [(True, range(0, 3), True)]]


def test_both_backends_take_the_runs_lock_path_from_one_function(tmp_path, monkeypatch):
    """Local workers and Ray tasks of one run get the same lock, from timing_lock_path: in the machine's temporary
    folder, named after the study; none for one trial at a time. A trial narrows it to its GPU."""
    pytest.importorskip("ray")
    from effnas.nas.search.backends import ray as ray_module
    from effnas.nas.search.backends.ray import RayBackend, Resources

    sent = []

    class Pool:
        def __init__(self, *args, **kwargs):
            pass

        def submit(self, key, spec, settings, seed):
            sent.append(settings["timing_lock"])

    class Task:
        def options(self, **resources):
            return self

        def remote(self, key, spec, settings, seed, threads, timeout):
            sent.append(settings["timing_lock"])
            return object()

    monkeypatch.setattr(local_module, "WorkerPool", Pool)
    monkeypatch.setattr(ray_module, "start_ray", lambda options: False)
    monkeypatch.setattr(ray_module.ray, "remote", lambda function: Task())
    url = f"sqlite:///{tmp_path / 'run' / 'study.db'}"
    for workers in (1, 2):
        monkeypatch.setattr(ray_module, "_resolve_resources", lambda *args: Resources(1.0, 0.0, workers))
        for backend in (LocalBackend(), RayBackend()):
            backend.start(BackendSetup(workers, 1, None, None, "cpu", tmp_path / "run", url))
            backend.submit(0, {}, {}, 0)
    lock = timing_lock_path(url, 2)
    assert sent == [None, None, lock, lock]
    assert lock.startswith(tempfile.gettempdir()) and lock != timing_lock_path(url + "-other", 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")  # as Ray gives a worker its GPUs
    assert device_lock_path(lock, torch.device("cuda:1")) == lock + ".gpu6"
    assert device_lock_path(lock, torch.device("cpu")) == lock
    assert device_lock_path(None, torch.device("cuda:0")) is None


def _try_exclusive(path):
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def test_a_lock_runs_its_drain_before_it_is_released(tmp_path):
    """The GPU drains its queued steps while the lock is still held (on CPU: the same hook, observed)."""
    path = str(tmp_path / "device.lock")
    seen = []
    with DeviceLock(path).shared(lambda: seen.append(_try_exclusive(path))):
        pass
    with DeviceLock(path).exclusive(lambda: seen.append(_try_exclusive(path))):
        pass
    assert seen == [False, False] and _try_exclusive(path)


@pytest.mark.gpu
def test_gpu_shared_sections_synchronise_before_releasing(tmp_path, monkeypatch):
    """With a timing lock, every shared epoch and the timed tail end with a device sync inside the lock."""
    path = str(tmp_path / "device.lock")
    held = []
    real = torch.cuda.synchronize
    locked = device_lock_path(path, torch.device("cuda"))  # the trial's lock narrowed to its GPU
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: (held.append(not _try_exclusive(locked)), real(*a)))
    spec = Search(config(tmp_path)).space.backbone.to_dict()
    metrics = run_trial(spec, dict(TINY, epochs=2, device="cuda", timing_lock=path, timing_steps=2), seed=0)
    assert metrics["timing"] == "exclusive"
    assert held.count(True) >= 3  # epoch 1 shared; epoch 2 shared, then its timed tail exclusive
