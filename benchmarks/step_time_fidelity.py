"""Step-time fidelity: is the step time a search records repeatable, and does it rank architectures as
training them at full size does?

    python -m benchmarks.step_time_fidelity [--quick] [--device cuda]

1. Repeatability: one architecture (the default space's backbone), measured ``--repeats`` times by
   ``run_trial`` (the step time a search records) and by ``time_steps`` on one built step; CV across repeats.
2. Ranking: up to ten variants of the default space (op type, kernel, expansion, depth; built with
   ``spec_from_params``). Proxy: the step time ``run_trial`` records for each. Full: the same choices on the
   backbone at ``--full-width`` / ``--full-depth``, ``--full-size`` px, batch ``--full-batch``, 1000 classes,
   timed with ``time_steps`` on the same engine. Spearman rank correlation between the two columns.
   On a GPU the defaults are full size for real (224 px, batch 128); the CPU defaults (64 px, batch 16) are a
   moderate "full" size so the run finishes in minutes.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch

from benchmarks.common import add_device_args, cv, print_report, setup_device, spearman

# (name, changes): each change sets decisions on some stages (all by default); layers "fewer"/"more" pick the
# stage's smallest/largest layer count in the space, so the same variant exists at proxy and at full depth.
VARIANTS: list[tuple[str, list[dict[str, Any]]]] = [
    ("EfficientNetV2-S", []),
    ("all stages MBConv", [{"op": "mbconv"}]),
    ("all stages Fused-MBConv", [{"op": "fused"}]),
    ("kernel 5 everywhere", [{"kernel": 5}]),
    ("expansion 6 everywhere", [{"expand": 6}]),
    ("fewer layers", [{"layers": "fewer"}]),
    ("more layers", [{"layers": "more"}]),
    ("fused only in stages 0-1", [{"op": "mbconv"}, {"op": "fused", "stages": (0, 1)}]),
    ("expansion 4 everywhere", [{"expand": 4}]),
    ("last two stages k5, more layers", [{"kernel": 5, "layers": "more", "stages": (4, 5)}]),
]


def variant_params(space: Any, changes: list[dict[str, Any]]) -> dict[str, Any]:
    """The space's parameters for the backbone with ``changes`` applied."""
    from search_space.space import param_name

    params = space.params_from_spec(space.backbone)
    for change in changes:
        for index in change.get("stages", range(len(space.stages))):
            for decision, value in change.items():
                if decision == "stages":
                    continue
                if value in ("fewer", "more"):
                    value = (min if value == "fewer" else max)(space.stages[index].layers)
                params[param_name(index, decision)] = value
    return params


