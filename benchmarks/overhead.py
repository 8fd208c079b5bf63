"""Overhead: the share of a trial's wall time spent outside training and evaluation steps.

    python -m benchmarks.overhead [--quick] [--device cuda]

Runs a real search in-process (``effnas.nas.search.session.Search`` with the TPE controller on SQLite, its reference trial
first, then ``--trials`` candidates) and times every phase of a trial from outside. In the worker:
  build      ``build_model`` inside ``run_trial`` (and parameter count)
  MACs       MAC counting (CPU: on the critical path; CUDA: in a background thread, hidden by training)
  step       ``make_train_step``: graph warm-up and capture on CUDA, nothing on CPU (the trial's build_seconds)
  train      the training loop (the trial's train_seconds; its timed steps included)
  eval       ``evaluate`` on the validation split
  other      the rest of ``run_trial`` (data from the process cache, seeding, optimizer)
In the search process:
  sample     ``Search.propose``: Optuna ask on SQLite, the controller's choices, spec as a user attribute
  store      ``Search.store``: reward, user attributes, Optuna tell on SQLite
  files      ``Search.publish``: trials.csv, pareto.json, best.json, rewritten after every trial
  loop       the search loop's reads: the budget count and the progress bar's best reward
Each worker holds its next candidate in a queue (``WorkerPool(depth=2)``), so the search process does its part
while the worker trains: overhead = the worker's time outside training and evaluation, as a share of its trial's
wall time, and the search process's part is shown beside it ("alongside"; on a fully loaded CPU it takes CPU
time from the workers).

Then ``--end-to-end K`` (default 4) resumes the same study for K more trials through ``Search.run`` with one real
worker process, and reports what the worker's clock says: the share of the time between its trials' completions
(from the second to the last) spent outside training and evaluation, IPC and any wait for the search process
included.

The sampler's, the storage's and the run files' costs grow with the study: ``--history N`` first fills it with N
completed trials (architectures from the controller, metrics drawn around the reference's, nothing trained) to
measure trials late in a search, e.g. ``--history 200``. Each trial trains with the torch threads one default
``nas search`` worker gets on this machine (``--threads`` to change).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import random
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

from benchmarks.common import add_device_args, keep_result, print_report, search_defaults, setup_device

PHASES = ("build", "MACs", "step", "train", "eval", "other", "sample", "store", "files", "loop")
ALONGSIDE = ("sample", "store", "files", "loop")  # the search process's part, done while the worker trains


@contextlib.contextmanager
def timed_phases(module: Any, names: dict[str, str], spent: dict[str, float]) -> Iterator[None]:
    """Wrap ``module.<function>`` for a block so each call adds its duration to ``spent[phase]``."""
    originals = {attr: getattr(module, attr) for attr in names}

    def wrap(attr: str, phase: str):
        original = originals[attr]

        def timed(*args, **kwargs):
            if threading.current_thread() is not threading.main_thread():
                return original(*args, **kwargs)  # CUDA: MACs are counted in a thread, off the critical path
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[phase] += time.perf_counter() - start
        return timed

    try:
        for attr, phase in names.items():
            setattr(module, attr, wrap(attr, phase))
        yield
    finally:
        for attr, original in originals.items():
            setattr(module, attr, original)


def fill_history(search: Any, count: int, reference: dict[str, Any]) -> None:
    """``count`` completed trials as the search would record them, with metrics drawn around the reference's."""
    rng = random.Random(0)
    for _ in range(count):
        candidate, _spec, _ = search.propose()
        metrics = {**reference, "accuracy": rng.uniform(0.3, 1.0),
                   "step_time_ms": reference["step_time_ms"] * rng.uniform(0.5, 2.0),
                   "params": int(reference["params"] * rng.uniform(0.2, 4.0))}
        search.store(candidate, metrics, None, reference["total_seconds"])


