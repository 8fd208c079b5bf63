"""Fused-MBConv vs MBConv on this device: the EfficientNetV2 paper's Table 3 in miniature.

    python -m benchmarks.fused_vs_mbconv [--quick] [--device cuda] [--model efficientnet-b4 --image-size 380]

EfficientNet-B0 (default) with no fused stages, and with stages 1-3, 1-5 and 1-7 replaced by Fused-MBConv
(stages numbered as in the paper: stage 1 is the first MBConv stage after the stem; fused stages drop SE,
as in EfficientNetV2). Params, MACs at ``--image-size`` and training images/s on the trial engine (CUDA: whole-
step graph, bf16, channels_last; CPU: eager fp32), measured in interleaved rounds so machine load hits every
row alike. The paper found fused stages 1-3 fastest on V100/TPU; which wins is a property of the device.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch

from benchmarks.common import add_device_args, keep_result, print_report, setup_device

FUSED_UP_TO = (0, 3, 5, 7)  # paper stage numbers: fused stages 1..n


def fused_variant(spec: Any, stages: int) -> Any:
    """``spec`` with its first ``stages`` stages as Fused-MBConv (no SE), the rest unchanged."""
    from dataclasses import replace

    new = tuple(replace(s, op="fused", se_ratio=0.0) if i < stages else s for i, s in enumerate(spec.stages))
    return spec.replace(stages=new, name=f"{spec.name}-fused-1-{stages}" if stages else spec.name)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_args(parser)
    parser.add_argument("--model", default="efficientnet-b0", help="a zoo name")
    parser.add_argument("--image-size", type=int, default=None, help="default: 224 on CUDA, 64 on CPU")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 128 on CUDA, 16 on CPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per round (30 CUDA, 5 CPU)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--width", type=float, default=1.0, help="uniform width factor (smaller for tests)")
    args = parser.parse_args(argv)
    device = setup_device(args)
    cuda = device.type == "cuda"
    if args.quick:
        args.image_size, args.steps, args.rounds = args.image_size or (128 if cuda else 32), args.steps or 3, 2
    args.image_size = args.image_size or (224 if cuda else 64)
    args.batch_size = args.batch_size or (128 if cuda else 16)
    args.steps = args.steps or (30 if cuda else 5)

    from effnas.models import build_model
    from effnas.search_space import get_spec
    from effnas.models.profile import count_macs, count_params
    from effnas.nas.training.engine import classification_loss, cudnn_benchmark, make_optimizer, make_train_step, prepare_model
    from effnas.nas.training.timing import time_steps
    from effnas.search_space import scale_uniform

    base = get_spec(args.model)
    if args.width != 1.0:
        base = scale_uniform(base, args.width, 1.0)
    base = base.replace(dropout=0.0, drop_path_rate=0.0)
    x = torch.randn(args.batch_size, base.image_channels, args.image_size, args.image_size, device=device)
    y = torch.randint(0, base.num_classes, (args.batch_size,), device=device)
    variants, steps = [], {}
    with cudnn_benchmark(False):
        for n in FUSED_UP_TO:
            spec = fused_variant(base, n)
            torch.manual_seed(0)
            model = build_model(spec)
            row = {"variant": f"fused stages 1-{n}" if n else "no fused", "params": count_params(model),
                   "MMACs": count_macs(model, args.image_size, spec.image_channels) / 1e6}
            prepare_model(model, device)
            optimizer = make_optimizer("rmsprop", model.parameters(), 0.002, device)
            steps[row["variant"]] = make_train_step(model, optimizer, classification_loss(), x, y)
            variants.append(row)
        times: dict[str, list[float]] = {row["variant"]: [] for row in variants}
        for round_ in range(args.rounds):
            order = list(times)
            for name in order[round_ % len(order):] + order[:round_ % len(order)]:
                times[name].append(time_steps(steps[name], x, y, warmup=1, steps=args.steps).median_ms)
    base_rate = None
    for row in variants:
        ms = statistics.median(times[row["variant"]])
        row["train img/s"] = 1000 * args.batch_size / ms
        base_rate = base_rate or row["train img/s"]
        row["vs no fused"] = row["train img/s"] / base_rate
        row["engine"] = steps[row["variant"]].engine
    fastest = max(variants, key=lambda r: r["train img/s"])
    title = (f"Fused-MBConv vs MBConv: {args.model}" + (f" x width {args.width:g}" if args.width != 1 else "")
             + f", {args.image_size} px, batch {args.batch_size}, median of {args.rounds} interleaved rounds of "
             f"{args.steps} steps")
    notes = [f"fastest on this device: {fastest['variant']} ({fastest['vs no fused']:.2f}x no fused)"]
    print_report(title, device, variants, notes=notes)
    keep_result("fused_vs_mbconv", device, args.quick, title, variants, notes)
    return variants


if __name__ == "__main__":
    main()