def full_step_ms(spec: Any, args: argparse.Namespace, device: torch.device) -> float:
    """Median step time of ``spec`` at full size on the trial engine (random data: only the cost matters)."""
    from models import build_model
    from nas.engine import (classification_loss, cudnn_benchmark, make_optimizer, make_train_step,
                            prepare_model, time_steps)

    torch.manual_seed(0)
    with cudnn_benchmark(False):
        model = prepare_model(build_model(spec.replace(num_classes=1000, dropout=0.0, drop_path_rate=0.0)), device)
        optimizer = make_optimizer("rmsprop", model.parameters(), 0.002, device)
        x = torch.randn(args.full_batch, 3, args.full_size, args.full_size, device=device)
        y = torch.randint(0, 1000, (args.full_batch,), device=device)
        step = make_train_step(model, optimizer, classification_loss(), x, y)
        return time_steps(step, x, y, warmup=2, steps=args.full_steps).median_ms


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_args(parser)
    parser.add_argument("--data", default="digits", help="proxy trial data (the search's default)")
    parser.add_argument("--epochs", type=int, default=1, help="proxy trial epochs")
    parser.add_argument("--timing-steps", type=int, default=20, help="timed steps per proxy trial")
    parser.add_argument("--repeats", type=int, default=4, help="repeated measurements for the CV")
    parser.add_argument("--variants", type=int, default=len(VARIANTS))
    parser.add_argument("--width", type=float, default=None, help="proxy width (default: the default space's)")
    parser.add_argument("--full-width", type=float, default=1.0)
    parser.add_argument("--full-depth", type=float, default=1.0)
    parser.add_argument("--full-size", type=int, default=None, help="default: 224 on CUDA, 64 on CPU")
    parser.add_argument("--full-batch", type=int, default=None, help="default: 128 on CUDA, 16 on CPU")
    parser.add_argument("--full-steps", type=int, default=None, help="default: 30 on CUDA, 5 on CPU")
    args = parser.parse_args(argv)
    device = setup_device(args)
    cuda = device.type == "cuda"
    if args.quick:
        args.repeats, args.variants, args.full_width, args.full_steps = 3, 6, 0.5, args.full_steps or 3
    args.full_size = args.full_size or (224 if cuda else 64)
    args.full_batch = args.full_batch or (128 if cuda else 16)
    args.full_steps = args.full_steps or (30 if cuda else 5)

    from nas.engine import classification_loss, make_optimizer, make_train_step, prepare_model, time_steps
    from models import build_model
    from nas.trial import TrialSettings, run_trial, trial_data
    from search_space.space import SearchSpace

    proxy = SearchSpace.from_dict({} if args.width is None else {"width": args.width})
    full = SearchSpace.from_dict({"width": args.full_width, "depth": args.full_depth, "image_size": args.full_size})
    settings = TrialSettings(data=args.data, epochs=args.epochs, device=str(device), threads=args.threads,
                             timing_steps=args.timing_steps)

    # 1. repeatability of one architecture
    trial_ms = [run_trial(proxy.backbone, settings.to_dict(), seed=0)["step_time_ms"] for _ in range(args.repeats)]
    data = trial_data(settings, 0, device)
    spec = proxy.backbone.replace(num_classes=data.num_classes, image_channels=data.channels, dropout=0.0,
                                  drop_path_rate=0.0)
    model = prepare_model(build_model(spec), device)
    x, y = data.train_x[:settings.batch_size], data.train_y[:settings.batch_size]
    step = make_train_step(model, make_optimizer(settings.optimizer, model.parameters(), settings.lr, device),
                           classification_loss(), x, y)
    pass_ms = [time_steps(step, x, y, warmup=2, steps=args.timing_steps).median_ms for _ in range(args.repeats)]
    repeat_rows = [
        {"measurement": f"run_trial step_time_ms ({args.timing_steps} timed steps)", "repeats": args.repeats,
         "median ms": statistics.median(trial_ms), "CV %": 100 * cv(trial_ms), "engine": step.engine},
        {"measurement": f"time_steps on one built step ({args.timing_steps} steps)", "repeats": args.repeats,
         "median ms": statistics.median(pass_ms), "CV %": 100 * cv(pass_ms), "engine": step.engine},
    ]
    print_report(f"step-time repeatability: {spec.name}, {settings.image_size} px, batch {settings.batch_size}, "
                 f"{args.data}", device, repeat_rows)

    # 2. proxy vs full ranking
    rows = []
    for name, changes in VARIANTS[:args.variants]:
        metrics = run_trial(proxy.spec_from_params(variant_params(proxy, changes)), settings.to_dict(), seed=0)
        big = full.spec_from_params(variant_params(full, changes))
        rows.append({"variant": name, "proxy params": metrics["params"], "proxy ms": metrics["step_time_ms"],
                     "proxy spread %": 100 * metrics["step_time_spread"], "full ms": full_step_ms(big, args, device)})
        print(f"  measured: {name}", flush=True)
    rho = spearman([r["proxy ms"] for r in rows], [r["full ms"] for r in rows])
    print_report(
        f"proxy vs full step time: proxy = default space (width {proxy.config['width']:g}, {settings.image_size} px, "
        f"batch {settings.batch_size}, run_trial); full = width {args.full_width:g}, depth {args.full_depth:g}, "
        f"{args.full_size} px, batch {args.full_batch}, 1000 classes (time_steps, {args.full_steps} steps)",
        device, rows, notes=[f"Spearman rank correlation, proxy vs full step time: {rho:.2f} over {len(rows)} "
                             f"architectures (engine {step.engine})"])
    return {"repeatability": repeat_rows, "ranking": rows, "spearman": rho}


if __name__ == "__main__":
    main()
