"""Search efficiency: ``nas search`` with early stopping against without it, and against a practitioner's script.

    python -m benchmarks.search_efficiency [--budget 200] [--seeds 3] [--quick]

Three arms, each a fresh process per seed, run in turn with their order rotated from seed to seed so a slow
moment of a shared machine does not fall on one arm: the same task (digits at 32 px, TPE, 3 epochs per
candidate, the reward against each arm's own unsearched EfficientNetV2-S base at width 0.5, depth 0.25):
  effnas           ``nas search`` at its defaults (early stopping on), with a matching ``--space``
  effnas, no stop  the same with ``--early-stopping off``
  practitioner     about a hundred lines a practitioner would write: Optuna's TPE with its Hyperband pruner on
                   the reward after each epoch, two trials at once (``n_jobs=2``), data kept as tensors, and
                   torchvision's MBConv / Fused-MBConv blocks (written out below, as torchvision's
                   ``efficientnet.py`` has them: torchvision's PyPI wheels need a CUDA build of torch)
Columns: wall time of the whole command, the best finished trial's reward and accuracy, trials stopped early,
and wall-time ratios; a second table gives the best reward found by a given wall time (mean over seeds), a third
whether early stopping stopped a candidate that, trained to the end without it, would have led.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn
import torch.nn.functional as F
from tqdm import tqdm

from benchmarks.common import keep_result, print_report
from effnas.nas.cli.arguments import positive_int

SPACE = {"backbone": "efficientnetv2-s", "width": 0.5, "depth": 0.25, "image_size": 32}
W, V = -0.07, -0.05
ARMS = ("effnas", "effnas, no stop", "practitioner")


# --------------------------------------------------------------------------- the practitioner's script
# EfficientNetV2-S's stages (torchvision's _efficientnet_conf): op, expand, kernel, stride, out channels, layers.
V2_S = [("fused", 1, 3, 1, 24, 2), ("fused", 4, 3, 2, 48, 4), ("fused", 4, 3, 2, 64, 4),
        ("mbconv", 4, 3, 2, 128, 6), ("mbconv", 6, 3, 1, 160, 9), ("mbconv", 6, 3, 2, 256, 15)]


def divisible(value: float, divisor: int = 8) -> int:
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.SiLU()) if act else nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(channels, squeezed, 1), nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.expand(F.silu(self.reduce(F.adaptive_avg_pool2d(x, 1))))
        return x * torch.sigmoid(scale)


class Block(nn.Module):
    """torchvision's MBConv (expand 1x1, depthwise, SE, project) or FusedMBConv (expand kxk, project)."""

    def __init__(self, op: str, cin: int, cout: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = divisible(cin * expand)
        if op == "fused":
            layers = [conv_bn(cin, cout, kernel, stride)] if expand == 1 else \
                [conv_bn(cin, mid, kernel, stride), conv_bn(mid, cout, 1, act=False)]
        else:
            layers = ([conv_bn(cin, mid, 1)] if expand != 1 else []) + [
                conv_bn(mid, mid, kernel, stride, groups=mid), SqueezeExcite(mid, max(1, cin // 4)),
                conv_bn(mid, cout, 1, act=False)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


def build(choices: list[tuple[str, int, int, int]], classes: int) -> nn.Module:
    """The V2-S base at width 0.5, depth 0.25, with each stage's (op, expand, kernel, layers) as chosen."""
    cin = divisible(24 * 0.5)
    layers: list[nn.Module] = [conv_bn(1, cin, 3, 2)]
    for (_, _, _, stride, out, _), (op, expand, kernel, depth) in zip(V2_S, choices):
        cout = divisible(out * 0.5)
        for index in range(depth):
            layers.append(Block(op, cin, cout, expand, kernel, stride if index == 0 else 1))
            cin = cout
    layers += [conv_bn(cin, 1280, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, classes)]
    return nn.Sequential(*layers)


def base_choices() -> list[tuple[str, int, int, int]]:
    return [(op, expand, kernel, math.ceil(layers * 0.25)) for op, expand, kernel, _, _, layers in V2_S]


def train(model: nn.Module, data: tuple[torch.Tensor, ...], epochs: int, report=None) -> tuple[float, float]:
    """RMSProp with warm-up and cosine (effnas's proxy recipe); ``report(epoch, accuracy, step_ms)`` may raise."""
    import optuna

    x, y, vx, vy = data
    steps = epochs * (len(x) // 64)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=0.002, alpha=0.9, eps=1e-3, momentum=0.9,
                                    weight_decay=1e-5)
    warm = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: (k + 1) / warm if k < warm else
                                                 0.5 * (1 + math.cos(math.pi * (k - warm) / max(1, steps - warm))))
    times: list[float] = []
    accuracy = 0.0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x))
        for i in range(len(x) // 64):
            index = order[i * 64:(i + 1) * 64]
            start = time.perf_counter()
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
            schedule.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(vx).argmax(1) == vy).float().mean().item()
        step_ms = 1000 * statistics.median(times[2:] or times)
        if report is not None and epoch + 1 < epochs:
            report(epoch + 1, accuracy, step_ms)
    if not math.isfinite(loss.item()):
        raise optuna.TrialPruned()
    return accuracy, 1000 * statistics.median(times[2:] or times)


def practitioner(budget: int, seed: int, out: Path) -> None:
    """The practitioner's whole search; writes each trial's finish time, state and reward to ``out``."""
    import optuna
    from sklearn.datasets import load_digits

    started = time.time()
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=32, mode="bilinear", align_corners=False)
    images = (images - images.mean()) / images.std()
    labels = torch.tensor(digits.target)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(order))
    data = (images[order[:cut]], labels[order[:cut]], images[order[cut:]], labels[order[cut:]])
    base = build(base_choices(), 10)
    ref_params = sum(p.numel() for p in base.parameters())
    _, ref_ms = train(base, data, 3)
    trials: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        choices = []
        for stage, (op, expand, kernel, _, _, layers) in enumerate(V2_S):
            choices.append((trial.suggest_categorical(f"s{stage}_op", ["mbconv", "fused"]),
                            trial.suggest_categorical(f"s{stage}_expand", [1, 4, 6]),
                            trial.suggest_categorical(f"s{stage}_kernel", [3, 5]),
                            max(1, math.ceil(layers * 0.25) + trial.suggest_categorical(f"s{stage}_layers", [-1, 0, 1]))))
        model = build(choices, 10)
        params = sum(p.numel() for p in model.parameters())

        def reward(accuracy: float, step_ms: float) -> float:
            return accuracy * (step_ms / ref_ms) ** W * (params / ref_params) ** V

        def report(epoch: int, accuracy: float, step_ms: float) -> None:
            trial.report(reward(accuracy, step_ms), epoch)
            if trial.should_prune():
                trials.append({"seconds": time.time() - started, "state": "PRUNED", "reward": None})
                raise optuna.TrialPruned()

        accuracy, step_ms = train(model, data, 3, report)
        value = reward(accuracy, step_ms)
        trials.append({"seconds": time.time() - started, "state": "COMPLETE", "reward": value, "accuracy": accuracy})
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True),
                                pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=3,
                                                                      reduction_factor=3))
    study.optimize(objective, n_trials=budget, n_jobs=2)
    out.write_text(json.dumps(trials))


