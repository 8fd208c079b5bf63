"""Each benchmark's main runs end to end in a tiny configuration, reports the rows it promises and keeps them
in its results file.

No timing assertions (CI machines are shared): every row is there, every figure is positive, and each ratio is
its own row's measurement over the reference row's (a separate measurement, not the reference divided by itself).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow  # each benchmark's smallest run: searches and timed trials

TINY = ["--device", "cpu", "--threads", "1", "--width", "0.125"]


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(autouse=True)
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Results go to a temporary folder: a smoke run must never replace a measured result in the repository."""
    import benchmarks.common

    folder = tmp_path / "results"
    monkeypatch.setattr(benchmarks.common, "RESULTS", folder)
    return folder


def _kept(results: Path, name: str) -> str:
    """The results file ``name`` wrote, checked for the lines that make a figure traceable."""
    text = (results / f"{name}.md").read_text()
    assert re.search(r"^- measured: \d{4}-\d\d-\d\d \d\d:\d\d$", text, re.M), text
    assert re.search(r"^- device: CPU \(\d+ cores", text, re.M), text
    assert re.search(r"^- versions: effnas \S+, python \S+, torch \S+, optuna \S+", text, re.M), text
    assert "- command: `python -m benchmarks." in text
    return text


def _ratios_are_measured(rows: list[dict[str, Any]], value: str, ratio: str, reference: dict[str, Any]) -> None:
    """Every other row's ``ratio`` is its own ``value`` over the reference row's, from a distinct measurement."""
    others = [row for row in rows if row is not reference]
    assert others
    for row in others:
        assert _positive(row[value]) and row[value] != reference[value], (row, reference)
        assert row[ratio] == pytest.approx(row[value] / reference[value])


def test_trial_throughput_rows(capsys, results):
    from benchmarks.trial_throughput import main

    rows = main(TINY + ["--images", "160", "--batch-size", "16", "--epochs", "1", "--rounds", "1"])
    assert [r["loop"] for r in rows] == ["effnas trainer", "plain DataLoader loop", "hand-tuned minimal loop"]
    assert all(r["rounds"] == 1 for r in rows)
    for row in rows:  # the per-trial rate counts capture and warm-up too, so it is never above the steps-only one
        assert _positive(row["trial img/s"]) and row["trial img/s"] <= row["steps img/s"] * (1 + 1e-9)
    _ratios_are_measured(rows, "trial img/s", "vs hand-tuned", rows[-1])
    _ratios_are_measured(rows, "trial img/s", "vs plain", rows[1])
    _ratios_are_measured(rows, "steps img/s", "steps vs hand-tuned", rows[-1])
    out = capsys.readouterr().out
    assert "device: CPU" in out and "per trial (capture and warm-up included)" in out
    text = _kept(results, "trial_throughput")
    assert "effnas trainer" in text and "capture and warm-up included" in text


def test_overhead_rows(capsys, results):
    from benchmarks.overhead import PHASES, main

    rows = main(TINY + ["--trials", "2", "--epochs", "1", "--data", "synthetic:160x32", "--batch-size", "32",
                        "--end-to-end", "2"])
    assert len(rows) == 2
    for row in rows:
        assert _positive(row["wall s"]) and _positive(row["train s"])
        assert all(row[f"{p} ms"] >= 0 for p in PHASES if p != "train")
        assert _positive(row["sample ms"]) and _positive(row["store ms"]) and _positive(row["files ms"])
        assert 0 < row["overhead %"] < 100 and row["alongside %"] > 0
    out = capsys.readouterr().out
    assert "overhead (the worker's time outside training" in out
    assert re.search(r"end to end through Search.run \(1 trials, 1 worker process\): \d+\.\d %", out)
    assert "end to end through Search.run" in _kept(results, "overhead")


def test_step_time_fidelity_rows(capsys, results):
    from benchmarks.step_time_fidelity import VARIANTS, main, variant_params
    from effnas.search_space.space import default_space

    result = main(TINY + ["--data", "synthetic:200x32", "--epochs", "1", "--repeats", "2", "--variants", "2",
                          "--timing-steps", "2",
                          "--full-width", "0.125", "--full-depth", "0.25", "--full-size", "32", "--full-batch", "4",
                          "--full-steps", "1", "--others", "1"])
    # idle, then beside one worker process training other candidates: run_trial and time_steps each
    assert [r["machine"] for r in result["repeatability"]] == ["idle"] * 2 + ["1 other worker training"] * 2
    assert all(_positive(r["median ms"]) and r["CV %"] >= 0 and r["min ms"] <= r["median ms"] <= r["max ms"]
               for r in result["repeatability"])
    assert [r["variant"] for r in result["ranking"]] == [name for name, _ in VARIANTS[:2]]
    assert all(_positive(r["proxy ms"]) and _positive(r["full ms"]) for r in result["ranking"])
    assert -1.0 <= result["spearman"] <= 1.0
    # the variants really differ: all-fused has more parameters than all-MBConv
    space = default_space()
    fused = space.spec_from_params(variant_params(space, VARIANTS[2][1]))
    assert all(stage.op == "fused" for stage in fused.stages)
    out = capsys.readouterr().out
    assert "Spearman" in out and "target on this device: CV < 5 %" in out
    text = _kept(results, "step_time_fidelity")  # both tables of the run in one file
    assert "1 other worker training" in text and "## proxy vs full step time" in text and "Spearman" in text


