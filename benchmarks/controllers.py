"""Which controller finds the best reward for a given budget? Every controller against random search, two ways.

``--objective synthetic`` (the default; seconds, nothing trained): the reward is the share of the default space's
decisions that match a hidden target architecture (the largest choice of every decision: MBConv, kernel 5,
expansion 6, most layers, SE), the objective of ``tests/test_nas_controllers.py`` on the default space. Each
controller runs ``--budget`` trials (default 200) per seed on an in-memory Optuna study with its own sampler;
the table shows the mean reward of the last 40 trials (where the controller has settled) and the best reward,
each averaged over the seeds. NSGA-II is left out of the default list: it optimizes three objectives, not this
one reward.

``--objective search``: each (controller, seed) pair is a real, complete ``nas search``: same space, data,
proxy training, budget and seeds for every controller, so the only difference is how candidates are chosen;
the table shows the best reward found (mean and spread over seeds) and its ratio to random search's.

Seeds run in the outer loop and controllers in the inner, so a change in machine load hits every controller
alike. The table is kept in ``benchmarks/results/controllers.md`` (``controllers-search.md`` for real searches).

    python -m benchmarks.controllers                                # synthetic, 200 trials, seeds 0 1 2
    python -m benchmarks.controllers --objective search             # budget 24, synthetic data, 1 epoch
    python -m benchmarks.controllers --objective search --budget 200 --data digits --epochs 3   # hours on a CPU
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import add_device_args, keep_result, print_report, setup_device
from effnas.nas.search.controllers.registry import CONTROLLERS as REGISTRY

CONTROLLERS = tuple(REGISTRY)
SYNTHETIC_CONTROLLERS = tuple(name for name, entry in REGISTRY.items() if not entry.multi_objective)  # one reward
LAST = 40  # trials at the end of a synthetic run whose mean reward is reported


def synthetic_rewards(controller: str, seed: int, budget: int) -> tuple[list[float], int]:
    """One controller's rewards, trial by trial, on the hidden-target objective over the default space, and how
    many of its proposals repeated an architecture it had proposed before (a search trains those once)."""
    import optuna

    from effnas.nas.search.controllers import make_sampler, study_directions
    from effnas.results.record import architecture_key
    from effnas.search_space.space import default_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = default_space()
    target = {name: space.choices(name)[-1] for name in space.param_names()}

    seen: set[str] = set()
    repeats = 0

    def objective(trial: optuna.Trial) -> float:
        nonlocal repeats
        key = architecture_key(space.sample(trial).to_dict())
        repeats += key in seen
        seen.add(key)
        active = space.active_params(trial.params)
        reward = sum(trial.params[name] == target[name] for name in active) / len(active)
        trial.set_user_attr("reward", reward)
        return reward

    study = optuna.create_study(directions=study_directions(controller),
                                sampler=make_sampler(controller, space, seed))
    study.optimize(objective, n_trials=budget)
    return [t.user_attrs["reward"] for t in sorted(study.trials, key=lambda t: t.number)], repeats


def run_search(controller: str, seed: int, args: argparse.Namespace, root: Path) -> dict[str, float]:
    """One complete ``nas search``; its best reward and wall time."""
    from effnas.nas.search.backends.local import LocalBackend
    from effnas.nas.search.session import Search
    from effnas.nas.search.settings import SearchConfig, SearchRecipe, SearchRuntime

    recipe = SearchRecipe(controller=controller, trial={"data": args.data, "epochs": args.epochs})
    runtime = SearchRuntime(out=str(root / f"{controller}-{seed}"), budget=args.budget, seed=seed,
                            workers=args.workers, device=str(args.device_resolved), threads=args.threads,
                            progress=False)
    start = time.perf_counter()
    summary = Search(SearchConfig(recipe, runtime)).run(LocalBackend())
    best = summary.best["metrics"]["reward"] if summary.best else float("nan")
    return {"best": best, "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run every (seed, controller) pair, print and keep the table; return its rows."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objective", choices=("synthetic", "search"), default="synthetic")
    parser.add_argument("--budget", type=int, default=None, help="trials per run (default: 200 synthetic, 24 search)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data", default="synthetic:2000x16", help="search: the trials' data")
    parser.add_argument("--epochs", type=int, default=1, help="search: epochs per trial")
    parser.add_argument("--workers", type=int, default=None, help="search: trials at once (default: per core)")
    parser.add_argument("--controllers", nargs="+", default=None, choices=CONTROLLERS)
    add_device_args(parser)
    args = parser.parse_args(argv)
    synthetic = args.objective == "synthetic"
    args.budget = args.budget or (200 if synthetic else 24)
    args.controllers = args.controllers or list(SYNTHETIC_CONTROLLERS if synthetic else CONTROLLERS)
    if args.quick:
        args.seeds, args.controllers = [0], ["random", "evolution"]
        args.budget, args.data = (60, args.data) if synthetic else (2, "synthetic:200x16")
    args.device_resolved = device = setup_device(args)
    if synthetic:
        rows = synthetic_table(args)
        title = (f"controllers on the synthetic objective (share of decisions matching a hidden architecture), "
                 f"default space, {args.budget} trials, seeds {args.seeds}")
        notes = [f"last {min(LAST, args.budget)}: mean reward of each run's last trials; best: each run's best; "
                 f"both averaged over the seeds. repeats: the share of proposals whose architecture the run had "
                 f"proposed before, which `nas search` records as reuses instead of training them again. Nothing is "
                 f"trained: the figures do not depend on the machine"]
    else:
        rows = search_table(args)
        title = f"best reward after {args.budget} trials of nas search, mean over seeds {args.seeds}"
        notes = [f"data {args.data}, {args.epochs} epoch(s) per trial, default space and proxy training"]
    print_report(title, device, rows, notes)
    keep_result("controllers" if synthetic else "controllers-search", device, args.quick, title, rows, notes)
    return rows


def synthetic_table(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Rows of the synthetic-objective comparison."""
    runs: dict[str, list[list[float]]] = {name: [] for name in args.controllers}
    repeats: dict[str, list[int]] = {name: [] for name in args.controllers}
    for seed in args.seeds:
        for controller in args.controllers:
            rewards, repeated = synthetic_rewards(controller, seed, args.budget)
            runs[controller].append(rewards)
            repeats[controller].append(repeated)
            print(f"  {controller:<10} seed {seed}: best {max(runs[controller][-1]):.3f}", flush=True)
    last = min(LAST, args.budget)
    rows = []
    for controller, rewards in runs.items():
        rows.append({"controller": controller, "trials": args.budget, "seeds": len(rewards),
                     f"mean of last {last}": statistics.mean(statistics.mean(r[-last:]) for r in rewards),
                     "best": statistics.mean(max(r) for r in rewards),
                     "best min": min(max(r) for r in rewards), "best max": max(max(r) for r in rewards),
                     "repeats %": 100 * statistics.mean(repeats[controller]) / args.budget})
    return rows


def search_table(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Rows of the real-search comparison."""
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="effnas-controllers-") as tmp:
        for seed in args.seeds:
            for controller in args.controllers:
                outcome = run_search(controller, seed, args, Path(tmp))
                results.setdefault(controller, []).append(outcome)
                print(f"  {controller:<10} seed {seed}: best reward {outcome['best']:.4f} "
                      f"({outcome['seconds']:.0f} s)", flush=True)
    baseline = statistics.mean(r["best"] for r in results["random"]) if "random" in results else None
    rows = []
    for controller, outcomes in results.items():
        bests = [r["best"] for r in outcomes]
        mean = statistics.mean(bests)
        rows.append({"controller": controller, "best reward (mean)": mean,
                     "std": statistics.stdev(bests) if len(bests) > 1 else 0.0, "min": min(bests),
                     "max": max(bests), "vs random": mean / baseline if baseline else None,
                     "s per search": statistics.mean(r["seconds"] for r in outcomes)})
    return rows


if __name__ == "__main__":
    main()
