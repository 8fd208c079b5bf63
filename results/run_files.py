"""The files a search keeps next to its study: ``trials.csv``, ``pareto.json``, ``best.json``.

Refreshed as trials finish (at most every few seconds, and when the search ends), each atomically (temporary
file + rename), so a search killed at any moment leaves complete, valid files behind: the previous version or the
new one, never half of one; on a full or read-only disk the write is a one-line :class:`~effnas.writes.WriteError` and the old file stays.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna

from effnas.outputs import claim_output
from effnas.search_space import save_spec
from effnas.writes import atomic_write

from effnas.results.export import to_csv
from effnas.results.pareto import pareto_front
from effnas.results.queries import best_by_reward, metrics_of
from effnas.results.storage import ResultsError
from effnas.results.study import spec_of, trials_frame


RUN_FILES = ("trials.csv", "pareto.json", "best.json")
RUN_FILE_KINDS = {"trials.csv": "trials-table", "pareto.json": "pareto", "best.json": "spec"}  # see effnas.outputs


def write_run_files(study: optuna.Study, run_dir: str | Path) -> None:
    """Write (or refresh) the run directory's ``trials.csv``, ``pareto.json`` and ``best.json``; a file put in
    one's place that is not what the search wrote there is refused, never replaced (:func:`claim_output`)."""
    run_dir = Path(run_dir)
    frame = trials_frame(study)
    for name, kind in RUN_FILE_KINDS.items():
        claim_output(run_dir / name, kind)
    atomic_write(run_dir / "trials.csv", to_csv(frame))
    front = pareto_front(frame)
    points = [{**metrics_of(row), "blocks": row["blocks"], "spec": row["spec"]} for _, row in front.iterrows()]
    atomic_write(run_dir / "pareto.json", json.dumps(points, indent=2) + "\n")
    try:
        best = best_by_reward(frame)
    except ResultsError:
        return  # nothing completed yet: no best.json rather than an empty one
    save_spec(spec_of(best), run_dir / "best.json", extra={"metrics": metrics_of(best)})
