"""`nas compare`: the search's winner against zoo models and classical baselines, trained alike on your data."""

from __future__ import annotations

import argparse

from effnas import api
from effnas.api import DEFAULT_AGAINST
from effnas.nas.training.sources import data_help
from effnas.nas.cli.arguments import add_config_argument, duration, positive_int, thread_count

EPILOG = """\
examples:
  nas compare runs/digits                                   winner vs its backbone, a small CNN, ResNet-20, ...
  nas compare runs/fmnist --data idx:/usr/share/datasets/fashion-mnist --time 2m --classical
                                                            every network trains for 2 minutes on the full data
  nas compare runs/digits --against efficientnetv2-s,mobilenetv2 --epochs 10
  nas compare runs/fmnist --scaled m.json --device cuda

Every network (the winner, each --scaled spec, each --against model) trains with the same nas train recipe,
data split, image size, device and threads, for the same --time (the fair race: most accuracy for the
training time you have) or the same --epochs. --against takes zoo names, spec files, "backbone" (the search
space's own backbone, unsearched: what the search adds) and the reference networks mnist-cnn (PyTorch's MNIST
example) and resnet20. --classical adds a random forest and a logistic regression on the flattened pixels of
the same split. --finalists K trains the search's K best candidates instead of best.json alone, and the one
with the best validation top-1 becomes the "searched" row (the others stay in the table as finalists).

Every row is scored once on the data's test split, which neither the search nor training reads (idx's t10k
files, CIFAR's test_batch, an npz's x_test/y_test, an image folder's test/, else images held out of every
run). Writes RUN/compare.csv and RUN/compare.json (columns model, kind, test_top1, top1 (validation), params,
macs, step_time_ms, epochs, train_seconds, ...; every model's curves) and one folder per model under
RUN/compare/; `nas report RUN` shows the table and curves. Re-running the command reads finished models back
and resumes a stopped one.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare", help="train the search's winner against zoo models and classical baselines",
        description="Train the search's winner and the alternatives alike on your data, and tabulate them.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_argument(parser, "compare")
    parser.add_argument("run_dir", metavar="RUN", help="a search's run directory (its best.json is the winner)")
    parser.add_argument("--against", default=DEFAULT_AGAINST,
                        help="comma-separated networks to train alongside: backbone (the space's, unsearched), "
                             "mnist-cnn, resnet20, zoo names, spec files (default "
                             f"{DEFAULT_AGAINST}; 'none' for the winner alone)")
    parser.add_argument("--scaled", action="append", default=[], metavar="SPEC",
                        help="a scaled family member (nas scale's output) to train too; may repeat")
    parser.add_argument("--finalists", type=positive_int, default=1, metavar="K",
                        help="train the search's K best candidates (by reward) and take the one with the best "
                             "validation top-1 as the winner: a short proxy's ranking need not hold at this "
                             "data and time (default 1: best.json; at most 20)")
    parser.add_argument("--classical", action="store_true",
                        help="also fit a random forest and a logistic regression on the flattened pixels")
    parser.add_argument("--data", default=None, help=data_help("the one the search used"))
    parser.add_argument("--time", type=duration, default=None, metavar="T",
                        help="train every network for this long instead of --epochs: 90s, 5m, 1h")
    parser.add_argument("--epochs", type=positive_int, default=10,
                        help="training epochs for every network, without --time (default 10)")
    parser.add_argument("--stages", type=positive_int, default=None,
                        help="progressive-learning stages (default 4, at most one per epoch)")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="batch size for every network (default: the search's; every network trains with the "
                        "optimizer, rate and decay the search's candidates trained with)")
    parser.add_argument("--threads", type=thread_count, default=None,
                        help="CPU threads for every network (default: the cores other jobs leave free, at least 1 "
                             "and at most OMP_NUM_THREADS)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="training and evaluation size for every network (default: the winner's proxy size)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--engine", default="auto", help="auto | eager | graph | compile (default auto)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split and training (default 0)")
    parser.add_argument("--out", default=None, help="where the table and model folders go (default RUN)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    options = {name: value for name, value in vars(args).items()
               if name not in ("command", "config", "run", "run_dir")}
    result = api.compare(args.run_dir, **options)
    print(_console_table(result.table))
    return 0


def _console_table(table) -> str:
    """The table as a person reads it: accuracies to 4 places, counts with separators, times to 0.1."""
    formats = {"test_top1": "{:.4f}", "top1": "{:.4f}", "params": "{:,.0f}", "macs": "{:,.0f}",
               "step_time_ms": "{:.1f}", "epochs": "{:.2f}", "train_seconds": "{:.1f}",
               "images_per_second": "{:,.0f}", "image_size": "{:.0f}"}
    shown = table.copy().astype(object)
    for column, form in formats.items():
        shown[column] = [("-" if value is None or value != value else form.format(value)) for value in table[column]]
    return shown.to_string(index=False)
