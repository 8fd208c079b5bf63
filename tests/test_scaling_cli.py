"""`nas scale` end to end: the written spec, the table, and one-line errors.

The first case runs ``python -m effnas.nas scale`` as a user would; the others run through the real CLI's ``main``
in one subprocess (:mod:`tests.cli_driver`), so the module does not import torch once per case."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from effnas.search_space import get_spec
from effnas.scaling import scale_spec
from effnas.search_space import load_spec, save_spec
from tests.cli_driver import run_commands

ROOT = Path(__file__).resolve().parents[1]

IMAGE_SIZE_CASES = [
    ("l", "96", "image size: train 64 -> 96, eval 64 -> 96 (64 x 1.56 = 100, to a multiple of 8, capped by "
                "--max-image-size 96; train 1 x eval, rounded down)"),
    ("s", "64", "image size: train 64 -> 64, eval 64 -> 64 (phi 0 keeps the base's sizes)"),
]
BAD_REQUESTS = [
    (["--target", "q"], "unknown target 'q'"),
    (["--phi", "-1"], "phi must be >= 0"),
    (["--phi", "50"], "absurd"),
    (["--phi", "nan"], "finite"),
    (["--target", "m", "--max-image-size", "32"], "smaller than the base's train size 64"),
    (["--rule", "uniform"], "unknown rule"),
    (["--target", "m", "--phi", "1"], "either --target or --phi"),
    (["--max-image-size", "big"], "invalid int value"),
]
BAD_BASES = [
    (None, "no such file"),
    ("{not json", "not valid JSON"),
    ('{"stages": []}', "missing field 'stem_channels'"),
    ('{"spec": {"stages": ["r2_k3_s1_e1_i24_o24_c9"], "stem_channels": 24}}', "c must be 0"),
]


def nas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "effnas.nas", "scale", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def best_json(tmp_path_factory) -> Path:
    """A search-style best.json ({"spec": ..., "metrics": ...}): V2-S's stages, one layer each."""
    v2_s = get_spec("efficientnetv2-s", num_classes=10)
    small = v2_s.replace(stages=tuple(dataclasses.replace(stage, layers=1) for stage in v2_s.stages),
                         train_image_size=64, eval_image_size=64, progressive=None, name="best")
    path = tmp_path_factory.mktemp("run") / "best.json"
    save_spec(small, path, extra={"metrics": {"accuracy": 0.9}})
    return path


@pytest.fixture(scope="module")
def driven(best_json, tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every case below, run by the real CLI one after the other in one process; results by case id."""
    folder = tmp_path_factory.mktemp("cases")
    plan = [{"id": f"image-{target}-{cap}", "argv": ["--base", best_json, "--target", target, "--max-image-size", cap]}
            for target, cap, _ in IMAGE_SIZE_CASES]
    plan += [{"id": "bad " + " ".join(args), "argv": ["--base", best_json, *args]} for args, _ in BAD_REQUESTS]
    for index, (content, _) in enumerate(BAD_BASES):
        path = folder / f"base{index}.json"
        if content is not None:
            path.write_text(content)
        plan.append({"id": f"base {content}", "argv": ["--base", path, "--target", "m"]})
    plan.append({"id": "unknown zoo name", "argv": ["--base", "efficientnetv9", "--target", "m"]})
    return run_commands([{**case, "argv": ["scale", *case["argv"]], "cwd": ROOT} for case in plan], folder)


def test_scale_best_json_to_m_writes_loadable_spec_and_prints_table(best_json, tmp_path):
    out = tmp_path / "m.json"
    result = nas("--base", str(best_json), "--target", "m", "--max-image-size", "96", "--out", str(out))
    assert result.returncode == 0, result.stderr
    written = load_spec(out)
    assert written == scale_spec(load_spec(best_json), "m", max_image_size=96)
    assert (written.train_image_size, written.eval_image_size) == (80, 80) and len(written.stages) == 7
    assert json.loads(out.read_text())["name"] == "best-v2-m"
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["best", "best-v2-m"]
    assert any(line.startswith("params") for line in lines)
    assert any(line.startswith("stage 6") and "-" in line.split()[4:6] for line in lines)
    assert "64 / 64" in result.stdout and "80 / 80" in result.stdout
    assert "image size: train 64 -> 80, eval 64 -> 80 (64 x 1.25 = 80, to a multiple of 8;" in result.stdout
    assert lines[-1] == f"wrote {out}"


@pytest.mark.slow  # a CLI process scaling to every size
@pytest.mark.parametrize("target, cap, line", IMAGE_SIZE_CASES)
def test_scale_says_what_it_did_to_the_image_size(driven, target, cap, line):
    result = driven[f"image-{target}-{cap}"]
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == line


def test_scale_zoo_name_with_phi_and_compound_rule(capsys):
    from effnas.nas.cli.main import main  # in-process: the subprocess path is covered above

    assert main(["scale", "--base", "efficientnet-b0", "--phi", "1", "--rule", "compound"]) == 0
    stdout = capsys.readouterr().out
    assert "efficientnet-b0-compound-phi1" in stdout
    assert "5,288,548" in stdout  # B0's published parameter count in the base column


@pytest.mark.parametrize("args, message", BAD_REQUESTS)
def test_bad_requests_are_one_line_exit_2(driven, args, message):
    result = driven["bad " + " ".join(args)]
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize("content, message", BAD_BASES)
def test_unreadable_or_malformed_base_is_one_line_exit_2(driven, content, message):
    result = driven[f"base {content}"]
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_zoo_name_is_one_line_exit_2(driven):
    result = driven["unknown zoo name"]
    assert result.returncode == 2 and "unknown zoo model" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
