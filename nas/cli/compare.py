"""`nas compare`: the search's winner against zoo models and classical baselines, trained alike on your data."""

from __future__ import annotations

import argparse
from pathlib import Path

from effnas.errors import EffnasError

EPILOG = """\
examples:
  nas compare runs/digits                                   winner vs EfficientNet-B0 and MobileNetV2
  nas compare runs/digits --against efficientnetv2-s,mobilenetv2 --classical --epochs 10
  nas compare runs/fmnist --data idx:/usr/share/datasets/fashion-mnist --scaled m.json --device cuda

Every network (the winner, each --scaled spec, each --against model) trains with the same nas train recipe,
data split, epochs, image size and device; --classical adds a random forest and a logistic regression on the
flattened pixels of the same split. Writes RUN/compare.csv, RUN/compare.json (every model's curves) and one
folder per model under RUN/compare/; `nas report RUN` shows the table and curves. Re-running the command
reads finished models back and resumes a stopped one.
"""

DEFAULT_AGAINST = "efficientnet-b0,mobilenetv2"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare", help="train the search's winner against zoo models and classical baselines",
        description="Train the search's winner and the alternatives alike on your data, and tabulate them.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN", help="a search's run directory (its best.json is the winner)")
    parser.add_argument("--against", default=DEFAULT_AGAINST,
                        help=f"comma-separated zoo names or spec files to train alongside (default {DEFAULT_AGAINST};"
                             " 'none' for no zoo model)")
    parser.add_argument("--scaled", action="append", default=[], metavar="SPEC",
                        help="a scaled family member (nas scale's output) to train too; may repeat")
    parser.add_argument("--classical", action="store_true",
                        help="also fit a random forest and a logistic regression on the flattened pixels")
    parser.add_argument("--data", default=None, help="data source (default: the one the search used)")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs for every network (default 10)")
    parser.add_argument("--stages", type=int, default=2, help="progressive-learning stages (default 2)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size for every network (default 64)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="training and evaluation size for every network (default: the winner's proxy size)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--engine", default="auto", help="auto | eager | graph | compile (default auto)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split and training (default 0)")
    parser.add_argument("--out", default=None, help="where the table and model folders go (default RUN)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    parser.set_defaults(run=run)


def _search_data(run_dir: Path) -> str | None:
    """The data source the search trained its candidates on, as its study recorded it."""
    from effnas.results import ResultsError, open_study

    try:
        settings = open_study(run_dir).user_attrs.get("settings") or {}
    except ResultsError:
        return None
    for holder in (settings, settings.get("trial") or {}, settings.get("recipe") or {}):
        if isinstance(holder, dict) and isinstance(holder.get("data"), str):
            return holder["data"]
    return None


def run(args: argparse.Namespace) -> int:
    from effnas.nas.training.compare import Contender, compare
    from effnas.nas.training.train import TrainConfig
    from effnas.search_space import load_arch

    run_dir = Path(args.run_dir).expanduser()
    if not (run_dir / "best.json").is_file():
        raise EffnasError(f"{run_dir}: no best.json (give the run directory of a search with a completed trial)")
    winner = load_arch(run_dir)
    contenders = [Contender("searched", "searched", winner)]
    contenders += [Contender(Path(path).stem, "scaled", load_arch(path)) for path in args.scaled]
    if args.against.strip().lower() != "none":
        for name in filter(None, (part.strip() for part in args.against.split(","))):
            contenders.append(Contender(Path(name).stem if name.endswith(".json") else name, "zoo", load_arch(name)))
    size = args.image_size or winner.train_image_size
    config = TrainConfig(data=args.data or _search_data(run_dir) or "digits", epochs=args.epochs,
                         stages=args.stages, batch_size=args.batch_size, image_size=size, eval_image_size=size,
                         seed=args.seed)
    for contender in contenders:
        if size < contender.spec.total_stride:
            raise EffnasError(f"{contender.name}: image size {size} px is below its total stride "
                              f"{contender.spec.total_stride}; pass a larger --image-size")
    table = compare(contenders, config, Path(args.out).expanduser() if args.out else run_dir,
                    classical=args.classical, device=args.device, engine=args.engine, progress=not args.quiet,
                    log=(lambda message: None) if args.quiet else print)
    print(table.to_string(index=False, float_format=lambda value: f"{value:.4g}"))
    return 0
