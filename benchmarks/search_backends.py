"""Trials per hour: the local backend vs Ray, and 1 vs N concurrent trials, on one budget and device.

    python -m benchmarks.search_backends                    # CPU: 8 trials of tiny candidates per setup
    python -m benchmarks.search_backends --budget 32 --device cuda --workers 4 --epochs 2

Each setup runs a fresh search (random controller, same seed, so the same candidates) in its own run
directory. Two rates per setup:
  end to end  counted trials / the whole run, start-up and the reference measurement included;
  trials      counted trials / the span from the first trial's start to the last trial's end.
Every trial gets --threads torch threads (Ray: as many CPUs) however many run at once, so on a CPU
N concurrent trials use N times the cores; on a GPU the rows show how well small candidates share it.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

SPACE = {"width": 0.25, "depth": 0.25, "image_size": 32, "head_channels": 32}


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return torch.cuda.get_device_name(0)
    return f"CPU ({os.cpu_count()} cores)"


def _run(backend: str, workers: int, args: argparse.Namespace, root: Path) -> dict:
    from optuna.trial import TrialState

    from effnas.nas.search.session import Search, SearchConfig, SearchRecipe, SearchRuntime

    out = root / f"{backend}-{workers}"
    space = root / "space.json"
    space.write_text(json.dumps(SPACE))
    recipe = SearchRecipe(controller="random", space=str(space),
                          trial={"data": args.data, "epochs": args.epochs, "batch_size": 32})
    runtime = SearchRuntime(out=str(out), budget=args.budget, seed=0, workers=workers, device=args.device,
                            threads=args.threads, progress=False)
    search = Search(SearchConfig(recipe, runtime))
    start = time.perf_counter()
    if backend == "ray":
        from effnas.nas.search.backends.ray import RayBackend, RayOptions

        gpus = None if args.device != "cpu" else 0.0
        summary = search.run(RayBackend(RayOptions(cpus_per_trial=args.threads, gpus_per_trial=gpus)))
    else:
        summary = search.run()
    wall = time.perf_counter() - start
    done = search.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
    counted = [t for t in done if not t.user_attrs.get("interrupted")]
    span = (max(t.datetime_complete for t in counted) - min(t.datetime_start for t in counted)).total_seconds()
    return {"backend": backend, "workers": workers, "trials": summary.counted, "wall_s": wall,
            "end_to_end_per_h": 3600 * summary.counted / wall, "trials_per_h": 3600 * len(counted) / span}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="N for the N-concurrent-trials rows")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--data", default="synthetic:480x16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (Ray: CPUs) per trial")
    parser.add_argument("--backends", default="local,ray")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="effnas-bench-") as tmp:
        for backend in args.backends.split(","):
            for workers in sorted({1, args.workers}):
                rows.append(_run(backend, workers, args, Path(tmp)))
                print(f"  done: {backend} x{workers}", flush=True)
    base = rows[0]["trials_per_h"]
    print(f"\nsearch backends on {_device_name(args.device)}: budget {args.budget}, {args.data}, "
          f"{args.epochs} epoch(s), {SPACE['image_size']} px, width {SPACE['width']}, "
          f"{args.threads} thread(s) per trial")
    print(f"{'backend':<8} {'concurrent':>10} {'trials':>6} {'wall s':>8} {'end-to-end/h':>13} "
          f"{'trials/h':>9} {'vs first':>9}")
    for row in rows:
        print(f"{row['backend']:<8} {row['workers']:>10} {row['trials']:>6} {row['wall_s']:>8.1f} "
              f"{row['end_to_end_per_h']:>13.0f} {row['trials_per_h']:>9.0f} {row['trials_per_h'] / base:>8.2f}x")


if __name__ == "__main__":
    main()
