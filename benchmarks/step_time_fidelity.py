"""Step-time fidelity: is the step time a search records repeatable, and does it rank architectures as
training them at full size does?

    python -m benchmarks.step_time_fidelity [--quick] [--device cuda] [--timings exclusive,pinned,unlocked]

0. In a real search: ``nas search``'s own loop (``Search.run`` on the ``LocalBackend``, the default workers)
   on a study whose queue alternates the backbone with random candidates (``study.enqueue_trial``), so the
   backbone is measured ``--repeats`` times as a candidate while the other worker trains something else.
   Per timing discipline (``--timings``, see ``benchmarks.timing_modes``): the ratio of the backbone's recorded
   step time to the stored reference (target 1.00 +- 0.05) and its CV across the repeats (target < 5 %).
1. Repeatability: one architecture (the default space's backbone), measured ``--repeats`` times by
   ``run_trial`` (the step time a search records) and by ``time_steps`` on one built step; CV across repeats.
   First on an otherwise idle machine, then the way a search runs: while ``--others`` worker processes (the
   search's own ``WorkerPool``, same threads each) train other candidates back to back on the other cores.
   ``--threads`` defaults to what each worker of ``nas search`` gets on this machine (cores / default workers
   on CPU), the thread count the recorded step times are measured with.
2. Ranking: up to ten variants of the default space (op type, kernel, expansion, depth; built with
   ``spec_from_params``). Proxy: the step time ``run_trial`` records for each. Full: the same choices on the
   backbone at ``--full-width`` / ``--full-depth``, ``--full-size`` px, batch ``--full-batch``, 1000 classes,
   timed with ``time_steps`` on the same engine. Spearman rank correlation between the two columns.
   On a GPU the defaults are full size for real (224 px, batch 128); the CPU defaults (64 px, batch 16) are a
   moderate "full" size so the run finishes in minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from benchmarks.common import (add_device_args, cv, keep_result, print_report, search_defaults, setup_device,
                               spearman)

# (name, changes): each change sets decisions on some stages (all by default); layers "fewer"/"more" pick the
# stage's smallest/largest layer count in the space, so the same variant exists at proxy and at full depth.
VARIANTS: list[tuple[str, list[dict[str, Any]]]] = [
    ("EfficientNetV2-S", []),
    ("all stages MBConv", [{"op": "mbconv"}]),
    ("all stages Fused-MBConv", [{"op": "fused"}]),
    ("kernel 5 everywhere", [{"kernel": 5}]),
    ("expansion 6 everywhere", [{"expand": 6}]),
    ("fewer layers", [{"layers": "fewer"}]),
    ("more layers", [{"layers": "more"}]),
    ("fused only in stages 0-1", [{"op": "mbconv"}, {"op": "fused", "stages": (0, 1)}]),
    ("expansion 4 everywhere", [{"expand": 4}]),
    ("last two stages k5, more layers", [{"kernel": 5, "layers": "more", "stages": (4, 5)}]),
]


def variant_params(space: Any, changes: list[dict[str, Any]]) -> dict[str, Any]:
    """The space's parameters for the backbone with ``changes`` applied."""
    from effnas.search_space.space import param_name

    params = space.params_from_spec(space.backbone)
    for change in changes:
        for index in change.get("stages", range(len(space.stages))):
            for decision, value in change.items():
                if decision == "stages":
                    continue
                if value in ("fewer", "more"):
                    value = (min if value == "fewer" else max)(space.stages[index].layers)
                params[param_name(index, decision)] = value
    return params


def full_step_ms(spec: Any, args: argparse.Namespace, device: torch.device) -> float:
    """Median step time of ``spec`` at full size on the trial engine (random data: only the cost matters)."""
    from effnas.models import build_model
    from effnas.nas.training.engine import classification_loss, cudnn_benchmark, make_optimizer, make_train_step, prepare_model
    from effnas.nas.training.timing import time_steps

    torch.manual_seed(0)
    with cudnn_benchmark(False):
        model = prepare_model(build_model(spec.replace(num_classes=1000, dropout=0.0, drop_path_rate=0.0)), device)
        optimizer = make_optimizer("rmsprop", model.parameters(), 0.002, device)
        x = torch.randn(args.full_batch, 3, args.full_size, args.full_size, device=device)
        y = torch.randint(0, 1000, (args.full_batch,), device=device)
        step = make_train_step(model, optimizer, classification_loss(), x, y)
        return time_steps(step, x, y, warmup=2, steps=args.full_steps).median_ms


