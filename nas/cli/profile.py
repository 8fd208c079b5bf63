"""`nas profile`: parameters, multiply-adds (FLOPs) and training step time of any spec."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from effnas.nas.cli.arguments import thread_count
from effnas.search_space import load_arch

EPILOG = """\
examples:
  nas profile efficientnetv2-s                       zoo model: table with params, MACs, step time
  nas profile efficientnet-b0 --no-time --json       counts only, one JSON object
  nas profile runs/digits/best.json --num-classes 10
  nas profile my_spec.json --image-size 224 --batch-size 32 --device cpu

NAME_OR_PATH is a zoo name (efficientnetv2-s/m/l/xl, efficientnet-b0 ... b7) or a spec JSON file
(also a best.json that wraps one as {"spec": ...}).

MACs are multiply-adds of one image, counted by torch.utils.flop_counter (what the papers and
torchvision call "FLOPs"; FLOPs = 2 x MACs here). Without --image-size they are counted at the
spec's eval_image_size, as the papers report them, and the training step is timed at the spec's
train_image_size. The timed step is the one a search's proxy trials time: the same engine (a CUDA
graph on a GPU), the same optimizer (RMSProp) and the same step timer, fed random data, so the
step time here and a search's step time measure the same thing. Timing defaults: on cuda
batch 32, 5 warm-up + 20 timed steps (bf16 autocast); on cpu a proxy trial's batch 64, 2 + 9 steps,
on one thread as each of a search's CPU trials (--threads to change it). --no-time
skips training and answers in a few seconds (counting runs on the meta device: shapes only,
no real compute).
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "profile", help="params, FLOPs and training step time of a spec or zoo model",
        description="Count parameters and multiply-adds of an architecture and time one training step.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", metavar="NAME_OR_PATH", help="zoo model name or spec JSON file")
    parser.add_argument("--image-size", type=int, default=None, metavar="N",
                        help="image size in pixels for counting and timing (default: the spec's own, see below)")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                        help="batch size of the timed step (default 32 on cuda, 64 on cpu)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto: cuda if present)")
    parser.add_argument("--num-classes", type=int, default=None, metavar="N",
                        help="classifier outputs (default: the spec's num_classes)")
    parser.add_argument("--warmup", type=int, default=None, metavar="N", help="untimed warm-up steps")
    parser.add_argument("--steps", type=int, default=None, metavar="N", help="timed steps (median reported)")
    parser.add_argument("--threads", type=thread_count, default=None, metavar="N",
                        help="torch CPU threads for the timed steps (default 1 on cpu, as a search's trials)")
    parser.add_argument("--no-time", dest="time", action="store_false", help="count only, do not time a step")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    spec = load_arch(args.target)  # a bad spec is refused before torch is imported
    if args.time:  # refused before anything is built when the timed step cannot fit (models/memory.py)
        from effnas.models.memory import check_fits

        cuda = args.device.startswith("cuda") or (args.device == "auto" and _cuda())
        batch = args.batch_size if isinstance(args.batch_size, int) and args.batch_size > 0 else (32 if cuda else 64)
        check_fits(spec.replace(num_classes=args.num_classes) if args.num_classes and args.num_classes >= 2 else spec,
                   batch, args.device, image_size=args.image_size if args.image_size and args.image_size > 0 else None)

    from effnas.nas.training.profile import profile_spec  # here, not at the top: torch costs every `nas` call

    def announce(note: str) -> None:
        if not args.json:
            print(f"{note} (--no-time skips this)", file=sys.stderr, flush=True)

    result = profile_spec(spec, image_size=args.image_size, batch_size=args.batch_size, device=args.device,
                          time=args.time, num_classes=args.num_classes, warmup=args.warmup, steps=args.steps,
                          threads=args.threads, announce=announce)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_profile(result))
    warning = unsteady_warning(result)
    if warning:
        print(warning, file=sys.stderr)
    return 0


def unsteady_warning(result: dict[str, Any]) -> str | None:
    """A line for a timing too unsteady to trust: a search would flag a trial with this spread and not rank it."""
    from effnas.results.record import UNSTEADY_SPREAD

    spread = result.get("step_time_spread")
    if spread is None or spread <= UNSTEADY_SPREAD:
        return None
    return (f"warning: the step time is unsteady: spread {spread:.2f} > {UNSTEADY_SPREAD} (p90 - p10 over the median "
            "of the timed steps), above what a search ranks; was the machine busy? Rerun, or time more --steps")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _si(number: float) -> str:
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= scale:
            return f"{number / scale:.3g} {unit}" if number / scale < 100 else f"{number / scale:,.1f} {unit}"
    return f"{number:g}"


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    return ["  ".join(cell.rjust(w) if col in right else cell.ljust(w)
                      for col, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in rows]


def format_profile(result: dict[str, Any]) -> str:
    """The human-readable table ``nas profile`` prints."""
    lines = [f"{result['name'] or 'spec'}  ({result['num_classes']} classes)",
             f"  params     {result['params']:,} ({_si(result['params'])})",
             f"  MACs       {_si(result['macs'])} at {result['image_size']} px  (FLOPs {_si(result['flops'])})"]
    if "step_time_ms" in result:
        lines.append(f"  step time  {result['step_time_ms']:,.1f} ms  median of {result['timed_steps']} steps "
                     f"(spread {100 * result['step_time_spread']:.1f} %: p90 - p10 over the median), batch {result['batch_size']} at "
                     f"{result['step_image_size']} px on {result['device']}, {result['precision']}")
    rows = [["stage", "op", "k", "s", "e", "in->out", "layers", "se", "params", "MACs", "block string"]]
    stem, head = result["stem"], result["head"]
    rows.append(["stem", "conv", "3", str(stem["stride"]), "-", f"{stem['in_channels']}->{stem['channels']}", "1", "-",
                 f"{stem['params']:,}", _si(stem["macs"]), ""])
    for index, stage in enumerate(result["stages"]):
        rows.append([str(index), stage["op"], str(stage["kernel"]), str(stage["stride"]), str(stage["expand_ratio"]),
                     f"{stage['in_channels']}->{stage['out_channels']}", str(stage["layers"]),
                     f"{stage['se_ratio']:g}" if stage["se_ratio"] > 0 else "-",
                     f"{stage['params']:,}", _si(stage["macs"]), stage["block"]])
    last = result["stages"][-1]["out_channels"]
    rows.append(["head", "conv1x1+fc", "1", "1", "-", f"{last}->{head['channels']}", "1", "-",
                 f"{head['params']:,}", _si(head["macs"]), ""])
    lines.append("")
    lines.extend("  " + line for line in _table(rows, right={2, 3, 4, 6, 8, 9}))
    return "\n".join(lines)
