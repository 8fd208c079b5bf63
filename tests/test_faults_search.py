"""Fault suite, `nas search`: kill -9 at six moments, then resume to the end.

One study is built by a chain of six killed runs (module fixture ``chain``), each resuming the one before, and
then resumed to the end. Four kill points are chosen moments (the reference, the ask, mid-trial, the result
write); two are random, drawn from ``random.Random(SEED)``: SEED is fresh every run and shows in the test
ids and messages, and ``EFFNAS_FAULT_SEED=N`` replays it. After every kill the study and the run files are
checked. Everything runs the real CLI (``python -m effnas.nas search``) in its own process group, killed with
``os.killpg(..., SIGKILL)`` so the worker processes die with it. (Refused commands, time limits and divergence
against a finished study: test_faults_search_failures.py, which reuses the helpers here.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # kill -9 of whole searches at six moments, and their resumes

ROOT = Path(__file__).resolve().parents[1]
SPACE = {"width": 0.25, "depth": 0.25, "image_size": 32, "head_channels": 32}
BUDGET = 14  # more than the killed runs can finish between them, so each is still running when killed
RUN_FILES = ("trials.csv", "pareto.json", "best.json")


def fault_seed() -> int:
    """EFFNAS_FAULT_SEED replays a seed; else a fresh one per run, the same in every pytest-xdist worker (each
    collects the tests, and their ids, which carry the seed, must agree)."""
    if os.environ.get("EFFNAS_FAULT_SEED"):
        return int(os.environ["EFFNAS_FAULT_SEED"])
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run:
        return int(hashlib.sha256(run.encode()).hexdigest(), 16) % 1_000_000
    return random.SystemRandom().randrange(1_000_000)


SEED = fault_seed()
KILLS = ("reference", "ask", "mid-trial", "after-record", "random-start", "random-trial")


def kill_id(kill: str) -> str:
    return f"{kill}-seed{SEED}" if kill.startswith("random") else kill


def search_argv(out: Path, *extra: str, budget: int = BUDGET) -> list[str]:
    # One torch thread per trial: two on a 2-core machine with any other load spin against each other
    # (OpenMP) and a step gets up to 100x slower.
    return [sys.executable, "-m", "effnas.nas", "search", "--data", "synthetic:200x16", "--epochs", "1", "--batch-size",
            "32", "--workers", "1", "--threads", "1", "--space", str(out.parent / "space.json"), "--device", "cpu",
            "--controller", "random", "--quiet", "--budget", str(budget), "--out", str(out), *extra]


def query(db: Path, sql: str, strict: bool = False) -> list[tuple]:
    """Read the study without locking it for the writer. While a search runs (not ``strict``) a study that is
    still being created reads as empty; once it is dead every read must work."""
    if not db.exists() and not strict:
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as connection:
            return connection.execute(sql).fetchall()
    except sqlite3.Error:
        if strict:
            raise
        return []


NAMED = "EXISTS(SELECT 1 FROM trial_user_attributes a WHERE a.trial_id = t.trial_id AND a.key = 'worker')"
INTERRUPTED = ("EXISTS(SELECT 1 FROM trial_user_attributes a WHERE a.trial_id = t.trial_id "
               "AND a.key = 'interrupted' AND a.value_json = 'true')")


@dataclass
class Live:
    """One look at a running search: seconds since it started, study attributes, its trials RUNNING now (not
    when it started) as (number, named by its process), and whether it has rewritten trials.csv."""

    elapsed: float
    attrs: set[str]
    fresh: list[tuple[int, bool]]
    fresh_times: list[float]  # when each trial this run started turned RUNNING
    results_written: bool


def run_and_kill(out: Path, ready: Callable[[Live], bool], settle: float = 0.0, how: str = "",
                 limit: float = 120) -> dict:
    """Start the search, poll its study until ``ready``, wait ``settle`` s more, kill -9 its process group."""
    db, results = out / "study.db", out / "trials.csv"
    running_before = {n for (n,) in query(db, "SELECT number FROM trials WHERE state = 'RUNNING'")}
    written_before = results.stat().st_mtime_ns if results.exists() else None
    log_path = out.parent / f"log-{time.time_ns()}.txt"
    with log_path.open("w") as log:
        start = time.monotonic()
        process = subprocess.Popen(search_argv(out), stdout=log, stderr=subprocess.STDOUT, cwd=out.parent,
                                   start_new_session=True)
        seen: dict[int, float] = {}
        while True:
            elapsed = time.monotonic() - start
            fresh = [(n, bool(named)) for n, named in query(
                db, f"SELECT t.number, {NAMED} FROM trials t WHERE t.state = 'RUNNING'") if n not in running_before]
            for number, _ in fresh:
                seen.setdefault(number, elapsed)
            attrs = {key for (key,) in query(db, "SELECT key FROM study_user_attributes")}
            written = results.exists() and results.stat().st_mtime_ns != written_before
            if ready(Live(elapsed, attrs, fresh, sorted(seen.values()), written)):
                break
            assert process.poll() is None, (f"search ended (rc {process.returncode}) before the kill point "
                                             f"(seed {SEED}): {log_path.read_text()[-1500:]}")
            assert elapsed < limit, f"kill point never reached (seed {SEED})"
            time.sleep(0.02)
        time.sleep(settle)
        alive = process.poll() is None
        seconds = time.monotonic() - start
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return {"alive_at_kill": alive, "snapshot": snapshot(out), "seconds": seconds, "started": len(seen),
            "how": how or f"killed {seconds:.2f} s after start"}


def snapshot(out: Path) -> dict:
    """What a killed search left: integrity, trials, counted trials, and whether each run file is valid."""
    db = out / "study.db"
    trials = query(db, f"SELECT t.number, t.state, {NAMED} FROM trials t ORDER BY t.number", strict=True)
    state = {"integrity": query(db, "PRAGMA integrity_check", strict=True),
             "trials": [(number, state) for number, state, _ in trials],
             "named": {number: bool(named) for number, _, named in trials},
             "counted": query(db, f"SELECT COUNT(*) FROM trials t WHERE t.state = 'COMPLETE' OR "
                                  f"(t.state = 'FAIL' AND NOT {INTERRUPTED})", strict=True)[0][0],
             "reference": bool(query(db, "SELECT COUNT(*) FROM study_user_attributes WHERE key = 'reference'",
                                     strict=True)[0][0]),
             "leftovers": sorted(p.name for p in out.glob(".*.tmp")), "files": {}}
    numbers = {number for number, _ in state["trials"]}
    for name in RUN_FILES:
        if (out / name).exists():
            state["files"][name] = valid_file(out / name, numbers)
    return state


def valid_file(path: Path, numbers: set[int] | None = None) -> bool | str:
    """True for a complete file: it parses, ends with its last newline, and (trials.csv) lists each trial of
    the study at most once."""
    from effnas.search_space import load_spec

    try:
        assert path.read_text().endswith("\n"), "no final newline: cut off"
        if path.suffix == ".csv":
            listed = [int(n) for n in pd.read_csv(path)["number"]]
            assert len(listed) == len(set(listed)), f"trial numbers repeated: {listed}"
            assert numbers is None or set(listed) <= numbers, f"trials not in the study: {set(listed) - numbers}"
        elif path.name == "best.json":
            load_spec(path)
        else:
            assert isinstance(json.loads(path.read_text()), list)
        return True
    except Exception as error:  # noqa: BLE001 - any failure to read is what this looks for
        return f"{type(error).__name__}: {error}"


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Six killed runs of one study, each resuming the one before, then a resume to the end."""
    root = tmp_path_factory.mktemp("kill")
    (root / "space.json").write_text(json.dumps(SPACE))
    out = root / "run"
    rng = random.Random(SEED)
    steps = {}
    # The study exists and the worker is starting on the backbone reference: no reference stored yet.
    steps["reference"] = run_and_kill(out, lambda live: "identity" in live.attrs, settle=1.0)
    # A trial row has just turned RUNNING: the controller is asking for (sampling) a candidate.
    steps["ask"] = run_and_kill(out, lambda live: bool(live.fresh))
    # A candidate the process has claimed is training in the worker.
    steps["mid-trial"] = run_and_kill(out, lambda live: any(named for _, named in live.fresh), settle=0.15)
    # The instant a trial's result files are rewritten: write_outputs() is still writing pareto.json/best.json.
    steps["after-record"] = run_and_kill(out, lambda live: live.results_written)
    # Random moments, scaled to this machine: anywhere from start-up to the end of a first trial (as long as
    # the run before took to record one), and anywhere in one steady trial cycle (as long as this run's second
    # trial took, from turning RUNNING to the next one doing so) after its third trial turns RUNNING.
    delay, cycle = rng.uniform(0, steps["after-record"]["seconds"]), rng.random()
    steps["random-start"] = run_and_kill(out, lambda live: live.elapsed >= delay,
                                         how=f"seed {SEED}: killed {delay:.2f} s after start")

    def in_third_trial(live: Live) -> bool:
        times = live.fresh_times
        return len(times) >= 3 and live.elapsed >= times[2] + cycle * (times[2] - times[1])

    steps["random-trial"] = run_and_kill(out, in_third_trial, how=f"seed {SEED}: killed {cycle:.0%} of a trial "
                                                                  "cycle after its third trial started")
    final = subprocess.run(search_argv(out), capture_output=True, text=True, cwd=root, timeout=300)
    steps["final"] = {"result": final, "snapshot": snapshot(out)}
    return out, steps


