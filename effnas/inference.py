"""A trained network back as an ``nn.Module``, with the preprocessing it was trained with: :func:`load`.

A training run's ``final.pt`` holds the spec as trained and the EMA weights; the input normalisation is the
training split's per-channel mean and std, read again from the data source the run recorded (the same images, the
same split), so a prediction sees exactly what the run's evaluation saw: the whole image resized to the eval size
(bilinear, antialiased when shrinking), scaled to [0, 1], then normalised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from effnas.errors import EffnasError, SpecError
from effnas.models import build_model
from effnas.search_space import ArchSpec, load_arch, spec_from_dict
from effnas.search_space.loading import parse_json, read_input
from effnas.search_space.reference import REFERENCE_NETWORKS, ReferenceSpec


class LoadError(EffnasError):
    """A path that holds no network effnas can load, or whose training data cannot be read for its statistics."""


def spec_from_data(data: dict[str, Any]) -> ArchSpec | ReferenceSpec:
    """A spec as a run stored it: an MBConv spec or a reference network (``{"reference": "resnet20", ...}``)."""
    return ReferenceSpec.from_dict(data) if "reference" in data else spec_from_dict(data)


@dataclass(frozen=True)
class Preprocessing:
    """What the network expects: ``channels`` x ``image_size`` x ``image_size`` images scaled to [0, 1], then
    normalised per channel by ``mean`` and ``std`` (the training split's)."""

    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def resize(self, images: Any) -> torch.Tensor:
        """Images as float32 ``[N, C, S, S]`` in [0, 1], not normalised: what an exported model takes. Accepts
        uint8 (0-255) or float (0-1) tensors or arrays, ``[N, C, H, W]``, or ``[N, H, W]`` for one channel."""
        x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
        if x.dim() == 3 and self.channels == 1:
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise LoadError(f"images: expected [N, {self.channels}, H, W], got {list(x.shape)}")
        x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
        if x.shape[-2:] != (self.image_size, self.image_size):
            shrink = x.shape[-1] > self.image_size or x.shape[-2] > self.image_size
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                              antialias=shrink)
        return x.contiguous()

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` per channel, for images already resized and in [0, 1]."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device)[None, :, None, None]
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device)[None, :, None, None]
        return (x - mean) / std

    def __call__(self, images: Any) -> torch.Tensor:
        """Images ready for the module: resized, scaled to [0, 1] and normalised."""
        return self.normalise(self.resize(images))

    def to_dict(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "channels": self.channels, "mean": list(self.mean),
                "std": list(self.std), "input_range": [0.0, 1.0]}


@dataclass(frozen=True)
class LoadedModel:
    """A network in eval mode and its preprocessing; unpacks as ``model, preprocess = effnas.load(path)``."""

    model: nn.Module
    preprocessing: Preprocessing
    spec: ArchSpec | ReferenceSpec
    trained: bool  # False for a spec without weights (a search's best.json): freshly initialised
    source: Path | str
    data: str | None = None  # the data source the weights were trained on

    def __iter__(self) -> Iterator[Any]:
        yield self.model
        yield self.preprocessing

    @torch.no_grad()
    def logits(self, images: Any) -> torch.Tensor:
        """The network's outputs for raw images (preprocessed here)."""
        return self.model(self.preprocessing(images))

    def predict(self, images: Any) -> torch.Tensor:
        """The class index of each image."""
        return self.logits(images).argmax(dim=1)


def load(path: str | Path, *, data: str | None = None) -> LoadedModel:
    """The network at ``path``, in eval mode on the CPU: a training run's folder or its ``final.pt`` (trained
    weights, EMA), a ``last.pt`` checkpoint, or a spec without weights (a spec JSON, a search's ``best.json`` or
    run directory, a zoo name). ``data`` names where the training data is now when it has moved (its statistics
    are the input normalisation)."""
    target = Path(str(path)).expanduser()
    if target.is_dir():
        if (target / "final.pt").is_file():
            return _from_checkpoint(target / "final.pt", data)
        if (target / "last.pt").is_file():
            raise LoadError(f"{target}: no final.pt yet (the run has not finished); resume it, or load "
                            f"{target / 'last.pt'} for its latest checkpoint")
        if not (target / "best.json").is_file():
            raise LoadError(f"{target}: neither a training run (final.pt) nor a search run (best.json)")
        return _untrained(load_arch(target), target)
    if target.suffix == ".pt" or (target.is_file() and target.suffix != ".json"):
        return _from_checkpoint(target, data)
    if target.suffix == ".json" and target.is_file():  # a spec, or a file wrapping one: best.json, metrics.json
        found = parse_json(read_input(target, "spec JSON file", LoadError), str(target), LoadError)
        if isinstance(found, dict) and isinstance(found.get("spec"), dict):
            found = found["spec"]
        if not isinstance(found, dict):
            raise LoadError(f"{target}: expected a spec (a JSON object), got {type(found).__name__}")
        try:
            return _untrained(spec_from_data(found), target)
        except (SpecError, TypeError) as error:
            raise LoadError(f"{target}: {error}") from None
    if str(path).strip().lower() in REFERENCE_NETWORKS:
        return _untrained(ReferenceSpec(str(path).strip().lower()), str(path))
    try:
        return _untrained(load_arch(path), target if target.exists() else str(path))
    except SpecError as error:
        raise LoadError(f"{error} (or give a training run's folder or final.pt)") from None


def _untrained(spec: ArchSpec | ReferenceSpec, source: Path | str) -> LoadedModel:
    """A spec's network with fresh weights; no data, so no statistics: mean 0, std 1 (inputs pass unchanged)."""
    model = build_model(spec).eval()
    channels = spec.image_channels
    prep = Preprocessing(spec.eval_image_size, channels, (0.0,) * channels, (1.0,) * channels)
    return LoadedModel(model, prep, spec, trained=False, source=source)


def _from_checkpoint(path: Path, data: str | None) -> LoadedModel:
    from effnas.nas.training.state import CheckpointError, load_checkpoint

    if not path.is_file():
        raise LoadError(f"{path}: no such file")
    try:
        state = load_checkpoint(path, torch.device("cpu"))
    except CheckpointError as error:
        raise LoadError(str(error).replace("no checkpoint to resume from (train once without --resume)",
                                           "no checkpoint")) from None
    if not isinstance(state.get("spec"), dict) or "model" not in state:
        raise LoadError(f"{path}: a checkpoint without a spec and weights")
    try:
        spec = spec_from_data(state["spec"])
    except (SpecError, TypeError) as error:
        raise LoadError(f"{path}: its spec cannot be read ({error})") from None
    model = build_model(spec)
    weights = state.get("ema") or state["model"]  # last.pt keeps both: the EMA weights are what final.pt holds
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LoadError(f"{path}: its weights do not fit its spec ({first})") from None
    config = state.get("config") if isinstance(state.get("config"), dict) else {}
    source = data or config.get("data")
    mean, std = _statistics(path, state, config, source)
    prep = Preprocessing(spec.eval_image_size, spec.image_channels, mean, std)
    return LoadedModel(model.eval(), prep, spec, trained=True, source=path, data=source)


def _statistics(path: Path, state: dict[str, Any], config: dict[str, Any],
                source: str | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The training split's per-channel mean and std: stored with the weights where a run stored them, else
    computed again from the recorded source, seed and validation fraction (the very split the run trained on)."""
    if "mean" in state and "std" in state:
        return tuple(float(v) for v in state["mean"]), tuple(float(v) for v in state["std"])
    if not isinstance(source, str):
        raise LoadError(f"{path}: the checkpoint records no training data, so no input normalisation; give "
                        "data=SOURCE (nas export --data)")
    from effnas.nas.training.augment import channel_stats
    from effnas.nas.training.data import load_data

    try:
        split = load_data(source, seed=int(config.get("seed", 0)), val_fraction=float(config.get("val_fraction", 0.2)))
    except EffnasError as error:
        raise LoadError(f"{path}: its input normalisation is the statistics of its training data, which cannot be "
                        f"read now ({error}); give data=SOURCE (nas export --data) where it is now") from None
    mean, std = channel_stats(split.train_x)
    values = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if not all(math.isfinite(v) for part in values for v in part):
        raise LoadError(f"{path}: the statistics of {source} are not finite")
    return values


def sample_images(loaded: LoadedModel, count: int = 16) -> tuple[torch.Tensor, str]:
    """A batch to check an export on, resized and in [0, 1]: the first validation images of the data the network
    was trained on, when it has any and can be read, else deterministic noise. Returns it and where it came from."""
    if loaded.data is not None:
        from effnas.nas.training.data import load_data

        try:
            split = load_data(loaded.data)
        except EffnasError:
            split = None
        if split is not None and split.channels == loaded.preprocessing.channels and len(split.val_y):
            return loaded.preprocessing.resize(split.val_x[:count]), f"{min(count, len(split.val_y))} validation " \
                                                                     f"images of {loaded.data}"
    size, channels = loaded.preprocessing.image_size, loaded.preprocessing.channels
    noise = torch.rand((count, channels, size, size), generator=torch.Generator().manual_seed(0))
    return noise, f"{count} deterministic random images"
