"""`nas profile` and `nas --help` as a user runs them: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from effnas.nas.cli.main import main
from tests.test_search_space_spec import MALFORMED, tiny_spec_dict


def nas(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the installed ``nas`` console script (or ``python -m effnas.nas`` where it is not on PATH)."""
    command = [shutil.which("nas")] if shutil.which("nas") else [sys.executable, "-m", "effnas.nas"]
    return subprocess.run(command + list(args), capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, *texts: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for text in texts:
        assert text in result.stderr


def test_nas_help_lists_profile():
    result = nas("--help")
    assert result.returncode == 0 and "profile" in result.stdout and "usage: nas" in result.stdout


def test_profile_help_teaches():
    result = nas("profile", "--help")
    assert result.returncode == 0
    for text in ("examples:", "eval_image_size", "train_image_size", "--no-time", "best.json"):
        assert text in result.stdout


@pytest.mark.slow  # a timed profile in its own process
def test_profile_zoo_model_as_json():
    result = nas("profile", "efficientnetv2-s", "--json", "--no-time")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert abs(report["params"] - 21_458_488) <= 0.005 * 21_458_488
    assert abs(report["macs"] / 1e9 - 8.37) <= 0.05 * 8.37 and report["flops"] == 2 * report["macs"]
    assert report["image_size"] == 384 and len(report["stages"]) == 6


def test_profile_spec_file_timed_json(tmp_path, capsys):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(tiny_spec_dict()))
    assert main(["profile", str(path), "--image-size", "32", "--batch-size", "2", "--warmup", "0", "--steps", "2",
                 "--device", "cpu", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["name"] == "tiny" and report["image_size"] == report["step_image_size"] == 32
    assert report["step_time_ms"] > 0 and report["timed_steps"] == 2 and report["batch_size"] == 2


def test_profile_table_in_process(tmp_path, capsys):
    path = tmp_path / "best.json"
    path.write_text(json.dumps({"spec": tiny_spec_dict(), "metrics": {"accuracy": 0.9}}))
    assert main(["profile", str(path), "--num-classes", "5", "--batch-size", "2", "--steps", "1", "--warmup", "0",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tiny  (5 classes)")
    for text in ("params", "MACs", "at 48 px", "step time", "batch 2 at 32 px on cpu", "r2_k5_s2_e4_i16_o24_se0.25",
                 "16->24", "stem", "head"):
        assert text in out


def test_profile_table_shows_the_stem_as_the_spec_has_it(tmp_path, capsys):
    path = tmp_path / "gray.json"
    path.write_text(json.dumps({**tiny_spec_dict(), "image_channels": 1, "stem_stride": 1}))
    assert main(["profile", str(path), "--no-time"]) == 0
    stem = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("stem"))
    assert "1->8" in stem and stem.split()[3] == "1"  # one input channel, stride 1: not the RGB, stride-2 default


@pytest.mark.parametrize("case, mutate, field", MALFORMED, ids=[case for case, _, _ in MALFORMED])
def test_malformed_spec_file_is_one_line_exit_2(tmp_path, case, mutate, field):
    path = tmp_path / f"{case}.json"
    path.write_text(json.dumps(mutate(tiny_spec_dict())))
    assert_one_line_error(nas("profile", str(path)), "nas profile: error:", field, str(path))


@pytest.mark.parametrize("args, text", [
    (["efficientnetv3-s"], "unknown zoo model 'efficientnetv3-s'"),
    (["missing.json"], "no such file"),
    (["efficientnet-b0", "--image-size", "16"], "image_size: 16 px"),
    (["efficientnet-b0", "--num-classes", "1"], "num_classes"),
    (["efficientnet-b0", "--batch-size", "0"], "batch_size"),
    (["efficientnet-b0", "--threads", "0"], "--threads"),
    (["efficientnet-b0", "--device", "tpu"], "unknown device"),
    (["efficientnet-b0", "--image-size", "big"], "invalid int value"),
    pytest.param(["efficientnet-b0", "--device", "cuda"], "CUDA is not available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")),
])
def test_bad_arguments_are_one_line_exit_2(capsys, args, text):
    try:
        code = main(["profile", *args])
    except SystemExit as exit_:  # argparse rejects malformed flags itself
        code = exit_.code
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and text in captured.err


def test_an_unsteady_timing_is_warned_at_the_searchs_threshold_and_a_steady_one_is_not():
    from effnas.nas.cli.profile import unsteady_warning
    from effnas.results.record import UNSTEADY_SPREAD

    assert unsteady_warning({"step_time_spread": UNSTEADY_SPREAD}) is None
    assert unsteady_warning({"step_time_spread": 0.05}) is None
    assert unsteady_warning({}) is None  # --no-time: nothing was timed
    line = unsteady_warning({"step_time_spread": UNSTEADY_SPREAD + 0.01})
    assert line.startswith("warning:") and "\n" not in line and f"{UNSTEADY_SPREAD + 0.01:.2f}" in line
