"""The search's winner against what the user could take instead: the unsearched backbone, a practitioner's small
CNN and ResNet-20, zoo models, all trained with the same recipe, data split, device and epochs or seconds, and
classical baselines fitted on the flattened pixels of the same split. Every row is scored once on the data's
test split (validation selects; test reports).

Each network trains into its own folder under ``OUT/compare/`` through :func:`effnas.nas.training.train.train`,
so a finished model is read back instead of retrained and a stopped one resumes from its checkpoint. The
table (``compare.csv``) and every model's curves (``compare.json``) are rewritten after each model.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from tqdm.auto import tqdm

from effnas.errors import EffnasError
from effnas.models import build_model
from effnas.models.profile import count_macs
from effnas.search_space import ArchSpec, spec_from_dict
from effnas.search_space.reference import ReferenceSpec
from effnas.writes import atomic_write

from effnas.nas.training.data import ImageData, load_data
from effnas.nas.training.engine import default_threads
from effnas.nas.training.train import TrainConfig, train

CLASSICAL = ("random-forest", "logistic-regression")
COLUMNS = ("model", "kind", "test_top1", "top1", "params", "macs", "step_time_ms", "epochs", "train_seconds",
           "images_per_second", "image_size")
MAX_CLASSICAL_FEATURES = 4096  # pixels per image beyond which images are pooled down for the classical fits


class CompareError(EffnasError):
    """A comparison that cannot run as asked."""


@dataclass(frozen=True)
class Contender:
    """One network to train: a name for its row and folder, what it is, and its spec."""

    name: str
    kind: str  # "searched", "finalist", "scaled", "backbone", "reference" or "zoo"
    spec: ArchSpec | ReferenceSpec


def folder_name(name: str) -> str:
    """A model's folder under ``compare/``: its name with anything but letters, digits, ``-`` and ``.`` replaced."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", name).strip("._") or "model"


def compare(contenders: list[Contender], config: TrainConfig, out: str | Path, *, classical: bool = False,
            device: str = "auto", engine: str = "auto", progress: bool = True, threads: int | None = None,
            log: Callable[[str], None] = print) -> pd.DataFrame:
    """Train every contender with ``config`` (and fit the classical baselines); returns the table it wrote."""
    names = [c.name for c in contenders]
    if len(set(map(folder_name, names))) != len(names):
        raise CompareError(f"two models share a name: {', '.join(names)}")
    out = Path(out)
    threads = threads or default_threads()  # one number for every row, the classical fits included
    bar = tqdm(total=len(contenders) + (len(CLASSICAL) if classical else 0), desc="models", unit="model",
               disable=None if progress else True)
    bar.set_postfix_str("reading the data")
    data = load_data(config.data, seed=config.seed, val_fraction=config.val_fraction)  # also checks it early
    rows: list[dict[str, Any]] = []
    curves: dict[str, list[dict[str, Any]]] = {}
    for contender in contenders:
        bar.set_postfix_str(contender.name)
        row, history = _train_one(contender, _config_for(contender, config, log),
                                  out / "compare" / folder_name(contender.name), device, engine, progress, threads, log)
        rows.append(row)
        curves[contender.name] = history
        _write(out, rows, curves)
        bar.update(1)
    chosen = choose_finalist(rows)
    if chosen is not None:
        name = rows[chosen]["model"]
        rows[chosen] = {**rows[chosen], "model": "searched", "kind": "searched"}
        rows.insert(0, rows.pop(chosen))
        curves = {"searched": curves.pop(name), **curves}
        finalists = sum(row["kind"] == "finalist" for row in rows) + 1
        log(f"searched: {name}, the best validation top-1 ({rows[0]['top1']:.4f}) of the {finalists} finalists "
            f"(its folder: compare/{folder_name(name)})")
        _write(out, rows, curves)
    if classical:
        for name in CLASSICAL:
            bar.set_postfix_str(name)
            rows.append(_fit_classical(name, data, config.seed, threads))
            _write(out, rows, curves)
            bar.update(1)
    bar.close()
    return pd.DataFrame(rows, columns=list(COLUMNS))


def choose_finalist(rows: list[dict[str, Any]]) -> int | None:
    """Which finalist becomes "searched": the best validation top-1, on a tie the one the search ranked higher
    (trained first). Only the validation split decides; the test split is read for the table, never for this.
    None without finalists."""
    finalists = [index for index, row in enumerate(rows) if row["kind"] == "finalist"]
    if not finalists:
        return None
    return max(finalists, key=lambda index: (rows[index]["top1"], -index))


