"""Progressive learning vs. fixed-size training: the EfficientNetV2 paper's Table 12 in miniature.

The same small network, on the same data, for the same epochs and seed, is trained with ``nas train``'s trainer
with progressive learning (image size and regularization grow over ``--stages`` stages) and at the final size
with the final regularization throughout (``--no-progressive``); both are evaluated at the same eval size.

The two arms run in ``--rounds`` interleaved rounds (progressive, fixed | fixed, progressive | ...: each round
starts with the other arm), so a shared machine's changing load hits both alike. The headline is the ratio of
median training WALL times, which is what a user waits for; CPU seconds of the training steps are shown beside
it. Evaluation is outside both. The table is kept in ``benchmarks/results/progressive.md``.

    python -m benchmarks.progressive                       # digits, proxy backbone at half depth, 20 epochs
    python -m benchmarks.progressive --device cuda --data synthetic:20000x32 --epochs 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import add_device_args, keep_result, print_report, setup_device

ARMS = (("progressive", True), ("fixed size", False))


def default_model():
    """The search space's proxy backbone (a width-reduced EfficientNetV2-S) at half its depth."""
    from effnas.search_space.compound import scale_uniform
    from effnas.search_space.space import default_space

    backbone = default_space().backbone
    return scale_uniform(backbone, 1.0, 0.5, name=f"{backbone.name}-d0.5")


def main(argv: list[str] | None = None) -> int:
    """Train both arms in interleaved rounds, print and keep the table; 2 on a bad spec or data."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.progressive", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", help="spec JSON or zoo name (default: proxy backbone at half depth)")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--stages", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved runs of each arm (default 2)")
    parser.add_argument("--image-size", type=int, default=80, help="final training size (default 80)")
    parser.add_argument("--min-image-size", type=int, default=32, help="first stage's size (default 32)")
    parser.add_argument("--eval-image-size", type=int, default=96,
                        help="evaluation size (default 96: the paper trains about 20 %% below its eval size)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--optimizer", default="rmsprop")
    parser.add_argument("--randaug", type=float, nargs=2, default=(0.0, 0.0), metavar=("START", "END"),
                        help="RandAugment magnitude range (default off: its photometric operations, invert and "
                             "solarize among them, keep a short run on 8x8 digits near chance)")
    parser.add_argument("--mixup", type=float, nargs=2, default=(0.0, 0.2), metavar=("START", "END"))
    parser.add_argument("--dropout", type=float, nargs=2, default=(0.1, 0.3), metavar=("START", "END"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="keep every run here (default: a temporary directory)")
    add_device_args(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.stages, args.image_size, args.min_image_size, args.eval_image_size = 2, 2, 48, 32, 48

    from effnas.errors import EffnasError
    from effnas.nas.training.train import TrainConfig, train
    from effnas.search_space import load_arch

    device = setup_device(args)
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in ARMS}
    try:
        spec = load_arch(args.arch) if args.arch else default_model()
        base = dict(data=args.data, epochs=args.epochs, stages=args.stages, batch_size=args.batch_size,
                    optimizer=args.optimizer, image_size=args.image_size, min_image_size=args.min_image_size,
                    eval_image_size=args.eval_image_size, randaug=tuple(args.randaug), mixup=tuple(args.mixup),
                    dropout=tuple(args.dropout), flip=False, seed=args.seed)
        with tempfile.TemporaryDirectory() as scratch:
            root = Path(args.out or scratch)
            for round_ in range(args.rounds):
                for label, progressive in ARMS[round_ % 2:] + ARMS[:round_ % 2]:
                    print(f"round {round_ + 1}: training {label} ...", file=sys.stderr, flush=True)
                    runs[label].append(train(
                        spec, TrainConfig(**base, progressive=progressive),
                        root / f"{label.replace(' ', '-')}-{round_ + 1}", device=str(device), progress=False,
                        log=lambda message: print("  " + message, file=sys.stderr, flush=True)))
    except EffnasError as error:
        print(f"benchmarks.progressive: error: {error}", file=sys.stderr)
        return 2

    def median(label: str, key: str) -> float:
        return statistics.median(metrics[key] for metrics in runs[label])

    rows = [{"training": label, "RandAugment": f"{args.randaug[0]:g}->{args.randaug[1]:g}" if progressive
             else f"{args.randaug[1]:g}",
             "sizes per stage": " -> ".join(str(stage["image_size"]) for stage in runs[label][0]["schedule"]),
             "train wall s": median(label, "train_seconds"), "train CPU s": median(label, "train_cpu_seconds"),
             "top-1 (EMA)": median(label, "top1"), "top-1 (raw)": median(label, "top1_raw_weights"),
             "rounds": len(runs[label]),
             "wall s each": " ".join(f"{metrics['train_seconds']:.1f}" for metrics in runs[label])}
            for label, progressive in ARMS]
    wall = median("fixed size", "train_seconds") / median("progressive", "train_seconds")
    cpu = median("fixed size", "train_cpu_seconds") / median("progressive", "train_cpu_seconds")
    params = runs["fixed size"][0]["params"]
    title = (f"progressive vs fixed-size training: {spec.name or 'model'} ({params:,} params) on {args.data}, "
             f"{args.epochs} epochs, batch {args.batch_size}, {args.optimizer}, eval at {args.eval_image_size} px, "
             f"seed {args.seed}, median of {args.rounds} interleaved rounds")
    notes = [f"progressive learning: {wall:.2f}x the training wall-time speed of fixed-size training "
             f"({'faster' if wall > 1 else 'slower'}; {cpu:.2f}x in CPU time of the training steps)",
             f"mixup {args.mixup[0]:g}->{args.mixup[1]:g}, dropout {args.dropout[0]:g}->{args.dropout[1]:g}; "
             f"fixed size uses the end values throughout"]
    print_report(title, device, rows, notes)
    keep_result("progressive", device, args.quick, title, rows, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
