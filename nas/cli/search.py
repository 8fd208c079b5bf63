"""`nas search`: run (or resume) a training-aware architecture search."""

from __future__ import annotations

import argparse
import signal

from effnas import api
from effnas.api import MAX_WORKERS_PER_CORE
from effnas.nas.cli.arguments import add_config_argument, duration, finite_number
from effnas.nas.search.controllers.registry import CONTROLLERS, ControllerError, controllers_help, get_controller
from effnas.nas.training.choices import OPTIMIZERS
from effnas.nas.training.sources import data_help


EPILOG = """\
examples:
  nas search --budget 200                          TPE on the bundled digits, runs/tpe-digits
  nas search --budget 50 --controller rl --epochs 3
  nas search --data cifar:~/data/cifar-10-batches-py --device cuda --workers 4 --out runs/c10
  nas search --data imagefolder:~/photos --image-size 64
  nas search --storage postgresql://user@host/effnas --out runs/shared   many machines, one study

Re-running the same command resumes the search and stops at the budget (a larger --budget extends
it). Each candidate is trained briefly (--epochs) at --image-size and scored by
    reward = accuracy * (step_time / step_time_ref)^w * (params / params_ref)^v
with the references measured on the backbone at the start, on this device.
Outputs in --out: study.db (Optuna), trials.csv, pareto.json, best.json. --out is a new or empty
folder, or a search run to resume: a folder holding other files (or a file) is refused, never mixed into.
Processes started on one study (the same --out, or one --storage) each propose from their own seed
stream, recorded in the study, so they explore different candidates.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search", help="search architectures (training-aware, resumable)",
        description="Sample architectures, train each briefly on your data and device, keep the best.",
        epilog=f"{EPILOG}\ncontrollers (--controller):\n{controllers_help()}\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_argument(parser, "search")
    parser.add_argument("--budget", type=int, default=200, help="trials to finish in total (default 200)")
    parser.add_argument("--controller", default="tpe", type=_controller, choices=list(CONTROLLERS),
                        help="which sampler proposes candidates (default tpe; each is listed below)")
    parser.add_argument("--data", default="digits", help=data_help("digits"))
    parser.add_argument("--out", default=None, help="run directory: new, empty, or a search run to resume (default runs/CONTROLLER-DATA)")
    parser.add_argument("--storage", default=None,
                        help="Optuna storage URL instead of OUT/study.db (postgresql://..., sqlite:///..., "
                             "journal:PATH for a journal file on a shared file system)")
    parser.add_argument("--space", default=None, help="search space JSON file, or 'small-images' (EfficientNetV2-S's first three stages at full "
                             "width, 28 px: for digits, the MNIST family and other images of 32 px or less); "
                             "default: the paper's space")
    parser.add_argument("--epochs", type=int, default=None, help="proxy training epochs per candidate")
    parser.add_argument("--proxy-time", type=duration, default=None, metavar="T",
                        help="equal-time proxies: each candidate trains for T (e.g. 10s) of its own measured step "
                             "time instead of --epochs, so a faster network gets more steps, as it would in the "
                             "training time you have; --reward-w and --reward-v then default to 0 (the reward is "
                             "the accuracy reached in that time)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="proxy image size in pixels (default: the space's, 32)")
    parser.add_argument("--batch-size", type=int, default=None, help="proxy batch size")
    parser.add_argument("--optimizer", default=None, choices=OPTIMIZERS,
                        help="the candidates' optimizer (default rmsprop); nas train and nas compare of this search "
                        "use it too")
    parser.add_argument("--lr", type=finite_number, default=None,
                        help="the candidates' peak learning rate (default 0.002 at batch 64; with --optimizer, "
                        "that optimizer's nas train rate)")
    parser.add_argument("--weight-decay", type=finite_number, default=None,
                        help="the candidates' weight decay (default 1e-5; with --optimizer, that optimizer's)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--engine", default="auto",
                        help="auto | eager | graph | compile: how a training step runs (auto: graph on CUDA)")
    parser.add_argument("--workers", type=int, default=None,
                        help="trials run at once on this machine (default: one per CPU core on CPU, 1 on a GPU; "
                             f"at most {MAX_WORKERS_PER_CORE} per CPU core)")
    parser.add_argument("--data-size", type=int, default=None,
                        help="imagefolder images are read at this size before resizing on the device (default 64)")
    parser.add_argument("--trial-timeout", type=finite_number, default=None, metavar="SECONDS",
                        help="fail a candidate that trains longer than this")
    parser.add_argument("--trial-memory", type=finite_number, default=None, metavar="GIB",
                        help="fail a candidate that needs more memory than this, in GiB: on CPU the heap a trial "
                             "may grow beyond its worker's start-up size (about 0.2 GiB), on a GPU the device "
                             "memory a worker may hold; recorded as 'out of memory' and the search goes on "
                             "(default: no limit)")
    parser.add_argument("--early-stopping", choices=("on", "off"), default="on",
                        help="stop candidates that cannot win or fall behind: one whose measured step-time and "
                             "size factors keep its reward below the best finished one even at full accuracy (a "
                             "few steps in), and, with 6 or more --epochs, Optuna's Hyperband on the reward from "
                             "epoch 2 (default on; nsga2 always trains every candidate to the end)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the controller, data split and training")
    parser.add_argument("--reward-w", type=finite_number, default=None,
                        help="step-time exponent w (default -0.07; 0 with --proxy-time)")
    parser.add_argument("--reward-v", type=finite_number, default=None,
                        help="params exponent v (default -0.05; 0 with --proxy-time)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    # --- scaling out on Ray (nas/search/backends/ray.py) ---
    parser.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="local: worker processes on this machine; ray: trials as Ray tasks, with --workers "
                             "defaulting to as many trials as the Ray cluster fits (default local)")
    parser.add_argument("--address", default=None,
                        help="with --backend ray: the Ray cluster to join (auto | HOST:PORT); "
                             "default: start Ray on this machine")
    parser.add_argument("--gpus-per-trial", type=finite_number, default=None,
                        help="with --backend ray: GPU share per trial, e.g. 0.25 puts 4 trials on a GPU "
                             "(default: the GPUs spread over --workers, at most 1 each)")
    parser.add_argument("--cpus-per-trial", type=finite_number, default=None,
                        help="with --backend ray: CPU cores per trial (default 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads per trial (default: this machine's cores over --workers, at most "
                             "OMP_NUM_THREADS; with Ray: --cpus-per-trial); lower it when other searches share the "
                             "machine")
    # --- end scaling out ---
    parser.set_defaults(run=run)


def _controller(name: str) -> str:
    """A registered controller's name; another is argparse's one-line error, naming the ones there are."""
    try:
        return get_controller(name).name
    except ControllerError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def run(args: argparse.Namespace) -> int:
    """`nas search`; SIGTERM stops it as Ctrl-C does, from start to end (see :func:`_stop_like_ctrl_c`)."""
    previous = signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    try:
        return _search(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _search(args: argparse.Namespace) -> int:
    options = {name: value for name, value in vars(args).items() if name not in ("command", "config", "run")}
    options["early_stopping"] = args.early_stopping == "on"
    result = api.search(**options, own_process=True)  # torch, Optuna (and Ray) load inside: only for a search
    _print_summary(result)
    return 130 if result.interrupted else 0


def _stop_like_ctrl_c(signum: int, frame: object) -> None:
    """SIGTERM (``kill``, a job scheduler, ``docker stop``) stops a search as Ctrl-C does: running trials are
    recorded interrupted and queued again, the run files are written, and a re-run resumes."""
    raise KeyboardInterrupt


def _print_summary(result: api.SearchResult) -> None:
    reference = result.reference
    extra = ", ".join(f"{count} {what}" for count, what in ((result.stopped, "stopped early"),
                                                          (result.reused, "not retrained: seen before")) if count)
    print(f"\n{result.counted}/{result.budget} trials{f' ({extra})' if extra else ''} in {result.run_dir} "
          f"({result.seconds:.0f} s this run)")
    if result.interrupted:
        print("stopped early; re-run the same command to resume")
    if result.best_metrics is None:
        print("no completed trial yet")
        return
    metrics = result.best_metrics
    rows = [("", "best (trial %d)" % result.best_trial, "backbone"),
            ("reward", f"{metrics['reward']:.4f}", f"{reference['accuracy']:.4f}"),
            ("accuracy", f"{metrics['accuracy']:.4f}", f"{reference['accuracy']:.4f}"),
            ("step time (ms)", f"{metrics['step_time_ms']:.2f}", f"{reference['step_time_ms']:.2f}"),
            ("params", f"{metrics['params']:,}", f"{reference['params']:,}")]
    for name, best, ref in rows:
        print(f"  {name:<15} {best:>16} {ref:>16}")
    print(f"best spec: {result.run_dir / 'best.json'}   report: nas report {result.run_dir}")
