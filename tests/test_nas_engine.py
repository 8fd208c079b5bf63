"""The training engine: eager training on CPU, engine selection and fallback, timing, evaluation; GPU paths
(whole-step CUDA graph) are GPU-marked and compared against eager step by step."""

import pytest
import torch
import torch.nn.functional as F

from effnas.models import build_model
from effnas.nas.training import engine
from effnas.nas.training.engine import (EngineError, capture_failure, classification_loss, cudnn_benchmark, evaluate, make_optimizer,
                        make_train_step, prepare_model, resolve_device, set_lr)
from effnas.nas.training.timing import StepTimer, time_steps
from effnas.search_space import ArchSpec, StageSpec


def tiny_spec(dropout: float = 0.2, drop_path: float = 0.2) -> ArchSpec:
    return ArchSpec(stages=(StageSpec("fused", 3, 1, 1, 8, 8, 1),
                            StageSpec("mbconv", 3, 2, 2, 8, 16, 2, se_ratio=0.25)),
                    stem_channels=8, head_channels=32, num_classes=4, dropout=dropout, drop_path_rate=drop_path,
                    train_image_size=16, eval_image_size=16, name="tiny")


def batch(n=32, device="cpu", seed=0):
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = torch.randn(n, 3, 16, 16, generator=generator) * 0.3
    x[:, 0] += y[:, None, None] - 1.5  # learnable: the class shifts the first channel
    return x.to(device), y.to(device)


def fresh(device="cpu", optimizer="sgd", lr=0.05, **spec_kwargs):
    torch.manual_seed(0)
    model = prepare_model(build_model(tiny_spec(**spec_kwargs)), device)
    return model, make_optimizer(optimizer, model.parameters(), lr, device)


# ----------------------------------------------------------------------------- CPU
@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop", "adamw"])
def test_eager_step_trains_on_cpu(optimizer):
    model, opt = fresh(optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 0.003)
    x, y = batch()
    step = make_train_step(model, opt, classification_loss(), x, y)
    assert step.engine == "eager" and step.fallback_reason is None
    losses = [step(x, y) for _ in range(25)]
    assert all(loss.shape == () and not loss.requires_grad for loss in losses)
    assert losses[-1].item() < 0.5 * losses[0].item()
    assert evaluate(model, x, y) > 0.9


def test_graph_without_cuda_runs_eager_and_says_why():
    model, opt = fresh()
    x, y = batch()
    step = make_train_step(model, opt, classification_loss(), x, y, engine="graph")
    assert step.engine == "eager"
    assert "CUDA" in step.fallback_reason
    before = step(x, y).item()
    for _ in range(10):
        last = step(x, y).item()
    assert last < before


def test_bad_engine_and_device_are_one_line_errors():
    model, opt = fresh()
    x, y = batch()
    with pytest.raises(EngineError, match="unknown 'fast'"):
        make_train_step(model, opt, classification_loss(), x, y, engine="fast")
    with pytest.raises(EngineError, match="unknown 'lion'"):
        make_optimizer("lion", model.parameters(), 0.1, "cpu")
    with pytest.raises(EngineError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="CUDA is not available"):
            resolve_device("cuda")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_loss_supports_label_smoothing_and_soft_targets():
    logits = torch.randn(6, 4)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    assert torch.allclose(classification_loss()(logits, y), F.cross_entropy(logits, y))
    smoothed = classification_loss(0.1)(logits, y)
    assert torch.allclose(smoothed, F.cross_entropy(logits, y, label_smoothing=0.1))
    assert not torch.allclose(smoothed, F.cross_entropy(logits, y))
    one_hot = F.one_hot(y, 4).float()
    assert torch.allclose(classification_loss()(logits, one_hot), F.cross_entropy(logits, y))
    mixed = 0.7 * one_hot + 0.3 * one_hot.roll(1, 0)  # mixup targets
    expected = 0.7 * F.cross_entropy(logits, y) + 0.3 * F.cross_entropy(logits, y.roll(1, 0))
    assert torch.allclose(classification_loss()(logits, mixed), expected, atol=1e-6)


def test_set_lr_float_and_tensor():
    model, opt = fresh()
    set_lr(opt, 0.5)
    assert opt.param_groups[0]["lr"] == 0.5
    tensor_opt = torch.optim.SGD(model.parameters(), lr=torch.tensor(0.1))
    rate = tensor_opt.param_groups[0]["lr"]
    set_lr(tensor_opt, 0.25)
    assert tensor_opt.param_groups[0]["lr"] is rate and rate.item() == 0.25  # filled in place


