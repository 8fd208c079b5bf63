"""The whole path on real data: search Fashion-MNIST, then train the winner against zoo models and classical
baselines with one recipe (``nas compare``), and keep the table with every row's wall time.

Reads Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``); ``--subset`` keeps a CPU run
short (a stratified subset of the training files, split into train and validation as every effnas run does).

    python -m benchmarks.compare_fashion_mnist                      # CPU defaults
    python -m benchmarks.compare_fashion_mnist --subset 0 --budget 200 --epochs 30 --device cuda
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.common import print_report, write_result
from effnas.results import open_study

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def nas(*argv: str) -> float:
    """Run one nas command to completion; its wall time in seconds."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "effnas.nas", *argv], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"nas {argv[0]} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def study_seconds(run: Path) -> float:
    """A finished search's wall time as its study recorded it: first trial started to last trial finished."""
    study = open_study(run)
    starts = [t.datetime_start for t in study.trials if t.datetime_start]
    ends = [t.datetime_complete for t in study.trials if t.datetime_complete]
    return (max(ends) - min(starts)).total_seconds()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(FASHION_MNIST))
    parser.add_argument("--subset", type=int, default=6000, help="training-file images used (0: all 60,000)")
    parser.add_argument("--budget", type=int, default=24, help="search trials")
    parser.add_argument("--epochs", type=int, default=10, help="nas compare's epochs for every network")
    parser.add_argument("--against", default="efficientnet-b0,mobilenetv2,mnasnet-a1")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="folder for the run (default: a temporary one)")
    parser.add_argument("--search-run", default=None,
                        help="an existing search's run directory to compare from (its time comes from its study)")
    args = parser.parse_args(argv)
    if not Path(args.data_dir).is_dir():
        raise SystemExit(f"{args.data_dir}: not found (apt-get install dataset-fashion-mnist)")
    data = f"idx:{args.data_dir}" + (f":{args.subset}" if args.subset else "")
    if args.search_run:
        run = Path(args.search_run)
        search_seconds = study_seconds(run)
    else:
        run = Path(args.out or tempfile.mkdtemp(prefix="effnas-fmnist-")) / "run"
        search_seconds = nas("search", "--data", data, "--budget", str(args.budget), "--device", args.device,
                             "--out", str(run), "--quiet")
    compare_seconds = nas("compare", str(run), "--data", data, "--against", args.against, "--classical",
                          "--epochs", str(args.epochs), "--device", args.device, "--quiet")
    table = pd.read_csv(run / "compare.csv")
    rows = [{"model": r.model, "kind": r.kind, "top-1": r.top1,
             "params": None if pd.isna(r.params) else int(r.params),
             "MACs": None if pd.isna(r.macs) else int(r.macs), "train s": r.train_seconds,
             "images/s": None if pd.isna(r.images_per_second) else r.images_per_second,
             "step ms": None if pd.isna(r.step_time_ms) else r.step_time_ms} for r in table.itertuples()]
    notes = [f"data: {data}; every network {args.epochs} epochs at the winner's proxy size with nas train's "
             "defaults (one recipe, split and device); classical baselines on the flattened pixels of the same split",
             f"search: {len(open_study(run).trials)} trials in {search_seconds:.0f} s; nas compare: "
             f"{compare_seconds:.0f} s in all",
             "top-1 is on the validation split held out of the training files (the t10k files are not read)"]
    print_report("nas compare on Fashion-MNIST", args.device, rows, notes)
    path = write_result("compare_fashion_mnist", "nas compare on Fashion-MNIST", args.device, rows, notes)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
