"""`nas train`: train an architecture with progressive learning and adaptive regularization."""

from __future__ import annotations

import argparse
from pathlib import Path

from effnas import api
from effnas.nas.training.choices import ENGINES, OPTIMIZERS
from effnas.nas.training.sources import data_help
from effnas.nas.cli.arguments import add_config_argument, duration, finite_number, positive_int, thread_count

EXAMPLES = """\
examples:
  nas train --arch runs/digits/best.json --data digits --epochs 30 --image-size 64 --out runs/digits-train
  nas train --arch m.json --data cifar:~/cifar-10-batches-py --epochs 100 --device cuda --out runs/m
  nas train --arch efficientnetv2-s --data imagefolder:~/flowers --epochs 350 --stages 4 --device cuda
  nas train ... --resume                  continue a stopped run from its last checkpoint
  nas train ... --no-progressive          fixed size and regularization (the last stage's), for comparison
  nas train --arch runs/fmnist/best.json --data idx:/usr/share/datasets/fashion-mnist --time 5m
                                          train for 5 minutes (the schedule ends when the time does)

The size and regularization ranges come from the arch file's "progressive" recipe (written by nas scale),
else the paper's EfficientNetV2-S ranges; the flags below override either. Those recipes are tuned for
ImageNet-length runs: on runs shorter than 10,000 steps every regularizer you do not set (dropout, RandAugment,
mixup, stochastic depth, label smoothing, crop) is scaled down in proportion, so that a short run on a small
data set still learns; metrics.json records the recipe used ("recipe", "regularization_scale").

The run selects nothing on the test split: at the end it scores the EMA weights once on the data's own test
split (idx's t10k files, CIFAR's test_batch, an npz's x_test/y_test, an image folder's test/ beside train/),
or, for a source without one, on images held out of every run (metrics.json: "test_top1", "test_split").
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train an architecture with progressive learning (Algorithm 1 of EfficientNetV2)",
        description="Train one architecture: image size and regularization (dropout, RandAugment, mixup) grow "
                    "together over --stages stages; checkpoints every epoch, metrics.csv, training.html, and "
                    "at the end final.pt (EMA weights) and metrics.json in --out.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_argument(parser, "train")
    parser.add_argument("--arch", required=True, help="spec JSON (best.json, nas scale output), a zoo name, or a "
                        "reference network: mnist-cnn, resnet20")
    parser.add_argument("--data", default="digits", help=data_help("digits"))
    parser.add_argument("--epochs", type=positive_int, default=10, help="training epochs (default 10)")
    parser.add_argument("--time", type=duration, default=None, metavar="T",
                        help="train for this long instead of --epochs: 90s, 5m, 1h (training steps only; the "
                             "learning-rate curve and the stages follow the clock)")
    parser.add_argument("--threads", type=thread_count, default=None,
                        help="CPU threads (default: the cores other jobs leave free, at least 1 and at most "
                             "OMP_NUM_THREADS)")
    parser.add_argument("--stages", type=positive_int, default=None,
                        help="progressive stages M (default 4, at most one per epoch)")
    parser.add_argument("--no-progressive", action="store_true",
                        help="train at the final size and regularization throughout")
    parser.add_argument("--out", default="runs/train", help="output directory (default runs/train)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    parser.add_argument("--stop-after", type=positive_int, metavar="N",
                        help="stop after N epochs of this invocation (continue later with --resume)")
    parser.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto (default)")
    parser.add_argument("--engine", default="auto", choices=ENGINES,
                        help="training step engine (default auto: CUDA graph on GPU, eager on CPU)")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="default 64 (the proxy trials'), halved (down to 16) until an epoch has at least 16 steps")
    parser.add_argument("--optimizer", default=None, choices=OPTIMIZERS,
                        help="default: when --arch is a search's run directory or its best.json, the optimizer, "
                        "rate, decay and batch its candidates trained with (unless any of the four is given); "
                        "else rmsprop")
    parser.add_argument("--lr", type=finite_number, help="peak learning rate (default: 0.008 / 0.1 / 0.008 "
                        "x batch/256 for rmsprop / sgd / adamw)")
    parser.add_argument("--weight-decay", type=finite_number, help="default 1e-5 / 5e-5 / 0.05 per optimizer")
    parser.add_argument("--schedule", default="cosine", choices=("cosine", "exponential"),
                        help="decay after warm-up: cosine to 0, or x0.97 every 2.4 epochs (official)")
    parser.add_argument("--warmup-epochs", type=finite_number, help="linear warm-up (default 5, at most 10%% of epochs)")
    parser.add_argument("--label-smoothing", type=finite_number, default=None,
                        help="default 0.1 on runs of 10,000 steps or more, proportionally less on shorter ones")
    parser.add_argument("--ema-decay", type=finite_number, default=0.9999)
    parser.add_argument("--image-size", type=positive_int,
                        help="final training size S_e (default: the spec's train_image_size)")
    parser.add_argument("--eval-image-size", type=positive_int,
                        help="evaluation size (default: the spec's, scaled with --image-size)")
    parser.add_argument("--min-image-size", type=positive_int, help="first stage's size S_0")
    for name, what in (("randaug", "RandAugment magnitude (0-30)"), ("mixup", "mixup alpha"),
                       ("dropout", "dropout rate")):
        parser.add_argument(f"--{name}", type=finite_number, nargs=2, metavar=("START", "END"),
                            help=f"{what} at the first and last stage")
    flips = parser.add_mutually_exclusive_group()
    flips.add_argument("--flip", dest="flip", action="store_true", default=None,
                       help="random horizontal flips (default: on, except for digits and idx: data)")
    flips.add_argument("--no-flip", dest="flip", action="store_false", help="no horizontal flips")
    parser.add_argument("--crop-min-area", type=finite_number, default=None,
                        help="smallest random-resized-crop area, fraction of the image (default 0.5 on runs of "
                             "10,000 steps or more, closer to 1 on shorter ones)")
    parser.add_argument("--val-fraction", type=finite_number, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    options = {name: value for name, value in vars(args).items()
               if name not in ("command", "config", "run", "no_progressive")}
    result = api.train(**options, progressive=not args.no_progressive)
    if result.stopped_after_epoch is not None:
        return 0
    metrics = result.metrics
    test = ("" if metrics["test_top1"] is None else
            f"test top-1 {metrics['test_top1']:.4f} ({metrics['test_split']}); ")
    print(f"{test}validation top-1 {metrics['top1']:.4f} (EMA weights, {metrics['eval_image_size']} px; raw weights "
          f"{metrics['top1_raw_weights']:.4f}) after {metrics['epochs_reached']:.2f} epochs in {metrics['stages']} "
          f"stage(s), {metrics['train_seconds']:.1f} s of training on {metrics['threads']} thread(s)")
    print(f"wrote {Path(args.out) / 'final.pt'}, metrics.json, metrics.csv, training.html")
    return 0
