"""What ``nas train`` keeps between epochs: weight EMA, checkpoints, the metrics log and its plot.

Checkpoints hold state dicts and plain data only (``torch.save``), are written atomically (a temporary
file, then ``os.replace``), and are read back with ``weights_only=True``, so a checkpoint can never run
code. The metrics history lives inside the checkpoint too: the CSV and the plot are rewritten from it
every epoch, so a run killed between two writes never ends up with a log that disagrees with its weights.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import warnings
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import nn

from effnas.errors import EffnasError
from effnas.writes import atomic_write

CHECKPOINT_FORMAT = 1
RECIPE_FIELDS = {"train_image_size", "eval_image_size", "progressive", "dropout", "drop_path_rate"}
METRIC_COLUMNS = ("epoch", "stage", "image_size", "dropout", "randaug", "mixup", "lr", "train_loss", "train_acc",
                  "val_loss", "val_acc", "ema_val_acc", "seconds", "cpu_seconds")


class CheckpointError(EffnasError):
    """A checkpoint that cannot be resumed from (missing, unreadable, or from another run)."""


class EMA:
    """Exponential moving average of a model's weights and float buffers (BN statistics).

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` (the official EfficientNet code's rule), so a
    short run's average is not dominated by the random initial weights.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999) -> None:
        self.decay = float(decay)
        self.source = model
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @staticmethod
    def _tensors(model: nn.Module) -> list[torch.Tensor]:
        return [*model.parameters(), *model.buffers()]

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Move the average towards the model after optimizer step ``step`` (0-based)."""
        decay = min(self.decay, (1 + step) / (10 + step))
        pairs = list(zip(self._tensors(self.module), self._tensors(self.source)))
        floats = [(e, m.detach()) for e, m in pairs if e.is_floating_point()]
        torch._foreach_lerp_([e for e, _ in floats], [m for _, m in floats], 1.0 - decay)
        for e, m in pairs:
            if not e.is_floating_point():
                e.copy_(m)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)


# ----------------------------------------------------------------------------- RNG
def rng_state() -> dict[str, Any]:
    """Every random stream training draws from (augmentation, mixup, dropout, stochastic depth)."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file, then rename over ``path``: never a half-written checkpoint (on a
    full disk the temporary file goes, the previous checkpoint stays and the error is one line)."""
    atomic_write(path, lambda tmp: torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp))


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint to resume from (train once without --resume)")
    try:
        with warnings.catch_warnings():  # torch warns about odd pickles before refusing them: keep the error one line
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # pickle / zip errors of many kinds: all mean "not a usable checkpoint"
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(error).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an effnas training checkpoint")
    return state


def first_difference(old: Any, new: Any, path: str = "") -> str | None:
    """The first field (as ``stages[2].kernel``) where two JSON-like values differ, or None."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in old or key not in new:
                return where
            found = first_difference(old[key], new[key], where)
            if found:
                return found
        return None
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        if len(old) != len(new):
            return f"{path} (length {len(old)} vs {len(new)})"
        for i, (a, b) in enumerate(zip(old, new)):
            found = first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if old == new else path


def check_compatible(path: Path, state: dict[str, Any], spec: dict[str, Any], config: dict[str, Any]) -> None:
    """Refuse to resume a checkpoint of another architecture or another training recipe, in one line."""
    saved = state.get("config") or {}
    changed = [key for key in sorted(set(saved) | set(config)) if saved.get(key) != config.get(key)]
    if changed:
        key = changed[0]
        raise CheckpointError(f"{path}: checkpoint was trained with a different {key!r} setting "
                              f"({saved.get(key)!r} vs {config.get(key)!r} now); resume with the same options")
    field = first_difference(state.get("spec"), spec)
    if field is not None:
        old = (state.get("spec") or {}).get("name") or "unnamed"
        kind = "training recipe" if field.split(".")[0].split("[")[0] in RECIPE_FIELDS else "architecture"
        raise CheckpointError(
            f"{path}: checkpoint is of a different {kind} ({old!r}; first difference at spec field {field}) "
            f"than --arch {spec.get('name') or 'unnamed'!r}; use another --out or drop --resume")


# ----------------------------------------------------------------------------- metrics log and plot
def write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    atomic_write(path, text.getvalue())


def write_plot(path: Path, history: list[dict[str, Any]], title: str, headline: str = "") -> None:
    """One self-contained HTML page: the headline numbers, then losses (log axis: a diverging epoch does not
    flatten the rest), accuracies, and the size / regularization schedule, per whole epoch."""
    epochs = [row["epoch"] for row in history]
    figure = make_subplots(rows=2, cols=2, subplot_titles=("loss (log scale)", "top-1 accuracy", "image size",
                                                           "regularization"),
                           specs=[[{}, {}], [{}, {"secondary_y": True}]], vertical_spacing=0.14)

    def line(column: str, row: int, col: int, name: str | None = None, secondary: bool = False) -> None:
        trace = go.Scatter(x=epochs, y=[r[column] for r in history], mode="lines+markers", name=name or column)
        figure.add_trace(trace, row=row, col=col, **({"secondary_y": True} if secondary else {}))

    line("train_loss", 1, 1, "training loss")
    line("val_loss", 1, 1, "validation loss")
    line("train_acc", 1, 2, "training top-1")
    line("val_acc", 1, 2, "validation top-1")
    line("ema_val_acc", 1, 2, "validation top-1 (EMA weights)")
    line("image_size", 2, 1, "image size")
    line("dropout", 2, 2, "dropout rate")
    line("mixup", 2, 2, "mixup alpha")
    line("randaug", 2, 2, "RandAugment magnitude", secondary=True)
    figure.update_xaxes(title_text="epoch", tick0=1, dtick=max(1, math.ceil(len(epochs) / 12)),
                        range=[0.5, max(epochs, default=1) + 0.5])
    figure.update_yaxes(type="log", title_text="cross-entropy", row=1, col=1)
    figure.update_yaxes(title_text="top-1", range=[0, 1.02], row=1, col=2)
    figure.update_yaxes(title_text="pixels", rangemode="tozero", row=2, col=1)
    rates = [r[name] for r in history for name in ("dropout", "mixup")]
    figure.update_yaxes(title_text="dropout rate, mixup alpha", range=[0, max(0.5, 1.1 * max(rates, default=0))],
                        row=2, col=2, secondary_y=False)
    figure.update_yaxes(title_text="RandAugment magnitude (0-30)", range=[0, 30], row=2, col=2, secondary_y=True)
    text = f"{title}<br><sup>{headline}</sup>" if headline else title
    figure.update_layout(title=dict(text=text, y=0.97), height=800, template="plotly_white",
                         margin=dict(t=110), legend=dict(orientation="h", y=-0.12))
    atomic_write(path, lambda tmp: figure.write_html(tmp, include_plotlyjs=True, full_html=True))
