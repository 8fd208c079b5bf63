"""Progressive learning vs. fixed-size training: the EfficientNetV2 paper's Table 12 in miniature.

The same small network, on the same data, for the same epochs and seed, is trained twice with ``nas train``'s
trainer: once with progressive learning (image size and regularization grow over ``--stages`` stages) and
once at the final size with the final regularization throughout (``--no-progressive``). Both are evaluated at
the same eval size. Prints a table of training time (wall and process CPU seconds of the training steps,
evaluation excluded) and final top-1 (EMA weights), with the device it ran on.

    python -m benchmarks.progressive                       # digits, proxy backbone at half depth, 20 epochs
    python -m benchmarks.progressive --device cuda --data synthetic:20000x32 --epochs 20
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path


def default_model():
    """The search space's proxy backbone (a width-reduced EfficientNetV2-S) at half its depth."""
    from effnas.search_space.compound import scale_uniform
    from effnas.search_space.space import default_space

    backbone = default_space().backbone
    return scale_uniform(backbone, 1.0, 0.5, name=f"{backbone.name}-d0.5")


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.progressive", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", help="spec JSON or zoo name (default: proxy backbone at half depth)")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--stages", type=int, default=4)
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
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="keep both runs here (default: a temporary directory)")
    args = parser.parse_args(argv)

    import torch

    from effnas.search_space import load_arch
    from effnas.nas.training.engine import resolve_device
    from effnas.nas.training.train import TrainConfig, train
    from effnas.errors import EffnasError

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        spec = load_arch(args.arch) if args.arch else default_model()
        device = str(resolve_device(args.device))
        base = dict(data=args.data, epochs=args.epochs, stages=args.stages, batch_size=args.batch_size,
                    optimizer=args.optimizer, image_size=args.image_size, min_image_size=args.min_image_size,
                    eval_image_size=args.eval_image_size, randaug=tuple(args.randaug), mixup=tuple(args.mixup),
                    dropout=tuple(args.dropout), flip=False, seed=args.seed)
        with tempfile.TemporaryDirectory() as scratch:
            root = Path(args.out or scratch)
            results = {}
            for label, progressive in (("progressive", True), ("fixed size", False)):
                print(f"training {label} ...", file=sys.stderr, flush=True)
                results[label] = train(spec, TrainConfig(**base, progressive=progressive),
                                       root / label.replace(" ", "-"), device=device, progress=False,
                                       log=lambda message: print("  " + message, file=sys.stderr, flush=True))
    except EffnasError as error:
        print(f"benchmarks.progressive: error: {error}", file=sys.stderr)
        return 2

    fixed = results["fixed size"]
    print(f"\n{spec.name or 'model'} ({fixed['params']:,} params) on {args.data}, {args.epochs} epochs, batch "
          f"{args.batch_size}, {args.optimizer}, eval at {args.eval_image_size} px, seed {args.seed}; "
          f"RandAugment {args.randaug[0]:g}→{args.randaug[1]:g}, mixup {args.mixup[0]:g}→{args.mixup[1]:g}, "
          f"dropout {args.dropout[0]:g}→{args.dropout[1]:g} (fixed size: the end values throughout)")
    print(f"device: {device_name(device)}\n")
    print("| training | image sizes per stage | train wall s | train CPU s | top-1 (EMA) | top-1 (raw) |")
    print("|---|---|---|---|---|---|")
    for label, metrics in results.items():
        sizes = " → ".join(str(stage["image_size"]) for stage in metrics["schedule"])
        print(f"| {label} | {sizes} | {metrics['train_seconds']:.1f} | {metrics['train_cpu_seconds']:.1f} | "
              f"{metrics['top1']:.4f} | {metrics['top1_raw_weights']:.4f} |")
    speedup = fixed["train_seconds"] / results["progressive"]["train_seconds"]
    print(f"\nprogressive learning: {speedup:.2f}x the training speed of fixed-size training "
          f"({fixed['train_cpu_seconds'] / results['progressive']['train_cpu_seconds']:.2f}x in CPU time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
