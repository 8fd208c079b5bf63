"""Fault suite, candidates that fail: one raises inside its model, one needs more memory than --trial-memory.

Both run the real CLI through tests/fault_injection.py, which plants the fault in every 5x5 convolution; in this
space only stage 0 may pick kernel 5 and the backbone does not, so the reference trains and, with seed 2, two of
four candidates hit the fault. Each must be recorded as failed with its reason while the search finishes.
(Divergence and --trial-timeout are in test_faults_search_failures.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest

from tests.test_faults_inputs import assert_one_line_error

pytestmark = pytest.mark.slow  # three searches with planted faults, each a process of its own

ROOT = Path(__file__).resolve().parents[1]
SPACE = {"width": 0.25, "depth": 0.25, "image_size": 32, "head_channels": 32,
         "choices": {"kernel": [3], "expand": [1], "se": [False]}, "stages": {"0": {"kernel": [3, 5]}}}
BUDGET = 4

FAULTS = [
    ("candidate-raises", "a candidate whose model raises inside forward",
     "recorded FAIL 'the model raised: ...'; the other candidates complete; search reaches its budget, exit 0"),
    ("candidate-over-memory", "a candidate that allocates 1.5 GiB under --trial-memory 0.5",
     "recorded FAIL 'out of memory'; the same worker trains the next candidates; search reaches its budget"),
    ("reference-over-memory", "the backbone reference itself over --trial-memory",
     "exit 2, one-line error naming out of memory; no trial recorded"),
    ("trial-memory-negative", "--trial-memory -1", "exit 2, one-line error; nothing written"),
    ("trial-memory-not-a-number", "--trial-memory lots", "exit 2, one-line error; nothing written"),
    ("trial-memory-on-ray", "--trial-memory with --backend ray", "exit 2, one-line error pointing at Ray's resources"),
]


def run_search(tmp: Path, name: str, *extra: str,
               inject: dict[str, str] | None = None) -> tuple[Path, subprocess.CompletedProcess]:
    (tmp / "space.json").write_text(json.dumps(SPACE))
    out = tmp / name
    argv = [sys.executable, str(ROOT / "tests" / "fault_injection.py"), "search", "--data", "synthetic:64x16",
            "--epochs", "1", "--batch-size", "16", "--workers", "1", "--space", str(tmp / "space.json"), "--device",
            "cpu", "--controller", "random", "--seed", "2", "--quiet", "--budget", str(BUDGET), "--out", str(out),
            *extra]
    env = {**os.environ, **(inject or {})}
    return out, subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=tmp, env=env)


def trials(out: Path) -> list[optuna.trial.FrozenTrial]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="effnas", storage=f"sqlite:///{out / 'study.db'}")
    return [t for t in study.trials if not t.user_attrs.get("interrupted")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The three searches at once (two cores share the torch imports and the waits better)."""
    tmp = tmp_path_factory.mktemp("trials")
    jobs = {
        "raises": dict(inject={"EFFNAS_INJECT": "raise"}),
        "memory": dict(extra=("--trial-memory", "0.5"), inject={"EFFNAS_INJECT": "allocate"}),
        "reference": dict(extra=("--trial-memory", "0.5"),
                          inject={"EFFNAS_INJECT": "allocate", "EFFNAS_INJECT_ALL": "1"}),
    }
    with ThreadPoolExecutor(3) as pool:
        futures = {name: pool.submit(run_search, tmp, name, *job.get("extra", ()), inject=job["inject"])
                   for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


def assert_failed_exactly_the_kernel5_candidates(out: Path, reason: str) -> None:
    done = trials(out)
    assert len(done) == BUDGET and sorted(t.number for t in done) == list(range(BUDGET))
    planted = [t for t in done if t.params["s0_kernel"] == 5]
    assert 0 < len(planted) < BUDGET, "seed 2 should give both kinds of candidate"
    for trial in done:
        if trial.params["s0_kernel"] == 5:
            assert trial.state.name == "FAIL" and reason in trial.user_attrs["fail_reason"], trial.user_attrs
        else:
            assert trial.state.name == "COMPLETE", trial.user_attrs.get("fail_reason")
    assert json.loads((out / "best.json").read_text())["spec"]["stages"]


def test_candidate_that_raises_inside_its_model_is_a_failed_trial(runs):
    out, result = runs["raises"]
    assert result.returncode == 0, result.stderr[-2000:]
    assert_failed_exactly_the_kernel5_candidates(out, "the model raised: ValueError: injected fault")


def test_candidate_over_the_memory_limit_is_a_failed_trial_and_the_worker_goes_on(runs):
    out, result = runs["memory"]
    assert result.returncode == 0, result.stderr[-2000:]
    assert_failed_exactly_the_kernel5_candidates(out, "out of memory")
    done = sorted(trials(out), key=lambda t: t.number)
    first_failure = next(t.number for t in done if t.state.name == "FAIL")
    assert any(t.state.name == "COMPLETE" for t in done if t.number > first_failure)


def test_reference_over_the_memory_limit_is_a_one_line_error(runs):
    out, result = runs["reference"]
    assert_one_line_error(result, r"backbone itself failed.*out of memory")
    if (out / "study.db").exists():
        assert not [t for t in trials(out) if t.state.name in ("COMPLETE", "FAIL")]


@pytest.mark.parametrize("value, backend, pattern", [
    ("-1", "local", r"--trial-memory must be a positive number of GiB"),
    ("lots", "local", r"--trial-memory"),
    ("2", "ray", r"--trial-memory applies to the local backend"),
], ids=["negative", "not-a-number", "on-ray"])
def test_bad_trial_memory_is_a_one_line_error(tmp_path, value, backend, pattern):
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "effnas.nas", "search", "--trial-memory", value, "--backend", backend,
                             "--out", str(out), "--device", "cpu", "--quiet"], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert_one_line_error(result, pattern)
    assert not out.exists()