def train_until_killed(specs: list[dict], control: dict[str, Any], seed: int) -> dict[str, Any]:
    """A WorkerPool task: train ``specs`` in turn with ``run_trial``, forever, like a busy search worker.

    ``control``: ``settings`` (the trial settings) and ``ready`` (a file created once the data is loaded, so
    the measurement starts while this worker trains). The benchmark kills the worker when it is done.
    """
    from effnas.nas.training.engine import resolve_device
    from effnas.nas.search.trial import TrialSettings, run_trial, trial_data

    settings = TrialSettings.from_dict(control["settings"])
    trial_data(settings, seed, resolve_device(settings.device), specs[0]["train_image_size"])
    Path(control["ready"]).touch()
    while True:
        for spec in specs:
            run_trial(spec, settings, seed)


@contextlib.contextmanager
def other_workers(count: int, threads: int, specs: list[dict], settings: dict[str, Any]) -> Iterator[None]:
    """``count`` search worker processes training ``specs`` back to back for the duration of the block."""
    from effnas.nas.search.backends.local import WorkerPool

    if count < 1:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="effnas-fidelity-") as tmp:
        pool = WorkerPool(count, threads=threads, function="benchmarks.step_time_fidelity:train_until_killed")
        try:
            ready = [Path(tmp) / f"ready-{i}" for i in range(count)]
            for path in ready:
                pool.submit(path.name, specs, {"settings": settings, "ready": str(path)}, 0)
            deadline = time.monotonic() + 300
            while not all(path.exists() for path in ready):
                failed = pool.collect(poll=0.2)
                if failed:
                    raise RuntimeError(f"a background worker failed: {failed[0].error}")
                if time.monotonic() > deadline:
                    raise RuntimeError("the background workers did not start within 300 s")
            yield
        finally:
            pool.close(kill=True)


def repeatability(label: str, proxy: Any, settings: Any, args: argparse.Namespace,
                  device: torch.device) -> list[dict[str, Any]]:
    """CV of the backbone's step time over ``--repeats``: as ``run_trial`` records it, and by ``time_steps``."""
    from effnas.models import build_model
    from effnas.nas.training.engine import classification_loss, make_optimizer, make_train_step, prepare_model
    from effnas.nas.training.timing import time_steps
    from effnas.nas.search.device_sharing import DeviceSharing
    from effnas.nas.search.trial import run_trial, trial_data

    trial_ms = [run_trial(proxy.backbone, settings.to_dict(), seed=0)["step_time_ms"] for _ in range(args.repeats)]
    data = trial_data(settings, 0, device, proxy.backbone.train_image_size)
    spec = proxy.backbone.replace(num_classes=data.num_classes, image_channels=data.channels, dropout=0.0,
                                  drop_path_rate=0.0)
    model = prepare_model(build_model(spec), device)
    x, y = data.train_x[:settings.batch_size], data.train_y[:settings.batch_size]
    step = make_train_step(model, make_optimizer(settings.optimizer, model.parameters(), settings.lr, device),
                           classification_loss(), x, y)
    sharing = DeviceSharing(settings.timing_lock, device)  # as run_trial times its steps
    pass_ms = []
    for _ in range(args.repeats):
        with sharing.exclusive():
            pass_ms.append(time_steps(step, x, y, warmup=2, steps=args.timing_steps).median_ms)
    timed = "every step after two" if device.type == "cpu" else f"last {args.timing_steps} steps"
    return [{"measurement": measurement, "machine": label, "repeats": args.repeats,
             "median ms": statistics.median(values), "min ms": min(values), "max ms": max(values),
             "CV %": 100 * cv(values), "engine": step.engine}
            for measurement, values in ((f"run_trial step_time_ms ({timed})", trial_ms),
                                        (f"time_steps on one built step ({args.timing_steps} steps)", pass_ms))]


