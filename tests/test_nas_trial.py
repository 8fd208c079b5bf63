"""Proxy trials end to end on the bundled digits: real training, real measurements, real failures."""

import contextlib
import json
import math
import dataclasses
import multiprocessing as mp
import pickle
import time
from typing import Iterator

import pytest

from effnas.nas.search.device_sharing import DeviceLock
from effnas.nas.search.trial import TrialError, lr_schedule, measure_trial, run_trial, trial_data
from effnas.nas.search.trial_settings import TrialSettings, TrialSettingsError
from effnas.results.record import TrialMetrics
from effnas.search_space import ArchSpec, StageSpec, spec_from_dict
from effnas.errors import EffnasError

TINY = ArchSpec(stages=(StageSpec("fused", 3, 1, 1, 8, 8, 1), StageSpec("mbconv", 3, 2, 2, 8, 16, 1, se_ratio=0.25)),
                stem_channels=8, head_channels=32, num_classes=10, dropout=0.0, drop_path_rate=0.0,
                train_image_size=16, eval_image_size=16, name="tiny").to_dict()
FAST = dict(data="digits", epochs=3, batch_size=32, threads=1, timing_steps=10, device="cpu")


def test_digits_trial_returns_sane_metrics():
    trial_data(TrialSettings(**FAST), 0, "cpu", 16)  # loading digits is the worker's one-off cost, not the trial's
    start = time.process_time()  # CPU time: wall time on a shared CI machine says little
    metrics = run_trial(TINY, TrialSettings(**FAST).to_dict(), seed=0)
    assert time.process_time() - start < 15
    assert metrics["accuracy"] > 0.5  # chance is 0.1
    assert metrics["step_time_ms"] > 0 and metrics["step_time_spread"] >= 0
    assert metrics["timed_steps"] == metrics["train_steps"] - 2  # on CPU: every step after two warm-up steps
    assert metrics["timing"].startswith("unlocked") and metrics["threads"] == 1  # no lock: one worker, alone
    assert metrics["engine"] == "eager" and metrics["fallback_reason"] is None
    assert metrics["params"] > 1000 and metrics["flops"] == 2 * metrics["macs"] > 0
    assert metrics["train_steps"] == 3 * (1222 // 32)  # digits less the held-out test split and validation
    assert 0 < metrics["train_seconds"] + metrics["eval_seconds"] < metrics["total_seconds"]
    assert math.isfinite(metrics["train_loss"]) and metrics["train_loss"] < 2.3
    json.dumps(metrics)  # the runner stores every value as an Optuna user attribute


def test_a_worker_sends_the_trials_record_as_it_is():
    """measure_trial's record crosses a process boundary unchanged; run_trial is the same record as a dict."""
    settings = dict(FAST, epochs=1, timing_steps=2)
    record = measure_trial(TINY, settings, seed=0)
    assert isinstance(record, TrialMetrics) and pickle.loads(pickle.dumps(record)) == record
    as_dict = run_trial(TINY, settings, seed=0)
    assert set(as_dict) == {field.name for field in dataclasses.fields(TrialMetrics)}
    assert as_dict["accuracy"] == record.accuracy and as_dict["params"] == record.params


def test_trial_is_deterministic_on_cpu_for_a_seed():
    settings = dict(FAST, epochs=1, timing_steps=2)
    first, second = run_trial(TINY, settings, seed=7), run_trial(TINY, settings, seed=7)
    assert first["accuracy"] == second["accuracy"]
    assert first["train_loss"] == second["train_loss"]
    other = run_trial(TINY, settings, seed=8)
    assert other["train_loss"] != first["train_loss"]


def test_diverging_candidate_raises_trial_error_mentioning_nan():
    with pytest.raises(TrialError, match="NaN") as info:
        run_trial(TINY, dict(FAST, epochs=2, optimizer="sgd", lr=1e6, warmup_fraction=0.0, timing_steps=2), seed=0)
    assert not isinstance(info.value, EffnasError)  # the runner records it as the candidate's failure


def test_graph_engine_on_cpu_is_recorded_as_eager_fallback():
    metrics = run_trial(TINY, dict(FAST, epochs=1, engine="graph", timing_steps=2), seed=0)
    assert metrics["engine"] == "eager" and "CUDA" in metrics["fallback_reason"]


def test_settings_round_trip_and_validation():
    settings = TrialSettings(data="synthetic:100x8", epochs=2, lr=0.01)
    assert TrialSettings.from_dict(settings.to_dict()) == settings
    assert TrialSettings.from_dict({}) == TrialSettings()
    with pytest.raises(TrialSettingsError, match="unknown field 'epoch'"):
        TrialSettings.from_dict({"epoch": 3})
    for bad in ({"epochs": 0}, {"lr": -1.0}, {"engine": "turbo"}, {"optimizer": "lion"}, {"val_fraction": 1.0},
                {"threads": 0}, {"batch_size": 2.5}):
        with pytest.raises(TrialSettingsError):
            TrialSettings(**bad)


def test_bad_data_is_a_user_error_not_a_trial_failure(tmp_path):
    with pytest.raises(EffnasError, match="no such file"):
        run_trial(TINY, dict(FAST, data=f"npz:{tmp_path / 'missing.npz'}"), seed=0)


def test_device_data_is_cached_per_process():
    settings = TrialSettings(**FAST)
    assert trial_data(settings, 0, "cpu", 16) is trial_data(settings, 0, "cpu", 16)
    assert trial_data(settings, 1, "cpu", 16) is not trial_data(settings, 0, "cpu", 16)


def test_lr_schedule_warms_up_then_decays_to_zero():
    rates = lr_schedule(0.1, 100, 0.1)
    assert len(rates) == 100 and rates[0] == pytest.approx(0.01) and rates[9] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:])) and rates[-1] < 1e-3


