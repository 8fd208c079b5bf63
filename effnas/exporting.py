"""A trained network out to a serving runtime: ONNX or TorchScript, checked against torch as it is written.

The exported graph takes float32 images ``[batch, C, S, S]`` with values in [0, 1] (the eval image size ``S`` and
the channels ``C`` of the run; the batch axis is dynamic) and returns logits ``[batch, classes]``. **The input
normalisation is built into the graph** (the training split's per-channel mean and std), so a user only resizes
and scales the pixels; it is also recorded in the file's metadata (ONNX ``metadata_props``, a TorchScript
archive's ``extra/effnas.json``) with the image size, channels, classes and the spec.

Every export is verified before it takes its name: the written file, run through onnxruntime (ONNX) or loaded back
with ``torch.jit.load`` (TorchScript), must give torch's logits within :data:`TOLERANCE` on a batch of real images
of the run's data (deterministic noise when there is none), at another batch size than the one traced. A mismatch
is an :class:`ExportError`, and the file is not written.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effnas.errors import EffnasError
from effnas.inference import LoadedModel, load, sample_images
from effnas.outputs import claim_output
from effnas.writes import atomic_write

FORMATS = {"onnx": "onnx-model", "torchscript": "torchscript-model"}  # format -> its kind in effnas.outputs
TOLERANCE = 1e-4  # largest |exported - torch| of a logit, relative to the logit where it is above 1
ONNX_OPSET = 17
TRACE_BATCH = 2  # the example batch the graph is traced with; the check uses another size
METADATA_FILE = "effnas.json"  # a TorchScript archive's extra file (effnas.outputs recognises it)
PRODUCER = "effnas"  # an ONNX file's producer_name (effnas.outputs recognises it)
INSTALL_HINT = "pip install 'effnas[export]'"


class ExportError(EffnasError):
    """An export that cannot be made as asked, or whose file does not match torch."""


@dataclass(frozen=True)
class ExportResult:
    """The written file and how it was checked."""

    out: Path
    format: str
    metadata: dict[str, Any]
    max_difference: float  # the largest |exported - torch| over the checked logits
    checked_on: str  # which images the check ran on


class Normalised(nn.Module):
    """The network behind its input normalisation: takes images in [0, 1], as the exported graph does."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std)


def export(path: str | Path, *, format: str = "onnx", out: str | Path, force: bool = False,
           data: str | None = None) -> ExportResult:
    """Export the network at ``path`` (a training run's folder, ``final.pt``, or a spec without weights) to
    ``out`` as ``format`` (onnx or torchscript), verified against torch: ``nas export``. ``force`` replaces a file
    effnas wrote for another purpose at ``out`` (never a study or a file of the user's); ``data`` names where the
    training data is now, when it has moved."""
    if format not in FORMATS:
        raise ExportError(f"unknown format {format!r} (choose from {', '.join(FORMATS)})")
    target = claim_output(out, FORMATS[format], "--out", force=force)  # before any work: a study is never replaced
    if format == "onnx":
        _onnx_modules()  # missing: one line naming the extra, before the model is loaded
    loaded = load(path, data=data)
    wrapped = Normalised(loaded.model, loaded.preprocessing.mean, loaded.preprocessing.std).eval()
    images, checked_on = sample_images(loaded)
    if len(images) == TRACE_BATCH:
        images = images[:1]
    metadata = _metadata(loaded, format)
    with torch.no_grad():
        expected = wrapped(images)
    difference: list[float] = []

    def write(tmp: Path) -> None:
        if format == "onnx":
            got = _write_onnx(wrapped, loaded, metadata, tmp, images)
        else:
            got = _write_torchscript(wrapped, loaded, metadata, tmp, images)
        difference.append(_check(got, expected, format, checked_on))

    atomic_write(target, write)
    return ExportResult(Path(out), format, metadata, difference[0], checked_on)