def test_time_steps_and_timer_on_cpu():
    model, opt = fresh()
    x, y = batch()
    step = make_train_step(model, opt, classification_loss(), x, y)
    timing = time_steps(step, x, y, warmup=1, steps=5)
    assert timing.steps == 5 and timing.median_ms > 0 and timing.spread >= 0
    timer = StepTimer(torch.device("cpu"))
    with pytest.raises(ValueError):
        timer.result()
    for _ in range(3):
        with timer.measure():
            step(x, y)
    assert timer.result().steps == 3


def test_evaluate_matches_manual_accuracy_and_keeps_mode():
    model, _ = fresh()
    x, y = batch(50)
    model.train()
    accuracy = evaluate(model, x, y, batch_size=7)
    model.eval()
    with torch.no_grad():
        expected = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy == pytest.approx(expected)
    model.train()
    evaluate(model, x, y)
    assert model.training


def test_snapshot_restore_undoes_warmup_steps():
    # The graph engine trains 3 warm-up steps before capture and then restores this state.
    model, opt = fresh(optimizer="rmsprop", lr=0.01)
    x, y = batch()
    saved = engine._snapshot(model, opt)
    weights = [t.detach().clone() for t in (*model.parameters(), *model.buffers())]
    step = make_train_step(model, opt, classification_loss(), x, y)
    for _ in range(3):
        step(x, y)
    engine._restore(saved, model, opt)
    assert all(torch.equal(a, b) for a, b in zip(weights, (*model.parameters(), *model.buffers())))
    assert all(v.abs().sum() == 0 for s in opt.state.values() for v in s.values() if torch.is_tensor(v))
    # Training on from the restored state equals training a fresh model (same seed: same dropout masks).
    model2, opt2 = fresh(optimizer="rmsprop", lr=0.01)
    step2 = make_train_step(model2, opt2, classification_loss(), x, y)
    torch.manual_seed(123)
    restored = [step(x, y).item() for _ in range(2)]
    torch.manual_seed(123)
    fresh_losses = [step2(x, y).item() for _ in range(2)]
    assert restored == pytest.approx(fresh_losses, rel=1e-5)


def test_cudnn_benchmark_context_restores():
    previous = torch.backends.cudnn.benchmark
    with cudnn_benchmark(not previous):
        assert torch.backends.cudnn.benchmark is (not previous)
    assert torch.backends.cudnn.benchmark is previous


def test_capture_failure_names_the_error_that_broke_the_capture():
    # capture_end raises a generic error while the real one (an illegal op inside the capture) is handled
    try:
        try:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore")
        except RuntimeError:
            raise RuntimeError("CUDA error: operation failed due to a previous error during capture")
    except RuntimeError as error:
        reason = capture_failure(error)
    assert reason == ("RuntimeError: CUDA error: operation not permitted when stream is capturing "
                      "(then RuntimeError: CUDA error: operation failed due to a previous error during capture)")
    assert capture_failure(ValueError("plain")) == "ValueError: plain"


# ----------------------------------------------------------------------------- CUDA
def _eager_vs(engine_name: str, steps: int = 6):
    x, y = batch(64, "cuda")
    losses = {}
    for name in ("eager", engine_name):
        model, opt = fresh("cuda", optimizer="sgd", lr=0.05, dropout=0.0, drop_path=0.0)
        step = make_train_step(model, opt, classification_loss(), x, y, engine=name)
        losses[name] = [step(x, y) for _ in range(steps)]
        losses[name] = torch.stack(losses[name]).float().cpu()
        losses[name + "_step"] = step
    return losses


@pytest.mark.gpu
def test_graph_step_matches_eager_losses():
    result = _eager_vs("graph")
    step = result["graph_step"]
    assert step.engine == "graph" and step.fallback_reason is None, step.fallback_reason
    # Same first loss (the warm-up left no trace) and the same trajectory within bf16 noise.
    assert torch.allclose(result["graph"], result["eager"], rtol=2e-2, atol=2e-2)
    assert result["graph"][-1] < result["graph"][0]


