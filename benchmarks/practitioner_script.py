"""The practitioner's arm of ``benchmarks.search_efficiency``: the Optuna script a practitioner would write for
the same task, about a hundred lines. TPE over effnas's search space (per stage op, kernel, expansion, layers and
squeeze-excitation around EfficientNetV2-S at width 0.5, depth 0.25), a pruner on the reward after each epoch,
two trials at once (``n_jobs=2``), data kept as tensors from effnas's own split, and torchvision's MBConv /
Fused-MBConv blocks, written out as torchvision's ``efficientnet.py`` has them (torchvision's PyPI wheels need a
CUDA build of torch).

    python -m benchmarks.practitioner_script OUT [--budget 48] [--seed 0] [--pruner hyperband-min2]

OUT gets one JSON record per trial: its finish time, state and, for a finished one, its reward.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from effnas.nas.cli.arguments import positive_int

# The task both arms of the race share.
WIDTH, DEPTH, IMAGE_SIZE = 0.5, 0.25, 32
EPOCHS = 3
VAL_FRACTION = 0.2  # effnas's default validation share, which the practitioner's split takes too
W, V = -0.07, -0.05
PRUNERS: dict[str, str] = {
    "hyperband-min1": "HyperbandPruner(min_resource=1, max_resource=3, reduction_factor=3)",
    "hyperband-min2": "HyperbandPruner(min_resource=2, max_resource=3, reduction_factor=3)",
    "median-warmup1": "MedianPruner(n_warmup_steps=1)",
    "median-warmup2": "MedianPruner(n_warmup_steps=2)",
    "none": "NopPruner()",
}
DEFAULT_PRUNER = "hyperband-min2"  # --tune-pruner's choice (results/search_efficiency-pruner.md)


# EfficientNetV2-S's stages (torchvision's _efficientnet_conf): op, expand, kernel, stride, out channels, layers.
V2_S = [("fused", 1, 3, 1, 24, 2), ("fused", 4, 3, 2, 48, 4), ("fused", 4, 3, 2, 64, 4),
        ("mbconv", 4, 3, 2, 128, 6), ("mbconv", 6, 3, 1, 160, 9), ("mbconv", 6, 3, 2, 256, 15)]
HEAD = 1280  # V2-S's head before width scaling

Choice = tuple[str, int, int, int, bool]  # one stage: op, expand, kernel, layers, squeeze-excitation


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
    """torchvision's MBConv (expand 1x1, depthwise, SE when on, project) or FusedMBConv (expand kxk, project)."""

    def __init__(self, op: str, cin: int, cout: int, expand: int, kernel: int, stride: int, se: bool) -> None:
        super().__init__()
        mid = divisible(cin * expand)
        if op == "fused":
            layers = [conv_bn(cin, cout, kernel, stride)] if expand == 1 else \
                [conv_bn(cin, mid, kernel, stride), conv_bn(mid, cout, 1, act=False)]
        else:
            layers = ([conv_bn(cin, mid, 1)] if expand != 1 else []) + \
                [conv_bn(mid, mid, kernel, stride, groups=mid)] + \
                ([SqueezeExcite(mid, max(1, cin // 4))] if se else []) + [conv_bn(mid, cout, 1, act=False)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


def build(choices: Sequence[Choice], classes: int, channels: int) -> nn.Module:
    """The V2-S base at width 0.5, depth 0.25, with each stage's (op, expand, kernel, layers, se) as chosen."""
    cin = divisible(24 * WIDTH)
    layers: list[nn.Module] = [conv_bn(channels, cin, 3, 2)]
    for (_, _, _, stride, out, _), (op, expand, kernel, depth, se) in zip(V2_S, choices, strict=True):
        cout = divisible(out * WIDTH)
        for index in range(depth):
            layers.append(Block(op, cin, cout, expand, kernel, stride if index == 0 else 1, se))
            cin = cout
    head = divisible(HEAD * WIDTH)
    layers += [conv_bn(cin, head, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(head, classes)]
    return nn.Sequential(*layers)


def base_choices() -> list[Choice]:
    """V2-S's own stages at depth 0.25: SE in its MBConv stages, none in its fused ones."""
    return [(op, expand, kernel, math.ceil(layers * DEPTH), op == "mbconv")
            for op, expand, kernel, _, _, layers in V2_S]


def stage_options(stage: int) -> dict[str, list[Any]]:
    """What the practitioner searches in one stage: ops, kernels, expansions, the scaled layer count minus one to
    plus one (at least 1), and SE on or off (used by MBConv only; always asked, so multivariate TPE sees a fixed
    set of parameters)."""
    layers = math.ceil(V2_S[stage][5] * DEPTH)
    return {"op": ["mbconv", "fused"], "kernel": [3, 5], "expand": [1, 4, 6],
            "layers": sorted({max(1, layers + offset) for offset in (-1, 0, 1)}), "se": [False, True]}


def make_pruner(name: str) -> Any:
    import optuna

    pruners: dict[str, Callable[[], Any]] = {
        "hyperband-min1": lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=EPOCHS,
                                                                 reduction_factor=3),
        "hyperband-min2": lambda: optuna.pruners.HyperbandPruner(min_resource=2, max_resource=EPOCHS,
                                                                 reduction_factor=3),
        "median-warmup1": lambda: optuna.pruners.MedianPruner(n_warmup_steps=1),
        "median-warmup2": lambda: optuna.pruners.MedianPruner(n_warmup_steps=2),
        "none": optuna.pruners.NopPruner,
    }
    return pruners[name]()


def train(model: nn.Module, data: tuple[torch.Tensor, ...], epochs: int,
          report: Callable[[int, float, float], None] | None = None) -> tuple[float, float]:
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


def practitioner(budget: int, seed: int, out: Path, pruner: str) -> None:
    """The practitioner's whole search; writes each trial's finish time (``time.time()``), state and reward.

    The base is the study's first trial, trained beside the first candidate like every other trial, so its step
    time is measured under the candidates' conditions. Until it finishes its step time is unknown, so the study
    maximises ``accuracy * step_ms**w * (params / base_params)**v``: the reward times the constant
    ``base_step_ms**w``, which ranks every trial (for TPE and for the pruner) exactly as the reward does; each
    trial's reward is that score divided by the constant once the base has finished.
    """
    import optuna
    from effnas.nas.training.data import load_data, to_device  # effnas's own split and normalisation

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    split = to_device(load_data("digits", seed=seed, val_fraction=VAL_FRACTION), IMAGE_SIZE, "cpu")
    data = (split.train_x, split.train_y, split.val_x, split.val_y)
    classes, channels = split.num_classes, split.channels
    base_params = sum(p.numel() for p in build(base_choices(), classes, channels).parameters())
    records: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        is_base = bool(trial.user_attrs.get("base"))
        choices = []
        for stage in range(len(V2_S)):
            options = stage_options(stage)
            op, kernel, expand, layers, se = (trial.suggest_categorical(f"s{stage}_{name}", options[name])
                                              for name in ("op", "kernel", "expand", "layers", "se"))
            choices.append((op, expand, kernel, layers, op == "mbconv" and se))
        model = build(choices, classes, channels)
        params = sum(p.numel() for p in model.parameters())

        def score(accuracy: float, step_ms: float) -> float:
            return accuracy * step_ms ** W * (params / base_params) ** V

        def report(epoch: int, accuracy: float, step_ms: float) -> None:
            trial.report(score(accuracy, step_ms), epoch)
            if not is_base and trial.should_prune():
                records.append({"finished_at": time.time(), "state": "PRUNED"})
                raise optuna.TrialPruned()

        accuracy, step_ms = train(model, data, EPOCHS, report)
        value = score(accuracy, step_ms)
        records.append({"finished_at": time.time(), "state": "BASE" if is_base else "COMPLETE", "score": value,
                        "accuracy": accuracy, "step_ms": step_ms, "params": params})
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True),
                                pruner=make_pruner(pruner))
    base = {f"s{stage}_{name}": value for stage, (op, expand, kernel, layers, se) in enumerate(base_choices())
            for name, value in (("op", op), ("kernel", kernel), ("expand", expand), ("layers", layers), ("se", se))}
    study.enqueue_trial(base, user_attrs={"base": True})
    study.optimize(objective, n_trials=budget + 1, n_jobs=2)
    out.write_text(json.dumps(rewards_against_base(records)))


def rewards_against_base(records: Sequence[dict[str, Any]], w: float = W) -> list[dict[str, Any]]:
    """The practitioner's records with each finished trial's reward: its score (``accuracy * step_ms**w *
    (params / base_params)**v``) divided by the base's ``base_step_ms**w``."""
    base = [record for record in records if record["state"] == "BASE"]
    if not base:
        raise RuntimeError("the base network did not finish training, so there is no reference")
    return [record | ({"reward": record["score"] * base[0]["step_ms"] ** -w} if "score" in record else {})
            for record in records]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the JSON file of trial records to write")
    parser.add_argument("--budget", type=positive_int, default=48, help="trials, the base not counted (default 48)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pruner", choices=sorted(PRUNERS), default=DEFAULT_PRUNER)
    args = parser.parse_args(argv)
    practitioner(args.budget, args.seed, args.out, args.pruner)


if __name__ == "__main__":
    main()
