"""Trials per hour: the local backend vs Ray, and 1 vs N concurrent trials, on one budget and device.

    python -m benchmarks.search_backends                    # CPU: 8 trials of tiny candidates per setup
    python -m benchmarks.search_backends --budget 32 --device cuda --workers 4 --epochs 2

Each setup runs a fresh search (random controller, same seed, so the same candidates) in its own run
directory. Two rates per setup:
  end to end  counted trials / the whole run, start-up and the reference measurement included;
  trials      counted trials / the span from the first trial's start to the last trial's end.
Every trial gets --threads torch threads (Ray: as many CPUs) however many run at once, so on a CPU
N concurrent trials use N times the cores; on a GPU the rows show how well small candidates share it.
Setups run one after another (a search is the unit here), so on a shared machine compare them within one run
only. The table is kept in ``benchmarks/results/search_backends.md`` (``-cuda`` on a GPU).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import keep_result, print_report

SPACE = {"width": 0.25, "depth": 0.25, "image_size": 32, "head_channels": 32}


def _run(backend: str, workers: int, args: argparse.Namespace, root: Path) -> dict:
    from optuna.trial import TrialState

    from effnas.nas.search.session import Search
    from effnas.nas.search.settings import SearchConfig, SearchRecipe, SearchRuntime

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
        from effnas.nas.search.backends.local import LocalBackend

        summary = search.run(LocalBackend())
    wall = time.perf_counter() - start
    done = search.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
    counted = [t for t in done if not t.user_attrs.get("interrupted")]
    span = (max(t.datetime_complete for t in counted) - min(t.datetime_start for t in counted)).total_seconds()
    return {"backend": backend, "workers": workers, "trials": summary.counted, "wall_s": wall,
            "end_to_end_per_h": 3600 * summary.counted / wall, "trials_per_h": 3600 * len(counted) / span}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run every (backend, trials at once) setup, print and keep the table; return its rows."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="N for the N-concurrent-trials rows")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--data", default="synthetic:480x16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (Ray: CPUs) per trial")
    parser.add_argument("--backends", default="local,ray")
    parser.add_argument("--quick", action="store_true", help="budget 2, local backend only")
    args = parser.parse_args(argv)
    if args.quick:
        args.budget, args.backends = 2, "local"

    from effnas.nas.training.engine import resolve_device

    rows = []
    with tempfile.TemporaryDirectory(prefix="effnas-bench-") as tmp:
        for backend in args.backends.split(","):
            for workers in sorted({1, args.workers}):
                rows.append(_run(backend, workers, args, Path(tmp)))
                print(f"  done: {backend} x{workers}", flush=True)
    for row in rows:
        row["vs first"] = row["trials_per_h"] / rows[0]["trials_per_h"]
    device = resolve_device(args.device)
    title = (f"search backends: budget {args.budget}, {args.data}, {args.epochs} epoch(s), {SPACE['image_size']} px, "
             f"width {SPACE['width']}, {args.threads} thread(s) per trial")
    notes = ["end_to_end_per_h: counted trials / the whole run; trials_per_h: counted trials / first start to last "
             "end; vs first: trials_per_h over the first row's"]
    print_report(title, device, rows, notes)
    keep_result("search_backends", device, args.quick, title, rows, notes)
    return rows


if __name__ == "__main__":
    main()