# --------------------------------------------------------------------------- running the arms
def effnas_trials(run: Path, started: float) -> list[dict[str, Any]]:
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="effnas", storage=f"sqlite:///{run / 'study.db'}")
    trials = []
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get("reuse_of") is not None or trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        seconds = (trial.datetime_complete - datetime.fromtimestamp(started)).total_seconds()  # Optuna: local time
        complete = trial.state == TrialState.COMPLETE
        trials.append({"seconds": seconds, "state": trial.state.name,
                       "reward": trial.user_attrs["reward"] if complete else None,
                       "accuracy": trial.user_attrs["accuracy"] if complete else None,
                       "architecture": json.dumps(trial.params, sort_keys=True)})
    return trials


def run_arm(arm: str, seed: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    out = root / f"{arm.replace(', ', '-').replace(' ', '-')}-{seed}"
    space = root / "space.json"
    space.write_text(json.dumps(SPACE))
    if arm == "practitioner":
        command = [sys.executable, "-m", "benchmarks.search_efficiency", "--practitioner-run", str(out),
                   "--budget", str(args.budget), "--seed", str(seed)]
    else:
        command = [sys.executable, "-m", "effnas.nas", "search", "--data", "digits", "--space", str(space),
                   "--budget", str(args.budget), "--epochs", "3", "--controller", "tpe", "--seed", str(seed),
                   "--early-stopping", "off" if arm.endswith("no stop") else "on", "--out", str(out), "--quiet"]
    started = time.time()
    result = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    wall = time.time() - started
    if result.returncode != 0:
        raise RuntimeError(f"{arm}, seed {seed}: exit {result.returncode}\n{(result.stderr or result.stdout)[-2000:]}")
    trials = json.loads(out.read_text()) if arm == "practitioner" else effnas_trials(out, started)
    finished = [t for t in trials if t["state"] == "COMPLETE"]
    best = max(finished, key=lambda t: t["reward"])
    tqdm.write(f"  {arm}, seed {seed}: {wall:.0f} s, best reward {best['reward']:.4f}")
    return {"arm": arm, "seed": seed, "wall": wall, "best": best["reward"], "accuracy": best["accuracy"],
            "stopped": sum(t["state"] == "PRUNED" for t in trials), "trials": trials}


def best_by(trials: list[dict[str, Any]], seconds: float) -> float:
    rewards = [t["reward"] for t in trials if t["state"] == "COMPLETE" and t["seconds"] <= seconds]
    return max(rewards) if rewards else math.nan


def bound_check(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per seed, whether early stopping stopped a winner: of the candidates the default stopped, those the run
    without stopping also trained (same seed, so the first proposals agree), and how many of them finished there
    above the best reward the default had found when it stopped them."""
    rows = []
    for seed in sorted({run["seed"] for run in runs}):
        stopping, full = ({run["arm"]: run for run in runs if run["seed"] == seed}[arm] for arm in ARMS[:2])
        finals = {t["architecture"]: t["reward"] for t in full["trials"] if t["state"] == "COMPLETE"}
        stopped = [t for t in stopping["trials"] if t["state"] == "PRUNED"]
        twins = [t for t in stopped if t["architecture"] in finals]
        leaders = [t for t in twins if finals[t["architecture"]] > best_by(stopping["trials"], t["seconds"])]
        rows.append({"seed": seed, "stopped": len(stopped), "also trained without stopping": len(twins),
                     "finished there above the best when stopped": len(leaders)})
    return rows


def mean_std(values: list[float]) -> str:
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.4f}"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=positive_int, default=None, help="trials per search (default 200; quick: 8)")
    parser.add_argument("--seeds", type=positive_int, default=None, help="seeds per arm (default 3; quick: 1)")
    parser.add_argument("--quick", action="store_true", help="a smoke-sized run")
    parser.add_argument("--practitioner-run", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.budget = args.budget or (8 if args.quick else 200)
    if args.practitioner_run:
        practitioner(args.budget, args.seed, Path(args.practitioner_run))
        return []
    seeds = range(args.seeds or (1 if args.quick else 3))
    runs = []
    with tempfile.TemporaryDirectory(prefix="effnas-efficiency-") as tmp, \
            tqdm(total=len(seeds) * len(ARMS), desc="searches", unit="search") as bar:
        for seed in seeds:
            for shift in range(len(ARMS)):
                runs.append(run_arm(ARMS[(seed + shift) % len(ARMS)], seed, args, Path(tmp)))
                bar.update()

    by_arm = {arm: [run for run in runs if run["arm"] == arm] for arm in ARMS}
    wall = {arm: statistics.fmean(run["wall"] for run in by_arm[arm]) for arm in ARMS}
    rows = [{"arm": arm, "wall s": wall[arm],
             "wall / no stop": wall[arm] / wall["effnas, no stop"],
             "wall / practitioner": wall[arm] / wall["practitioner"],
             "best reward": mean_std([run["best"] for run in by_arm[arm]]),
             "its accuracy": statistics.fmean(run["accuracy"] for run in by_arm[arm]),
             "stopped": statistics.fmean(run["stopped"] for run in by_arm[arm])} for arm in ARMS]
    longest = max(wall.values())
    curve = [{"by s": round(longest * share),
              **{arm: f"{statistics.fmean(best_by(run['trials'], longest * share) for run in by_arm[arm]):.4f}"
                 for arm in ARMS}} for share in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)]
    notes = [f"{args.budget} trials per search x {len(seeds)} seed(s) per arm, arms rotated from seed to seed; "
             "digits at 32 px, TPE, 3 epochs per candidate, 2 trials at once in every arm.",
             "best reward: mean ± std over seeds of each search's best finished trial (each against its own "
             "base, measured in that search); stopped: candidates stopped early, mean per search.",
             "practitioner: Optuna TPE + HyperbandPruner + n_jobs=2 on torchvision's blocks, written out here."]
    title = "search efficiency: early stopping on vs off, and a practitioner's Optuna script, side by side"
    print_report(title, "cpu", rows, notes=notes)
    curve_title = "best reward found by a given wall time (mean over seeds; nan before the first finished trial)"
    print_report(curve_title, "cpu", curve)
    check_title = "did early stopping stop a winner? (its stopped candidates, against the run without stopping)"
    check = bound_check(runs)
    print_report(check_title, "cpu", check)
    keep_result("search_efficiency", "cpu", args.quick, title, rows, notes,
                more=[(curve_title, curve, []), (check_title, check, [])])
    return rows


if __name__ == "__main__":
    main()
