"""Trial throughput: effnas's trial trainer vs a plain PyTorch loop vs the best hand-tuned loop for the device.

    python -m benchmarks.trial_throughput [--quick] [--device cuda]

Same model (the default search space's backbone), same data, batch, optimizer and number of steps in every row:
  effnas trainer   ``run_trial``'s training phase (the engine's step on device-resident data; img/s from the
                   trial's own ``train_seconds``, so per-step lr updates, shuffling and timing are included)
  effnas eager     (CUDA only) the same trial with ``engine=eager``: what the CUDA graph buys
  plain loop       as a user would write it: ``DataLoader`` over a ``TensorDataset``, fp32, no channels_last,
                   ``loss.item()`` each step
  hand-tuned       CPU: a minimal loop over pre-sliced device tensors; CUDA: a whole-step CUDA graph written
                   directly (bf16 autocast, channels_last, batches copied into static inputs)
Rows run in interleaved rounds (A B C A B C ...) and report the median, so a shared machine's load hits all
rows alike. Graph capture and its warm-up steps are outside the timed span (as in a trial's build phase).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.common import add_device_args, print_report, setup_device, synchronize


def _settings(args: argparse.Namespace, device: torch.device, engine: str = "auto") -> dict[str, Any]:
    from effnas.nas.search.trial import TrialSettings

    return TrialSettings(data=f"synthetic:{args.images}x{args.image_size}", epochs=args.epochs,
                         batch_size=args.batch_size, device=str(device), engine=engine,
                         threads=args.threads).to_dict()


def _model_and_optimizer(spec: Any, settings: dict[str, Any], device: torch.device, cuda_tuned: bool):
    """The trial's network (classes, channels, no dropout) and its optimizer's hyper-parameters, written out."""
    from effnas.models import build_model

    torch.manual_seed(0)
    model = build_model(spec).to(device)
    if cuda_tuned:
        model.to(memory_format=torch.channels_last)
    lr = torch.tensor(settings["lr"], device=device) if cuda_tuned else settings["lr"]
    optimizer = torch.optim.RMSprop(model.parameters(), lr=lr, alpha=0.9, eps=1e-3, momentum=0.9,
                                    weight_decay=settings["weight_decay"], capturable=cuda_tuned)
    return model, optimizer


def plain_loop(model, optimizer, x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int,
               device: torch.device) -> float:
    """What a user writes first. Returns images per second."""
    loader = DataLoader(TensorDataset(x.cpu(), y.cpu()), batch_size=batch, shuffle=True, drop_last=True)
    images = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            _ = loss.item()
            images += len(xb)
    return images / (time.perf_counter() - start)


def minimal_loop(model, optimizer, x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int,
                 device: torch.device) -> float:
    """The least work per step on CPU: batches sliced once from device tensors, no sync until the end."""
    batches = [(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x) - batch + 1, batch)]
    start = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in batches:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            optimizer.step()
    synchronize(device)
    return epochs * len(batches) * batch / (time.perf_counter() - start)


def cuda_graph_loop(model, optimizer, x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int,
                    device: torch.device) -> float:
    """The whole step as one CUDA graph, written directly: the fastest a proxy step can be fed on a GPU."""
    batches = [(x[i:i + batch].contiguous(memory_format=torch.channels_last), y[i:i + batch])
               for i in range(0, len(x) - batch + 1, batch)]
    static_x, static_y = batches[0][0].clone(memory_format=torch.channels_last), batches[0][1].clone()

    def body() -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            loss = F.cross_entropy(model(static_x).float(), static_y)
        loss.backward()
        optimizer.step()
        return loss

    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            body()
    torch.cuda.current_stream(device).wait_stream(side)
    optimizer.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        body()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in batches:
            static_x.copy_(xb, non_blocking=True)
            static_y.copy_(yb, non_blocking=True)
            graph.replay()
    synchronize(device)
    return epochs * len(batches) * batch / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_args(parser)
    parser.add_argument("--images", type=int, default=None,
                        help="synthetic images, 80 %% train (default: 1280 on CPU, 12800 on CUDA)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=None, help="default: 64 on CPU, 256 on CUDA")
    parser.add_argument("--epochs", type=int, default=None, help="default: 2 on CPU, 3 on CUDA")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved repetitions of every row")
    parser.add_argument("--width", type=float, default=None, help="proxy width (default: the default space's)")
    args = parser.parse_args(argv)
    device = setup_device(args)
    cuda = device.type == "cuda"
    if args.quick:
        args.images, args.epochs, args.rounds = args.images or (5120 if cuda else 640), args.epochs or 1, 3
    args.images = args.images or (12800 if cuda else 1280)
    args.batch_size = args.batch_size or (256 if cuda else 64)
    args.epochs = args.epochs or (3 if cuda else 2)

    from effnas.nas.search.trial import run_trial, trial_data, TrialSettings
    from effnas.search_space.space import SearchSpace

    # The space sets the size trials train at (its specs' train_image_size).
    space = SearchSpace.from_dict({"image_size": args.image_size,
                                   **({} if args.width is None else {"width": args.width})})
    settings = _settings(args, device)
    data = trial_data(TrialSettings.from_dict(settings), 0, device, args.image_size)
    spec = space.backbone.replace(num_classes=data.num_classes, image_channels=data.channels,
                                  dropout=0.0, drop_path_rate=0.0)

    def trial_row(engine: str) -> Callable[[], float]:
        def run() -> float:
            metrics = run_trial(spec, _settings(args, device, engine), seed=0)
            return metrics["train_steps"] * metrics["batch_size"] / metrics["train_seconds"]
        return run

    def loop_row(loop: Callable[..., float], tuned: bool) -> Callable[[], float]:
        def run() -> float:
            model, optimizer = _model_and_optimizer(spec, settings, device, cuda_tuned=tuned)
            return loop(model, optimizer, data.train_x, data.train_y, args.batch_size, args.epochs, device)
        return run

    rows_to_run: dict[str, Callable[[], float]] = {"effnas trainer": trial_row("auto")}
    if cuda:
        rows_to_run["effnas eager"] = trial_row("eager")
    rows_to_run["plain DataLoader loop"] = loop_row(plain_loop, tuned=False)
    rows_to_run["hand-tuned " + ("CUDA graph" if cuda else "minimal loop")] = (
        loop_row(cuda_graph_loop, tuned=True) if cuda else loop_row(minimal_loop, tuned=False))
    # Untimed: the process's first steps pay one-off costs (allocator, kernels' first use) no row should carry.
    model, optimizer = _model_and_optimizer(spec, settings, device, cuda_tuned=False)
    minimal_loop(model, optimizer, data.train_x[:2 * args.batch_size], data.train_y[:2 * args.batch_size],
                 args.batch_size, 1, device)
    names = list(rows_to_run)
    measured: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(args.rounds):  # each round starts at a different row, so none is always first
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            measured[name].append(rows_to_run[name]())

    best_name = list(rows_to_run)[-1]
    best = statistics.median(measured[best_name])
    plain = statistics.median(measured["plain DataLoader loop"])
    rows = [{"loop": name, "img/s": statistics.median(v), "vs hand-tuned": statistics.median(v) / best,
             "vs plain": statistics.median(v) / plain, "rounds": len(v),
             "range %": 100 * (max(v) - min(v)) / statistics.median(v)} for name, v in measured.items()]
    steps = args.epochs * (len(data.train_x) // args.batch_size)
    print_report(
        f"trial throughput: {spec.name} at width {space.config['width']:g}, {args.image_size} px, batch "
        f"{args.batch_size}, {steps} steps ({args.epochs} epoch(s) of {len(data.train_x)} images), RMSProp, "
        f"median of {args.rounds} interleaved rounds", device, rows,
        notes=[f"effnas trainer = {rows[0]['vs hand-tuned']:.2f}x the hand-tuned loop, "
               f"{rows[0]['vs plain']:.2f}x the plain DataLoader loop"])
    return rows


if __name__ == "__main__":
    main()