def _config_for(contender: Contender, config: TrainConfig, log: Callable[[str], None]) -> TrainConfig:
    """``config``, unless the network's total stride is larger than the image size (an ImageNet model on 28 px
    digits): it then trains and is evaluated at its stride, the images upsampled, and its row says so."""
    stride = contender.spec.total_stride
    if config.image_size is None or config.image_size >= stride:
        return config
    log(f"{contender.name}: its total stride {stride} is above {config.image_size} px; it trains at {stride} px")
    return dataclasses.replace(config, image_size=stride, eval_image_size=stride,
                               min_image_size=None if config.min_image_size is None else max(stride, config.min_image_size))


def _train_one(contender: Contender, config: TrainConfig, folder: Path, device: str, engine: str, progress: bool,
               threads: int | None, log: Callable[[str], None]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A contender's row and curves: read back when its run finished with the same recipe, else trained."""
    done = folder / "metrics.json"
    metrics = json.loads(done.read_text()) if done.is_file() else None
    if metrics is not None and metrics.get("config") != config.to_dict():
        raise CompareError(f"{folder} holds a run with another recipe; remove it or use another --out")
    if metrics is None:
        log(f"training {contender.name} ({contender.kind})")
        metrics = train(contender.spec, config, folder, device=device, engine=engine,
                        resume=(folder / "last.pt").exists(), progress=progress, threads=threads, log=log)
    else:
        log(f"{contender.name}: finished earlier, read from {done}")
    history = pd.read_csv(folder / "metrics.csv").to_dict(orient="records")
    trained = metrics["spec"]  # as trained: the data's classes and channels, the run's sizes
    spec = ReferenceSpec.from_dict(trained) if "reference" in trained else spec_from_dict(trained)
    steps = int(metrics["steps"])
    batch = int(metrics["recipe"]["batch_size"])
    seconds = float(metrics["train_seconds"])
    row = {
        "model": contender.name, "kind": contender.kind, "test_top1": metrics.get("test_top1"),
        "top1": float(metrics["top1"]), "params": int(metrics["params"]),
        "macs": count_macs(build_model(spec), int(metrics["eval_image_size"]), spec.image_channels),
        "step_time_ms": 1000 * seconds / steps if steps else None, "epochs": float(metrics["epochs_reached"]),
        "train_seconds": seconds, "images_per_second": steps * batch / seconds if seconds else None,
        "image_size": int(metrics["eval_image_size"]),
    }
    return row, history


def _features(images: np.ndarray) -> np.ndarray:
    """Flattened pixels in [0, 1]; large images are average-pooled first so a forest stays affordable."""
    x = images.astype(np.float32) / 255.0
    while x[0].size > MAX_CLASSICAL_FEATURES and x.shape[-1] >= 2 and x.shape[-2] >= 2:
        n, c, h, w = x.shape
        x = x[:, :, : h - h % 2, : w - w % 2].reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))
    return x.reshape(len(x), -1)


def _fit_classical(name: str, data: ImageData, seed: int, threads: int) -> dict[str, Any]:
    """A classical baseline on the same train/validation split as the networks, scored on the same test split."""
    train_x, val_x = _features(data.train_x.numpy()), _features(data.val_x.numpy())
    train_y, val_y = data.train_y.numpy(), data.val_y.numpy()
    if name == "random-forest":
        model = RandomForestClassifier(n_estimators=100, n_jobs=threads, random_state=seed)
    else:
        model = LogisticRegression(max_iter=200)
    started = time.perf_counter()
    model.fit(train_x, train_y)
    seconds = time.perf_counter() - started
    top1 = float((model.predict(val_x) == val_y).mean())
    test_top1 = None
    if data.test_origin != "none":
        test_x, test_y = data.test_split()
        test_top1 = float((model.predict(_features(test_x.numpy())) == test_y.numpy()).mean())
    return {"model": name, "kind": "classical", "test_top1": test_top1, "top1": top1, "params": None, "macs": None,
            "step_time_ms": None, "epochs": None, "train_seconds": seconds,
            "images_per_second": len(train_y) / seconds if seconds else None, "image_size": int(data.train_x.shape[-1])}


def _write(out: Path, rows: list[dict[str, Any]], curves: dict[str, list[dict[str, Any]]]) -> None:
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    atomic_write(out / "compare.csv", frame.to_csv(index=False))
    payload = {"rows": json.loads(frame.to_json(orient="records")), "curves": curves}
    atomic_write(out / "compare.json", json.dumps(payload, indent=2, default=float) + "\n")