def _metadata(loaded: LoadedModel, format: str) -> dict[str, Any]:
    prep = loaded.preprocessing
    from importlib.metadata import PackageNotFoundError, version

    try:
        effnas_version = version("effnas")
    except PackageNotFoundError:
        effnas_version = "unknown"
    return {
        "format": format, "effnas_version": effnas_version, "torch_version": torch.__version__,
        "input": {"name": "images", "dtype": "float32", "shape": ["batch", prep.channels, prep.image_size,
                                                                  prep.image_size], "range": [0.0, 1.0]},
        "output": {"name": "logits", "shape": ["batch", loaded.spec.num_classes]},
        "normalisation": "in the graph: (images - mean) / std per channel, applied before the network",
        "image_size": prep.image_size, "channels": prep.channels, "mean": list(prep.mean), "std": list(prep.std),
        "num_classes": loaded.spec.num_classes, "trained": loaded.trained, "data": loaded.data,
        "resize": "bilinear, antialiased when shrinking, whole image (no crop)", "spec": loaded.spec.to_dict(),
    }


def _example(loaded: LoadedModel) -> torch.Tensor:
    size, channels = loaded.preprocessing.image_size, loaded.preprocessing.channels
    return torch.rand((TRACE_BATCH, channels, size, size), generator=torch.Generator().manual_seed(1))


def _onnx_modules() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise ExportError(f"ONNX export needs the onnx and onnxruntime packages ({error.name} is missing): "
                          f"{INSTALL_HINT}") from None
    return onnx, onnxruntime


def _write_onnx(wrapped: nn.Module, loaded: LoadedModel, metadata: dict[str, Any], tmp: Path,
                images: torch.Tensor) -> torch.Tensor:
    onnx, onnxruntime = _onnx_modules()
    # PyTorch's TorchScript-based exporter: one self-contained file in about a second; the torch.export-based one
    # needs onnxscript and took ten times as long for the space's backbone.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
            torch.onnx.export(wrapped, (_example(loaded),), str(tmp), input_names=["images"],
                              output_names=["logits"], opset_version=ONNX_OPSET,
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, **legacy)
        except Exception as error:  # an operator the exporter cannot write: one line, not the exporter's stack
            raise ExportError(f"ONNX export failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}") \
                from None
    model = onnx.load(str(tmp))
    model.producer_name, model.producer_version = PRODUCER, metadata["effnas_version"]
    model.doc_string = "effnas export: float32 images [batch, C, S, S] in [0, 1] -> logits; normalisation in graph"
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp))
    session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["logits"], {"images": images.numpy()})[0])


def _write_torchscript(wrapped: nn.Module, loaded: LoadedModel, metadata: dict[str, Any], tmp: Path,
                       images: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            traced = torch.jit.trace(wrapped, _example(loaded), check_trace=False)
        except Exception as error:
            raise ExportError(f"TorchScript export failed: {type(error).__name__}: "
                              f"{str(error).splitlines()[0][:200]}") from None
        torch.jit.save(traced, str(tmp), _extra_files={METADATA_FILE: json.dumps(metadata)})
        reloaded = torch.jit.load(str(tmp), map_location="cpu")
    with torch.no_grad():
        return reloaded(images)


def _check(got: torch.Tensor, expected: torch.Tensor, format: str, checked_on: str) -> float:
    """The largest difference of ``got`` from torch's logits; more than :data:`TOLERANCE` is an error."""
    if got.shape != expected.shape:
        raise ExportError(f"the {format} model's output has shape {list(got.shape)}, torch's {list(expected.shape)}")
    difference = (got.float() - expected).abs()
    worst = float(difference.max()) if difference.numel() else 0.0
    relative = float((difference / expected.abs().clamp_min(1.0)).max()) if difference.numel() else 0.0
    if not relative <= TOLERANCE:  # NaN fails too
        raise ExportError(f"the {format} model's logits differ from torch's by up to {worst:.3g} on {checked_on} "
                          f"(allowed: {TOLERANCE:g}); nothing was written")
    return worst


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata an export recorded (image size, channels, mean, std, spec, ...), from an ONNX or a
    TorchScript file."""
    path = Path(path)
    from effnas.outputs import file_kind

    kind = file_kind(path)
    if kind == FORMATS["onnx"]:
        onnx, _ = _onnx_modules()
        model = onnx.load(str(path), load_external_data=False)
        return {p.key: _json_or_text(p.value) for p in model.metadata_props}
    if kind == FORMATS["torchscript"]:
        extra = {METADATA_FILE: ""}
        with warnings.catch_warnings():  # torch 2.13 marks torch.jit deprecated; the archive format stands
            warnings.simplefilter("ignore")
            torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        return json.loads(extra[METADATA_FILE])
    raise ExportError(f"{path}: not a model nas export wrote")


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value
