"""Seed streams: every process that joins a study proposes from its own stream of the controller's random numbers.

Processes started with one command on one study (``--out`` shared, or one ``--storage`` for a cluster) share
``--seed``; with one stream they would propose the same candidates, and all but one would only reuse the first's
records. So each process, as it joins, takes the next stream index under the study's lock and records it in the
study (:data:`STREAMS_ATTR`: index, seed and process, in joining order). A resumed search joins again and so does not
replay its first run's draws either. What a run proposed can be replayed from what the study records.

Optuna's own samplers (random, TPE, NSGA-II: ``per_process_rng`` in the controller registry) hold one running
generator per process: stream ``k`` seeds it with ``seed + k * STREAM_STRIDE``. The rl and evolution controllers
draw each trial from ``(seed, trial number)`` and trial numbers are unique in a study, so their streams differ
already and the seed stays ``--seed`` (a resume replays their updates by trial number).
"""

from __future__ import annotations

from typing import Any

import optuna

from effnas.nas.search.budget import worker_id
from effnas.nas.search.controllers.registry import CONTROLLERS

STREAMS_ATTR = "seed_streams"  # study user attr: [{"index", "seed", "worker"}, ...] in joining order
STREAM_STRIDE = 1_000_003  # a prime: stream k of --seed s does not meet stream 0 of a nearby --seed


def stream_seed(controller: str, seed: int, index: int) -> int:
    """The sampler seed of stream ``index`` of a search seeded with ``seed`` (stream 0: ``seed`` itself); only a
    controller whose registry entry keeps one running generator per process moves it."""
    entry = CONTROLLERS.get(controller)
    if entry is None or not entry.per_process_rng:
        return seed
    return (seed + index * STREAM_STRIDE) % 2**31


def join(study: optuna.Study, controller: str, seed: int) -> dict[str, Any]:
    """Take this process's stream of ``study`` and record it there; call under the study's lock
    (:func:`effnas.results.storage.study_lock`), so two processes never take one index."""
    streams = list(study.user_attrs.get(STREAMS_ATTR) or [])
    index = len(streams)
    stream = {"index": index, "seed": stream_seed(controller, seed, index), "worker": worker_id()}
    study.set_user_attr(STREAMS_ATTR, [*streams, stream])
    return stream
