"""Where a real search's time goes: each trial's cost broken down, and the search process's own work.

    python -m benchmarks.trial_overhead [--budget 200] [--quick]

Runs ``effnas.search`` as ``nas search`` runs it (digits, the default space, TPE, 3-epoch proxies, the machine's
default workers and threads), then reads every trained trial's record from the study. A trial's wall time (its
``duration_s``, as the backend measured it) splits into:

  steps      training steps, the timed ones included (``train_seconds`` less the lock waits)
  lock wait  waiting for the device while another trial's steps were timed (``lock_wait_seconds``)
  eval       evaluation on the validation split
  build      building the step (graph capture on a GPU)
  in trial   the rest of ``run_trial``: the model, MAC counting, data from the worker's cache, the optimizer
  dispatch   outside ``run_trial``: handing the candidate to the worker and its result back

Overhead is a trial's wall time less its training steps and evaluation. The search process's own work (starting
workers, the reference, asking the controller, storing results, run files, the progress bar) comes from
``SearchResult.costs``; it runs beside the workers. The whole-process line compares the workers' busy time with
the wall time times the workers: the rest is start-up, the reference trained alone and gaps between trials.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import keep_result, print_report, search_defaults

DEFAULT_BUDGET = 200  # the trials of the quoted run; another budget writes trial_overhead-<budget>.md

PARTS = ("steps", "lock wait", "eval", "build", "in trial", "dispatch")


def breakdown(user_attrs: dict[str, Any]) -> dict[str, float]:
    """One trial's wall time in :data:`PARTS` (seconds), from its record."""
    wall = float(user_attrs["duration_s"])
    total = float(user_attrs["total_seconds"])
    wait = float(user_attrs.get("lock_wait_seconds") or 0.0)
    train, evaluation = float(user_attrs["train_seconds"]), float(user_attrs.get("eval_seconds") or 0.0)
    build = float(user_attrs.get("build_seconds") or 0.0)
    return {"wall": wall, "steps": train - wait, "lock wait": wait, "eval": evaluation, "build": build,
            "in trial": max(0.0, total - train - evaluation - build), "dispatch": max(0.0, wall - total)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET, help="trials (default 200; another budget keeps "
                        "its own results file)")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--quick", action="store_true", help="8 trials of 1 epoch: a smoke run")
    args = parser.parse_args(argv)
    budget, epochs = (8, 1) if args.quick else (args.budget, 3)
    workers, threads = search_defaults("cpu")

    import effnas
    from optuna.trial import TrialState

    from effnas.results import open_study

    with tempfile.TemporaryDirectory(prefix="effnas-trial-overhead-") as tmp:
        began = time.perf_counter()
        print(f"searching {budget} trials of {epochs} epoch(s) on {args.data}: the backbone first, then the trials",
              flush=True)  # the search's own progress bar follows once the backbone is measured
        found = effnas.search(budget=budget, epochs=epochs, data=args.data, device="cpu", out=str(Path(tmp) / "run"))
        wall = time.perf_counter() - began
        study = open_study(found.storage)
        trained = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
                   if "total_seconds" in t.user_attrs and float(t.user_attrs.get("duration_s") or 0) > 0]
        rows = [breakdown(t.user_attrs) for t in trained]

    total_wall = sum(row["wall"] for row in rows)
    shares = {part: 100 * sum(row[part] for row in rows) / total_wall for part in PARTS}
    overheads = [100 * (row["wall"] - row["steps"] - row["eval"]) / row["wall"] for row in rows]
    table = [{"part": part, "seconds (all trials)": sum(row[part] for row in rows), "share of trial wall %": share,
              "median per trial ms": 1000 * statistics.median(row[part] for row in rows)}
             for part, share in shares.items()]
    process = [{"part": part, "seconds": seconds, "share of search wall %": 100 * seconds / wall}
               for part, seconds in found.costs.items()]
    idle = wall * workers - total_wall
    notes = [
        f"{budget} trials ({len(rows)} trained; {found.stopped} stopped early, {found.reused} reused), {epochs}-epoch "
        f"proxies on {args.data}, {workers} workers x {threads} thread(s); whole search {wall:.1f} s",
        f"overhead (trial wall time less training steps and evaluation): {100 - shares['steps'] - shares['eval']:.1f} % "
        f"of all trials' wall time; median trial {statistics.median(overheads):.1f} %, "
        f"p90 {statistics.quantiles(overheads, n=10)[-1]:.1f} %",
        f"workers idle (start-up, the reference alone, gaps between trials): {idle:.1f} s of {wall * workers:.1f} "
        f"worker-seconds ({100 * idle / (wall * workers):.1f} %)",
    ]
    device = torch.device("cpu")
    print_report("Per-trial cost breakdown of a real search", device, table, notes)
    print_report("The search process's own work (beside the workers)", device, process)
    name = "trial_overhead" + ("" if args.quick or budget == DEFAULT_BUDGET else f"-{budget}")  # one file per budget
    keep_result(name, device, args.quick, "Per-trial cost breakdown of a real search", table, notes,
                more=[("The search process's own work (beside the workers)", process, [])])
    return {"rows": rows, "shares": shares, "costs": found.costs, "wall": wall, "idle": idle}


if __name__ == "__main__":
    main()