def test_step_time_fidelity_threads_default_to_a_search_workers(capsys):
    """Without --threads, the measurements use the threads each default `nas search` worker gets here."""
    from benchmarks.common import search_defaults
    from benchmarks.step_time_fidelity import main

    workers, threads = search_defaults("cpu")
    main(["--device", "cpu", "--width", "0.125", "--data", "synthetic:200x32", "--epochs", "1", "--repeats", "1",
          "--variants", "1",
          "--timing-steps", "1", "--full-width", "0.125", "--full-depth", "0.25", "--full-size", "32",
          "--full-batch", "2", "--full-steps", "1", "--others", "0"])
    out = capsys.readouterr().out
    assert f"torch threads per measurement: {threads}, what each of the {workers} default workers" in out
    assert f"{threads} torch threads" in out


def test_step_time_fidelity_timing_modes_are_the_benchmarks_own(tmp_path):
    """pinned and unlocked are worker functions around run_trial in benchmarks.timing_modes: the product's backend
    knows one discipline. Unlocked drops the run's lock, and the trial records that it timed beside the others."""
    from benchmarks.timing_modes import TIMINGS, run_unlocked, timing_backend

    assert TIMINGS == ("exclusive", "pinned", "unlocked")
    with pytest.raises(ValueError, match="timing 'turns' unknown"):
        timing_backend("turns")
    spec = {"stem_channels": 8, "head_channels": 32, "train_image_size": 16, "eval_image_size": 16,
            "stages": ["r1_k3_s1_e1_i8_o8_c1", "r1_k3_s2_e2_i8_o16"]}
    settings = {"data": "synthetic:200x16", "epochs": 1, "batch_size": 32, "timing_steps": 2, "device": "cpu",
                "threads": 1, "workers": 2, "timing_lock": str(tmp_path / "device.lock")}
    assert run_unlocked(spec, settings, 0)["timing"].startswith("unlocked")


def test_search_wall_time_rows(capsys, results):
    from benchmarks.search_wall_time import main

    # --threads 1: a 1-worker search would otherwise take every core, and crawl on a busy CI machine
    # One search (--only-n): each row is a whole `nas search` process, so one row keeps this test short; the
    # speed-up column needs two rows and is left to real runs of the benchmark.
    rows = main(["--device", "cpu", "--threads", "1", "--data", "synthetic:200x32", "--workers", "2", "--budget", "2",
                 "--epochs", "1", "--only-n"])
    assert [(r["data"], r["workers"], r["threads/worker"]) for r in rows] == [("synthetic:200x32", 2, 1)]
    row = rows[0]
    assert row["trials"] == 2 and row["failed"] == 0  # read back from the run's own study
    assert 0 < row["setup s"] < row["wall s"]
    assert _positive(row["s/trial"]) and row["trials/h"] == pytest.approx(3600 / row["s/trial"])
    assert row["200 trials min"] * 60 > 200 * row["s/trial"]
    assert "extrapolated (from 2 trials)" in capsys.readouterr().out
    assert "synthetic:200x32" in _kept(results, "search_wall_time")


def test_search_wall_time_reports_a_failing_search():
    from benchmarks.search_wall_time import main

    with pytest.raises(RuntimeError, match="nas search: error: .*synthetic:nonsense"):
        main(["--device", "cpu", "--data", "synthetic:nonsense", "--workers", "1", "--budget", "1"])


def test_fused_vs_mbconv_rows(capsys, results):
    from benchmarks.fused_vs_mbconv import main

    rows = main(["--device", "cpu", "--threads", "1", "--width", "0.25", "--image-size", "32", "--batch-size", "2",
                 "--steps", "1", "--rounds", "1"])
    assert [r["variant"] for r in rows] == ["no fused", "fused stages 1-3", "fused stages 1-5", "fused stages 1-7"]
    assert all(_positive(r["params"]) and _positive(r["MMACs"]) and _positive(r["train img/s"]) for r in rows)
    assert rows[0]["params"] < rows[-1]["params"]  # fused convolutions are bigger than depthwise ones
    _ratios_are_measured(rows, "train img/s", "vs no fused", rows[0])
    assert "fastest on this device" in capsys.readouterr().out
    assert "fused stages 1-7" in _kept(results, "fused_vs_mbconv")


