"""The training engine: one optimisation step, built once, shared by proxy trials, ``nas train`` and
``nas profile``, with the device, evaluation and engine choices around it (optimizers and the learning-rate
schedule: :mod:`effnas.nas.training.optim`).

Why not a plain loop: on a GPU a proxy-sized candidate is launch-bound, so eager steps are slow and their time
varies from step to step with the host. On CUDA the whole step (forward under bf16 autocast, backward,
``optimizer.step()``) is therefore captured once as a CUDA graph and replayed, fed by copying each batch into
static input tensors. Engines:

  ``eager``    forward/backward/step as written (the CPU default, and the fallback)
  ``graph``    whole-step CUDA graph; CUDA only. A failed capture falls back to eager and says why
  ``compile``  ``torch.compile`` of the model (opt-in: compilation is paid again for every new architecture)
  ``auto``     ``graph`` on CUDA, ``eager`` on CPU

On CUDA the default is channels_last + bf16 autocast; on CPU fp32. No step ever calls ``.item()`` or
synchronises: callers check the loss when they choose to (trials: once per epoch).

Graph mode needs a fixed batch shape (drop the last partial batch) and changes the learning rate only through
tensors: :func:`make_train_step` turns the optimizer's float ``lr`` into a device tensor that
``torch.optim.lr_scheduler`` (which ``fill_``s tensor lrs) or :meth:`TrainStep.set_lr` update in place.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from effnas.models.memory import threads_set_by_user
from effnas.nas.training.choices import ENGINES, OPTIMIZERS, EngineError
from effnas.nas.training.optim import make_optimizer, set_lr

__all__ = ["ENGINES", "OPTIMIZERS", "EngineError", "TrainStep", "capture_failure", "classification_loss",
           "cudnn_benchmark", "evaluate", "evaluate_loss_acc", "make_optimizer", "make_train_step", "prepare_model",
           "resolve_device", "set_lr", "use_amp"]

GRAPH_WARMUP_STEPS = 3

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- small helpers
def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` is CUDA when available, else CPU; asking for CUDA without it is a user error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise EngineError(f"device: unknown device {device!r} (use auto, cpu, cuda or cuda:N)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise EngineError(f"device: {device!r} requested but CUDA is not available on this machine")
    if resolved.type not in ("cpu", "cuda"):
        raise EngineError(f"device: {device!r} is not supported (use cpu or cuda)")
    return resolved


def default_threads() -> int:
    """CPU threads for a training run: the cores this process may use, less those other jobs keep busy right now.
    Two busy threads on one core make every step wait for the slower of them, which turns a shared workstation's
    epoch from seconds into tens of seconds; one thread per free core never does. ``OMP_NUM_THREADS``, where set,
    is the most it takes."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores = min(cores, threads_set_by_user() or cores)
    return max(1, min(cores, cores - round(busy_cores())))


def busy_cores(seconds: float = 0.25) -> float:
    """Cores busy with other work now: the machine's CPU time over a short look (``/proc/stat``), else the
    one-minute load average, which lags by about a minute behind a job that starts or stops."""
    def ticks() -> tuple[int, int]:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle and iowait
        return sum(fields) - idle, sum(fields)

    try:
        busy_before, total_before = ticks()
        time.sleep(seconds)
        busy_after, total_after = ticks()
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    cores = os.cpu_count() or 1
    return cores * (busy_after - busy_before) / max(1, total_after - total_before)


def set_threads(threads: int | None) -> int:
    """Use ``threads`` CPU threads (None: :func:`default_threads`); returns the number in use."""
    torch.set_num_threads(threads or default_threads())
    return torch.get_num_threads()


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool) -> Iterator[None]:
    """Set ``cudnn.benchmark`` for a block. Off for proxy trials and ``nas profile`` (autotuning every new
    candidate's convolutions costs more than a short run saves), on for ``nas train`` (a long run repays it)."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def classification_loss(label_smoothing: float = 0.0) -> LossFn:
    """Cross-entropy in fp32 for class-index targets ``[B]`` or soft (mixup) targets ``[B, K]``."""
    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)

    return loss


def use_amp(device: torch.device) -> bool:
    """bf16 autocast on CUDA GPUs that support it; fp32 elsewhere (fp16 would need a grad scaler)."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    # cache_enabled=False: the autocast weight cache must not outlive a graph capture (and buys nothing here).
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)


def prepare_model(model: nn.Module, device: str | torch.device) -> nn.Module:
    """Move ``model`` to ``device`` (channels_last on CUDA). Call before creating the optimizer."""
    device = torch.device(device)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model