def _hold_exclusive(path, seconds, ready):
    with DeviceLock(path).exclusive():
        ready.set()
        time.sleep(seconds)


@contextlib.contextmanager
def held_elsewhere(path: str, seconds: float) -> Iterator[None]:
    """Another process holds the device lock exclusively for ``seconds`` from the moment the block starts."""
    context = mp.get_context("fork")
    ready = context.Event()
    holder = context.Process(target=_hold_exclusive, args=(path, seconds, ready))
    holder.start()
    try:
        assert ready.wait(10)
        yield
    finally:
        holder.join(10)


def test_device_lock_makes_training_wait_for_a_timing_pass(tmp_path):
    path = str(tmp_path / "device.lock")
    with held_elsewhere(path, 0.6):
        start = time.perf_counter()
        with DeviceLock(path).shared():
            waited = time.perf_counter() - start
    assert waited > 0.3
    with DeviceLock(path).shared(), DeviceLock(path).shared():  # readers share
        pass
    with DeviceLock(None).exclusive():  # no path: no locking
        pass


@pytest.mark.slow  # two trials side by side
def test_a_trial_records_how_long_it_waited_for_the_device(tmp_path):
    """Time spent waiting for the device lock is the trial's cost of sharing: while another process times its
    steps this one waits, and without a lock it never does."""
    path = str(tmp_path / "device.lock")
    settings = dict(FAST, epochs=1, timing_steps=2)
    trial_data(TrialSettings(**settings), 0, "cpu", 16)  # loaded before the other process takes the device
    with held_elsewhere(path, 4.0):  # long enough to outlast the trial's start on a loaded machine
        waited = run_trial(TINY, dict(settings, timing_lock=path), seed=0)["lock_wait_seconds"]
    assert waited > 0.5
    assert run_trial(TINY, settings, seed=0)["lock_wait_seconds"] == 0.0


def _trial_logging_its_holds(settings: dict, seed: int, log_path: str) -> None:
    """Run one trial with every hold of the device logged: (timed or not, start, end) on the machine's monotonic
    clock, from the moment the lock is held to the moment it is let go."""
    from effnas.nas.search.device_sharing import DeviceSharing

    holds = []

    def logged(original, timed):
        @contextlib.contextmanager
        def hold(self):
            with original(self):
                start = time.monotonic()
                yield
                holds.append((timed, start, time.monotonic()))
        return hold

    DeviceSharing.exclusive = logged(DeviceSharing.exclusive, True)
    DeviceSharing.shared = logged(DeviceSharing.shared, False)
    metrics = run_trial(TINY, settings, seed=seed)
    with open(log_path, "w") as handle:
        json.dump({"holds": holds, "timed_steps": metrics["timed_steps"]}, handle)