@pytest.mark.gpu
@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop", "adamw"])
def test_graph_capture_with_each_optimizer_and_tensor_lr(optimizer):
    model, opt = fresh("cuda", optimizer=optimizer, lr=0.01)
    x, y = batch(64, "cuda")
    weights = [p.detach().clone() for p in model.parameters()]
    step = make_train_step(model, opt, classification_loss(0.1), x, y, engine="graph")
    assert step.engine == "graph", step.fallback_reason
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))  # capture left no trace
    step.set_lr(0.0)
    step(x, y)
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))  # lr 0 reached the graph
    step.set_lr(0.01)
    losses = [step(x, y).item() for _ in range(20)]
    assert losses[-1] < losses[0]
    timing = time_steps(step, x, y, warmup=2, steps=20)
    assert timing.steps == 20 and timing.median_ms > 0
    assert evaluate(model, x, y) > 0.5
    with pytest.raises(ValueError, match="differs from the captured"):
        step(x[:10], y[:10])


@pytest.mark.gpu
def test_auto_engine_is_graph_on_cuda_with_float_lr_optimizer():
    torch.manual_seed(0)
    model = prepare_model(build_model(tiny_spec()), "cuda")
    opt = torch.optim.RMSprop(model.parameters(), lr=0.01, momentum=0.9)  # as a user would write it
    x, y = batch(64, "cuda")
    step = make_train_step(model, opt, classification_loss(), x, y)
    assert step.engine == "graph", step.fallback_reason
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.0)  # schedulers fill tensor lrs in place
    scheduler.step()
    weights = [p.detach().clone() for p in model.parameters()]
    step(x, y)
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))


class _SyncsInForward(torch.nn.Module):
    """A model that reads a value on the host in every forward: fine eagerly, illegal inside a capture."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        if x.abs().sum().item() < 0:  # a host sync; never true
            x = -x
        return self.model(x)


@pytest.mark.gpu
def test_failed_capture_falls_back_to_eager_with_the_cause_and_a_clean_stream():
    torch.manual_seed(0)
    model = prepare_model(_SyncsInForward(build_model(tiny_spec(dropout=0.0, drop_path=0.0))), "cuda")
    opt = make_optimizer("rmsprop", model.parameters(), 0.003, "cuda")
    x, y = batch(64, "cuda")
    step = make_train_step(model, opt, classification_loss(), x, y, engine="graph")
    assert step.engine == "eager" and step.graph is None
    assert step.fallback_reason.startswith("CUDA graph capture failed: ")
    cause = step.fallback_reason.split(" (then ")[0]  # the op's own error first, not capture_end's generic one
    assert "previous error during capture" not in cause, step.fallback_reason
    assert torch.cuda.current_stream() == torch.cuda.default_stream()  # not left on the capture stream
    assert not torch.cuda.is_current_stream_capturing()
    losses = [step(x, y).item() for _ in range(15)]
    assert losses[-1] < losses[0]
    ones = torch.ones(4096, device="cuda")  # the RNG works eagerly after the failed capture: masks differ
    assert not torch.equal(F.dropout(ones, 0.5), F.dropout(ones, 0.5))


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_graph_and_timer_on_a_device_that_is_not_current():
    device = torch.device("cuda:1")
    torch.manual_seed(0)
    model = prepare_model(build_model(tiny_spec(dropout=0.0, drop_path=0.0)), device)
    opt = make_optimizer("sgd", model.parameters(), 0.05, device)
    x, y = batch(64, device)
    assert torch.cuda.current_device() == 0
    step = make_train_step(model, opt, classification_loss(), x, y, engine="graph")
    assert step.engine == "graph", step.fallback_reason
    losses = [step(x, y).item() for _ in range(10)]
    assert losses[-1] < losses[0]  # the replays train (a capture on the wrong device would record nothing)
    assert time_steps(step, x, y, warmup=1, steps=5).median_ms > 0.01


@pytest.mark.gpu
def test_graph_replays_draw_new_dropout_masks_and_update_batchnorm_stats():
    # RNG and in-place buffer updates live inside the captured step: each replay must redo them, not repeat them
    model, opt = fresh("cuda", optimizer="sgd", lr=0.05, dropout=0.5, drop_path=0.5)
    x, y = batch(64, "cuda")
    step = make_train_step(model, opt, classification_loss(), x, y, engine="graph")
    assert step.engine == "graph", step.fallback_reason
    step.set_lr(0.0)  # weights stay put, so only the masks can change the loss
    weights = [p.detach().clone() for p in model.parameters()]
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    stats = bn.running_mean.clone()
    losses = [step(x, y).item() for _ in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    assert len(set(losses)) == len(losses), losses
    assert not torch.equal(stats, bn.running_mean)
