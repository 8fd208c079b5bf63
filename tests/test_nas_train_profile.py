"""`nas profile`'s step time: the training engine's step and the search's timer, as a proxy trial uses them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from effnas.errors import EffnasError
from effnas.models import ProfileError, build_model, count_macs, count_params, count_spec
from effnas.nas.search import device_sharing, trial
from effnas.nas.search.trial import TrialSettings, run_trial
from effnas.nas.training import engine, profile, timing
from effnas.nas.training.engine import EngineError, TrainStep, resolve_device
from effnas.nas.training.profile import (PROXY_LR, PROXY_OPTIMIZER, PROXY_WEIGHT_DECAY, TIMING_DEFAULTS, profile_spec,
                                         time_train_step)
from effnas.nas.training.timing import StepTimer
from effnas.search_space import SpecError, spec_from_dict
from tests.test_search_space_spec import tiny_spec_dict

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")


def conv_pool_linear() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def test_time_train_step_trains_and_reports_the_median():
    torch.manual_seed(0)
    model = build_model(spec_from_dict(tiny_spec_dict()))
    before = model.classifier.weight.detach().clone()
    timing = time_train_step(model, 16, batch_size=4, device="cpu", warmup=1, steps=3)
    assert timing["steps"] == 3 and timing["warmup"] == 1 and timing["batch_size"] == 4
    assert timing["median_ms"] > 0 and timing["spread"] >= 0
    assert timing["device"] == "cpu" and timing["precision"] == "fp32"
    assert timing["engine"] == "eager" and timing["fallback_reason"] is None
    assert not torch.equal(before, model.classifier.weight)  # the optimizer stepped


@pytest.mark.parametrize("changes, error", [({"batch_size": 0}, "batch_size"), ({"steps": 0}, "steps"),
                                            ({"warmup": -1}, "warmup")])
def test_time_train_step_rejects_nonsense(changes, error):
    settings = {"batch_size": 2, "warmup": 0, "steps": 1, **changes}
    with pytest.raises(ProfileError, match=error):
        time_train_step(conv_pool_linear(), 8, device="cpu", **settings)


def test_profile_spec_counts_at_eval_size_and_times_at_train_size():
    spec = spec_from_dict(tiny_spec_dict())  # train 32 px, eval 48 px
    result = profile_spec(spec, batch_size=2, device="cpu", warmup=0, steps=2)
    with torch.device("meta"):
        model = build_model(spec)
    assert result["params"] == count_params(model)
    assert result["image_size"] == 48 and result["macs"] == count_macs(model, 48)
    assert result["flops"] == 2 * result["macs"]
    assert result["step_image_size"] == 32 and result["timed_steps"] == 2 and result["step_time_ms"] > 0
    assert result["optimizer"] == PROXY_OPTIMIZER and result["engine"] == "eager"
    assert [stage["block"] for stage in result["stages"]] == [
        "r1_k3_s1_e1_i8_o8_c1", "r2_k3_s2_e4_i8_o16_c1", "r2_k5_s2_e4_i16_o24_se0.25"]
    parts = [result["stem"], result["head"], *result["stages"]]
    assert sum(part["params"] for part in parts) == result["params"]
    assert sum(part["macs"] for part in parts) == result["macs"]


def test_profile_spec_overrides_and_no_time():
    """Without timing a profile is exactly the counts (their own checks are in test_models_profile.py)."""
    spec = spec_from_dict(tiny_spec_dict())
    base = profile_spec(spec, time=False)
    more = profile_spec(spec, image_size=64, num_classes=100, time=False)
    assert base == count_spec(spec) and "step_time_ms" not in base
    assert more == count_spec(spec, image_size=64, num_classes=100) and more["num_classes"] == 100
    with pytest.raises(SpecError, match=r"^image_size: 4 px .* total stride 8"):
        profile_spec(spec, image_size=4, time=False)
    with pytest.raises(SpecError, match="num_classes"):
        profile_spec(spec, num_classes=1, time=False)


@no_cuda
def test_cuda_without_a_gpu_is_a_user_error():
    with pytest.raises(EngineError, match="CUDA is not available"):
        profile_spec(spec_from_dict(tiny_spec_dict()), device="cuda")
    assert resolve_device("auto").type == "cpu"


def test_unknown_device_is_a_user_error():
    with pytest.raises(EffnasError, match="unknown device 'tpu9'"):
        profile_spec(spec_from_dict(tiny_spec_dict()), device="tpu9")


def test_cpu_profile_times_a_proxy_trials_batch_and_steps_on_one_thread():
    defaults = TrialSettings()
    assert TIMING_DEFAULTS["cpu"]["batch_size"] == defaults.batch_size
    assert TIMING_DEFAULTS["cpu"]["steps"] == defaults.timing_steps
    before = torch.get_num_threads()
    result = profile_spec(spec_from_dict(tiny_spec_dict()), device="cpu", steps=1, warmup=0)
    assert result["batch_size"] == defaults.batch_size and result["threads"] == 1
    assert torch.get_num_threads() == before  # the caller's own setting comes back
    assert profile_spec(spec_from_dict(tiny_spec_dict()), device="cpu", steps=1, warmup=0, batch_size=2,
                        threads=2)["threads"] == 2


def test_profile_and_proxy_trial_share_the_step_the_optimizer_and_the_timer():
    # The profile times what a search times: the same step builder and timer objects, not look-alikes...
    assert profile.make_train_step is trial.make_train_step is engine.make_train_step
    assert profile.make_optimizer is trial.make_optimizer is engine.make_optimizer
    assert profile.time_steps is timing.time_steps and device_sharing.TimingPlan(
        device_sharing.DeviceSharing(None, torch.device("cpu")), 9, 1, 10, 10, False).timer.__class__ is timing.StepTimer
    # ...with the proxy trials' default optimizer (its step is part of the timed step).
    defaults = TrialSettings()
    assert (PROXY_OPTIMIZER, PROXY_LR, PROXY_WEIGHT_DECAY) == (defaults.optimizer, defaults.lr,
                                                              defaults.weight_decay)


def test_profile_and_proxy_trial_run_the_same_timed_steps(monkeypatch):
    """Spy on the engine's step and the search's timer: both callers must go through them, with one kind of
    step (engine) and one optimizer class."""
    seen: dict[str, list] = {"steps": [], "timed": []}
    engine_call, measure = TrainStep.__call__, StepTimer.measure

    def spy_call(self, x, y):
        seen["steps"].append((self.engine, type(self.optimizer).__name__))
        return engine_call(self, x, y)

    def spy_measure(self):
        seen["timed"].append(self.device.type)
        return measure(self)

    monkeypatch.setattr(TrainStep, "__call__", spy_call)
    monkeypatch.setattr(StepTimer, "measure", spy_measure)
    spec = spec_from_dict(tiny_spec_dict())
    result = profile_spec(spec.replace(num_classes=10, image_channels=1, train_image_size=16), batch_size=4,
                          device="cpu", warmup=1, steps=3)
    from_profile = {key: list(calls) for key, calls in seen.items()}
    assert len(from_profile["steps"]) == 4 and len(from_profile["timed"]) == 3  # 1 warm-up + 3 timed
    for calls in seen.values():
        calls.clear()
    metrics = run_trial(spec.replace(train_image_size=16, eval_image_size=16),
                        {"data": "digits", "epochs": 1, "batch_size": 64, "threads": 1, "timing_steps": 2,
                         "device": "cpu"}, seed=0)
    assert len(seen["steps"]) == metrics["train_steps"] and len(seen["timed"]) == metrics["timed_steps"] > 0
    assert set(from_profile["steps"]) == set(seen["steps"]) == {(result["engine"], "RMSprop")}
    assert result["engine"] == metrics["engine"]


@pytest.mark.gpu
def test_profile_on_cuda_uses_the_graphed_step_and_bf16():
    result = profile_spec(spec_from_dict(tiny_spec_dict()), batch_size=8, device="cuda", warmup=2, steps=5)
    assert result["device"].startswith("cuda") and result["step_time_ms"] > 0
    assert result["precision"] in ("bf16-autocast", "fp32")
    assert result["engine"] == "graph", result["fallback_reason"]  # what a proxy trial on this GPU runs
