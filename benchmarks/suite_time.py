"""How long the test suite takes: the full suite (README's and CI's command) and the quick subset
(``-m "not slow"``), each a whole pytest process, one after the other on this machine.

    python -m benchmarks.suite_time               # both, about 9 minutes on a 2-core CPU
    python -m benchmarks.suite_time --repeats 2   # each twice, in turn: a shared machine's run-to-run spread
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
    failed = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("FAILED ")]
    return {"seconds": round(seconds, 1), "exit": result.returncode, "summary": re.sub(r" in [\d.]+s.*", "", summary),
            "failed": failed}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each suite, in turn (default 1)")
    args = parser.parse_args(argv)
    repeats = range(1, max(1, args.repeats) + 1)
    plan = [(repeat, name, command) for repeat in repeats for name, command in SUITES.items()]
    rows = []
    for repeat, name, command in tqdm(plan, desc="pytest runs", unit="run"):
        rows.append({"run": name, "repeat": repeat, **run(command), "command": "python " + " ".join(command)})
    notes = ["each row is one whole pytest process on this machine, started after the previous one ended; "
             "pytest-xdist runs the test files on 2 workers (--dist loadfile keeps a file's tests together)"]
    for row in rows:  # which tests failed, in words rather than a column: a run with failures is no clean figure
        failed = row.pop("failed")
        if failed:
            notes.append(f"{row['run']}, run {row['repeat']}: failed {', '.join(failed)}")
    if args.repeats > 1:
        for name in SUITES:
            seconds = sorted(row["seconds"] for row in rows if row["run"] == name)
            notes.append(f"{name}: {seconds[0]}-{seconds[-1]} s over {len(seconds)} runs")
    print_report("Test suite wall time", "cpu", rows, notes)
    print(f"wrote {write_result('suite_time', 'Test suite wall time', 'cpu', rows, notes)}")


if __name__ == "__main__":
    main()
