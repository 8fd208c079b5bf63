"""`nas best RUN`: export one trial's architecture (best reward, best under a budget, or by number).

The file is ``{"spec": ..., "metrics": ...}``, the same shape as the run's ``best.json``, so
``nas scale``, ``nas train`` and ``nas profile`` read it directly.
"""

from __future__ import annotations

import argparse
import json
import sys

from effnas.nas.cli.arguments import positive_number


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "best", help="export the best trial's spec (optionally under a params / step-time budget)",
        description="Export one trial of a search as a spec file for nas scale / nas train / nas profile. "
                    "Without options: the best reward. RUN is a run directory, study .db file or storage URL.")
    parser.add_argument("location", metavar="RUN", help="run directory, study .db file or storage URL")
    parser.add_argument("--max-params", type=positive_number, metavar="N", help="best reward with at most N parameters (5e6)")
    parser.add_argument("--max-step-time", type=positive_number, metavar="MS",
                        help="best reward with a training step of at most MS milliseconds")
    parser.add_argument("--trial", type=int, metavar="N", help="export trial number N instead")
    parser.add_argument("--out", metavar="FILE", help="write the JSON here (default: print it); a study or a file "
                        "effnas did not write there is never replaced")
    parser.add_argument("--force", action="store_true",
                        help="replace a file effnas wrote for another purpose (a report, a table) at --out")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from effnas.results import ResultsError, best_under, metrics_of, open_study, spec_of, trial_row, trials_frame
    from effnas.search_space import save_spec

    if args.trial is not None and (args.max_params is not None or args.max_step_time is not None):
        raise ResultsError("--trial picks one trial; it cannot be combined with --max-params/--max-step-time")
    if args.out:  # a study, another file, a directory, a device: refused before the study is read
        from effnas.outputs import claim_output

        claim_output(args.out, "spec", "--out", force=args.force)
    frame = trials_frame(open_study(args.location))
    if args.trial is not None:
        row = trial_row(frame, args.trial)
    else:
        row = best_under(frame, max_params=args.max_params, max_step_time_ms=args.max_step_time)
    spec, metrics = spec_of(row), metrics_of(row)
    if args.out:
        save_spec(spec, args.out, extra={"metrics": metrics})
        print(f"wrote {args.out}: trial {metrics['trial']}, accuracy {metrics.get('accuracy', float('nan')):.4f}, "
              f"{metrics.get('step_time_ms', float('nan')):.3f} ms/step, {metrics.get('params', 0) / 1e6:.3f} M params")
    else:
        sys.stdout.write(json.dumps({"spec": spec.to_dict(), "metrics": metrics}, indent=2) + "\n")
    return 0
