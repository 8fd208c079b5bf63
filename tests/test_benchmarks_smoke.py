"""Each benchmark's main runs end to end in a tiny configuration and reports the rows it promises.

No timing assertions (CI machines are shared): only that every row is there and every figure is positive.
"""

import math
import re

import pytest

TINY = ["--device", "cpu", "--threads", "1", "--width", "0.125"]


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_trial_throughput_rows(capsys):
    from benchmarks.trial_throughput import main

    rows = main(TINY + ["--images", "160", "--batch-size", "16", "--epochs", "1", "--rounds", "1"])
    assert [r["loop"] for r in rows] == ["effnas trainer", "plain DataLoader loop", "hand-tuned minimal loop"]
    assert all(_positive(r["img/s"]) and _positive(r["vs hand-tuned"]) for r in rows)
    assert rows[-1]["vs hand-tuned"] == pytest.approx(1.0)
    out = capsys.readouterr().out
    assert "device: CPU" in out and "effnas trainer =" in out


def test_overhead_rows(capsys):
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


def test_step_time_fidelity_rows(capsys):
    from benchmarks.step_time_fidelity import VARIANTS, main, variant_params
    from effnas.search_space.space import default_space

    result = main(TINY + ["--data", "synthetic:200x32", "--epochs", "1", "--repeats", "2", "--variants", "3",
                          "--timing-steps", "2",
                          "--full-width", "0.125", "--full-depth", "0.25", "--full-size", "32", "--full-batch", "4",
                          "--full-steps", "1", "--others", "1"])
    # idle, then beside one worker process training other candidates: run_trial and time_steps each
    assert [r["machine"] for r in result["repeatability"]] == ["idle"] * 2 + ["1 other worker training"] * 2
    assert all(_positive(r["median ms"]) and r["CV %"] >= 0 and r["min ms"] <= r["median ms"] <= r["max ms"]
               for r in result["repeatability"])
    assert [r["variant"] for r in result["ranking"]] == [name for name, _ in VARIANTS[:3]]
    assert all(_positive(r["proxy ms"]) and _positive(r["full ms"]) for r in result["ranking"])
    assert -1.0 <= result["spearman"] <= 1.0
    # the variants really differ: all-fused has more parameters than all-MBConv
    space = default_space()
    fused = space.spec_from_params(variant_params(space, VARIANTS[2][1]))
    assert all(stage.op == "fused" for stage in fused.stages)
    out = capsys.readouterr().out
    assert "Spearman" in out and "target on this device: CV < 5 %" in out


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


def test_search_wall_time_rows(capsys):
    from benchmarks.search_wall_time import main

    # --threads 1: a 1-worker search would otherwise take every core, and crawl on a busy CI machine
    rows = main(["--device", "cpu", "--threads", "1", "--data", "synthetic:200x32", "--workers", "2", "--budget", "2",
                 "--epochs", "1"])
    assert [(r["data"], r["workers"], r["threads/worker"]) for r in rows] == [("synthetic:200x32", 1, 1),
                                                                             ("synthetic:200x32", 2, 1)]
    for row in rows:
        assert row["trials"] == 2 and row["failed"] == 0  # read back from the run's own study
        assert 0 < row["setup s"] < row["wall s"]
        assert _positive(row["s/trial"]) and _positive(row["trials/h"]) and _positive(row["speed-up"])
        assert row["200 trials min"] * 60 > 200 * row["s/trial"]
    assert rows[0]["speed-up"] == pytest.approx(1.0)
    assert "extrapolated (from 2 trials)" in capsys.readouterr().out


def test_search_wall_time_reports_a_failing_search():
    from benchmarks.search_wall_time import main

    with pytest.raises(RuntimeError, match="nas search: error: .*synthetic:nonsense"):
        main(["--device", "cpu", "--data", "synthetic:nonsense", "--workers", "1", "--budget", "1"])


def test_fused_vs_mbconv_rows(capsys):
    from benchmarks.fused_vs_mbconv import main

    rows = main(["--device", "cpu", "--threads", "1", "--width", "0.25", "--image-size", "32", "--batch-size", "2",
                 "--steps", "1", "--rounds", "1"])
    assert [r["variant"] for r in rows] == ["no fused", "fused stages 1-3", "fused stages 1-5", "fused stages 1-7"]
    assert all(_positive(r["params"]) and _positive(r["MMACs"]) and _positive(r["train img/s"]) for r in rows)
    assert rows[0]["params"] < rows[-1]["params"]  # fused convolutions are bigger than depthwise ones
    assert "fastest on this device" in capsys.readouterr().out


@pytest.mark.gpu
def test_trial_throughput_on_cuda_includes_the_graph_loop(capsys):
    from benchmarks.trial_throughput import main

    rows = main(["--device", "cuda", "--width", "0.125", "--images", "640", "--batch-size", "64", "--epochs", "1",
                 "--rounds", "1"])
    assert [r["loop"] for r in rows] == ["effnas trainer", "effnas eager", "plain DataLoader loop",
                                         "hand-tuned CUDA graph"]
    assert all(_positive(r["img/s"]) for r in rows)