@pytest.mark.parametrize("kill", KILLS, ids=[kill_id(k) for k in KILLS])
def test_every_kill_leaves_a_sound_study_and_complete_files(chain, kill):
    step = chain[1][kill]
    snap, where = step["snapshot"], f"{kill_id(kill)} ({step['how']}; replay: EFFNAS_FAULT_SEED={SEED})"
    assert step["alive_at_kill"], where
    assert snap["integrity"] == [("ok",)], where
    numbers = [number for number, _ in snap["trials"]]
    assert len(numbers) == len(set(numbers)), (where, numbers)
    assert snap["counted"] < BUDGET, where
    assert all(ok is True for ok in snap["files"].values()), (where, snap["files"])


def test_kill_during_reference_then_resume(chain):
    snap = chain[1]["reference"]["snapshot"]
    assert snap["reference"] is False and snap["trials"] == []


def load(out: Path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name="effnas", storage=f"sqlite:///{out / 'study.db'}")


def test_kill_while_a_candidate_is_asked_leaves_a_trial_that_resume_recovers(chain):
    out, steps = chain
    snap = steps["ask"]["snapshot"]
    # The worker's first candidate, and perhaps already the one queued behind it (WorkerPool depth 2).
    assert snap["reference"] and [state for _, state in snap["trials"]] in (["RUNNING"], ["RUNNING"] * 2)
    study = load(out)
    for number, _ in snap["trials"]:
        cut = study.trials[number]
        assert cut.state.name == "FAIL" and cut.user_attrs["interrupted"] is True


