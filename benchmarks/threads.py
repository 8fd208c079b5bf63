"""Training threads on a shared CPU: the same network's epoch with torch's own thread count, with one thread,
and with ``nas train``'s default (the cores other jobs leave free), on an idle machine and beside another job.

The other job is one busy thread (a matrix multiply in a loop), the usual case of a workstation that runs
something else. Each condition trains one epoch of the same network on the same data with ``nas train``, in
rotation, ``--repeats`` times; the figure is the median epoch time.

    python -m benchmarks.threads
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from benchmarks.common import print_report, write_result
from effnas.nas.cli.arguments import positive_int

ARCH = "resnet20"


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _busy(stop: "mp.synchronize.Event") -> None:
    """One thread of steady work: what another job on the machine looks like to the scheduler."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import numpy as np

    a = np.random.default_rng(0).standard_normal((256, 256))
    while not stop.is_set():
        a = np.tanh(a @ a)


def epoch_seconds(threads: str, data: str, folder: Path) -> float:
    """One epoch of ``nas train`` with ``--threads threads``: 'torch' is torch's own default, one thread per core
    (what nas train used before it chose), 'default' gives no flag."""
    flags = {"default": [], "torch": ["--threads", str(torch_threads())]}.get(threads, ["--threads", threads])
    out = folder / f"run-{time.monotonic_ns()}"
    subprocess.run([sys.executable, "-m", "effnas.nas", "train", "--arch", ARCH, "--data", data, "--epochs", "1",
                    "--device", "cpu", "--out", str(out), "--quiet", *flags], check=True, capture_output=True)
    return float(json.loads((out / "metrics.json").read_text())["train_seconds"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="idx:/usr/share/datasets/fashion-mnist:3000")
    parser.add_argument("--repeats", type=positive_int, default=3)
    args = parser.parse_args(argv)
    conditions = [(load, threads) for load in ("idle", "beside one busy thread")
                  for threads in ("torch", "1", "default")]
    times: dict[tuple[str, str], list[float]] = {c: [] for c in conditions}
    bar = tqdm(total=len(conditions) * args.repeats, desc="epochs", unit="epoch")
    with tempfile.TemporaryDirectory(prefix="effnas-threads-") as folder:
        for _ in range(args.repeats):
            for load, threads in conditions:
                stop = mp.Event()
                other = mp.Process(target=_busy, args=(stop,)) if load != "idle" else None
                if other:
                    other.start()
                    time.sleep(1.0)
                try:
                    times[(load, threads)].append(epoch_seconds(threads, args.data, Path(folder)))
                finally:
                    if other:
                        stop.set()
                        other.join()
                bar.update(1)
    bar.close()
    names = {"torch": f"{torch_threads()} (torch's default, one per core)", "1": "1", "default": "nas train's default"}
    rows = []
    for load in ("idle", "beside one busy thread"):
        base = statistics.median(times[(load, "1")])
        for threads in ("torch", "1", "default"):
            median = statistics.median(times[(load, threads)])
            rows.append({"machine": load, "threads": names[threads], "epoch s (median)": round(median, 2),
                         "min-max": f"{min(times[(load, threads)]):.2f}-{max(times[(load, threads)]):.2f}",
                         "vs 1 thread": f"{median / base:.2f}x"})
    notes = [f"{ARCH} on {args.data}, one epoch of nas train, {args.repeats} repeats in rotation; the busy job is "
             "one numpy thread multiplying 256x256 matrices in a loop"]
    print_report("Training threads on a shared CPU", "cpu", rows, notes)
    print(f"wrote {write_result('threads', 'Training threads on a shared CPU', 'cpu', rows, notes)}")


if __name__ == "__main__":
    main()
