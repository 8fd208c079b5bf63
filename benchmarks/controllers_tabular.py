"""Every controller on a published tabular NAS benchmark, through the very samplers ``nas search`` uses.

NAS-Bench-Macro (Su et al., CVPR 2021) holds the CIFAR-10 accuracy, params and FLOPs of all 6,561
architectures of a MobileNetV2-block space: 8 layers, each identity, MBConv e3 k3 or MBConv e6 k5. Nobody here
tuned anything on it, so it is a fair check of the controllers: each one runs many seeded searches on an
in-memory Optuna study whose objective reads the table, and the best architecture found after 50, 100 and 200
evaluations is averaged over the seeds (mean ± standard error of the mean over the seeds) against random search
and the table's optimum. A controller's lead over random at the middle budget is the difference of the two means,
in standard errors of that difference (a lead under 2 of them is not a lead), two ways: ``SE diff``,
sqrt(SE² + SE_random²), treats the two arms as independent; ``SE paired`` is the standard error of the mean of the
per-seed differences (seed i against random's seed i). The arms share seeds, and ``tpe`` and ``nsga2`` begin with
the very random draws of random's search of the same seed (their first 10 and 20 architectures), so for those two
the paired figure is the one that follows how the runs were made.

Two objectives: ``accuracy`` (the table's mean test accuracy: the reward with both exponents 0) and ``reward``
(the search's soft-constraint form with FLOPs standing in for step time: ``acc × (flops/ref)^-0.07 ×
(params/ref)^-0.05``, references the median architecture's). ``nsga2`` searches what it searches in a real
search with those exponents: accuracy alone, or [accuracy up, FLOPs down, params down]; it is scored by the same
score of the trials it chose. As in a search, a repeated architecture costs no evaluation (see :func:`best_so_far`).

    python -m benchmarks.controllers_tabular                    # 10 seeds, budgets 50/100/200
    python -m benchmarks.controllers_tabular --seeds 30
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from tqdm import tqdm

from benchmarks.common import print_report, write_result
from effnas.nas.search.controllers import CONTROLLERS as REGISTRY
from effnas.nas.search.controllers import make_sampler, study_directions, study_objectives
from effnas.nas.search.repeats import MAX_REPEATS
from effnas.results.reward import DEFAULT_V, DEFAULT_W

TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nas-bench-macro-cifar10.json"
LAYERS, CHOICES = 8, (0, 1, 2)  # identity, MBConv e3 k3, MBConv e6 k5
CONTROLLERS = tuple(REGISTRY)
BUDGETS = (50, 100, 200)
# (w, v) of each objective: accuracy alone is the reward with both exponents 0.
EXPONENTS = {"accuracy": (0.0, 0.0), "reward": (DEFAULT_W, DEFAULT_V)}


class TabularSpace:
    """The benchmark's space in the shape the controllers read a :class:`SearchSpace`: one categorical
    decision per layer, all of them always active."""

    def __init__(self) -> None:
        self.names = [f"layer{i}" for i in range(LAYERS)]

    def distributions(self) -> dict[str, CategoricalDistribution]:
        return {name: CategoricalDistribution(CHOICES) for name in self.names}

    def active_params(self, params: dict[str, Any]) -> list[str]:
        return list(self.names)

    def param_names(self) -> list[str]:
        return list(self.names)


def load_table(path: Path) -> dict[str, dict[str, float]]:
    return json.loads(path.read_text())


def scorer(table: dict[str, dict[str, float]], objective: str):
    """arch key -> the score a controller maximises (accuracy in [0, 1], or the reward)."""
    flops = statistics.median(row["flops"] for row in table.values())
    params = statistics.median(row["params"] for row in table.values())

    def score(key: str) -> float:
        row = table[key]
        accuracy = row["mean_acc"] / 100
        w, v = EXPONENTS[objective]
        return accuracy * (row["flops"] / flops) ** w * (row["params"] / params) ** v

    return score


def best_so_far(controller: str, seed: int, table: dict[str, dict[str, float]], objective: str,
                budget: int) -> list[float]:
    """One seeded search of ``budget`` evaluations; the best score after each.

    Repeats follow the search's rule (:mod:`effnas.nas.search.repeats`): a proposal of an architecture already
    evaluated is told that evaluation's values again and costs nothing, and :data:`MAX_REPEATS` of them in a row
    end the search (its best then stands for the evaluations it did not make)."""
    space = TabularSpace()
    score = scorer(table, objective)
    w, v = EXPONENTS[objective]
    objectives = study_objectives(controller, w, v)  # nsga2's, as in a search with these exponents
    study = optuna.create_study(directions=study_directions(controller, w, v),
                                sampler=make_sampler(controller, space, seed))  # type: ignore[arg-type]
    best, history, seen, in_a_row = -math.inf, [], set(), 0
    while len(history) < budget and in_a_row < MAX_REPEATS:
        trial = study.ask()
        key = "".join(str(trial.suggest_categorical(name, CHOICES)) for name in space.names)
        value = score(key)
        trial.set_user_attr("reward", value)  # what rl and evolution learn from, as in a real search
        row = table[key]
        raw = {"accuracy": row["mean_acc"] / 100, "step_time_ms": row["flops"], "params": row["params"]}
        study.tell(trial, [raw[name] for name in objectives] if objectives else value)
        in_a_row = in_a_row + 1 if key in seen else 0
        if key not in seen:
            seen.add(key)
            best = max(best, value)
            history.append(best)
    return history + [best] * (budget - len(history))


def lead_over_random(found: list[float], random: list[float], scale: float, places: int,
                     budget: int) -> dict[str, str]:
    """A controller's lead over random after ``budget`` evaluations, from each arm's best per seed (seed i at
    index i): the difference of the means ± its standard error as two independent means, and the lead in that
    standard error and in the paired one (the standard error of the mean of the per-seed differences)."""
    n = len(found)
    lead = statistics.fmean(found) - statistics.fmean(random)
    se = (lambda values: statistics.stdev(values) / math.sqrt(n) if n > 1 else 0.0)
    independent = math.hypot(se(found), se(random))
    paired = se([a - b for a, b in zip(found, random)])
    return {f"lead@{budget} (± SE diff)": f"{lead * scale:+.{places}f} ± {independent * scale:.{places}f}",
            f"lead@{budget} / SE diff": f"{lead / independent:+.1f}" if independent else "-",
            f"lead@{budget} / SE paired": f"{lead / paired:+.1f}" if paired else "-"}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", default=str(TABLE))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--controllers", default=",".join(CONTROLLERS))
    parser.add_argument("--objectives", default="accuracy,reward")
    parser.add_argument("--budgets", default=",".join(map(str, BUDGETS)),
                        help="evaluations at which the best found is reported; the middle one is compared with random")
    args = parser.parse_args(argv)
    budgets = sorted(int(b) for b in args.budgets.split(","))
    compared = budgets[len(budgets) // 2]
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    table = load_table(Path(args.table))
    rows, notes = [], []
    controllers = args.controllers.split(",")
    if controllers[0] != "random":
        raise SystemExit("--controllers must start with random: every other row is compared with it")
    objectives = args.objectives.split(",")
    bar = tqdm(total=len(objectives) * len(controllers) * args.seeds, desc="searches", unit="search")
    for objective in objectives:
        score = scorer(table, objective)
        optimum = max(score(key) for key in table)
        random_at: dict[int, list[float]] = {}  # random's best after each budget, per seed
        for controller in controllers:
            runs = []
            for seed in range(args.seeds):
                runs.append(best_so_far(controller, seed, table, objective, max(budgets)))
                bar.update()
            row: dict[str, Any] = {"objective": objective, "controller": controller}
            scale, places = (100, 3) if objective == "accuracy" else (1, 4)  # accuracy in % (the lead in points)
            for budget in budgets:
                found = [run[budget - 1] for run in runs]
                mean = statistics.fmean(found)
                error = statistics.stdev(found) / math.sqrt(len(found)) if len(found) > 1 else 0.0
                row[f"best@{budget} (mean ± SE)"] = f"{mean * scale:.3f} ± {error * scale:.3f}"
                row[f"gap@{budget}"] = f"{max(0.0, optimum - mean) * scale:.{places}f}"
                if controller == "random":
                    random_at[budget] = found
                if budget == compared:  # the lead over random, in standard errors of the difference of the means
                    lead = lead_over_random(found, random_at[compared], scale, places, compared)
                    row.update({column: "-" for column in lead} if controller == "random" else lead)
            rows.append(row)
        notes.append(f"{objective}: the table's optimum is {optimum * (100 if objective == 'accuracy' else 1):.3f}"
                     + (" % (22212220, 22212202)" if objective == "accuracy" else ""))
    bar.close()
    notes.append(f"best@B (mean ± SE): the best architecture found after B evaluations, mean ± standard error of "
                 f"the mean over {args.seeds} seeds (accuracy in %); gap = optimum - mean")
    notes.append(f"lead@{compared} (± SE diff): the controller's mean - random's mean ± the standard error of that "
                 f"difference, SE diff = sqrt(SE² + SE_random²) (accuracy in points); lead@{compared} / SE diff: the "
                 f"lead in those standard errors; lead@{compared} / SE paired: the lead over the standard error of the "
                 "mean of the per-seed differences (seed i - random's seed i); under 2 is not a lead")
    notes.append("the arms share seeds, and tpe and nsga2 begin with the same random draws as random's search of the "
                 "same seed (their first 10 and 20 architectures), so for them the arms are not independent and "
                 "SE paired is the standard error that follows the runs")
    notes.append("a repeated architecture costs no evaluation, as in a search")
    print_report("Controllers on NAS-Bench-Macro (CIFAR-10, 6,561 architectures)", "cpu", rows, notes)
    path = write_result("controllers_tabular", "Controllers on NAS-Bench-Macro (CIFAR-10, 6,561 architectures)",
                        "cpu", rows, notes)
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
