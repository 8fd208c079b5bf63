"""The Python API: the ``nas`` commands as functions, for notebooks and scripts.

Each function takes its command's options as keyword arguments (``--batch-size`` is ``batch_size``, with the same
default) and returns a small result object instead of printing; the ``nas`` commands are thin wrappers around
them, so the two never drift apart. Bad input raises :class:`effnas.errors.EffnasError` with the one-line message
the command would print. Time options (``proxy_time``, ``time``) are seconds. Torch, Optuna and the data are
imported only when a function runs, so ``import effnas`` stays fast.

    import effnas
    found = effnas.search(budget=2, epochs=1, out="runs/digits")
    run = effnas.train(found.best_spec, epochs=1, out="runs/digits-train")
    model, preprocess = effnas.load(run.run_dir)
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from effnas.errors import EffnasError, did_you_mean_path, shown

if TYPE_CHECKING:  # names for the annotations only: importing them costs torch, pandas and Optuna
    import pandas as pd

    from effnas.inference import LoadedModel
    from effnas.search_space import ArchSpec
    from effnas.search_space.reference import ReferenceSpec

MAX_WORKERS_PER_CORE = 4  # local search workers: at most 4 trials per CPU core of this machine
DEFAULT_AGAINST = "backbone,mnist-cnn,resnet20,efficientnet-b0,mobilenetv2"


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class SearchResult:
    """What a search left behind: its run directory, the best architecture with its metrics, every trial."""

    run_dir: Path
    storage: str  # the study's storage URL (``sqlite:///RUN/study.db`` unless ``storage`` was given)
    best_spec: ArchSpec | None  # None while no trial has completed
    best_metrics: dict[str, Any] | None  # reward, accuracy, step_time_ms, params, ...
    best_trial: int | None
    reference: dict[str, Any]  # the backbone's measurement the rewards are relative to
    counted: int  # trials that count against the budget
    budget: int
    stopped: int = 0  # trials early stopping ended
    reused: int = 0  # proposals of an architecture already trained: its record, no training
    seconds: float = 0.0  # this call's wall time
    interrupted: bool = False  # Ctrl-C or SIGTERM: calling again with the same options resumes
    # seconds the search process spent on its own work besides waiting for trials: starting workers, the reference,
    # proposing, storing results, run files, progress (see Search._costs)
    costs: dict[str, float] = field(default_factory=dict)

    @cached_property
    def trials(self) -> pd.DataFrame:
        """Every trial as one row (``trials.csv``'s table, with specs as dicts), read from the study when asked."""
        from effnas.results import open_study, trials_frame

        return trials_frame(open_study(self.storage))


@dataclass(frozen=True)
class ScaleResult:
    """A base architecture and the family member grown from it."""

    base: ArchSpec
    spec: ArchSpec
    target: str | None
    phi: float  # the compound coefficient used (m = 1, l = 2, xl = 3)
    rule: str
    max_image_size: int
    out: Path | None  # the spec file written, if ``out`` was given


@dataclass(frozen=True)
class TrainResult:
    """A training run: its folder (``final.pt``, ``metrics.json``, ...), the spec as trained and its metrics."""

    run_dir: Path
    metrics: dict[str, Any]  # metrics.json: top1, test_top1, eval_image_size, recipe, ...; empty when stopped
    stopped_after_epoch: int | None = None  # set when ``stop_after`` ended the call early (``resume=True`` goes on)

    @property
    def spec(self) -> ArchSpec | ReferenceSpec | None:
        """The architecture as trained: the data's classes and channels, the run's image sizes."""
        if not self.metrics:
            return None
        from effnas.inference import spec_from_data

        return spec_from_data(self.metrics["spec"])

    @cached_property
    def history(self) -> pd.DataFrame:
        """One row per epoch (``metrics.csv``)."""
        import pandas as pd

        return pd.read_csv(self.run_dir / "metrics.csv")

    def load(self) -> LoadedModel:
        """The trained network, ready for inference (:func:`effnas.load`)."""
        from effnas.inference import load

        return load(self.run_dir)


@dataclass(frozen=True)
class CompareResult:
    """``nas compare``'s table (``compare.csv``) and where its files are."""

    out: Path
    table: pd.DataFrame = field(repr=False)


# ----------------------------------------------------------------------------- search
def _default_out(controller: str, data: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", data.split("/")[-1] if "/" in data else data).strip("-") or "data"
    return f"runs/{controller}-{slug}"


def search(*, budget: int = 200, controller: str = "tpe", data: str = "digits", out: str | Path | None = None,
           storage: str | None = None, space: str | None = None, epochs: int | None = None,
           proxy_time: float | None = None, image_size: int | None = None, batch_size: int | None = None,
           device: str = "auto", engine: str = "auto", workers: int | None = None, data_size: int | None = None,
           trial_timeout: float | None = None, trial_memory: float | None = None, early_stopping: bool = True,
           seed: int = 0, reward_w: float | None = None, reward_v: float | None = None, quiet: bool = False,
           backend: str = "local", address: str | None = None, gpus_per_trial: float | None = None,
           cpus_per_trial: float | None = None, threads: int | None = None, optimizer: str | None = None,
           lr: float | None = None, weight_decay: float | None = None, own_process: bool = False) -> SearchResult:
    """Run (or resume) a search: ``nas search``. Calling again with the same options resumes it; a larger
    ``budget`` extends it. ``own_process``: this process exists only for the search (the ``nas`` command), so the
    objects alive now may be taken out of the garbage collector's view (leave it False in a notebook)."""
    options = {name: value for name, value in locals().items() if name != "own_process"}  # the run file's
    _refuse_unguarded_script()
    from effnas.nas.search.settings import SearchConfig, SearchError, SearchRecipe, SearchRuntime, build_space
    from effnas.results.reward import DEFAULT_V, DEFAULT_W
    from effnas.search_space import spec_from_dict

    trial: dict[str, Any] = {"data": data, **{name: value for name, value in
                                              (("epochs", epochs), ("batch_size", batch_size), ("data_size", data_size))
                                              if value is not None}}
    if proxy_time is not None:
        trial["seconds"] = proxy_time
    trial.update(_proxy_optimizer(optimizer, lr, weight_decay, batch_size))
    # With equal-time proxies the accuracy already pays for a slow step: no second penalty unless asked for.
    w_default, v_default = (0.0, 0.0) if proxy_time is not None else (DEFAULT_W, DEFAULT_V)
    recipe = SearchRecipe(controller=controller, space=None if space is None else str(space), image_size=image_size,
                          reward_w=w_default if reward_w is None else reward_w,
                          reward_v=v_default if reward_v is None else reward_v, trial=trial,
                          early_stopping=bool(early_stopping))
    runtime = SearchRuntime(out=str(out or _default_out(controller, data)), storage=storage, budget=budget, seed=seed,
                            workers=workers, trial_timeout=trial_timeout, trial_memory=trial_memory, device=device,
                            engine=engine, threads=threads, progress=not quiet)
    ray_flags = [flag for flag, value in (("--address", address), ("--gpus-per-trial", gpus_per_trial),
                                          ("--cpus-per-trial", cpus_per_trial)) if value is not None]
    if backend not in ("local", "ray"):
        raise SearchError(f"unknown backend {backend!r} (choose from local, ray)")
    if backend != "ray" and ray_flags:
        raise SearchError(f"{ray_flags[0]} only applies to --backend ray")
    if backend == "ray":
        from effnas.nas.search.backends.ray import RayBackend, RayOptions  # Ray's start-up: only when asked for

        RayBackend.refuse_unsupported(trial_memory)  # before the search writes anything
        runner: Any = RayBackend(RayOptions(address, cpus_per_trial, gpus_per_trial))
    else:
        from effnas.nas.search.backends.local import LocalBackend, freeze_imports, start_worker_server

        runner = LocalBackend()
        cores = os.cpu_count() or 1
        if workers is not None and workers > MAX_WORKERS_PER_CORE * cores:
            raise SearchError(f"--workers {workers}: at most {MAX_WORKERS_PER_CORE} trials per CPU core run on "
                              f"this machine ({MAX_WORKERS_PER_CORE * cores} on its {cores} cores)")
    space = build_space(recipe.space, recipe.image_size)  # once: the fit check and the search share it
    _refuse_networks_too_big(recipe, runtime, space)
    if backend != "ray":
        start_worker_server()
    from effnas.nas.search.session import Search

    session = Search(SearchConfig(recipe, runtime), space=space)  # claims the run directory, opens the study
    from effnas.run_config import write_run_config

    write_run_config(session.run_dir, "search", {**options, "out": runtime.out}, device)
    if own_process and backend != "ray":
        freeze_imports()  # this process's bookkeeping runs beside the workers: no full collections over torch's objects
    summary = session.run(runner)
    best = summary.best
    return SearchResult(run_dir=Path(summary.run_dir), storage=summary.storage,
                        best_spec=spec_from_dict(best["spec"]) if best else None,
                        best_metrics=dict(best["metrics"]) if best else None, best_trial=best["trial"] if best else None,
                        reference=dict(summary.reference or {}), counted=summary.counted, budget=summary.budget,
                        stopped=summary.stopped, reused=summary.reused, seconds=summary.seconds,
                        interrupted=summary.stopped_early, costs=dict(summary.costs))


def _refuse_unguarded_script() -> None:
    """Trials run in worker processes, which start by importing the caller's script again: a search called at a
    script's top level would start once more in every worker. Said in one line there, instead of a worker dying."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__mp_main__":
            raise EffnasError("effnas.search ran again in a worker process importing your script: in a script, call "
                              "it under `if __name__ == \"__main__\":` (a notebook needs nothing)")
        frame = frame.f_back


def _refuse_networks_too_big(recipe: Any, runtime: Any, space: Any) -> None:
    """Before the data is read or the study written: the backbone (the reference, trained first) and the space's
    largest candidates must fit the device, or ``--trial-memory``, by the estimate of effnas.models.memory."""
    from effnas.models.memory import check_fits

    batch = int(recipe.trial.get("batch_size", 64))
    check_fits(space.backbone, batch, runtime.device, limit_gib=runtime.trial_memory, what="the backbone")
    for params in space.largest_params():
        check_fits(space.spec_from_params(params, num_classes=2), batch, runtime.device,
                   what="the space's largest candidate")


# ----------------------------------------------------------------------------- scale
def scale(base: str | Path | ArchSpec, *, target: str | None = None, phi: float | None = None, rule: str = "v2",
          max_image_size: int = 480, extra_stage: bool = True, out: str | Path | None = None,
          force: bool = False) -> ScaleResult:
    """Grow ``base`` (a spec, a spec file, ``best.json`` or a zoo name) into a bigger family member:
    ``nas scale``. ``target`` s/m/l/xl (default m unless ``phi``); ``out`` writes the spec there."""
    from effnas.scaling import ScaleError, scale_spec
    from effnas.scaling.rules import resolve_phi
    from effnas.search_space import ArchSpec, load_arch, save_spec

    if target is not None and phi is not None:
        raise ScaleError("give either --target or --phi, not both")
    target = target if target is not None or phi is not None else "m"
    out = out if out not in ("", None) else None  # an empty --out writes nothing, as the command always did
    if out is not None:  # a study, another file, a directory, a device: refused before any work
        from effnas.outputs import claim_output

        claim_output(out, "spec", "--out", force=force)
    base_spec = base if isinstance(base, ArchSpec) else load_arch(base)
    scaled = scale_spec(base_spec, target, phi=phi, rule=rule, max_image_size=max_image_size,
                        extra_stage=extra_stage)
    if out is not None:
        save_spec(scaled, out)  # a missing folder, a full or read-only disk: one-line errors
    _, resolved = resolve_phi(target, phi)
    return ScaleResult(base=base_spec, spec=scaled, target=target, phi=resolved, rule=rule,
                       max_image_size=max_image_size, out=None if out is None else Path(out))


# ----------------------------------------------------------------------------- train
def _tqdm_log(message: str) -> None:
    from tqdm import tqdm  # beside the progress bars, not through them

    tqdm.write(message)


def train(arch: str | Path | ArchSpec | ReferenceSpec, *, data: str = "digits", epochs: int = 10,
          time: float | None = None, threads: int | None = None, stages: int | None = None, progressive: bool = True,
          out: str | Path = "runs/train", resume: bool = False, stop_after: int | None = None, device: str = "auto",
          engine: str = "auto", batch_size: int | None = None, optimizer: str | None = None, lr: float | None = None,
          weight_decay: float | None = None, schedule: str = "cosine", warmup_epochs: float | None = None,
          label_smoothing: float | None = None, ema_decay: float = 0.9999, image_size: int | None = None,
          eval_image_size: int | None = None, min_image_size: int | None = None,
          randaug: Sequence[float] | None = None, mixup: Sequence[float] | None = None,
          dropout: Sequence[float] | None = None, flip: bool | None = None, crop_min_area: float | None = None,
          val_fraction: float = 0.2, seed: int = 0, quiet: bool = False) -> TrainResult:
    """Train ``arch`` (a spec, a spec file, a run directory, a zoo name or mnist-cnn / resnet20) with progressive
    learning: ``nas train``. ``time`` (seconds) trains for a wall time instead of ``epochs``; randaug, mixup and
    dropout are (first stage, last stage) pairs. The folder ``out`` gets ``final.pt`` and ``metrics.json``."""
    options = dict(locals())  # the run file's
    from effnas.outputs import claim_run_dir
    from effnas.search_space import ArchSpec
    from effnas.search_space.reference import ReferenceSpec, load_network

    claim_run_dir(out, "train", "--out")  # a folder of the user's files, or another kind of run, is refused
    spec = arch if isinstance(arch, (ArchSpec, ReferenceSpec)) else load_network(str(arch))
    if isinstance(spec, ArchSpec):  # too big for the device: refused before torch is imported
        from effnas.models.memory import check_fits

        check_fits(spec, batch_size or 16, device, image_size=image_size)
    from effnas.nas.training.train import TrainConfig, train as train_run  # torch: only when training runs


    pair = lambda value: None if value is None else tuple(float(v) for v in value)  # noqa: E731
    if not isinstance(arch, (ArchSpec, ReferenceSpec)):  # a search's winner starts from its proxy trials' recipe
        proxy = search_recipe(arch)
        if optimizer is None and lr is None and weight_decay is None and batch_size is None and proxy:
            optimizer, lr, weight_decay, batch_size = (proxy[k] for k in ("optimizer", "lr", "weight_decay",
                                                                          "batch_size"))
    optimizer = optimizer or "rmsprop"
    config = TrainConfig(
        data=data, epochs=epochs, stages=stages, progressive=progressive, batch_size=batch_size, optimizer=optimizer,
        lr=lr, weight_decay=weight_decay, schedule=schedule, warmup_epochs=warmup_epochs,
        label_smoothing=label_smoothing, ema_decay=ema_decay, image_size=image_size, eval_image_size=eval_image_size,
        min_image_size=min_image_size, randaug=pair(randaug), mixup=pair(mixup), dropout=pair(dropout), flip=flip,
        crop_min_area=crop_min_area, val_fraction=val_fraction, seed=seed, time_limit=time)
    # The run file is written once a new run is accepted: a refused command (a resume that does not match, a run
    # already there) leaves that run's file as it was, and a resume continues the run its file describes.
    def on_start() -> None:
        if not (resume and (Path(out).expanduser() / "config.yaml").exists()):
            _write_run_config(out, "train", options, device)

    metrics = train_run(spec, config, out, device=device, engine=engine, resume=resume, stop_after=stop_after,
                        progress=not quiet, threads=threads, log=(lambda *_: None) if quiet else _tqdm_log,
                        on_start=on_start)
    if "stopped_after_epoch" in metrics:
        return TrainResult(Path(out), {}, int(metrics["stopped_after_epoch"]))
    return TrainResult(Path(out), metrics)


# ----------------------------------------------------------------------------- compare
MAX_FINALISTS = 20  # each finalist is one more network trained in full


def _finalists(run_dir: Path, count: int) -> list[Any]:
    """The search's ``count`` best candidates, best first, each a contender named after its trial."""
    from effnas.nas.training.compare import Contender
    from effnas.results import open_study, spec_of, top_by_reward, trials_frame

    top = top_by_reward(trials_frame(open_study(run_dir)), count)
    return [Contender(f"trial-{int(row['number'])}", "finalist", spec_of(row)) for _, row in top.iterrows()]


def compare(run_dir: str | Path, *, against: str | Sequence[str] = DEFAULT_AGAINST, scaled: Sequence[str | Path] = (),
            classical: bool = False, data: str | None = None, time: float | None = None, epochs: int = 10,
            stages: int | None = None, batch_size: int | None = None, threads: int | None = None,
            image_size: int | None = None, finalists: int = 1,
            device: str = "auto", engine: str = "auto", seed: int = 0, out: str | Path | None = None,
            quiet: bool = False) -> CompareResult:
    """Train a search's winner and the alternatives alike on the same data: ``nas compare``. ``against`` names
    networks (comma-separated or a list; "none" for the winner alone); finished models are read back.
    ``finalists`` above 1: the search's that many best candidates all train, and the one with the best validation
    top-1 is the "searched" row (a short proxy's ranking need not hold at the comparison's data and time)."""
    options = dict(locals())  # the run file's
    options["against"] = against if isinstance(against, str) else ",".join(against)
    from effnas.outputs import claim_run_dir
    from effnas.search_space import load_arch
    from effnas.search_space.reference import REFERENCE_NETWORKS, load_network

    run_dir = Path(run_dir).expanduser()
    if not (run_dir / "best.json").is_file():
        hint = "" if run_dir.exists() else did_you_mean_path(run_dir)
        raise EffnasError(f"{run_dir}: no best.json (give the run directory of a search with a completed trial)"
                          f"{hint}")
    if isinstance(finalists, bool) or not isinstance(finalists, int) or not 1 <= finalists <= MAX_FINALISTS:
        raise EffnasError(f"finalists: must be a whole number from 1 to {MAX_FINALISTS} (each one trains in full), "
                          f"got {shown(finalists)}")
    destination = Path(out).expanduser() if out else run_dir
    claim_run_dir(destination, "compare", "--out")  # a folder of the user's files, or another kind of run, is refused
    # torch and scikit-learn load only for a command that got this far: a refusal above answers at once
    from effnas.nas.training.compare import Contender, compare as compare_runs
    from effnas.nas.training.train import TrainConfig
    winner = load_arch(run_dir)
    contenders = [Contender("searched", "searched", winner)] if finalists == 1 else _finalists(run_dir, finalists)
    contenders += [Contender(Path(path).stem, "scaled", load_arch(path)) for path in scaled]
    names = against.split(",") if isinstance(against, str) else list(against)
    names = [name.strip() for name in names if name.strip()]
    if [name.lower() for name in names] != ["none"]:
        for name in names:
            if name.lower() == "backbone":
                contenders.append(Contender("backbone", "backbone", _search_backbone(run_dir)))
            elif name.lower() in REFERENCE_NETWORKS:
                contenders.append(Contender(name.lower(), "reference", load_network(name)))
            else:
                contenders.append(Contender(Path(name).stem if name.endswith(".json") else name, "zoo",
                                            load_arch(name)))
    size = image_size or winner.train_image_size
    # Every network trains with the recipe the search's candidates trained with (optimizer, rate, decay, batch).
    proxy = search_recipe(run_dir) or {"batch_size": 64}
    if batch_size is not None and batch_size != proxy["batch_size"]:
        proxy = {"batch_size": batch_size}  # another batch: the optimizer's own defaults for it
    config = TrainConfig(data=data or _search_data(run_dir) or "digits", epochs=epochs, stages=stages,
                         image_size=size, eval_image_size=size, seed=seed, time_limit=time, **proxy)
    config.validate()
    if time is None and stages is not None and stages > epochs:
        raise EffnasError(f"--stages {stages} needs at least {stages} epochs, got --epochs {epochs}")
    _write_run_config(destination, "compare", options, device)
    log: Callable[[str], None] = (lambda message: None) if quiet else print
    table = compare_runs(contenders, config, destination, classical=classical, device=device, engine=engine,
                         progress=not quiet, threads=threads, log=log)
    return CompareResult(destination, table)


def _write_run_config(folder: str | Path, command: str, options: dict[str, Any], device: str) -> None:
    """The run file, written when the run starts (so a stopped run has it too), in a folder made for it."""
    from effnas.run_config import write_run_config
    from effnas.writes import ensure_writable_dir

    write_run_config(ensure_writable_dir(Path(folder).expanduser(), "run directory"), command, options, device)


def search_recipe(arch: str | Path) -> dict[str, Any] | None:
    """How a search trained its candidates (optimizer, lr, weight_decay, batch_size), when ``arch`` is a search's
    run directory or its ``best.json``; else None. ``nas train`` of the winner and ``nas compare`` start from it:
    the recipe the winner was chosen under."""
    from effnas.results import ResultsError, open_study
    from effnas.results.record import SETTINGS_ATTR
    from effnas.results.storage import STUDY_FILE

    path = Path(arch).expanduser()
    run_dir = path if path.is_dir() else path.parent if path.name == "best.json" else None
    if run_dir is None or not (run_dir / STUDY_FILE).is_file():
        return None
    try:
        settings = open_study(run_dir).user_attrs.get(SETTINGS_ATTR) or {}
    except ResultsError:
        return None
    trial = (settings.get("recipe") or {}).get("trial") if isinstance(settings.get("recipe"), dict) else None
    if not isinstance(trial, dict):
        return None
    from effnas.nas.search.trial_settings import TrialSettings

    defaults = TrialSettings()  # a study records only what differed from the defaults of its day
    return {name: trial.get(name, getattr(defaults, name)) for name in ("optimizer", "lr", "weight_decay",
                                                                          "batch_size")}


def _proxy_optimizer(optimizer: str | None, lr: float | None, weight_decay: float | None,
                     batch_size: int | None) -> dict[str, Any]:
    """The proxy trials' optimizer settings: what was given, the rest from ``nas train``'s defaults for that
    optimizer (rate per 256 images scaled to the batch), so a winner trains on as it was searched."""
    if optimizer is None:
        return {name: value for name, value in (("lr", lr), ("weight_decay", weight_decay)) if value is not None}
    from effnas.nas.training.recipe import BASE_LR, DEFAULT_BATCH_SIZE, OPTIMIZERS, WEIGHT_DECAY, TrainError

    if optimizer not in OPTIMIZERS:
        raise TrainError(f"optimizer: unknown {optimizer!r} (expected one of {', '.join(OPTIMIZERS)})")
    batch = batch_size or DEFAULT_BATCH_SIZE
    return {"optimizer": optimizer, "lr": lr if lr is not None else BASE_LR[optimizer] * batch / 256,
            "weight_decay": weight_decay if weight_decay is not None else WEIGHT_DECAY[optimizer]}


def _search_data(run_dir: Path) -> str | None:
    """The data source the search trained its candidates on, as its study recorded it."""
    from effnas.results import ResultsError, open_study
    from effnas.results.record import SETTINGS_ATTR

    try:
        settings = open_study(run_dir).user_attrs.get(SETTINGS_ATTR) or {}
    except ResultsError:
        return None
    recipe = settings.get("recipe") if isinstance(settings.get("recipe"), dict) else {}
    for holder in (settings, settings.get("trial"), recipe, recipe.get("trial")):  # the recipe's trial: today's
        if isinstance(holder, dict) and isinstance(holder.get("data"), str):
            return holder["data"]
    return None


def _search_backbone(run_dir: Path) -> ArchSpec:
    """The search space's backbone as the study recorded it: the network the search started from."""
    from effnas.results import ResultsError, open_study
    from effnas.results.record import SPACE_ATTR
    from effnas.search_space import SearchSpace

    try:
        space = open_study(run_dir).user_attrs.get(SPACE_ATTR)
    except ResultsError:
        space = None
    if not isinstance(space, dict):
        raise EffnasError(f"{run_dir}: no search space recorded in its study; leave 'backbone' out of --against")
    return SearchSpace.from_dict({k: v for k, v in space.items() if k != "stages"}).backbone
