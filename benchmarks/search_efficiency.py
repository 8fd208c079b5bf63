"""Search efficiency: ``nas search`` with early stopping against without it, and against a practitioner's script.

    python -m benchmarks.search_efficiency --tune-pruner [--budget 48]      choose the practitioner's pruner
    python -m benchmarks.search_efficiency [--budget 48] [--seeds 3] [--pruner NAME] [--long-budget 200] [--quick]

Three arms, each a fresh process per seed, run in turn with their order rotated from seed to seed so a slow
moment of a shared machine does not fall on one arm. Every arm gets the same task: digits at 32 px with effnas's
own stratified validation split and the train split's mean and std, TPE, 3 epochs per candidate, two trials at
once, the same search space (per stage: op, kernel, expansion, layers and squeeze-excitation on or off, around
EfficientNetV2-S at width 0.5, depth 0.25, head of 640 channels), and the reward against the arm's own
unsearched base network timed under the same conditions as its candidates:
  effnas           ``nas search`` at its defaults (early stopping on), with a matching ``--space``
  effnas, no stop  the same with ``--early-stopping off``
  practitioner     about a hundred lines a practitioner would write: Optuna's TPE with a pruner on the reward
                   after each epoch (``--pruner``, chosen by ``--tune-pruner``), two trials at once (``n_jobs=2``),
                   the base as the study's first trial, data kept as tensors, and torchvision's MBConv /
                   Fused-MBConv blocks, as torchvision's ``efficientnet.py`` has them (torchvision's PyPI wheels need
                   a CUDA build of torch): ``benchmarks/practitioner_script.py``
Every clock starts before the arm's process is spawned, so start-up and imports count in every arm alike.

Tables: wall time and best finished reward per arm (mean ± std over seeds), the differences that decide claims
(with the standard error of each difference: a lead under two of them is no lead), the best reward found by a
given wall time, with ``--long-budget`` a single-seed run of effnas and the practitioner at that many trials, and
a direct check of early stopping: a fixed-seed sample of each effnas run's stopped candidates, each trained alone
to the end, against the best reward the search had when it stopped them.

``--tune-pruner`` runs the practitioner once per pruner setting on a seed the reported runs never use
(:data:`TUNING_SEED`) and keeps the one with the highest best reward averaged over the run's wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from benchmarks.common import keep_result, print_report
from benchmarks.practitioner_script import DEFAULT_PRUNER, DEPTH, EPOCHS, IMAGE_SIZE, PRUNERS, WIDTH
from effnas.nas.cli.arguments import positive_int

SPACE = {"backbone": "efficientnetv2-s", "width": WIDTH, "depth": DEPTH, "image_size": IMAGE_SIZE}
ARMS = ("effnas", "effnas, no stop", "practitioner")
LONG_ARMS = ("effnas", "practitioner")
# The practitioner's pruner is chosen on this seed; the reported runs use seeds 0, 1, ... below it, so the choice
# is not fitted to the runs it is judged on.
DEFAULT_BUDGET = 48  # trials per search in the main table; another budget keeps its own results file
TUNING_SEED = 1000
LONG_SEED = 0  # the long single-seed row: a search of its own, at another budget than the main table's
CHECK_SAMPLE = 20  # stopped candidates trained to the end per effnas run (all of them when fewer)
CHECK_DRAW_SEED = 0
LEAD_IN_SE = 2.0  # a difference smaller than this many standard errors of the difference is no lead
CURVE_SHARES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

Trial = dict[str, Any]  # one finished trial: "seconds" since its arm's launch, "state", "reward" (None if stopped)


# --------------------------------------------------------------------------- the arithmetic that decides claims
def best_by(trials: Sequence[Trial], seconds: float) -> float:
    """The best reward among trials finished to the end by ``seconds`` after launch; nan before the first."""
    rewards = [t["reward"] for t in trials if t["state"] == "COMPLETE" and t["seconds"] <= seconds]
    return max(rewards) if rewards else math.nan


def final_best(trials: Sequence[Trial]) -> float:
    """The best reward of the whole run (nan if no trial finished)."""
    return best_by(trials, math.inf)


def pass_time(trials: Sequence[Trial], target: float) -> float | None:
    """Seconds after launch at which the run's best finished reward first reaches ``target``; None if never."""
    reached = [t["seconds"] for t in trials if t["state"] == "COMPLETE" and t["reward"] >= target]
    return min(reached) if reached else None