@pytest.mark.slow  # two trials side by side
def test_no_timed_step_of_one_trial_overlaps_any_step_of_another(tmp_path):
    """Two real trials train at once on one lock: their untimed steps interleave, but while either holds the
    device for timed steps the other does nothing on it, so no recorded step time saw another trial's work."""
    settings = dict(FAST, epochs=2, timing_lock=str(tmp_path / "device.lock"))
    trial_data(TrialSettings(**settings), 0, "cpu", 16)  # each process starts with the data loaded
    context = mp.get_context("fork")
    logs = [str(tmp_path / f"holds-{seed}.json") for seed in (0, 1)]
    trials = [context.Process(target=_trial_logging_its_holds, args=(settings, seed, log))
              for seed, log in enumerate(logs)]
    for trial in trials:
        trial.start()
    for trial in trials:
        trial.join(120)
        assert trial.exitcode == 0
    first, second = (json.loads(open(log).read()) for log in logs)
    assert first["timed_steps"] > 0 and second["timed_steps"] > 0

    def overlap(a, b) -> bool:
        return a[1] < b[2] and b[1] < a[2]

    def clashes(one, other) -> list:
        return [(a, b) for a in one["holds"] if a[0] for b in other["holds"] if overlap(a, b)]

    assert clashes(first, second) == [] and clashes(second, first) == []
    side_by_side = [(a, b) for a in first["holds"] for b in second["holds"] if not a[0] and not b[0] and overlap(a, b)]
    assert side_by_side, "the two trials never trained at the same time: nothing was tested"


def test_macs_counted_on_a_meta_copy_in_the_background_match():
    # The CUDA path counts MACs in a thread on a meta-device copy while the GPU trains.
    from effnas.models import build_model
    from effnas.models.profile import count_macs
    from effnas.nas.search.trial import _macs_in_background

    spec = spec_from_dict(TINY).replace(image_channels=1)
    assert _macs_in_background(spec, 16).result() == count_macs(build_model(spec), 16, 1)


def test_regularisation_overrides_reach_the_model(monkeypatch):
    """The trial's dropout and drop-path settings are the rates of the model it trains; None keeps the spec's."""
    import effnas.nas.search.trial as trial_module
    from effnas.models.blocks import StochasticDepth

    built = []
    real_build = trial_module.build_model
    monkeypatch.setattr(trial_module, "build_model", lambda spec: built.append(real_build(spec)) or built[-1])
    # 4 blocks, 3 with a residual (drop path = rate x block index / 4): indices 0, 1 and 3
    spec = spec_from_dict({"stem_channels": 8, "head_channels": 32, "train_image_size": 16, "eval_image_size": 16,
                           "dropout": 0.5, "drop_path_rate": 0.0,
                           "stages": ["r2_k3_s1_e1_i8_o8_c1", "r2_k3_s2_e2_i8_o16_se0.25"]})

    def trained_rates(**overrides) -> tuple[float, list[float]]:
        built.clear()
        run_trial(spec, dict(FAST, epochs=1, timing_steps=2, **overrides), seed=0)
        model = built[0]
        return model.dropout.p, [m.p for m in model.modules() if isinstance(m, StochasticDepth)]

    dropout, drop_path = trained_rates(dropout=0.3, drop_path_rate=0.2)
    assert dropout == 0.3 and drop_path == pytest.approx([0.0, 0.05, 0.15])
    dropout, drop_path = trained_rates(dropout=None, drop_path_rate=None)  # the spec's own
    assert dropout == 0.5 and drop_path == [0.0, 0.0, 0.0]
    with pytest.raises(TrialSettingsError, match="dropout"):
        TrialSettings(dropout=1.5)


def test_equal_time_proxies_give_a_faster_candidate_more_steps():
    """With ``seconds``, each candidate's steps are what its own measured step time buys: the small network
    trains many more steps than one many times its cost, and each about seconds / step time."""
    # Many times the small one's step time, so a busy machine's noise in either reading cannot undo the order.
    wide = spec_from_dict(TINY).replace(stem_channels=64, stages=(StageSpec("fused", 3, 1, 4, 64, 64, 2),
                                                                 StageSpec("fused", 3, 2, 4, 64, 128, 2)))
    settings = dict(FAST, epochs=1, timing_steps=4, seconds=0.6)
    small, large = run_trial(TINY, settings, seed=0), run_trial(wide.to_dict(), settings, seed=0)
    assert small["train_steps"] > 2 * large["train_steps"] >= 8
    # The steps are planned from a measurement taken before training and the record keeps training's own timed
    # median: on a busy machine the two readings can lie several times apart, so "about" means within ten times.
    for metrics in (small, large):
        assert 0.1 < metrics["train_steps"] * metrics["step_time_ms"] / 1000 / 0.6 < 10
    with pytest.raises(TrialSettingsError, match="seconds"):
        TrialSettings(seconds=0)

