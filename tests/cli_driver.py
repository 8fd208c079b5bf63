"""Many ``nas`` commands through the real CLI in one subprocess.

Refusals are quick, but a process each would spend the suite's time importing torch again and again: here each
command runs as ``nas`` itself would (``main(argv)`` in its own folder), one after the other in one fresh process,
with its stdout, stderr and exit code captured as a :class:`subprocess.CompletedProcess`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASE_LIMIT_S = 60  # a case still running after this long (a FIFO read that blocks) is stopped as a hang


def run_commands(plan: list[dict], workdir: Path, timeout: float = 600) -> dict[str, subprocess.CompletedProcess]:
    """Run each ``{"id", "argv", "cwd"}`` of ``plan`` (argv without ``python -m effnas.nas``); results by id."""
    plan_file, results_file = workdir / "plan.json", workdir / "results.json"
    plan_file.write_text(json.dumps([{**case, "argv": [str(a) for a in case["argv"]], "cwd": str(case["cwd"])}
                                     for case in plan]))
    driver = subprocess.run([sys.executable, "-m", "tests.cli_driver", str(plan_file), str(results_file)],
                            capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    assert driver.returncode == 0, driver.stderr[-3000:]
    return {r["id"]: subprocess.CompletedProcess(r["argv"], r["rc"], r["stdout"], r["stderr"])
            for r in json.loads(results_file.read_text())}


def drive(plan_file: str, results_file: str) -> None:
    """The subprocess's side. An exception that escapes ``main`` is what a user would see as a traceback, so it is
    written into that case's stderr; so is the alarm that stops a hang."""
    import contextlib
    import io
    import signal
    import traceback

    from effnas.nas.cli.main import main

    def alarm(signum, frame):
        raise TimeoutError(f"the case ran past {CASE_LIMIT_S} s (a hang)")

    signal.signal(signal.SIGALRM, alarm)
    results = []
    for case in json.loads(Path(plan_file).read_text()):
        out, err = io.StringIO(), io.StringIO()
        os.chdir(case["cwd"])
        signal.alarm(CASE_LIMIT_S)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(case["argv"])
            except SystemExit as stop:
                rc = stop.code if isinstance(stop.code, int) else 1
            except BaseException:  # noqa: BLE001 - what the user would see: a traceback
                err.write(traceback.format_exc())
                rc = 1
        signal.alarm(0)
        results.append({**case, "rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()})
    Path(results_file).write_text(json.dumps(results))


if __name__ == "__main__":
    drive(sys.argv[1], sys.argv[2])