def _prepare_optimizer_for_graph(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Make the optimizer's step capturable: state on the device, lr a device tensor the graph reads."""
    tensor_lr_ok = isinstance(optimizer, (torch.optim.SGD, torch.optim.RMSprop, torch.optim.Adam, torch.optim.AdamW))
    for group in optimizer.param_groups:
        if "capturable" in group:
            group["capturable"] = True
        if tensor_lr_ok:
            lr = group["lr"]
            group["lr"] = (lr.to(device) if isinstance(lr, torch.Tensor)
                           else torch.tensor(float(lr), device=device))
        if isinstance(optimizer, torch.optim.SGD) and not group.get("fused"):
            group["fused"], group["foreach"] = True, False  # only fused SGD reads a tensor lr without .item()
    for state in optimizer.state.values():
        if isinstance(state.get("step"), torch.Tensor):
            state["step"] = state["step"].to(device)


# ----------------------------------------------------------------------------- the step
class TrainStep:
    """``step(x, y) -> loss``: one optimisation step on a batch already on the device (eager engine)."""

    engine = "eager"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn,
                 device: torch.device, amp: bool, channels_last: bool) -> None:
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.device, self.amp, self.channels_last = device, amp, channels_last
        self.fallback_reason: str | None = None
        self._forward: Callable[[torch.Tensor], torch.Tensor] = model

    def _body(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(self.device, self.amp):
            loss = self.loss_fn(self._forward(x), y)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        return self._body(x, y)

    def set_lr(self, lr: float) -> None:
        set_lr(self.optimizer, lr)


class CompiledTrainStep(TrainStep):
    """``torch.compile`` of the model; compilation happens on the first call, and a failure falls back."""

    engine = "compile"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._forward = torch.compile(self.model)
        self._compiled_once = False

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self._compiled_once:
            return super().__call__(x, y)
        try:
            loss = super().__call__(x, y)
        except Exception as error:  # noqa: BLE001 - any compiler failure: run the plain model instead
            self._forward, self.engine = self.model, "eager"
            self.fallback_reason = f"torch.compile failed: {_one_line(error)}"
            loss = super().__call__(x, y)
        self._compiled_once = True
        return loss


class GraphTrainStep(TrainStep):
    """The whole step captured as one CUDA graph and replayed; batches are copied into static inputs.

    Warm-up (3 steps on a side stream, as capture requires) trains on the example batch; the model and
    optimizer are restored afterwards, so building the step leaves no trace and it matches eager training.
    """

    engine = "graph"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn, device: torch.device,
                 amp: bool, channels_last: bool, example_x: torch.Tensor, example_y: torch.Tensor) -> None:
        super().__init__(model, optimizer, loss_fn, device, amp, channels_last)
        _prepare_optimizer_for_graph(optimizer, device)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        self.static_x = example_x.detach().to(device).clone(memory_format=layout)
        self.static_y = example_y.detach().to(device).clone()
        self.graph: torch.cuda.CUDAGraph | None = None
        saved = _snapshot(model, optimizer)
        # The device's own guard and stream: torch.cuda.graph's default capture stream and synchronize() belong
        # to the *current* device, which for cuda:N need not be N. Warm-up and capture share one side stream
        # (as make_graphed_callables does), so per-stream library state (cuBLAS workspaces) exists before capture.
        with torch.cuda.device(device):
            try:
                side = torch.cuda.Stream(device)
                side.wait_stream(torch.cuda.current_stream(device))
                with torch.cuda.stream(side):
                    for _ in range(GRAPH_WARMUP_STEPS):  # errors here are the model's own: let them surface
                        super().__call__(self.static_x, self.static_y)
                torch.cuda.current_stream(device).wait_stream(side)
                self._capture(side)
            finally:
                _restore(saved, model, optimizer)

    def _capture(self, stream: torch.cuda.Stream) -> None:
        self.optimizer.zero_grad(set_to_none=True)  # grads are then allocated inside the graph's pool
        graph = torch.cuda.CUDAGraph()
        caller_stream = torch.cuda.current_stream(self.device)
        try:
            # thread_local: a worker's other threads (MAC counting on the meta device) may run meanwhile.
            with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
                self.static_loss = self._body(self.static_x, self.static_y)
        except Exception as error:  # noqa: BLE001 - an uncapturable op or optimizer: train eagerly instead
            # torch.cuda.graph's __exit__ skips restoring the stream when capture_end raises (an invalidated
            # capture), and a half-captured graph may hold the RNG in capture mode until reset (pytorch#171263).
            torch.cuda.set_stream(caller_stream)
            with contextlib.suppress(Exception):
                graph.reset()
            torch.cuda.synchronize(self.device)
            self.optimizer.zero_grad(set_to_none=True)
            self.engine, self.fallback_reason = "eager", f"CUDA graph capture failed: {capture_failure(error)}"
            return
        self.graph = graph

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.graph is None:
            return super().__call__(x, y)
        if x.shape != self.static_x.shape or y.shape != self.static_y.shape:
            raise ValueError(f"graph engine: batch shape {tuple(x.shape)} differs from the captured "
                             f"{tuple(self.static_x.shape)} (drop the last partial batch)")
        self.static_x.copy_(x, non_blocking=True)
        self.static_y.copy_(y, non_blocking=True)
        self.graph.replay()
        return self.static_loss.clone()  # the static loss is overwritten by the next replay


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".strip()


