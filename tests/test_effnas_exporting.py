"""nas export / effnas.export: ONNX and TorchScript files with the normalisation in the graph and in the metadata,
a dynamic batch axis, checked against torch as they are written; bad paths, formats and outputs are one line, exit
code 2, and what is at --out keeps every byte."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from effnas.exporting import ExportError, export, read_metadata
from effnas.models import build_model
from effnas.nas.training.state import save_checkpoint
from effnas.outputs import file_kind
from effnas.search_space import spec_from_dict
from tests.cli_driver import run_commands

onnxruntime = pytest.importorskip("onnxruntime")
ROOT = Path(__file__).resolve().parents[1]
TINY = {"stem_channels": 8, "head_channels": 32, "train_image_size": 16, "eval_image_size": 16, "name": "tiny",
        "num_classes": 10, "image_channels": 1,
        "stages": ["r1_k3_s1_e1_i8_o8_c1", "r1_k3_s2_e2_i8_o16_se0.25"]}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished run's folder as nas train leaves it (spec, weights, recipe), without spending time training."""
    folder = tmp_path_factory.mktemp("exports") / "run"
    folder.mkdir()
    torch.manual_seed(0)
    model = build_model(spec_from_dict(TINY))
    save_checkpoint(folder / "final.pt", {"spec": TINY, "model": model.state_dict(),
                                          "config": {"data": "digits", "seed": 0, "val_fraction": 0.2}})
    return folder


def test_both_formats_match_torch_with_a_dynamic_batch_and_the_normalisation_inside(run_dir, tmp_path):
    import effnas

    loaded = effnas.load(run_dir)
    onnx_file, script_file = tmp_path / "m.onnx", tmp_path / "m.torchscript"
    first = export(run_dir, format="onnx", out=onnx_file)
    second = export(run_dir, format="torchscript", out=script_file)
    assert first.checked_on == second.checked_on == "16 validation images of digits"
    assert first.max_difference <= 1e-4 and second.max_difference <= 1e-4
    assert file_kind(onnx_file) == "onnx-model" and file_kind(script_file) == "torchscript-model"
    for path in (onnx_file, script_file):
        meta = read_metadata(path)
        assert meta["image_size"] == 16 and meta["channels"] == 1 and meta["num_classes"] == 10
        assert meta["mean"] == pytest.approx(list(loaded.preprocessing.mean)) and "in the graph" in meta["normalisation"]
        assert meta["spec"]["name"] == "tiny" and meta["trained"] is True
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 1, 16, 16]
    scripted = torch.jit.load(str(script_file))
    raw = np.random.default_rng(0).integers(0, 256, size=(5, 8, 8), dtype=np.uint8)
    for batch in (raw[:1], raw):
        pixels = loaded.preprocessing.resize(batch)
        expected = loaded.logits(batch)
        assert np.allclose(session.run(None, {"images": pixels.numpy()})[0], expected.numpy(), atol=1e-4)
        assert torch.allclose(scripted(pixels), expected, atol=1e-4)


def test_a_spec_without_weights_exports_on_deterministic_images(tmp_path):
    (tmp_path / "spec.json").write_text(json.dumps(TINY))
    result = export(tmp_path / "spec.json", format="torchscript", out=tmp_path / "m.pt")
    assert result.checked_on == "16 deterministic random images" and result.metadata["trained"] is False


def test_a_mismatch_is_an_error_and_writes_nothing(run_dir, tmp_path, monkeypatch):
    import effnas.exporting as exporting

    real = exporting._write_torchscript
    monkeypatch.setattr(exporting, "_write_torchscript", lambda *args: real(*args) + 1e-3)
    with pytest.raises(ExportError, match="differ from torch's"):
        export(run_dir, format="torchscript", out=tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one


def test_missing_onnx_packages_name_the_extra(run_dir, tmp_path):
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('onnx', 'onnxruntime'):\n"
            "            raise ImportError(name=name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from effnas.nas.cli.main import main\n"
            f"sys.exit(main(['export', {str(run_dir)!r}, '--format', 'onnx', '--out', {str(tmp_path / 'm.onnx')!r}]))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr[-2000:]
    assert "pip install 'effnas[export]'" in result.stderr and not (tmp_path / "m.onnx").exists()


@pytest.mark.slow  # every refusal through the CLI
def test_the_command_refuses_bad_input_in_one_line_and_keeps_every_byte(run_dir, tmp_path):
    study = tmp_path / "study.db"
    with sqlite3.connect(study) as db:
        db.execute("CREATE TABLE trials (x TEXT)")
    db.close()
    mine = tmp_path / "notes.onnx"
    mine.write_text("my notes\n")
    foreign_script = tmp_path / "theirs.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(foreign_script))
    kept = {path: path.read_bytes() for path in (study, mine, foreign_script)}
    model = str(run_dir)
    cases = {
        "ok-onnx": [model, "--format", "onnx", "--out", "m.onnx"],
        "again": [model, "--format", "onnx", "--out", "m.onnx"],  # its own file: replaced
        "ok-script": [model, "--format", "torchscript", "--out", "m.torchscript"],
        "other-kind": [model, "--format", "onnx", "--out", "m.torchscript"],
        "bad-path": [str(tmp_path / "no-such-run"), "--format", "onnx", "--out", "x.onnx"],
        "bad-format": [model, "--format", "tflite", "--out", "x.tflite"],
        "study": [model, "--format", "onnx", "--out", str(study)],
        "users-file": [model, "--format", "onnx", "--out", str(mine)],
        "foreign-torchscript": [model, "--format", "torchscript", "--out", str(foreign_script)],
        "folder": [model, "--format", "onnx", "--out", str(tmp_path)],
    }
    results = run_commands([{"id": name, "argv": ["export", *argv], "cwd": tmp_path} for name, argv in cases.items()],
                           tmp_path)
    for name in ("ok-onnx", "again", "ok-script"):
        assert results[name].returncode == 0, results[name].stderr
        assert "checked on 16 validation images of digits" in results[name].stdout
    for name in ("other-kind", "bad-path", "bad-format", "study", "users-file", "foreign-torchscript", "folder"):
        result = results[name]
        assert result.returncode == 2 and result.stderr.count("\n") == 1, (name, result.stderr)
        assert "Traceback" not in result.stderr
    assert "--force" in results["other-kind"].stderr and "a study" in results["study"].stderr
    assert "invalid choice" in results["bad-format"].stderr
    assert {path: path.read_bytes() for path in kept} == kept
    assert file_kind(tmp_path / "m.torchscript") == "torchscript-model"
