"""`nas scale`: turn a searched (or zoo) base spec into a bigger family member."""

from __future__ import annotations

import argparse

from effnas import api
from effnas.nas.cli.arguments import finite_number


EPILOG = """\
examples:
  nas scale --base runs/digits/best.json --target m --out m.json
  nas scale --base efficientnetv2-s --target l              compare with the published L
  nas scale --base efficientnet-b0 --phi 1.5 --rule compound --max-image-size 320

--base is a spec JSON file (also a best.json wrapping one as {"spec": ...}) or a zoo name.
Targets: s (phi 0: the base with S's training recipe), m (phi 1), l (2), xl (3); --phi X gives
any compound coefficient in [0, 6] instead. Rules: v2 (default; EfficientNetV2's non-uniform rule:
later stages widen and deepen more, M and up split a wider final stage off the last one) or
compound (EfficientNet's alpha=1.2, beta=1.1, gamma=1.15, every stage alike).
Image sizes grow with phi under both rules (v2 x1.25 per unit, compound x1.15), rounded to a
step of at most an eighth of the size (so a 32 px base grows too), eval capped by --max-image-size.
The written spec also carries the target's regularization (dropout, stochastic depth and a
progressive RandAugment / mixup / dropout recipe) for `nas train`.
The table counts params and multiply-adds (MACs, the papers' "FLOPs") at each eval size.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "scale", help="scale a base spec to a bigger model (EfficientNetV2 M/L/XL style)",
        description="Scale a base architecture to a bigger family member and compare the two.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, metavar="FILE_OR_ZOO_NAME",
                        help="spec JSON file (or best.json) or zoo model name")
    parser.add_argument("--target", default=None, metavar="NAME", help="s | m | l | xl (default m unless --phi)")
    parser.add_argument("--phi", type=finite_number, default=None, metavar="X",
                        help="custom compound coefficient instead of --target (m = 1, l = 2, xl = 3)")
    parser.add_argument("--rule", default="v2", metavar="RULE", help="v2 (default) | compound")
    parser.add_argument("--max-image-size", type=int, default=480, metavar="PX",
                        help="cap on the eval image size (default 480, as in the paper)")
    parser.add_argument("--no-extra-stage", dest="extra_stage", action="store_false",
                        help="v2 rule: do not split a wider final stage off the last one")
    parser.add_argument("--out", default=None, metavar="FILE", help="write the scaled spec here (JSON); a study or "
                        "a file effnas did not write there is never replaced")
    parser.add_argument("--force", action="store_true",
                        help="replace a file effnas wrote for another purpose (a report, a checkpoint) at --out")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from effnas.scaling.compare import comparison_table, image_size_line
    from effnas.scaling.rules import resolution_multiplier

    options = {name: value for name, value in vars(args).items() if name not in ("command", "run", "base")}
    result = api.scale(args.base, **options)
    print(comparison_table(result.base, result.spec))
    print(image_size_line(result.base, result.spec, resolution_multiplier(result.rule, result.phi),
                          result.max_image_size))
    if result.out is not None:
        print(f"wrote {args.out}")
    return 0