def test_kill_mid_trial_leaves_a_running_trial_that_resume_reruns(chain):
    out, steps = chain
    snap = steps["mid-trial"]["snapshot"]
    assert snap["reference"]
    running = [number for number, state in snap["trials"] if state == "RUNNING"]
    # The candidate training, claimed by name, and perhaps the one queued behind it (WorkerPool depth 2), which
    # its worker may not have claimed yet: resume marks it interrupted all the same, after a grace period.
    assert len(running) in (1, 2) and snap["named"][running[0]]
    study = load(out)
    for number in running:
        cut = study.trials[number]
        assert cut.state.name == "FAIL" and cut.user_attrs["interrupted"] is True
        assert cut.params.items() <= completed_retry(study, cut).params.items()


def completed_retry(study, cut):
    """The re-run that completed ``cut``'s architecture: a retry cut off by a later kill is retried in turn.

    A retry keeps every decision the cut trial holds; a trial cut off while its candidate was still being drawn
    (the one queued behind the training one) holds only the decisions drawn so far, and its retry draws the rest.
    """
    while True:
        retries = [t for t in study.trials if t.user_attrs.get("retry_of") == cut.number]
        assert len(retries) == 1 and cut.params.items() <= retries[0].params.items(), \
            f"seed {SEED}: {len(retries)} retries"
        cut = retries[0]
        if cut.state.name == "COMPLETE":
            return cut
        assert cut.user_attrs.get("interrupted"), f"seed {SEED}: retry {cut.number} failed on its own"