def measure_end_to_end(config: Any, trials: int) -> dict[str, Any]:
    """Resume ``config``'s study for ``trials`` more through ``Search.run`` (one worker process, its queue of
    two) and compare the worker's training and evaluation time with the time between its trials' completions."""
    import dataclasses

    from optuna.trial import TrialState

    from effnas.nas.search.backends.local import LocalBackend
    from effnas.nas.search.session import Search
    from effnas.nas.search.settings import SearchConfig

    runtime = dataclasses.replace(config.runtime, budget=config.runtime.budget + trials)
    search = Search(SearchConfig(config.recipe, runtime))
    before = len(search.study.trials)
    search.run(LocalBackend())
    new = [t for t in search.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.number >= before]
    new.sort(key=lambda t: t.datetime_complete)
    timed = new[1:]  # from the first completion on: the worker's start-up and first ask are not a steady state
    span = (timed[-1].datetime_complete - new[0].datetime_complete).total_seconds()
    busy = sum(t.user_attrs["total_seconds"] for t in timed)
    useful = sum(t.user_attrs["train_seconds"] + t.user_attrs.get("eval_seconds", 0.0) for t in timed)
    # The study's clock and the worker's differ by milliseconds: a share within that reads as 0, not negative.
    return {"trials": len(timed), "overhead %": max(0.0, 100 * (1 - useful / span)),
            "gap %": max(0.0, 100 * (1 - busy / span))}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_args(parser)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=float, default=None, help="proxy width (default: the default space's)")
    parser.add_argument("--history", type=int, default=0, help="completed trials in the study before the timed ones")
    parser.add_argument("--end-to-end", type=int, default=4, metavar="K",
                        help="then K more trials through Search.run with a real worker process (0: skip)")
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.epochs = 3, 1
    args.threads = args.threads or search_defaults(args.device)[1]  # a trial trains as a search worker does
    device = setup_device(args)

    import effnas.nas.search.trial
    from effnas.nas.search.budget import counted_trials
    from effnas.nas.search.session import Search
    from effnas.nas.search.settings import SearchConfig, SearchRecipe, SearchRuntime
    from effnas.nas.search.trial import run_trial
    from effnas.nas.search.backends.local import freeze_imports

    freeze_imports()  # as a search worker does after its imports (undone below: main may run in a test process)

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="effnas-overhead-") as tmp:
        space_file = Path(tmp) / "space.json"
        space_file.write_text(json.dumps({} if args.width is None else {"width": args.width}))
        recipe = SearchRecipe(controller="tpe", space=str(space_file),
                              trial={"data": args.data, "epochs": args.epochs, "batch_size": args.batch_size})
        config = SearchConfig(recipe, SearchRuntime(out=str(Path(tmp) / "run"), budget=args.history + args.trials,
                                                    seed=0, workers=1, device=str(device), threads=args.threads,
                                                    progress=False))
        search = Search(config)
        trial, seed = search.trial_settings, config.runtime.seed
        reference: dict[str, Any] = {}

        def measure_reference(spec: Any) -> dict[str, Any]:
            reference.update(run_trial(spec.to_dict(), trial, seed))  # also warms the data cache
            return reference

        search.prepare(measure_reference)
        fill_history(search, args.history, reference)
        for _ in range(args.trials):
            spent: dict[str, float] = defaultdict(float)
            start = time.perf_counter()
            proposed = search.propose()
            assert proposed is not None
            candidate, spec, _ = proposed
            spent["sample"] = time.perf_counter() - start
            wrapped = {"build_model": "build", "count_macs": "MACs", "evaluate": "eval"}
            with timed_phases(effnas.nas.search.trial, wrapped, spent):
                began = time.perf_counter()
                metrics = run_trial(spec.to_dict(), trial, seed)
                seconds = time.perf_counter() - began
            spent["step"], spent["train"] = metrics["build_seconds"], metrics["train_seconds"]
            spent["other"] = metrics["total_seconds"] - sum(spent[p] for p in ("build", "MACs", "step", "train",
                                                                               "eval"))
            began = time.perf_counter()
            search.store(candidate, metrics, None, seconds)
            spent["store"] = time.perf_counter() - began
            began = time.perf_counter()
            search.publish([candidate.number])
            spent["files"] = time.perf_counter() - began
            began = time.perf_counter()
            counted_trials(search.study), search.best()  # what Search.run reads between trials
            spent["loop"] = time.perf_counter() - began
            rows.append({"trial": candidate.number, "params": metrics["params"], "wall": seconds, **spent})
        end_to_end = measure_end_to_end(config, args.end_to_end) if args.end_to_end else None
    gc.unfreeze()

    table = []
    for row in rows:
        overhead = row["wall"] - row["train"] - row["eval"]
        alongside = sum(row[p] for p in ALONGSIDE)
        table.append({"trial": row["trial"], "params": row["params"], "wall s": row["wall"],
                      **{f"{p} ms": 1000 * row[p] for p in PHASES if p != "train"}, "train s": row["train"],
                      "overhead %": 100 * overhead / row["wall"], "alongside %": 100 * alongside / row["wall"]})
    shares = [r["overhead %"] for r in table]
    alongside_shares = [r["alongside %"] for r in table]
    notes = [f"overhead (the worker's time outside training and evaluation steps): median "
             f"{statistics.median(shares):.1f} % of a trial's wall time (range {min(shares):.1f}-{max(shares):.1f} %)",
             f"alongside, in the search process while the worker trains its queued next candidate "
             f"({', '.join(ALONGSIDE)}): median {statistics.median(alongside_shares):.1f} % of a trial's wall time"]
    if end_to_end is not None:
        notes.append(f"end to end through Search.run ({end_to_end['trials']} trials, 1 worker process): "
                     f"{end_to_end['overhead %']:.1f} % of the worker's time between completions was outside "
                     f"training and evaluation (of which waiting for the next candidate: {end_to_end['gap %']:.1f} %)")
    history = f" after {args.history} completed" if args.history else ""
    title = (f"per-trial overhead: {args.trials} TPE trials{history} on SQLite, {args.data}, "
             f"{args.epochs} epoch(s), batch {args.batch_size}, {args.threads} torch thread(s) per trial")
    print_report(title, device, table, notes=notes)
    # a study filled first is a different measurement: its own file, so it does not replace the new-study one
    keep_result(f"overhead-history{args.history}" if args.history else "overhead", device, args.quick, title, table,
                notes)
    return table


if __name__ == "__main__":
    main()