def test_controllers_synthetic_table(results):
    """The synthetic-objective table: one row per controller, rewards in [0, 1], learning controllers ahead."""
    from benchmarks.controllers import main

    rows = main(["--device", "cpu", "--budget", "50", "--seeds", "0", "1", "--controllers", "random", "evolution"])
    assert [(r["controller"], r["trials"], r["seeds"]) for r in rows] == [("random", 50, 2), ("evolution", 50, 2)]
    for row in rows:
        assert 0 < row["mean of last 40"] <= row["best"] <= 1 and row["best min"] <= row["best"] <= row["best max"]
    assert rows[1]["mean of last 40"] > rows[0]["mean of last 40"]  # evolution has moved towards the target
    assert "hidden architecture" in _kept(results, "controllers")


def test_controllers_tabular_table(results):
    """The published-table benchmark: a row per objective and controller, nothing above the table's optimum."""
    from benchmarks.controllers_tabular import TABLE, lead_over_random, main

    # The lead's standard error is the difference's: both arms' spread (independent), or the per-seed differences'.
    assert lead_over_random([1.0, 3.0], [0.0, 2.5], 1, 3, 10) == {
        "lead@10 (± SE diff)": "+0.750 ± 1.601", "lead@10 / SE diff": "+0.5", "lead@10 / SE paired": "+3.0"}
    if not TABLE.exists():
        pytest.skip(f"no NAS-Bench-Macro table at {TABLE}")
    rows = main(["--seeds", "2", "--controllers", "random,rl,nsga2", "--budgets", "5,10,20"])
    assert [(r["objective"], r["controller"]) for r in rows] == [
        (objective, controller) for objective in ("accuracy", "reward") for controller in ("random", "rl", "nsga2")]
    for row in rows:
        assert all(float(row[f"gap@{b}"]) >= 0 for b in (5, 10, 20))
        assert float(row["gap@20"]) <= float(row["gap@5"])  # the best so far never gets worse
        leads = [row[f"lead@10 {column}"] for column in ("(± SE diff)", "/ SE diff", "/ SE paired")]
        assert leads == ["-"] * 3 if row["controller"] == "random" else "-" not in leads[:1]
    assert "a repeated architecture costs no evaluation" in _kept(results, "controllers_tabular")


def test_progressive_interleaves_the_arms_and_headlines_wall_time(tmp_path, capsys, results):
    from benchmarks.progressive import main

    arch = tmp_path / "tiny.json"
    arch.write_text(json.dumps({"stem_channels": 8, "head_channels": 32, "train_image_size": 16,
                                "eval_image_size": 16, "name": "tiny",
                                "stages": ["r1_k3_s1_e1_i8_o8_c1", "r1_k3_s2_e2_i8_o16_se0.25"]}))
    assert main(["--arch", str(arch), "--data", "synthetic:200x8", "--epochs", "2", "--stages", "2", "--rounds", "2",
                 "--image-size", "16", "--min-image-size", "8", "--eval-image-size", "16", "--batch-size", "32",
                 "--device", "cpu", "--threads", "1"]) == 0
    captured = capsys.readouterr()
    order = re.findall(r"round (\d): training (progressive|fixed size)", captured.err)
    assert order == [("1", "progressive"), ("1", "fixed size"), ("2", "fixed size"), ("2", "progressive")]
    assert re.search(r"progressive learning: \d+\.\d\dx the training wall-time speed", captured.out)
    text = _kept(results, "progressive")
    assert "8 -> 16" in text and "wall s each" in text


@pytest.mark.gpu
def test_trial_throughput_on_cuda_includes_the_graph_loop(capsys):
    from benchmarks.trial_throughput import main

    rows = main(["--device", "cuda", "--width", "0.125", "--images", "640", "--batch-size", "64", "--epochs", "1",
                 "--rounds", "1"])
    assert [r["loop"] for r in rows] == ["effnas trainer", "effnas eager", "plain DataLoader loop",
                                         "hand-tuned CUDA graph"]
    assert all(_positive(r["trial img/s"]) and _positive(r["steps img/s"]) for r in rows)
    for graphed in (rows[0], rows[-1]):  # capture and warm-up take time, and the per-trial rate counts it
        assert graphed["trial img/s"] < graphed["steps img/s"]
    out = capsys.readouterr().out
    assert "graph vs eager per trial" in out and "steps only" in out


def test_trial_overhead_splits_a_trials_wall_time_into_its_parts():
    from benchmarks.trial_overhead import PARTS, breakdown

    attrs = {"duration_s": 10.0, "total_seconds": 9.5, "train_seconds": 8.0, "lock_wait_seconds": 1.5,
             "eval_seconds": 0.5, "build_seconds": 0.25}
    parts = breakdown(attrs)
    assert parts == {"wall": 10.0, "steps": 6.5, "lock wait": 1.5, "eval": 0.5, "build": 0.25, "in trial": 0.75,
                     "dispatch": 0.5}
    assert math.isclose(sum(parts[name] for name in PARTS), parts["wall"])  # the parts add up to the wall time
    older = breakdown({key: value for key, value in attrs.items() if key != "lock_wait_seconds"})
    assert older["lock wait"] == 0.0 and older["steps"] == 8.0  # a record from before the field: no waits known
