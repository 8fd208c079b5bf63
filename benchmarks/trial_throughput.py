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
rows alike. Two rates per row: ``trial img/s`` counts graph capture and its warm-up steps (a cost every candidate
of a search pays once, in its trial's build phase) with the training steps; ``steps img/s`` leaves them out. The
headline ratios are per trial, capture included; on a CPU there is no capture and the two agree.
The result is kept in ``benchmarks/results/trial_throughput.md`` (``-cuda`` on a GPU).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.common import add_device_args, keep_result, print_report, setup_device, synchronize

Rates = tuple[float, float]  # (images per second with setup, i.e. capture and warm-up; without it)


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
               device: torch.device) -> Rates:
    """What a user writes first; no setup, so both rates are the same."""
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
    rate = images / (time.perf_counter() - start)
    return rate, rate


def minimal_loop(model, optimizer, x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int,
                 device: torch.device) -> Rates:
    """The least work per step on CPU: batches sliced once from device tensors, no sync until the end."""
    batches = [(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x) - batch + 1, batch)]
    start = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in batches:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            optimizer.step()
    synchronize(device)
    rate = epochs * len(batches) * batch / (time.perf_counter() - start)
    return rate, rate


def cuda_graph_loop(model, optimizer, x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int,
                    device: torch.device) -> Rates:
    """The whole step as one CUDA graph, written directly: the fastest a proxy step can be fed on a GPU. Its
    warm-up and capture are timed too, since a search pays them for every candidate."""
    batches = [(x[i:i + batch].contiguous(memory_format=torch.channels_last), y[i:i + batch])
               for i in range(0, len(x) - batch + 1, batch)]
    static_x, static_y = batches[0][0].clone(memory_format=torch.channels_last), batches[0][1].clone()

    def body() -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            loss = F.cross_entropy(model(static_x).float(), static_y)
        loss.backward()
        optimizer.step()
        return loss

    synchronize(device)
    setup_start = time.perf_counter()
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
    setup = time.perf_counter() - setup_start
    start = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in batches:
            static_x.copy_(xb, non_blocking=True)
            static_y.copy_(yb, non_blocking=True)
            graph.replay()
    synchronize(device)
    steps_seconds = time.perf_counter() - start
    images = epochs * len(batches) * batch
    return images / (steps_seconds + setup), images / steps_seconds


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the rows in interleaved rounds; print and keep the table; return its rows."""
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

    def trial_row(engine: str) -> Callable[[], Rates]:
        def run() -> Rates:
            metrics = run_trial(spec, _settings(args, device, engine), seed=0)
            images = metrics["train_steps"] * metrics["batch_size"]
            # build_seconds: the engine's warm-up steps and graph capture (nothing on CPU or eager)
            return (images / (metrics["train_seconds"] + metrics["build_seconds"]),
                    images / metrics["train_seconds"])
        return run

    def loop_row(loop: Callable[..., Rates], tuned: bool) -> Callable[[], Rates]:
        def run() -> Rates:
            model, optimizer = _model_and_optimizer(spec, settings, device, cuda_tuned=tuned)
            return loop(model, optimizer, data.train_x, data.train_y, args.batch_size, args.epochs, device)
        return run

    rows_to_run: dict[str, Callable[[], Rates]] = {"effnas trainer": trial_row("auto")}
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
    measured: dict[str, list[Rates]] = {name: [] for name in names}
    for round_ in range(args.rounds):  # each round starts at a different row, so none is always first
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            measured[name].append(rows_to_run[name]())

    best_name = names[-1]

    def median(name: str, which: int) -> float:
        return statistics.median(rates[which] for rates in measured[name])

    rows = []
    for name, values in measured.items():
        trial = [rates[0] for rates in values]
        rows.append({"loop": name, "trial img/s": median(name, 0), "steps img/s": median(name, 1),
                     "vs hand-tuned": median(name, 0) / median(best_name, 0),
                     "vs plain": median(name, 0) / median("plain DataLoader loop", 0),
                     "steps vs hand-tuned": median(name, 1) / median(best_name, 1), "rounds": len(values),
                     "range %": 100 * (max(trial) - min(trial)) / median(name, 0)})
    steps = args.epochs * (len(data.train_x) // args.batch_size)
    trainer = rows[0]
    notes = [f"effnas trainer = {trainer['vs hand-tuned']:.2f}x the hand-tuned loop and "
             f"{trainer['vs plain']:.2f}x the plain DataLoader loop per trial (capture and warm-up included); "
             f"steps only: {trainer['steps vs hand-tuned']:.2f}x the hand-tuned loop"]
    if cuda:
        notes.insert(0, f"graph vs eager per trial (effnas trainer / effnas eager, capture and warm-up included): "
                        f"{median('effnas trainer', 0) / median('effnas eager', 0):.2f}x; steps only: "
                        f"{median('effnas trainer', 1) / median('effnas eager', 1):.2f}x")
    title = (f"trial throughput: {spec.name} at width {space.config['width']:g}, {args.image_size} px, batch "
             f"{args.batch_size}, {steps} steps ({args.epochs} epoch(s) of {len(data.train_x)} images), RMSProp, "
             f"median of {args.rounds} interleaved rounds")
    print_report(title, device, rows, notes=notes)
    keep_result("trial_throughput", device, args.quick, title, rows, notes)
    return rows


if __name__ == "__main__":
    main()
