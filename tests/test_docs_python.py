"""docs/python.md's session runs as written: its code blocks, one after another in one fresh interpreter (as a
notebook runs them), search 2 candidates on digits, train the winner an epoch, load it, predict a batch, export it
to ONNX and TorchScript, and get the same class for every image from torch, onnxruntime and TorchScript."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "python.md"


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_page_has_the_whole_session():
    code = "\n".join(code_blocks(DOC.read_text()))
    for step in ("effnas.search(", "effnas.train(", "effnas.load(", 'format="onnx"', 'format="torchscript"',
                 "onnxruntime.InferenceSession", "torch.jit.load", "assert "):
        assert step in code, step


@pytest.mark.slow
def test_the_session_runs_as_written(tmp_path):
    pytest.importorskip("onnxruntime")
    code = "\n".join(code_blocks(DOC.read_text()))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "runs" / "digits-train" / "final.pt").is_file()
    assert (tmp_path / "digits.onnx").is_file() and (tmp_path / "digits.torchscript").is_file()
    assert "accuracy on these images:" in result.stdout