def pass_ratio(trials: Sequence[Trial], target: float, other_wall: float) -> float | None:
    """When the run first reaches ``target`` (another run's final best), as a multiple of that run's wall time:
    below 1 means it got there sooner than the other run finished; None if it never got there."""
    seconds = pass_time(trials, target)
    return None if seconds is None else seconds / other_wall


def time_averaged_best(trials: Sequence[Trial], horizon: float, shares: Sequence[float] = CURVE_SHARES) -> float:
    """The best reward found by each of ``shares`` of ``horizon`` seconds, averaged; 0 where nothing had finished
    yet (a run that finishes later than ``horizon`` is judged on what it had by then). One number that rewards
    both a higher best and an earlier one: how the pruner settings are ranked."""
    values = [best_by(trials, share * horizon) for share in shares]
    return statistics.fmean(0.0 if math.isnan(value) else value for value in values)


def stopped_winners(final_rewards: Sequence[float], best_when_stopped: Sequence[float]) -> int:
    """How many stopped candidates, trained to the end, finish above the best reward the search had when it
    stopped them (nan: nothing had finished then, so any finished candidate would have led)."""
    return sum(math.isnan(best) or final > best for final, best in zip(final_rewards, best_when_stopped, strict=True))


def closest_call(final_rewards: Sequence[float], best_when_stopped: Sequence[float]) -> float:
    """The largest margin of a stopped candidate's final reward over the best when it was stopped (negative: all
    fell short); nan for none."""
    margins = [final - best for final, best in zip(final_rewards, best_when_stopped, strict=True)
               if not math.isnan(best)]
    return max(margins) if margins else math.nan