def test_kill_right_after_a_trial_is_recorded_leaves_valid_files(chain):
    snap = chain[1]["after-record"]["snapshot"]
    assert "trials.csv" in snap["files"] and all(ok is True for ok in snap["files"].values()), snap["files"]


def test_resumed_study_has_exactly_the_budget_and_complete_files(chain):
    out, steps = chain
    result = steps["final"]["result"]
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{BUDGET}/{BUDGET} trials" in result.stdout
    snap = steps["final"]["snapshot"]
    assert snap["integrity"] == [("ok",)] and snap["leftovers"] == []
    assert set(snap["files"]) == set(RUN_FILES) and all(ok is True for ok in snap["files"].values()), snap["files"]
    study = load(out)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    counted = [t for t in study.trials if t.state.name == "COMPLETE"
               or (t.state.name == "FAIL" and not t.user_attrs.get("interrupted"))]
    assert len(counted) == BUDGET == snap["counted"], f"seed {SEED}"
    assert not [t for t in study.trials if t.state.name in ("RUNNING", "WAITING")], f"seed {SEED}"
    # Every interrupted architecture is evaluated again: follow its retries to one that was not cut off.
    for cut in (t for t in study.trials if t.user_attrs.get("interrupted") and t.params):
        retry = cut
        while retry.user_attrs.get("interrupted"):
            retries = [t for t in study.trials if t.user_attrs.get("retry_of") == retry.number]
            assert len(retries) == 1, f"trial {retry.number}: {len(retries)} retries (seed {SEED})"
            assert retries[0].params.items() >= retry.params.items(), f"seed {SEED}"
            retry = retries[0]
        assert retry.state.name in ("COMPLETE", "FAIL"), f"seed {SEED}"
    table = pd.read_csv(out / "trials.csv")
    assert set(int(n) for n in table["number"]) == set(numbers) and table["number"].is_unique
    best = json.loads((out / "best.json").read_text())
    rewards = [t.user_attrs["reward"] for t in study.trials if t.state.name == "COMPLETE"]
    assert best["metrics"]["reward"] == pytest.approx(max(rewards))


FAULTS = [
    ("kill-during-reference", "kill -9 of the process group 1 s after the study opens, while the worker starts "
     "on the backbone reference", "nothing stored; resume measures the reference again"),
    ("kill-while-asking", "kill -9 the moment a trial row turns RUNNING (candidate being asked/sampled)",
     "trial marked interrupted on resume (after a 5 s grace if its process never named itself on it); "
     "its architecture is re-run if it had been sampled"),
    ("kill-mid-trial", "kill -9 while a candidate trains (and the next waits in the worker's queue)",
     "both trials marked interrupted (not counted); resume re-runs each architecture once"),
    ("kill-after-record", "kill -9 the instant a trial is recorded (files being rewritten)",
     "study, trials.csv, pareto.json, best.json all valid (atomic writes)"),
    ("kill-random-start", "kill -9 at a random moment between start and the end of the first trial (seeded: "
     "the seed is in the test id, EFFNAS_FAULT_SEED replays it)", "integrity_check ok, unique trial numbers, "
     "run files absent or complete"),
    ("kill-random-trial", "kill -9 at a random moment in the trial loop (up to two trials' time after the "
     "run's first trial starts; seeded)", "integrity_check ok, unique trial numbers, run files absent or complete"),
    ("resume-to-budget", "resume after the six kills above, run one after another on one study",
     "exactly the budget of counted trials, every interrupted architecture re-run, unique numbers, "
     "PRAGMA integrity_check ok, complete files, no temporary files left"),
]
