"""Does ``nas profile`` repeat? The same spec profiled several times, each a fresh ``nas profile`` process at its
defaults (on a CPU: a proxy trial's batch 64, 2 warm-up and 9 timed steps, one thread), one after the other on
an otherwise idle machine. The claim it checks: every run's median step time within 10 % of every other's.

    python -m benchmarks.profile_repeat [--runs 5] [--spec efficientnetv2-s-proxy.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

from benchmarks.common import print_report, write_result
from effnas.nas.cli.arguments import positive_int
from effnas.search_space.space import NAMED_SPACES, SearchSpace, default_space


def proxy_specs(folder: Path) -> dict[str, Path]:
    """The two backbones a search starts from: the paper's space's and small-images', as spec files."""
    specs = {"default space's backbone (32 px)": default_space().backbone,
             "small-images' backbone (28 px, 1 channel)": SearchSpace.from_dict(NAMED_SPACES["small-images"])
             .backbone.replace(image_channels=1, num_classes=10)}
    paths = {}
    for index, (name, spec) in enumerate(specs.items()):
        paths[name] = folder / f"spec{index}.json"
        paths[name].write_text(json.dumps(spec.to_dict()))
    return paths


def profile(spec: Path, flags: list[str]) -> dict:
    """One ``nas profile --json`` process: its median step time and spread."""
    result = subprocess.run([sys.executable, "-m", "effnas.nas", "profile", str(spec), "--device", "cpu", "--json",
                             *flags], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def largest_gap(medians: list[float]) -> float:
    """How far apart the runs are: the largest median over the smallest, minus one."""
    return max(medians) / min(medians) - 1.0


def result_name(steps: int | None, warmup: int | None) -> str:
    """The results file's name: the defaults' own, or one per setting, so a run at other settings replaces none."""
    return "profile_repeat" + "".join(f"-{flag}{value}" for flag, value in (("steps", steps), ("warmup", warmup))
                                      if value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=positive_int, default=5, help="profiles of each spec (default 5)")
    parser.add_argument("--steps", type=positive_int, default=None, help="timed steps (default: nas profile's)")
    parser.add_argument("--warmup", type=positive_int, default=None, help="warm-up steps (default: nas profile's)")
    args = parser.parse_args(argv)
    flags = [f"--{name}={value}" for name, value in (("steps", args.steps), ("warmup", args.warmup)) if value]
    rows = []
    with tempfile.TemporaryDirectory(prefix="effnas-profile-") as folder:
        specs = proxy_specs(Path(folder))
        bar = tqdm(total=len(specs) * args.runs, desc="nas profile runs", unit="run")
        for name, path in specs.items():
            results = []
            for _ in range(args.runs):
                results.append(profile(path, flags))
                bar.update(1)
            medians = [r["step_time_ms"] for r in results]
            rows.append({"spec": name, "medians ms": " ".join(f"{m:.1f}" for m in medians),
                         "largest / smallest - 1": f"{100 * largest_gap(medians):.1f} %",
                         "within 10 %": "yes" if largest_gap(medians) <= 0.10 else "no",
                         "spreads": " ".join(f"{r['step_time_spread']:.2f}" for r in results),
                         "batch": results[0]["batch_size"], "timed steps": results[0]["timed_steps"]})
        bar.close()
    notes = [f"{args.runs} fresh `nas profile SPEC --device cpu --json {' '.join(flags)}` processes per spec, one "
             "after the other" + ("" if flags else ", at the command's defaults") + "; spreads: each run's (p90 - p10) / median of its timed steps"]
    print_report("nas profile, repeated", "cpu", rows, notes)
    print(f"wrote {write_result(result_name(args.steps, args.warmup), 'nas profile, repeated', 'cpu', rows, notes)}")


if __name__ == "__main__":
    main()
