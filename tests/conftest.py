"""Shared test set-up: GPU-marked tests skip without CUDA; torch stays on one thread for steady CI, in every
process; the fault suite's total time is printed at the end (it should stay a few minutes on CI's two cores)."""

import os
from pathlib import PurePath

import pytest
import torch

torch.set_num_threads(1)
# Every process a test starts, and each trial worker of its searches, uses one thread too: the suite runs one
# test per core, and a second busy thread per process would only spin against the other test's.
os.environ["OMP_NUM_THREADS"] = "1"

_FAULT_SECONDS: dict[str, float] = {}  # test id -> setup + call seconds, tests in tests/test_faults_*.py


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_runtest_logreport(report):
    if report.when in ("setup", "call") and PurePath(report.nodeid.split("::")[0]).name.startswith("test_faults_"):
        _FAULT_SECONDS[report.nodeid] = _FAULT_SECONDS.get(report.nodeid, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    if _FAULT_SECONDS:
        terminalreporter.write_line(f"fault suite: {len(_FAULT_SECONDS)} tests in "
                                    f"{sum(_FAULT_SECONDS.values()):.1f} s (setup + call)")
