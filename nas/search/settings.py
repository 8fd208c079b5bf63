"""What a search is asked, in two parts: the :class:`SearchRecipe` (what is searched and how candidates are
trained and scored; stored in the study, and a resume must match it) and the :class:`SearchRuntime` (where and
how this run executes it; free to change between a search and its resume). Neither changes after it is built;
every value is checked when it is, so a bad one is a one-line :class:`SearchError` before anything runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from effnas.errors import EffnasError, shown
from effnas.results.reward import DEFAULT_V, DEFAULT_W
from effnas.search_space.space import SearchSpace, default_space, load_space

from effnas.nas.search.controllers import CONTROLLERS
from effnas.nas.search.trial_settings import TrialSettings


class SearchError(EffnasError):
    """A search that cannot start as asked (bad settings, unusable storage or run directory)."""


MAX_BUDGET = 1_000_000  # trials in one study
MAX_WORKERS = 4096  # trials at once, any backend (the local one: at most 4 per core, nas/cli/search.py)
MAX_REWARD_EXPONENT = 10.0  # |w|, |v|: the paper's are -0.07 and -0.05


@dataclass(frozen=True)
class SearchRecipe:
    """What is searched and how candidates are trained and scored: stored in the study, and a resume must
    match it, else two different searches would mix in one study."""

    controller: str = "tpe"
    space: str | None = None  # space file; None: the paper's space
    image_size: int | None = None  # proxy image size; overrides the space's when the space is built
    reward_w: float = DEFAULT_W
    reward_v: float = DEFAULT_V
    trial: Mapping[str, Any] = field(default_factory=dict)  # TrialSettings recipe fields; the rest: defaults
    early_stopping: bool = True  # stop weak candidates after an epoch (see nas.search.early_stopping)

    def __post_init__(self) -> None:
        if not isinstance(self.controller, str) or self.controller not in CONTROLLERS:
            raise SearchError(f"unknown controller {shown(self.controller)} (choose from {', '.join(CONTROLLERS)})")
        for name in ("reward_w", "reward_v"):  # NaN would make every reward NaN: the budget spent on failed trials
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or abs(value) > MAX_REWARD_EXPONENT:
                raise SearchError(f"--{name.replace('_', '-')} must be a finite number in "
                                  f"[-{MAX_REWARD_EXPONENT}, {MAX_REWARD_EXPONENT}], got {shown(value)}")
        settings = TrialSettings.from_dict(self.trial)  # bad values: one-line TrialSettingsError
        runtime = sorted(set(self.trial) - set(settings.recipe()))
        if runtime:
            raise SearchError(f"trial setting {runtime[0]!r} is a runtime setting (SearchRuntime), not the recipe's")
        object.__setattr__(self, "trial", settings.recipe())  # complete, so a stored recipe states every default

    def identity(self, space: SearchSpace) -> dict[str, Any]:
        """The recipe as a resume compares it: the space as built (its image size included), not its file name."""
        return {"controller": self.controller, "space": space.to_dict(), "reward_w": self.reward_w,
                "reward_v": self.reward_v, "trial": dict(self.trial), "early_stopping": self.early_stopping}


@dataclass(frozen=True)
class SearchRuntime:
    """Where and how this run executes the recipe: may differ between a search and its resume."""

    out: str = "runs/search"
    storage: str | None = None  # Optuna storage URL; None: OUT/study.db
    budget: int = 200  # trials that count, in total (a resume with a larger one extends the search)
    seed: int = 0
    workers: int | None = None  # trials at once; None: the backend's default (see local.default_workers)
    trial_timeout: float | None = None
    trial_memory: float | None = None  # GiB a trial may use (see backends.local.limit_memory)
    device: str = "auto"
    engine: str = "auto"
    threads: int | None = None  # torch CPU threads per trial; None: the backend's share of the machine
    progress: bool = True  # a tqdm bar on stderr

    def __post_init__(self) -> None:
        if self.budget <= 0:
            raise SearchError(f"--budget must be a positive number of trials, got {self.budget}")
        if self.budget > MAX_BUDGET:
            raise SearchError(f"--budget must be at most {MAX_BUDGET:,} trials, got {self.budget}")
        if self.workers is not None and self.workers < 1:
            raise SearchError(f"--workers must be at least 1, got {self.workers}")
        if self.workers is not None and self.workers > MAX_WORKERS:
            raise SearchError(f"--workers must be at most {MAX_WORKERS}, got {self.workers}")
        if self.threads is not None and not 1 <= self.threads <= MAX_WORKERS:
            raise SearchError(f"--threads must be in [1, {MAX_WORKERS}], got {self.threads}")
        if not 0 <= self.seed < 2**31:
            raise SearchError(f"--seed must be in [0, 2^31), got {self.seed}")
        if self.trial_timeout is not None and not (math.isfinite(self.trial_timeout) and self.trial_timeout > 0):
            raise SearchError(f"--trial-timeout must be positive and finite, got {self.trial_timeout}")
        if self.trial_memory is not None and not 0 < self.trial_memory < 2**20:  # NaN fails this too
            raise SearchError(f"--trial-memory must be a positive number of GiB, got {self.trial_memory:g}")


@dataclass(frozen=True)
class SearchConfig:
    """Everything a search was asked: the recipe and this run's runtime settings."""

    recipe: SearchRecipe = field(default_factory=SearchRecipe)
    runtime: SearchRuntime = field(default_factory=SearchRuntime)


def build_space(path: str | None, image_size: int | None = None) -> SearchSpace:
    """The search space, at ``image_size`` px when given. The space is the proxy image size's one home:
    its backbone and every sampled spec carry it as ``train_image_size``, and trials train at that size."""
    space = load_space(path) if path else default_space()
    if image_size is None or image_size == space.config["image_size"]:
        return space
    if image_size < space.backbone.total_stride:
        raise SearchError(f"--image-size {image_size} is below the network's total stride "
                          f"{space.backbone.total_stride}: the last stage would see less than 1 pixel")
    return SearchSpace.from_dict({**space.to_dict(), "image_size": image_size})
