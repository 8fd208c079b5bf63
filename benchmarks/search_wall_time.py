"""Search wall time: ``nas search`` end to end on the default data and on a CIFAR-10-sized synthetic set, with
1 and N workers.

    python -m benchmarks.search_wall_time [--quick] [--device cuda]

Each row runs the real command, ``python -m effnas.nas search --quiet`` (TPE, seed 0), in a subprocess with a fresh run
directory, so interpreter start-up, loading the data, the reference trial and every study write are in the wall
time. The trials are then read back from the run's study. Columns:
  wall s       the whole command
  setup s      wall time outside the trials (start-up, data, the reference trial, final writes): wall - span
  trials       trials counted against the budget; span = first trial asked to last trial told
  s/trial      span / trials: the steady rate at this many workers
  trials/h     3600 / s/trial
  200 trials   projected wall time of ``--budget 200``: setup + 200 x s/trial (extrapolated when the budget
               is smaller; the last round of a small budget may leave workers idle, so it errs long)
  speed-up     trials/h over the 1-worker row on the same data
The GPU target: 50,000 images at 32 px, 5 epochs per trial, budget 200, within 15 minutes on one H100
with --workers 4 (the CUDA defaults here). On CPU the defaults are 1 epoch per trial and a budget of 2, and
the 200-trial column is an extrapolation; the synthetic rows still train 40,000 images per trial, so they take
most of the time (--quick: 5,000 images). With --workers 1 a CPU search gives its one worker every core as torch
threads, which slows down badly when anything else runs on the machine.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import add_device_args, keep_result, print_report, search_defaults

GPU_TARGET_MINUTES = 15


def search_command(data: str, workers: int, out: Path, args: argparse.Namespace) -> list[str]:
    """The ``nas search`` command line of one row."""
    command = [sys.executable, "-m", "effnas.nas", "search", "--data", data, "--workers", str(workers),
               "--budget", str(args.budget), "--epochs", str(args.epochs), "--device", args.device,
               "--controller", args.controller, "--seed", "0", "--out", str(out), "--quiet"]
    return command + (["--threads", str(args.threads)] if args.threads else [])


def read_trials(out: Path) -> dict[str, Any]:
    """Counted and failed trials of a finished run, and the span from the first one's start to the last one's end."""
    import optuna
    from optuna.trial import TrialState

    from effnas.results.record import STUDY_NAME

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{out / 'study.db'}")
    counted = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
               if not t.user_attrs.get("interrupted")]
    if not counted:
        return {"trials": 0, "failed": 0, "span": float("nan")}
    span = max(t.datetime_complete for t in counted) - min(t.datetime_start for t in counted)
    return {"trials": len(counted), "failed": sum(t.state == TrialState.FAIL for t in counted),
            "span": span.total_seconds()}


def run_search(data: str, workers: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """One row: run the command, time it, read its study back."""
    from effnas.nas.search.backends.local import default_threads

    out = root / f"{re.sub(r'[^A-Za-z0-9]+', '-', data)}-w{workers}"
    start = time.perf_counter()
    result = subprocess.run(search_command(data, workers, out, args), cwd=root, capture_output=True, text=True,
                            timeout=args.timeout)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"nas search on {data} with {workers} worker(s) exited {result.returncode}:\n"
                           f"{(result.stderr or result.stdout).strip()[-2000:]}")
    found = read_trials(out)
    per_trial = found["span"] / found["trials"] if found["trials"] else float("nan")
    print(f"  done: {data}, {workers} worker(s), {found['trials']} trials in {wall:.0f} s", flush=True)
    return {"data": data, "workers": workers, "threads/worker": args.threads or default_threads(workers),
            "wall s": wall, "setup s": wall - found["span"], "trials": found["trials"], "failed": found["failed"],
            "s/trial": per_trial, "trials/h": 3600 / per_trial, "200 trials min": (wall - found["span"] +
                                                                                  200 * per_trial) / 60}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_args(parser)  # here --threads is passed on as `nas search --threads` (default: the search's own)
    parser.add_argument("--data", default=None,
                        help="comma-separated data sets (default digits,synthetic:50000x32; quick: 5000 images)")
    parser.add_argument("--workers", type=int, default=None,
                        help="N for the N-worker rows (default: `nas search`'s on CPU, one per core; 4 on CUDA)")
    parser.add_argument("--only-n", action="store_true",
                        help="skip the 1-worker rows (no speed-up column; on a GPU this leaves one call more trials)")
    parser.add_argument("--budget", type=int, default=None, help="trials per search (default 200 on CUDA, 2 on CPU)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per trial (default 5 on CUDA, 1 on CPU)")
    parser.add_argument("--controller", default="tpe")
    parser.add_argument("--timeout", type=float, default=None, help="seconds one search may take (default: none)")
    args = parser.parse_args(argv)

    from effnas.nas.training.engine import resolve_device

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    args.workers = args.workers or (4 if cuda else search_defaults(args.device)[0])
    args.budget = args.budget or (200 if cuda and not args.quick else 2)
    args.epochs = args.epochs or (5 if cuda else 1)
    datasets = (args.data or f"digits,synthetic:{5000 if args.quick else 50000}x32").split(",")

    rows = []
    with tempfile.TemporaryDirectory(prefix="effnas-walltime-") as tmp:
        for data in datasets:
            first = len(rows)
            for workers in [args.workers] if args.only_n else sorted({1, args.workers}):
                rows.append(run_search(data, workers, args, Path(tmp)))
                rows[-1]["speed-up"] = rows[-1]["trials/h"] / rows[first]["trials/h"]

    notes = [f"{args.budget} trials per search, {args.epochs} epoch(s) per trial, {args.controller}; "
             f"`200 trials min` is {'measured' if args.budget >= 200 else 'extrapolated'} "
             f"({'from ' + str(args.budget) + ' trials' if args.budget < 200 else 'setup + 200 x s/trial'})"]
    target = [r for r in rows if r["data"] == "synthetic:50000x32" and r["workers"] == 4]
    if cuda and target and args.epochs == 5:
        minutes = target[0]["200 trials min"]
        notes.append(f"GPU target, 200 trials of 5 epochs on 50,000 images within {GPU_TARGET_MINUTES} min with "
                     f"--workers 4: {minutes:.1f} min ({'met' if minutes <= GPU_TARGET_MINUTES else 'NOT met'})")
    else:
        notes.append(f"the GPU target ({GPU_TARGET_MINUTES} min for 200 trials of 5 epochs on synthetic:50000x32, "
                     f"--workers 4) is checked with --device cuda at the defaults")
    title = "search wall time: `nas search` end to end, one fresh run per row"
    print_report(title, device, rows, notes=notes)
    keep_result("search_wall_time", device, args.quick, title, rows, notes)
    return rows


if __name__ == "__main__":
    main()