def se_of_difference(a: Sequence[float], b: Sequence[float]) -> float:
    """Standard error of ``mean(a) - mean(b)`` for independent samples (sample variances); nan with fewer than
    two values on either side, where no spread is known."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    return math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))


def verdict(difference: float, se: float, higher: str = "ahead", lower: str = "behind",
            threshold: float = LEAD_IN_SE) -> str:
    """``higher`` / ``lower`` when ``difference`` exceeds ``threshold`` standard errors either way, else level."""
    if math.isnan(difference):
        return "-"
    if math.isnan(se):
        return "no verdict (one seed)"
    if difference > threshold * se:
        return higher
    if difference < -threshold * se:
        return lower
    return f"level (within {threshold:g} SE)"


def mean_std(values: Sequence[float], digits: int = 4) -> str:
    """``mean ± std`` (sample std over the values: here over seeds); the mean alone for one value."""
    if len(values) < 2:
        return f"{statistics.fmean(values):.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def four(value: float | None) -> str:
    """A reward to four decimals (the tables' own format shows numbers above 1 to one), ``-`` for none."""
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def draw_sample(items: Sequence[Any], size: int, seed: int = CHECK_DRAW_SEED) -> list[Any]:
    """``size`` of ``items`` drawn at random with a fixed seed (all of them when fewer), in their own order."""
    if len(items) <= size:
        return list(items)
    chosen = set(random.Random(seed).sample(range(len(items)), size))
    return [item for index, item in enumerate(items) if index in chosen]


# --------------------------------------------------------------------------- running the arms
def effnas_trials(run: Path, launched: float) -> list[Trial]:
    """The run's trained trials (not the reference, not a reuse of an earlier trial's record), with their finish
    time in seconds after ``launched``, reward, accuracy and spec."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="effnas", storage=f"sqlite:///{run / 'study.db'}")
    trials = []
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get("reuse_of") is not None or trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        seconds = (trial.datetime_complete - datetime.fromtimestamp(launched)).total_seconds()  # Optuna: local time
        complete = trial.state == TrialState.COMPLETE
        trials.append({"seconds": seconds, "state": trial.state.name, "number": trial.number,
                       "reward": trial.user_attrs["reward"] if complete else None,
                       "accuracy": trial.user_attrs["accuracy"] if complete else None,
                       "spec": trial.user_attrs["spec"]})
    return trials


def practitioner_trials(out: Path, launched: float) -> list[Trial]:
    """The practitioner's trials with their finish time in seconds after ``launched``; the base is not one."""
    return [{"seconds": record["finished_at"] - launched, "state": record["state"], "reward": record.get("reward"),
             "accuracy": record.get("accuracy")} for record in json.loads(out.read_text()) if record["state"] != "BASE"]


def run_arm(arm: str, seed: int, budget: int, pruner: str, root: Path) -> dict[str, Any]:
    """One search in a fresh process; its clock starts before the process is spawned."""
    out = root / f"{arm.replace(', ', '-').replace(' ', '-')}-{seed}-{budget}-{pruner}"
    space = root / "space.json"
    space.write_text(json.dumps(SPACE))
    if arm == "practitioner":
        command = [sys.executable, "-m", "benchmarks.practitioner_script", str(out), "--budget", str(budget),
                   "--seed", str(seed), "--pruner", pruner]
    else:
        command = [sys.executable, "-m", "effnas.nas", "search", "--data", "digits", "--space", str(space),
                   "--budget", str(budget), "--epochs", str(EPOCHS), "--controller", "tpe", "--seed", str(seed),
                   "--early-stopping", "off" if arm.endswith("no stop") else "on", "--out", str(out), "--quiet"]
    launched = time.time()
    result = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    wall = time.time() - launched
    if result.returncode != 0:
        raise RuntimeError(f"{arm}, seed {seed}: exit {result.returncode}\n{(result.stderr or result.stdout)[-2000:]}")
    trials = practitioner_trials(out, launched) if arm == "practitioner" else effnas_trials(out, launched)
    finished = [t for t in trials if t["state"] == "COMPLETE"]
    best = max(finished, key=lambda t: t["reward"])
    tqdm.write(f"  {arm}, seed {seed}, {budget} trials: {wall:.0f} s, best reward {best['reward']:.4f}")
    return {"arm": arm, "seed": seed, "budget": budget, "dir": out, "wall": wall, "best": best["reward"],
            "accuracy": best["accuracy"], "stopped": sum(t["state"] == "PRUNED" for t in trials), "trials": trials}


# --------------------------------------------------------------------------- stopped candidates, trained to the end
def check_stopped(run: dict[str, Any], sample_size: int) -> dict[str, Any]:
    """Train a fixed-seed sample of an effnas run's stopped candidates alone to the end with the search's own
    trial runner and recipe (early stopping off, the search's seed, threads and device), and count those that
    finish above the best reward the search had when it stopped them.

    A step time measured here is not comparable with the search's reference, timed in another process at another
    moment of a shared machine, so the base is trained alone here too, before and after the sample, and the
    rewards are taken against the geometric mean of its two step times. The count against the search's stored
    reference is given beside it.
    """
    import optuna
    from effnas.nas.search.trial import TrialSettings, run_trial
    from effnas.results.record import REFERENCE_ATTR, SETTINGS_ATTR, Reference
    from effnas.results.reward import reward

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="effnas", storage=f"sqlite:///{run['dir'] / 'study.db'}")
    config, stored = study.user_attrs[SETTINGS_ATTR], Reference.from_dict(study.user_attrs[REFERENCE_ATTR])
    recipe, runtime = config["recipe"], config["runtime"]
    threads = (stored.conditions or {}).get("threads") or 1  # what each of the search's workers trained with
    settings = TrialSettings.from_dict({**recipe["trial"], "device": runtime["device"], "engine": runtime["engine"],
                                        "threads": threads, "early_stopping": None})
    stopped = [t for t in run["trials"] if t["state"] == "PRUNED"]
    sample = draw_sample(stopped, sample_size)
    base_before = run_trial(stored.spec, settings, runtime["seed"])
    finals = [run_trial(t["spec"], settings, runtime["seed"]) for t in sample]
    base_after = run_trial(stored.spec, settings, runtime["seed"])
    base_ms = math.sqrt(base_before["step_time_ms"] * base_after["step_time_ms"])
    w, v = recipe["reward_w"], recipe["reward_v"]
    alone = [reward(m["accuracy"], m["step_time_ms"], m["params"], base_ms, base_before["params"], w, v)
             for m in finals]
    against_stored = [reward(m["accuracy"], m["step_time_ms"], m["params"], stored.step_time_ms, stored.params, w, v)
                      for m in finals]
    best_then = [best_by(run["trials"], t["seconds"]) for t in sample]
    return {"seed": run["seed"], "trials": run["budget"], "stopped": len(stopped), "sampled": len(sample),
            "above best when stopped": stopped_winners(alone, best_then),
            "closest margin": four(closest_call(alone, best_then)),
            "above, vs search's base": stopped_winners(against_stored, best_then),
            "base ms here / in search": f"{base_ms / stored.step_time_ms:.3f}"}