def capture_failure(error: BaseException) -> str:
    """One line naming what broke a capture. An op that is illegal while capturing (a host sync, ``.item()``)
    invalidates the capture, and ``capture_end`` then raises a generic "operation failed due to a previous
    error during capture" while handling it: the error it replaced is the cause worth reporting."""
    replaced = error.__context__ if error.__cause__ is None and not error.__suppress_context__ else None
    if replaced is None:
        return _one_line(error)
    return f"{_one_line(replaced)} (then {_one_line(error)})"


def _snapshot(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    tensors = [t for t in (*model.parameters(), *model.buffers())]
    state = {(id(p), key): value.detach().clone() for p, s in optimizer.state.items()
             for key, value in s.items() if isinstance(value, torch.Tensor)}
    return {"tensors": tensors, "copies": [t.detach().clone() for t in tensors], "state": state}


@torch.no_grad()
def _restore(saved: dict, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Put weights, buffers and optimizer state back in place (same tensors, so a captured graph stays valid).
    State the warm-up created is zeroed, which equals fresh state for SGD, RMSProp and Adam."""
    for tensor, copy in zip(saved["tensors"], saved["copies"]):
        tensor.copy_(copy)
    for p, s in optimizer.state.items():
        for key, value in s.items():
            if isinstance(value, torch.Tensor):
                before = saved["state"].get((id(p), key))
                if before is not None:
                    value.copy_(before)
                else:
                    value.zero_()


def make_train_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn,
                    example_x: torch.Tensor, example_y: torch.Tensor, engine: str = "auto",
                    amp: bool | None = None, channels_last: bool | None = None) -> TrainStep:
    """Build the training step for ``model`` (already on the device, see :func:`prepare_model`).

    ``example_x`` / ``example_y`` fix the batch shape (graph engine). ``amp`` and ``channels_last`` default to
    on for CUDA, off for CPU. ``graph`` without CUDA runs eager and records why in ``fallback_reason``.
    """
    if engine not in ENGINES:
        raise EngineError(f"engine: unknown {engine!r} (expected one of {', '.join(ENGINES)})")
    device = example_x.device
    cuda = device.type == "cuda"
    amp = use_amp(device) if amp is None else amp
    channels_last = cuda if channels_last is None else channels_last
    common = (model, optimizer, loss_fn, device, amp, channels_last)
    if engine == "auto":
        engine = "graph" if cuda else "eager"
    if engine == "graph":
        if cuda:
            return GraphTrainStep(*common, example_x, example_y)
        step = TrainStep(*common)
        step.fallback_reason = f"CUDA graphs need a CUDA device; ran eager on {device.type}"
        return step
    if engine == "compile":
        return CompiledTrainStep(*common)
    return TrainStep(*common)


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_loss_acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024,
                      prepare: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy over ``x`` in device batches, in eval mode, with bf16 autocast on
    CUDA, and one host sync at the end. ``prepare`` turns a stored batch into the network's input (``nas train``
    resizes and normalises uint8 images there); the model's train/eval mode is restored afterwards."""
    if len(x) == 0:
        raise ValueError("evaluate: no images")
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=x.device)  # loss sum, correct
    try:
        for start in range(0, len(x), batch_size):
            batch = x[start:start + batch_size]
            if prepare is not None:
                batch = prepare(batch)
            if batch.is_cuda:
                batch = batch.contiguous(memory_format=torch.channels_last)
            target = y[start:start + batch_size]
            with _autocast(batch.device, use_amp(batch.device)):
                logits = model(batch).float()
            totals[0] += F.cross_entropy(logits, target, reduction="sum")
            totals[1] += (logits.argmax(dim=1) == target).sum()
    finally:
        model.train(was_training)
    loss_sum, correct = totals.tolist()
    return loss_sum / len(x), correct / len(x)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy over ``x`` (see :func:`evaluate_loss_acc`): what a proxy trial reports."""
    return evaluate_loss_acc(model, x, y, batch_size)[1]
