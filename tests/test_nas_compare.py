"""`nas compare`: the winner, other networks and classical baselines trained alike, one row each, resumable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.cli_driver import run_commands

TINY = {"stem_channels": 8, "head_channels": 32, "train_image_size": 16, "eval_image_size": 16, "name": "tiny",
        "stages": ["r1_k3_s1_e1_i8_o8_c1", "r1_k3_s2_e2_i8_o16_se0.25"]}
OTHER = {**TINY, "name": "other", "stages": ["r1_k3_s1_e1_i8_o8_c1", "r1_k5_s2_e4_i8_o24"]}
ROOT = Path(__file__).resolve().parents[1]


def nas_compare(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "effnas.nas", "compare", *argv], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


@pytest.mark.slow
def test_compare_writes_one_row_per_model_and_baseline_and_reads_finished_models_back(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.json").write_text(json.dumps({"spec": TINY, "metrics": {"accuracy": 0.5}}))
    other = tmp_path / "other.json"
    other.write_text(json.dumps(OTHER))
    out = tmp_path / "compared"  # a folder holding only best.json is not a run the rule lets compare write into
    args = [str(run), "--data", "digits", "--against", f"{other},mnist-cnn", "--classical", "--epochs", "2",
            "--stages", "1", "--batch-size", "64", "--device", "cpu", "--quiet", "--out", str(out)]
    # Both runs in one process, as `nas compare` runs them (torch and scikit-learn imported once); the second is
    # told to speak, so that it says what it read back instead of training.
    again_args = [arg for arg in args if arg != "--quiet"]
    results = run_commands([{"id": "first", "cwd": ROOT, "argv": ["compare", *args]},
                            {"id": "second", "cwd": ROOT, "argv": ["compare", *again_args]}], tmp_path)
    first, second = results["first"], results["second"]
    assert first.returncode == 0, first.stderr[-2000:]
    assert second.returncode == 0, second.stderr[-2000:]
    for network in ("searched", "other", "mnist-cnn"):  # read back, not retrained
        assert f"{network}: finished earlier, read from" in second.stdout + second.stderr
        assert f"training {network}" not in second.stdout + second.stderr
    table = pd.read_csv(out / "compare.csv")
    assert list(table["model"]) == ["searched", "other", "mnist-cnn", "random-forest", "logistic-regression"]
    assert list(table["kind"]) == ["searched", "zoo", "reference", "classical", "classical"]
    assert list(table.columns[:4]) == ["model", "kind", "test_top1", "top1"]
    assert table["top1"].between(0.0, 1.0).all() and table["test_top1"].between(0.0, 1.0).all()
    assert table.loc[table["kind"] == "classical", "top1"].min() > 0.8  # digits are easy for a forest
    networks = table[table["kind"] != "classical"]
    assert (networks["params"] > 0).all() and (networks["macs"] > 0).all() and (networks["step_time_ms"] > 0).all()
    assert networks["params"].nunique() == 3  # three different architectures, each counted
    assert (networks["epochs"] == 2).all()
    curves = json.loads((out / "compare.json").read_text())["curves"]
    assert set(curves) == {"searched", "other", "mnist-cnn"} and all(len(rows) == 2 for rows in curves.values())
    for row in networks.itertuples():  # the rows read back are the runs the first compare trained
        assert row.top1 == json.loads((out / "compare" / row.model / "metrics.json").read_text())["top1"]


def test_compare_without_a_winner_is_a_one_line_error_before_torch_loads(tmp_path):
    refusal = ("import sys\nfrom effnas.nas.cli.main import main\ncode = main(sys.argv[1:])\n"
               "assert 'torch' not in sys.modules and 'sklearn' not in sys.modules\nsys.exit(code)")
    result = subprocess.run([sys.executable, "-c", refusal, "compare", str(tmp_path), "--quiet"], capture_output=True,
                            text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().count("\n") == 0 and "no best.json" in result.stderr


@pytest.mark.slow
def test_the_winner_and_every_network_train_with_the_recipe_the_search_chose_under(tmp_path):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"backbone": TINY, "width": 1.0, "depth": 1.0, "image_size": 16,
                                 "choices": {"kernel": [3], "expand": [1], "layer_offsets": [0]}}))
    run = tmp_path / "run"
    # One process for the three commands, each as `nas` runs it: the imports (torch, scikit-learn) are paid once.
    results = run_commands([
        {"id": "search", "cwd": ROOT, "argv": ["search", "--data", "digits", "--space", space, "--budget", "2",
                                               "--epochs", "1", "--optimizer", "adamw", "--lr", "0.003", "--device",
                                               "cpu", "--out", run, "--quiet"]},
        {"id": "train", "cwd": ROOT, "argv": ["train", "--arch", run / "best.json", "--epochs", "1", "--device", "cpu",
                                              "--out", tmp_path / "train", "--quiet"]},
        {"id": "compare", "cwd": ROOT, "argv": ["compare", run, "--against", "mnist-cnn", "--epochs", "1", "--device",
                                                "cpu", "--quiet", "--out", tmp_path / "compared"]},
        {"id": "finalists", "cwd": ROOT, "argv": ["compare", run, "--finalists", "2", "--against", "none", "--epochs",
                                                  "1", "--device", "cpu", "--out", tmp_path / "finals"]},
        *({"id": f"finalists-{bad}", "cwd": ROOT,
           "argv": ["compare", run, "--finalists", bad, "--out", tmp_path / f"refused-{bad}"]}
          for bad in ("0", "21", "two"))],
        tmp_path)
    for command in ("search", "train", "compare", "finalists"):
        assert results[command].returncode == 0, (command, results[command].stderr[-2000:])
    for bad in ("0", "21", "two"):
        refused = results[f"finalists-{bad}"]
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "--finalists" in refused.stderr or "finalists:" in refused.stderr
        assert not (tmp_path / f"refused-{bad}").exists()

    # Finalists: the search's two best candidates both train; the better on validation is the "searched" row.
    table = pd.read_csv(tmp_path / "finals" / "compare.csv")
    assert list(table["kind"]) == ["searched", "finalist"]
    searched, other = table.iloc[0], table.iloc[1]
    assert searched["top1"] >= other["top1"]
    folders = sorted(p.name for p in (tmp_path / "finals" / "compare").iterdir())
    assert len(folders) == 2 and all(name.startswith("trial-") for name in folders)
    assert other["model"] in folders
    chosen = next(name for name in folders if name != other["model"])
    chosen_run = json.loads((tmp_path / "finals" / "compare" / chosen / "metrics.json").read_text())
    assert chosen_run["top1"] == searched["top1"]
    assert f"searched: {chosen}, the best validation top-1" in results["finalists"].stdout
    recipe = json.loads((tmp_path / "train" / "metrics.json").read_text())["config"]
    chosen = (recipe["optimizer"], recipe["lr"], recipe["weight_decay"], recipe["batch_size"])
    assert chosen == ("adamw", 0.003, 0.05, 64)

    for network in ("searched", "mnist-cnn"):
        config = json.loads((tmp_path / "compared" / "compare" / network / "metrics.json").read_text())["config"]
        assert (config["optimizer"], config["lr"]) == ("adamw", 0.003)


def test_the_finalist_with_the_best_validation_top1_is_chosen_whatever_its_test_score():
    from effnas.nas.training.compare import choose_finalist

    rows = [{"model": "trial-3", "kind": "finalist", "top1": 0.90, "test_top1": 0.99},
            {"model": "trial-7", "kind": "finalist", "top1": 0.92, "test_top1": 0.80},
            {"model": "trial-1", "kind": "finalist", "top1": 0.92, "test_top1": 0.95},
            {"model": "mnist-cnn", "kind": "reference", "top1": 0.99, "test_top1": 0.99}]
    assert choose_finalist(rows) == 1  # the best validation; on a tie the search's better-ranked, never test
    assert choose_finalist([row for row in rows if row["kind"] != "finalist"]) is None

