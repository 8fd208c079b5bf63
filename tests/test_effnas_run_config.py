"""The run file: every search, train and compare writes config.yaml, effnas knows it as its own, `--config FILE`
runs from it with flags overriding it, and a bad file is one line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from effnas.nas.cli.arguments import apply_run_config
from effnas.nas.cli.main import build_parser, main
from effnas.outputs import OutputRefused, claim_run_dir, file_kind
from effnas.run_config import CONFIG_FILE, read_run_config, write_run_config
from tests.cli_driver import run_commands

def sub_parser(parser, name: str):
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices[name]


def test_the_run_file_is_effnas_own_and_keeps_each_command_section(tmp_path):
    write_run_config(tmp_path, "search", {"budget": 2, "out": tmp_path, "seed": 3}, "cpu")
    write_run_config(tmp_path, "compare", {"run_dir": tmp_path, "epochs": 1, "against": "none"}, "cpu")
    path = tmp_path / CONFIG_FILE
    assert file_kind(path) == "run-config"
    held = yaml.safe_load(path.read_text())
    assert set(held) == {"search", "compare"} and held["search"]["device"] == "cpu"
    assert {"effnas", "torch"} <= set(held["search"])
    assert read_run_config(path, "search") == {"budget": 2, "out": str(tmp_path), "seed": 3}
    # a train stopped before its first checkpoint left only its run file: the folder is still its run
    train_dir = tmp_path / "train"
    train_dir.mkdir()
    write_run_config(train_dir, "train", {"arch": "efficientnetv2-s"})
    assert claim_run_dir(train_dir, "train") == train_dir
    # a config.yaml effnas did not write is the user's: refused, never replaced
    (train_dir / CONFIG_FILE).write_text("mine: 1\n")
    assert file_kind(train_dir / CONFIG_FILE) is None
    with pytest.raises(OutputRefused):
        claim_run_dir(train_dir, "train")


def test_flags_override_the_run_file(tmp_path):
    write_run_config(tmp_path, "train", {"arch": "mnist-cnn", "epochs": 3, "seed": 5, "progressive": False,
                                         "randaug": [1.0, 2.0], "flip": False, "time": 90.0})
    parser = build_parser()
    apply_run_config(sub_parser(parser, "train"), "train", str(tmp_path / CONFIG_FILE))
    args = parser.parse_args(["train", "--config", str(tmp_path / CONFIG_FILE), "--epochs", "2"])
    assert (args.arch, args.epochs, args.seed, args.no_progressive, args.randaug, args.flip, args.time) == \
        ("mnist-cnn", 2, 5, True, [1.0, 2.0], False, 90.0)
    # compare's RUN comes from the file unless the command line gives one
    write_run_config(tmp_path, "compare", {"run_dir": "runs/a", "epochs": 1, "against": "none"})
    for given, expected in (([], "runs/a"), (["runs/b"], "runs/b")):
        parser = build_parser()
        apply_run_config(sub_parser(parser, "compare"), "compare", str(tmp_path / CONFIG_FILE))
        assert parser.parse_args(["compare", *given]).run_dir == expected


@pytest.mark.parametrize("text, expected", [
    ("search: [\n", "not valid YAML (line 2"),
    ("search:\n  options: {budgt: 2}\n", "unknown option 'budgt' (did you mean 'budget'?)"),
    ("serch:\n  options: {budget: 2}\n", "unknown section 'serch' (did you mean 'search'?)"),
    ("train:\n  options: {arch: x}\n", "no 'search' section (it holds train)"),
    ("search:\n  options: {budget: 2, epochs: two}\n", "epochs: invalid int value: 'two'"),
    ("search:\n  options: {budget: 2, proxy_time: -5}\n", "proxy_time: must be more than 0 seconds"),
    ("search:\n  options: {budget: 2, controller: tpx}\n", "controller: unknown controller 'tpx'"),
    ("search:\n  options: {early_stopping: maybe}\n", "early_stopping: invalid choice 'maybe'"),
])
def test_a_bad_run_file_is_one_line_and_exit_2(tmp_path, capsys, text, expected):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert main(["search", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nas search: error: --config ") and expected in err, err
    assert not (tmp_path / "run").exists()


def test_out_of_range_in_a_train_run_file(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text("train:\n  options: {arch: mnist-cnn, epochs: 0}\n")
    assert main(["train", "--config", str(path)]) == 2
    assert "epochs: must be >= 1, got 0" in capsys.readouterr().err


def architectures(run: Path) -> list[str]:
    table = pd.read_csv(run / "trials.csv")
    columns = [c for c in table.columns if (c[:1] == "s" and c[1:2].isdigit()) or c.startswith("net_")]
    return sorted(table[columns].astype(str).agg(",".join, axis=1))


@pytest.mark.slow
def test_a_search_reruns_from_its_run_file(tmp_path):
    (tmp_path / "space.json").write_text(json.dumps({"width": 0.25, "depth": 0.25, "image_size": 32,
                                                     "head_channels": 32}))
    work = tmp_path / "driver"
    work.mkdir()
    results = run_commands([  # both searches in one process, as `nas` runs them: the imports are paid once
        {"id": "a", "cwd": tmp_path, "argv": ["search", "--budget", "2", "--epochs", "1", "--workers", "1", "--seed",
                                              "3", "--quiet", "--out", "a", "--data", "synthetic:240x16",
                                              "--batch-size", "32", "--space", "space.json"]},
        {"id": "b", "cwd": tmp_path, "argv": ["search", "--config", "a/config.yaml", "--out", "b"]}], work)
    assert [results[run].returncode for run in "ab"] == [0, 0], [results[run].stderr[-3000:] for run in "ab"]
    first, again = architectures(tmp_path / "a"), architectures(tmp_path / "b")
    assert len(first) == 2 and first == again
    held = read_run_config(tmp_path / "b" / CONFIG_FILE, "search")
    assert held["out"] == "b" and held["seed"] == 3 and held["budget"] == 2
    assert held["data"] == "synthetic:240x16" and held["batch_size"] == 32 and held["space"] == "space.json"