def search_fidelity(timing: str, args: argparse.Namespace, device: torch.device, workers: int) -> dict[str, Any]:
    """One real search (see the module docs, 0.) under ``timing`` (``benchmarks.timing_modes``): the backbone's
    recorded step times against the stored reference."""
    import json
    import random

    from optuna.trial import TrialState

    from benchmarks.timing_modes import timing_backend
    from effnas.nas.search.session import Search
    from effnas.nas.search.settings import SearchConfig, SearchRecipe, SearchRuntime
    from effnas.results.record import REFERENCE_ATTR, unsteady

    with tempfile.TemporaryDirectory(prefix="effnas-fidelity-") as tmp:
        space_file = Path(tmp) / "space.json"
        space_file.write_text(json.dumps({} if args.width is None else {"width": args.width}))
        trial = {"data": args.data, "timing_steps": args.timing_steps, **({"epochs": args.epochs} if args.epochs else {})}
        runtime = SearchRuntime(out=str(Path(tmp) / "run"), budget=2 * args.repeats, workers=workers,
                                device=str(device), threads=args.threads, progress=False)
        # Every candidate trains to the end, and the backbone is trained again each time it is queued: here the
        # repeats are the point (a search records a repeated architecture once, see nas.search.repeats).
        search = Search(SearchConfig(SearchRecipe(controller="random", space=str(space_file), trial=trial,
                                                  early_stopping=False), runtime))
        search.repeats.trained_before = lambda number, spec: None
        backbone = search.space.params_from_spec(search.space.backbone)
        rng = random.Random(0)
        for _ in range(args.repeats):  # the backbone, then another candidate for the other worker, in turn
            search.study.enqueue_trial(backbone)
            search.study.enqueue_trial({name: rng.choice(d.choices) for name, d in search.space.distributions().items()})
        search.run(timing_backend(timing))
        reference = search.study.user_attrs[REFERENCE_ATTR]
        done = search.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        ours = [t.user_attrs for t in done if t.params == backbone]
        others = [t.user_attrs for t in done if t.params != backbone]
    ms = [attrs["step_time_ms"] for attrs in ours]
    ratios = [value / reference["step_time_ms"] for value in ms]
    return {"timing": timing, "workers": workers, "threads": ours[0]["threads"], "reference ms": reference["step_time_ms"],
            "backbone ms": statistics.median(ms), "ratio": statistics.median(ratios), "min ratio": min(ratios),
            "max ratio": max(ratios), "CV %": 100 * cv(ms), "max spread": max(a["step_time_spread"] for a in ours),
            "others flagged": sum(unsteady(a["step_time_spread"]) for a in others), "repeats": len(ms),
            "recorded as": ours[0]["timing"]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_args(parser)
    parser.add_argument("--data", default="digits", help="proxy trial data (the search's default)")
    parser.add_argument("--epochs", type=int, default=None, help="proxy trial epochs (default: the search's, 3)")
    parser.add_argument("--timing-steps", type=int, default=None,
                        help="timed steps per proxy trial (default: the search's, TrialSettings.timing_steps)")
    parser.add_argument("--repeats", type=int, default=5, help="repeated measurements for the CV")
    parser.add_argument("--others", type=int, default=None,
                        help="other workers training during the loaded rows (default: the search's default "
                             "workers on this device minus one; 3 on CUDA, as with --workers 4); 0 skips them")
    parser.add_argument("--timings", default="exclusive",
                        help="comma-separated timing disciplines for 0. (exclusive, the search's own; pinned; "
                             "unlocked, the search before it timed candidates alone; see benchmarks.timing_modes)")
    parser.add_argument("--variants", type=int, default=len(VARIANTS))
    parser.add_argument("--width", type=float, default=None, help="proxy width (default: the default space's)")
    parser.add_argument("--full-width", type=float, default=1.0)
    parser.add_argument("--full-depth", type=float, default=1.0)
    parser.add_argument("--full-size", type=int, default=None, help="default: 224 on CUDA, 64 on CPU")
    parser.add_argument("--full-batch", type=int, default=None, help="default: 128 on CUDA, 16 on CPU")
    parser.add_argument("--full-steps", type=int, default=None, help="default: 30 on CUDA, 5 on CPU")
    args = parser.parse_args(argv)
    if args.timing_steps is None:
        from effnas.nas.search.trial import TrialSettings

        args.timing_steps = TrialSettings().timing_steps
    search_workers, search_threads = search_defaults(args.device)
    threads_note = (f"torch threads per measurement: {args.threads}" if args.threads is not None else
                    f"torch threads per measurement: {search_threads}, what each of the {search_workers} "
                    f"default workers of `nas search` gets on this machine")
    args.threads = args.threads or search_threads
    device = setup_device(args)
    cuda = device.type == "cuda"
    if args.others is None:
        args.others = 3 if cuda else search_workers - 1
    if args.quick:
        args.repeats, args.variants, args.full_width, args.full_steps = 3, 6, 0.5, args.full_steps or 3
    args.full_size = args.full_size or (224 if cuda else 64)
    args.full_batch = args.full_batch or (128 if cuda else 16)
    args.full_steps = args.full_steps or (30 if cuda else 5)

    from effnas.nas.search.trial import TrialSettings, run_trial
    from effnas.search_space.space import SearchSpace

    proxy = SearchSpace.from_dict({} if args.width is None else {"width": args.width})
    full = SearchSpace.from_dict({"width": args.full_width, "depth": args.full_depth, "image_size": args.full_size})
    settings = TrialSettings(data=args.data, epochs=args.epochs or TrialSettings().epochs, device=str(device),
                             threads=args.threads, timing_steps=args.timing_steps)

    # 0. in a real search: the backbone as a candidate, against the stored reference
    search_rows = [search_fidelity(timing, args, device, args.others + 1) for timing in args.timings.split(",")]
    search_title = (f"the backbone as a candidate in a real search ({args.repeats} times, alternating with random "
                    f"candidates), {args.others + 1} workers, {args.data}")
    search_notes = ["targets: ratio to the stored reference 1.00 +- 0.05, CV < 5 %. " + "; ".join(
        f"{row['timing']}: ratio {row['ratio']:.3f} ({'within' if abs(row['ratio'] - 1) <= 0.05 else 'OUTSIDE'}), "
        f"CV {row['CV %']:.1f} % ({'within' if row['CV %'] < 5 else 'ABOVE'})" for row in search_rows)]
    print_report(search_title, device, search_rows, notes=search_notes)

    # 1. repeatability of one architecture: idle, then beside other workers training other candidates
    repeat_rows = repeatability("idle", proxy, settings, args, device)
    if args.others:
        # the search's timing lock too, as it sets one for any --workers > 1
        with tempfile.TemporaryDirectory(prefix="effnas-fidelity-") as tmp:
            loaded = TrialSettings.from_dict({**settings.to_dict(), "timing_lock": str(Path(tmp) / "timing.lock")})
            others = [proxy.spec_from_params(variant_params(proxy, changes)).to_dict() for _, changes in VARIANTS[1:]]
            with other_workers(args.others, args.threads, others, loaded.to_dict()):
                label = f"{args.others} other worker{'s' if args.others > 1 else ''} training"
                repeat_rows += repeatability(label, proxy, loaded, args, device)
    worst = max(repeat_rows, key=lambda row: row["CV %"])
    recorded = [row for row in repeat_rows if row["measurement"].startswith("run_trial")]
    target = 2 if device.type == "cuda" else 5  # CUDA-event timing of graph replays vs perf_counter on CPU
    repeat_title = (f"step-time repeatability: {proxy.backbone.name}, {proxy.backbone.train_image_size} px, "
                    f"batch {settings.batch_size}, {args.data}")
    repeat_notes = [threads_note,
                    f"target on this device: CV < {target} %. " + "; ".join(
                        f"run_trial ({row['machine']}): {row['CV %']:.1f} % "
                        f"({'within' if row['CV %'] < target else 'ABOVE'} the target)" for row in recorded),
                    f"largest CV: {worst['CV %']:.1f} % ({worst['measurement'].split(' (')[0]}, {worst['machine']})"]
    print_report(repeat_title, device, repeat_rows, notes=repeat_notes)

    # 2. proxy vs full ranking
    rows = []
    for name, changes in VARIANTS[:args.variants]:
        metrics = run_trial(proxy.spec_from_params(variant_params(proxy, changes)), settings.to_dict(), seed=0)
        big = full.spec_from_params(variant_params(full, changes))
        rows.append({"variant": name, "proxy params": metrics["params"], "proxy ms": metrics["step_time_ms"],
                     "proxy spread %": 100 * metrics["step_time_spread"], "full ms": full_step_ms(big, args, device)})
        print(f"  measured: {name}", flush=True)
    rho = spearman([r["proxy ms"] for r in rows], [r["full ms"] for r in rows])
    ranking_title = (
        f"proxy vs full step time: proxy = default space (width {proxy.config['width']:g}, {proxy.backbone.train_image_size} px, "
        f"batch {settings.batch_size}, run_trial); full = width {args.full_width:g}, depth {args.full_depth:g}, "
        f"{args.full_size} px, batch {args.full_batch}, 1000 classes (time_steps, {args.full_steps} steps)")
    ranking_notes = [f"Spearman rank correlation, proxy vs full step time: {rho:.2f} over {len(rows)} "
                     f"architectures (engine {repeat_rows[0]['engine']})"]
    print_report(ranking_title, device, rows, notes=ranking_notes)
    keep_result("step_time_fidelity", device, args.quick, repeat_title, repeat_rows, repeat_notes,
                more=[(search_title, search_rows, search_notes), (ranking_title, rows, ranking_notes)])
    return {"search": search_rows, "repeatability": repeat_rows, "ranking": rows, "spearman": rho}


if __name__ == "__main__":
    main()
