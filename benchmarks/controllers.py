"""Which controller finds the best reward for a given budget? Every controller against random search.

Each (controller, seed) pair is a real, complete ``nas search``: same space, data, proxy training, budget
and seeds for every controller, so the only difference is how candidates are chosen. The table shows the
best reward found (mean and spread over seeds) and its ratio to random search's.

    python -m benchmarks.controllers                  # budget 24, seeds 0 1 2, synthetic data, 1 epoch
    python -m benchmarks.controllers --budget 200 --data digits --epochs 3   # the real thing (hours on a CPU)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import add_device_args, print_report, setup_device

CONTROLLERS = ("random", "tpe", "nsga2", "rl", "evolution")


def run_one(controller: str, seed: int, args: argparse.Namespace, root: Path) -> dict:
    from effnas.nas.search.session import Search, SearchConfig
    from effnas.nas.search.trial import TrialSettings

    trial = TrialSettings.from_dict({**TrialSettings().to_dict(), "data": args.data, "epochs": args.epochs,
                                     "device": str(args.device)})
    config = SearchConfig(out=str(root / f"{controller}-{seed}"), budget=args.budget, controller=controller,
                          seed=seed, workers=args.workers, trial=trial.to_dict())
    start = time.perf_counter()
    summary = Search(config, progress=False).run()
    best = summary.best["metrics"]["reward"] if summary.best else float("nan")
    return {"best": best, "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=24)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data", default="synthetic:2000x16")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=None, help="trials at once per search (default: per core)")
    parser.add_argument("--controllers", nargs="+", default=list(CONTROLLERS), choices=CONTROLLERS)
    add_device_args(parser)
    args = parser.parse_args(argv)
    device = setup_device(args)
    if args.quick:
        args.budget, args.seeds, args.controllers, args.data = 2, [0], ["random", "evolution"], "synthetic:200x16"

    print(f"budget {args.budget} per search, seeds {args.seeds}, data {args.data}, {args.epochs} epoch(s) per trial")
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="effnas-controllers-") as tmp:
        for seed in args.seeds:  # interleaved, so a change in machine load hits every controller alike
            for controller in args.controllers:
                outcome = run_one(controller, seed, args, Path(tmp))
                results.setdefault(controller, []).append(outcome)
                print(f"  {controller:<10} seed {seed}: best reward {outcome['best']:.4f} "
                      f"({outcome['seconds']:.0f} s)", flush=True)
    baseline = statistics.mean(r["best"] for r in results["random"]) if "random" in results else None
    rows = []
    for controller, outcomes in results.items():
        bests = [r["best"] for r in outcomes]
        mean = statistics.mean(bests)
        rows.append({"controller": controller, "best reward (mean)": round(mean, 4),
                     "std": round(statistics.stdev(bests), 4) if len(bests) > 1 else 0.0,
                     "min": round(min(bests), 4), "max": round(max(bests), 4),
                     "vs random": f"{mean / baseline:.3f}x" if baseline else "-",
                     "s per search": statistics.mean(r["seconds"] for r in outcomes)})
    print_report(f"Best reward after {args.budget} trials, mean over seeds {args.seeds}", device, rows)
    return rows


if __name__ == "__main__":
    main()
