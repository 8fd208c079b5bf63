"""The decisive race: does the search's winner beat what a practitioner would train, at equal training time, on
the data's own test split?

1. A ``nas search`` on a stratified subset of Fashion-MNIST's 60,000 training images (selection sees only the
   subset's validation split) with equal-time proxies (``--proxy-time``, T scaled by the subset's share of the
   data); with ``--paper-form``, also one in the paper's form (3 epochs, reward with w = -0.07, v = -0.05).
2. ``nas compare --time T --classical`` on all 60,000 training images, once per seed: every network (the
   search's winner as "searched", the space's unsearched backbone, PyTorch's MNIST-example CNN, ResNet-20 and zoo
   models) trains for T seconds of training steps with one recipe (the search's: optimizer, rate, decay, batch),
   split, device and one thread; each is scored once on the 10,000 t10k test images, which neither the search
   nor training read.

Compares run two at a time, one thread each, so the two cores are busy alike for every network; the table gives
each row's mean and standard deviation over the seeds, and every row's lead or lag against the winner in units
of the standard error of the difference.

    python -m benchmarks.compare_fashion_mnist                          # CPU defaults (about 45 minutes)
    python -m benchmarks.compare_fashion_mnist --search-run RUN         # reuse a finished search
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from benchmarks.common import print_report, write_result
from effnas.nas.cli.arguments import duration, positive_int
from effnas.results import open_study

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
TRAINING_IMAGES = 60_000
AGAINST = "backbone,mnist-cnn,resnet20,efficientnet-b0,mobilenetv2"


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


def summarise(tables: list[pd.DataFrame]) -> list[dict]:
    """One row per model: test top-1 mean ± std over seeds, and its distance from the searched winner in standard
    errors of the difference (negative: behind the winner)."""
    frame = pd.concat(tables)
    winner = frame[frame["model"] == "searched"]["test_top1"].tolist()
    rows = []
    for model, group in frame.groupby("model", sort=False):
        accs = group["test_top1"].tolist()
        mean, std = statistics.fmean(accs), statistics.stdev(accs) if len(accs) > 1 else 0.0
        gap = ""
        if model != "searched" and len(accs) > 1 and len(winner) > 1:
            se = math.sqrt(statistics.variance(winner) / len(winner) + statistics.variance(accs) / len(accs))
            gap = f"{(statistics.fmean(winner) - mean) / se:+.1f}" if se else "inf"
        first = group.iloc[0]
        rows.append({"model": model, "kind": first["kind"], "test top-1": f"{mean:.4f} ± {std:.4f}",
                     "winner ahead by (SE of diff.)": gap,
                     "params": None if pd.isna(first["params"]) else int(first["params"]),
                     "step ms": None if pd.isna(first["step_time_ms"]) else round(group["step_time_ms"].mean(), 1),
                     "epochs": None if pd.isna(first["epochs"]) else round(group["epochs"].mean(), 2),
                     "train s": round(group["train_seconds"].mean(), 1),
                     "train s range": f"{group['train_seconds'].min():.1f}-{group['train_seconds'].max():.1f}",
                     "val top-1": round(group["top1"].mean(), 4)})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(FASHION_MNIST))
    parser.add_argument("--subset", type=positive_int, default=12000, help="training images the search sees")
    parser.add_argument("--budget", type=positive_int, default=30, help="search trials")
    parser.add_argument("--optimizer", default="adamw", help="the search's (hence every network's) optimizer")
    parser.add_argument("--lr", type=float, default=0.004,
                        help="the search's (hence every network's) peak learning rate at its batch of 64 (default 0.004)")
    parser.add_argument("--space", default="small-images", help="the search space (default small-images)")
    parser.add_argument("--time", default="180s", help="training time of every network (default 180s)")
    parser.add_argument("--seeds", type=positive_int, default=3, help="compares, one per seed (default 3)")
    parser.add_argument("--parallel", type=positive_int, default=2, help="compares at once, one thread each")
    parser.add_argument("--against", default=AGAINST)
    parser.add_argument("--finalists", type=positive_int, default=1,
                        help="nas compare --finalists: the search's K best candidates train and the best on validation "
                             "is 'searched' (default 1: best.json)")
    parser.add_argument("--out", default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--search-run", default=None, help="a finished equal-time search's run directory")
    parser.add_argument("--paper-form", action="store_true", help="also search in the paper's form and race its winner")
    parser.add_argument("--paper-search-run", default=None, help="a finished paper-form search's run directory")
    args = parser.parse_args(argv)
    if not Path(args.data_dir).is_dir():
        raise SystemExit(f"{args.data_dir}: not found (apt-get install dataset-fashion-mnist)")
    out = Path(args.out or tempfile.mkdtemp(prefix="effnas-fmnist-"))
    out.mkdir(parents=True, exist_ok=True)
    paper_form = args.paper_form or args.paper_search_run is not None
    bar = tqdm(total=1 + paper_form + args.seeds, desc="searches, then compares", unit="step")
    seconds = duration(args.time)
    proxy_time = f"{seconds * args.subset / TRAINING_IMAGES:.3g}s"  # as many epochs in the proxy as in the run

    def search(given: str | None, name: str, *flags: str) -> Path:
        run = Path(given) if given else out / name
        if not given:
            bar.set_postfix_str(f"{name}: {args.budget} trials")
            nas("search", "--data", f"idx:{args.data_dir}:{args.subset}", "--space", args.space, "--budget",
                str(args.budget), "--optimizer", args.optimizer, "--lr", str(args.lr), "--device", "cpu", "--out", str(run), "--quiet",
                *flags)
        bar.update(1)
        return run

    run = search(args.search_run, "search-equal-time", "--proxy-time", proxy_time)
    search_seconds, against = study_seconds(run), args.against
    if paper_form:
        paper = search(args.paper_search_run, "search-paper-form")
        paper_winner = out / "paper-form-winner.json"
        paper_winner.write_text((paper / "best.json").read_text())
        against = f"{paper_winner},{against}"

    def compare(seed: int) -> pd.DataFrame:
        folder = out / f"compare-seed{seed}"
        nas("compare", str(run), "--data", f"idx:{args.data_dir}", "--time", args.time, "--threads", "1",
            "--against", against, "--classical", "--seed", str(seed), "--device", "cpu", "--out", str(folder),
            "--quiet", "--finalists", str(args.finalists))
        bar.update(1)
        table = pd.read_csv(folder / "compare.csv")
        trained = {path.name for path in (folder / "compare").iterdir()}
        chosen = sorted(name for name in trained if name.startswith("trial-") and name not in set(table["model"]))
        return table.assign(chosen=", ".join(chosen) or "best.json")

    started = time.perf_counter()
    with ThreadPoolExecutor(args.parallel) as pool:
        tables = list(pool.map(compare, range(args.seeds)))
    bar.close()
    rows = summarise(tables)
    picks = [f"seed {seed}: {table['chosen'].iloc[0]}" for seed, table in enumerate(tables)]
    notes = [
        f"data: Fashion-MNIST from {args.data_dir}; the search saw a stratified {args.subset:,}-image subset of the "
        f"training files ({args.budget} trials, space {args.space}, --optimizer {args.optimizer} --lr {args.lr:g}): 'searched' with "
        f"equal-time proxies (--proxy-time {proxy_time}, {search_seconds:.0f} s)"
        + (f", 'paper-form-winner' with the paper's 3-epoch proxies and reward ({study_seconds(paper):.0f} s)"
           if paper_form else "") +
        f"; every network then trained on all 60,000 training images (48,000 train, 12,000 validation) for --time "
        f"{args.time} of training steps, one thread, with the search's recipe; classical baselines on the same "
        "split's flattened pixels",
        "test top-1: the 10,000 t10k images, read once per finished model; mean ± standard deviation over "
        f"{args.seeds} seeds (seed sets the validation split and the training); 'winner ahead by' is the difference "
        "of means over the standard error of the difference",
        f"{args.parallel} compares at once, one thread each; compares took {time.perf_counter() - started:.0f} s",
        *([f"finalists: the search's {args.finalists} best candidates by reward each trained as above ('trial-N' "
           "rows); in each seed the one with the best validation top-1 is 'searched' (the test split chose "
           f"nothing): {'; '.join(picks)}; a row's params and step time are its first seed's"]
          if args.finalists > 1 else []),
        f"search runs: {run}" + (f", {paper}" if paper_form else ""),
    ]
    print_report("Equal-time race on Fashion-MNIST", "cpu", rows, notes)
    name = "compare_fashion_mnist" + (f"-finalists{args.finalists}" if args.finalists > 1 else "")
    path = write_result(name, "Equal-time race on Fashion-MNIST", "cpu", rows, notes)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