# --------------------------------------------------------------------------- tables
def arm_rows(by_arm: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per arm: wall time and best finished reward, mean ± std over seeds, and the mean ratios."""
    wall = {arm: statistics.fmean(run["wall"] for run in runs) for arm, runs in by_arm.items()}
    rows = []
    for arm, runs in by_arm.items():
        row = {"arm": arm, "wall s (mean ± std)": mean_std([run["wall"] for run in runs], 1)}
        for other in ("effnas, no stop", "practitioner"):
            if other in wall:
                row[f"wall / {other.removeprefix('effnas, ')}"] = wall[arm] / wall[other]
        row |= {"best reward (mean ± std)": mean_std([run["best"] for run in runs]),
                "its accuracy": statistics.fmean(run["accuracy"] for run in runs),
                "stopped": statistics.fmean(run["stopped"] for run in runs)}
        rows.append(row)
    return rows


def difference_rows(by_arm: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """effnas against each other arm: the difference of the means over seeds, its standard error, and the verdict
    (a lead must exceed two standard errors)."""
    rows = []
    for other in (arm for arm in by_arm if arm != "effnas"):
        for quantity, key, higher, lower in (("best reward", "best", "ahead", "behind"),
                                             ("wall s", "wall", "slower", "faster")):
            mine, theirs = [run[key] for run in by_arm["effnas"]], [run[key] for run in by_arm[other]]
            difference = statistics.fmean(mine) - statistics.fmean(theirs)
            se = se_of_difference(mine, theirs)
            shown = four if key == "best" else (lambda value: "-" if math.isnan(value) else f"{value:.1f}")
            rows.append({"effnas minus": other, "quantity": quantity, "difference of means": shown(difference),
                         "SE of difference": shown(se), "verdict": verdict(difference, se, higher, lower)})
    return rows


def curve_rows(by_arm: dict[str, list[dict[str, Any]]], horizon: float) -> list[dict[str, Any]]:
    """The best reward found by each checkpoint (mean over seeds), and effnas minus the practitioner there with
    the standard error of that difference."""
    rows = []
    for share in CURVE_SHARES:
        seconds = horizon * share
        found = {arm: [best_by(run["trials"], seconds) for run in runs] for arm, runs in by_arm.items()}
        row: dict[str, Any] = {"by s": round(seconds)}
        means = {arm: statistics.fmean(values) for arm, values in found.items()}
        row |= {arm: four(mean) for arm, mean in means.items()}
        if "practitioner" in found:
            difference = means["effnas"] - means["practitioner"]
            se = se_of_difference(found["effnas"], found["practitioner"])
            row |= {"effnas - practitioner": four(difference), "SE of difference": four(se),
                    "verdict": verdict(difference, se)}
        rows.append(row)
    return rows


def pass_sentence(effnas_run: dict[str, Any], practitioner_run: dict[str, Any]) -> str:
    ratio = pass_ratio(effnas_run["trials"], practitioner_run["best"], practitioner_run["wall"])
    if ratio is None:
        return (f"effnas does not reach the practitioner's final best reward ({practitioner_run['best']:.4f}) "
                f"in its {effnas_run['budget']} trials")
    return (f"effnas passes the practitioner's final best reward ({practitioner_run['best']:.4f}) at {ratio:.2f}x "
            f"the practitioner's wall time ({practitioner_run['wall']:.0f} s)")


def _names(known: Any) -> Any:
    """An argparse type: a comma-separated list of names, each one of ``known``."""
    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in known]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"expected names from {', '.join(known)}, got {text!r}")
        return names
    return parse


def tune_pruner(args: argparse.Namespace, results: Path | None) -> str:
    """Each pruner setting once on :data:`TUNING_SEED`; the choice: the highest best reward averaged over ten
    checkpoints up to the longest setting's wall time."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="effnas-pruner-") as tmp, \
            tqdm(total=len(args.pruners), desc="pruner settings", unit="search") as bar:
        for name in args.pruners:
            runs.append(run_arm("practitioner", TUNING_SEED, args.budget, name, Path(tmp)) | {"pruner": name})
            bar.update()
    horizon = max(run["wall"] for run in runs)
    rows = [{"pruner": run["pruner"], "setting": PRUNERS[run["pruner"]], "wall s": run["wall"],
             "best reward": four(run["best"]), "stopped": run["stopped"],
             "time-averaged best": four(time_averaged_best(run["trials"], horizon))} for run in runs]
    chosen = max(runs, key=lambda run: time_averaged_best(run["trials"], horizon))["pruner"]
    notes = [f"the practitioner alone, {args.budget} trials per search, seed {TUNING_SEED} (the reported runs use "
             "seeds 0, 1, ...: the choice is not fitted to them); one search per setting, in the order listed.",
             f"time-averaged best: the best finished reward by each tenth of {horizon:.0f} s (the longest search), "
             "averaged, 0 before a search's first finished trial: a higher best and an earlier one both count.",
             f"chosen: {chosen} ({PRUNERS[chosen]}); the main table runs with --pruner {chosen}."]
    title = "search efficiency: the practitioner's pruner, chosen on a seed of its own"
    print_report(title, "cpu", rows, notes=notes)
    keep_result("search_efficiency-pruner", "cpu", args.quick, title, rows, notes, directory=results)
    return chosen


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=positive_int, default=None, help="trials per search (default 48; quick: 8)")
    parser.add_argument("--seeds", type=positive_int, default=None, help="seeds per arm (default 3; quick: 1)")
    parser.add_argument("--pruner", choices=sorted(PRUNERS), default=DEFAULT_PRUNER,
                        help=f"the practitioner's pruner (default {DEFAULT_PRUNER}; --tune-pruner measures the choice)")
    parser.add_argument("--tune-pruner", action="store_true",
                        help=f"run the practitioner once per pruner setting on seed {TUNING_SEED} and keep the best")
    parser.add_argument("--pruners", type=_names(PRUNERS), default=list(PRUNERS),
                        help="with --tune-pruner: the settings to try, comma-separated (default: all)")
    parser.add_argument("--arms", type=_names(ARMS), default=list(ARMS),
                        help="the arms of the main table, comma-separated (default: all three; effnas and "
                             "practitioner are needed for the ratios)")
    parser.add_argument("--long-budget", type=positive_int, default=None,
                        help="also one seed of effnas and the practitioner at this many trials (e.g. 200)")
    parser.add_argument("--check-sample", type=int, default=None,
                        help=f"stopped candidates trained to the end per effnas run (default {CHECK_SAMPLE}; "
                             "quick: 2; 0: no check)")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="where the results file goes (default benchmarks/results)")
    parser.add_argument("--quick", action="store_true", help="a smoke-sized run")
    args = parser.parse_args(argv)
    args.budget = args.budget or (8 if args.quick else DEFAULT_BUDGET)
    if args.tune_pruner:
        tune_pruner(args, args.results_dir)
        return []
    seeds = range(args.seeds or (1 if args.quick else 3))
    if seeds[-1] >= TUNING_SEED:
        parser.error(f"--seeds must stay below {TUNING_SEED}, the pruner's tuning seed")
    sample_size = args.check_sample if args.check_sample is not None else (2 if args.quick else CHECK_SAMPLE)
    arms = tuple(arm for arm in ARMS if arm in args.arms)
    if not {"effnas", "practitioner"} <= set(arms):
        parser.error("--arms must include effnas and practitioner")
    searches = len(seeds) * len(arms) + (len(LONG_ARMS) if args.long_budget else 0)
    with tempfile.TemporaryDirectory(prefix="effnas-efficiency-") as tmp, \
            tqdm(total=searches, desc="searches", unit="search") as bar:
        runs, long_runs = [], []
        for seed in seeds:
            for shift in range(len(arms)):
                runs.append(run_arm(arms[(seed + shift) % len(arms)], seed, args.budget, args.pruner, Path(tmp)))
                bar.update()
        for arm in LONG_ARMS if args.long_budget else ():
            long_runs.append(run_arm(arm, LONG_SEED, args.long_budget, args.pruner, Path(tmp)))
            bar.update()
        checked = [run for run in runs + long_runs if run["arm"] == "effnas"] if sample_size > 0 else []
        check = [check_stopped(run, sample_size) for run in tqdm(checked, desc="stopped-candidate check", unit="run")]

    by_arm = {arm: [run for run in runs if run["arm"] == arm] for arm in arms}
    rows = arm_rows(by_arm)
    differences = difference_rows(by_arm)
    horizon = max(statistics.fmean(run["wall"] for run in arm_runs) for arm_runs in by_arm.values())
    curve = curve_rows(by_arm, horizon)
    ratios = [pass_ratio(mine["trials"], theirs["best"], theirs["wall"])
              for mine, theirs in zip(by_arm["effnas"], by_arm["practitioner"])]
    shown = "; ".join(f"seed {seed}: " + ("never" if ratio is None else f"{ratio:.2f}x")
                      for seed, ratio in zip(seeds, ratios))
    notes = [f"{args.budget} trials per search x {len(seeds)} seed(s) per arm, arms rotated from seed to seed; "
             f"digits at {IMAGE_SIZE} px (effnas's stratified split, train-split mean and std, in every arm), TPE, "
             f"{EPOCHS} epochs per candidate, 2 trials at once in every arm, one search space.",
             "± is the sample standard deviation over seeds. wall s: the whole command, from before its process was "
             "spawned; best reward: each search's best finished trial, against its own base measured in that "
             "search; stopped: candidates stopped early, mean per search.",
             f"practitioner: Optuna TPE + {PRUNERS[args.pruner]} (--pruner {args.pruner}) + n_jobs=2 on "
             "torchvision's blocks, written out here; its base is its study's first trial, trained beside the "
             "first candidate (and seen by its TPE), and does not count in its trials or its best.",
             "when effnas first reached the practitioner's final best reward of the same seed, as a multiple of "
             f"the practitioner's wall time: {shown}."]
    title = ("search efficiency: early stopping on vs off, and a practitioner's Optuna script, side by side"
             if "effnas, no stop" in arms else "search efficiency: effnas and a practitioner's Optuna script, side by side")
    print_report(title, "cpu", rows, notes=notes)
    more: list[tuple[str, list[dict[str, Any]], list[str]]] = []
    differences_title = "differences that decide claims (effnas minus the other arm, means over seeds)"
    differences_notes = [f"SE of difference: sqrt(var_a / n_a + var_b / n_b) over seeds; a verdict needs the "
                         f"difference to exceed {LEAD_IN_SE:g} of them, otherwise it is level."]
    more.append((differences_title, differences, differences_notes))
    curve_title = "best reward found by a given wall time (mean over seeds; - before a seed's first finished trial)"
    curve_notes = ["each column: the mean over seeds of the best finished reward by that time after launch; effnas - "
                   "practitioner with the standard error of that difference over seeds."]
    more.append((curve_title, curve, curve_notes))
    if long_runs:
        long_by_arm = {arm: [run for run in long_runs if run["arm"] == arm] for arm in LONG_ARMS}
        long_rows = [{"arm": arm, "wall s": runs_[0]["wall"], "best reward": four(runs_[0]["best"]),
                      "its accuracy": runs_[0]["accuracy"], "stopped": runs_[0]["stopped"]}
                     for arm, runs_ in long_by_arm.items()]
        long_curve = curve_rows(long_by_arm, max(run["wall"] for run in long_runs))
        long_notes = [f"one seed ({LONG_SEED}) of effnas and the practitioner at {args.long_budget} trials, in "
                      "that order: no spread, so no verdict of ahead or behind.",
                      pass_sentence(long_by_arm["effnas"][0], long_by_arm["practitioner"][0]) + "."]
        more.append((f"{args.long_budget} trials, one seed: wall time and best reward", long_rows, long_notes))
        more.append((f"{args.long_budget} trials, one seed: best reward found by a given wall time", long_curve, []))
    if check:
        check_notes = [f"from each effnas run, {sample_size} of its stopped candidates drawn at random (seed "
                       f"{CHECK_DRAW_SEED}; all when fewer), each trained alone to the end of its {EPOCHS} epochs "
                       "by effnas's trial runner with the search's recipe, seed and threads, early stopping off.",
                       "above best when stopped (target 0): those whose reward finished above the best reward the "
                       "search had recorded by the moment it recorded the stop; the rewards here are against the "
                       "base trained alone the same way (before and after the sample, geometric mean of its step "
                       "times). closest margin: the largest final reward minus that best (negative: all fell short).",
                       "above, vs search's base: the same count against the reference the search measured; base ms "
                       "here / in search: how this check's timing conditions compare with the search's."]
        more.append(("stopped candidates trained to the end: would any have led?", check, check_notes))
    for more_title, more_rows, more_notes in more:
        print_report(more_title, "cpu", more_rows, notes=more_notes)
    name = "search_efficiency" + ("" if args.budget == DEFAULT_BUDGET else f"-{args.budget}")  # one file per budget
    keep_result(name, "cpu", args.quick, title, rows, notes, more=more, directory=args.results_dir)
    return rows


if __name__ == "__main__":
    main()
