"""How long the test suite takes: the full suite (README's and CI's command) and the quick subset
(``-m "not slow"``), each a whole pytest process, one after the other on this machine.

    python -m benchmarks.suite_time            # both, about 9 minutes on a 2-core CPU
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time

from tqdm import tqdm

from benchmarks.common import print_report, write_result

FULL = ["-m", "pytest", "-q", "-n", "2", "--dist", "loadfile", "-p", "no:cacheprovider"]
SUITES = {"full suite (README, CI)": FULL, "quick subset (-m 'not slow')": [*FULL, "-m", "not slow"]}


def run(argv: list[str]) -> dict:
    """One pytest process: its wall time and pytest's own summary line."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, *argv], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    summary = next((line.strip("= ") for line in reversed(result.stdout.splitlines())
                    if re.search(r"\d+ (passed|failed)", line)), "no summary")
    return {"seconds": round(seconds, 1), "exit": result.returncode, "summary": re.sub(r" in [\d.]+s.*", "", summary)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    rows = []
    for name, command in tqdm(SUITES.items(), desc="pytest runs", unit="run"):
        rows.append({"run": name, **run(command), "command": "python " + " ".join(command)})
    notes = ["each row is one whole pytest process on this machine, started after the previous one ended; "
             "pytest-xdist runs the test files on 2 workers (--dist loadfile keeps a file's tests together)"]
    print_report("Test suite wall time", "cpu", rows, notes)
    print(f"wrote {write_result('suite_time', 'Test suite wall time', 'cpu', rows, notes)}")


if __name__ == "__main__":
    main()
