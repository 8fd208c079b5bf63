"""How every candidate of a search is trained and measured: the proxy trial's settings, without torch.

The search's own process reads, validates and stores these (the study keeps the recipe part), and only the
workers that train import :mod:`effnas.nas.search.trial`; so a search on the CPU starts its driver without
paying for torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from effnas.errors import EffnasError
from effnas.nas.training.choices import ENGINES, OPTIMIZERS
from effnas.nas.search.early_stopping import EarlyStopping


class TrialSettingsError(EffnasError):
    """Trial settings that cannot be run."""


RUNTIME = {"runtime": True}  # a TrialSettings field that is not part of the recipe (see TrialSettings.recipe)
MAX_PROXY_SECONDS = 86_400.0


@dataclass(frozen=True)
class TrialSettings:
    """How every candidate of a search is trained and measured (identical for all of them)."""

    data: str = "digits"
    epochs: int = 3
    # Equal-time proxies: each candidate trains for this many seconds of its own step time (measured alone before
    # it starts) instead of for ``epochs``, so a faster network gets more steps, as it would with the user's time.
    seconds: float | None = None
    batch_size: int = 64
    optimizer: str = "rmsprop"  # of the three, the one that trained the proxy best in 3 epochs on digits
    lr: float = 0.002
    weight_decay: float = 1e-5
    warmup_fraction: float = 0.1  # linear lr warm-up over this share of the steps, then cosine to zero
    label_smoothing: float = 0.0
    dropout: float | None = 0.0  # None: the spec's own. A 3-epoch proxy run learns faster without regularisation
    drop_path_rate: float | None = 0.0  # None: the spec's own stochastic depth
    device: str = dataclasses.field(default="auto", metadata=RUNTIME)
    engine: str = dataclasses.field(default="auto", metadata=RUNTIME)
    val_fraction: float = 0.2
    data_size: int = 64  # imagefolder images are read at this size, then resized to the spec's train_image_size
    # Timed steps: on a GPU the last N; on a CPU beside other workers N spread over the epochs; a lone CPU worker
    # times every step after the first two. Beside other workers each timed step holds the device alone (see
    # device_sharing), so it costs them a step: a few per epoch keep a steady median (docs/performance.md).
    timing_steps: int = 9
    # torch CPU threads for the trial (None: leave the process's setting)
    threads: int | None = dataclasses.field(default=None, metadata=RUNTIME)
    # file path shared by concurrent workers; see device_sharing.timing_lock_path
    timing_lock: str | None = dataclasses.field(default=None, metadata=RUNTIME)
    # trials the search runs at once (recorded with the step time: what it was measured beside)
    workers: int | None = dataclasses.field(default=None, metadata=RUNTIME)
    # how this trial reports its reward after each epoch and learns whether to go on (EarlyStopping.to_dict())
    early_stopping: dict | None = dataclasses.field(default=None, metadata=RUNTIME)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "data_size", "timing_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TrialSettingsError(f"trial settings: {name} must be a positive integer, got {value!r}")
        if self.optimizer not in OPTIMIZERS:
            raise TrialSettingsError(f"trial settings: optimizer {self.optimizer!r} unknown "
                                     f"(expected one of {', '.join(OPTIMIZERS)})")
        if self.engine not in ENGINES:
            raise TrialSettingsError(f"trial settings: engine {self.engine!r} unknown "
                                     f"(expected one of {', '.join(ENGINES)})")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise TrialSettingsError(f"trial settings: lr must be a positive number, got {self.lr!r}")
        for name, high in (("weight_decay", 1.0), ("warmup_fraction", 1.0), ("label_smoothing", 1.0)):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value < high):
                raise TrialSettingsError(f"trial settings: {name} must be in [0, {high}), got {value!r}")
        for name in ("dropout", "drop_path_rate"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
                raise TrialSettingsError(f"trial settings: {name} must be in [0, 1) or null, got {value!r}")
        if self.seconds is not None and not (isinstance(self.seconds, (int, float)) and math.isfinite(self.seconds)
                                             and 0 < self.seconds <= MAX_PROXY_SECONDS):
            raise TrialSettingsError(f"trial settings: seconds must be in (0, {MAX_PROXY_SECONDS}], "
                                     f"got {self.seconds!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise TrialSettingsError(f"trial settings: val_fraction must be in (0, 1), got {self.val_fraction!r}")
        for name in ("threads", "workers"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise TrialSettingsError(f"trial settings: {name} must be a positive integer, got {value!r}")
        if self.early_stopping is not None:
            EarlyStopping.from_dict(self.early_stopping)  # one line if it is not a rule

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def recipe(self) -> dict[str, Any]:
        """The fields that decide how a candidate is trained, which a resumed search must match; the
        ``RUNTIME`` ones (device, engine, threads, timing lock) only say where and how fast this run trains.
        The image size is not here: it is the spec's ``train_image_size``, set by the search space."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.metadata.get("runtime")}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "TrialSettings":
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TrialSettingsError(f"trial settings: unknown field {unknown[0]!r} (known: {', '.join(sorted(known))})")
        return cls(**data)
