"""effnas: training-aware neural architecture search in the style of EfficientNetV2.

Installed, the repository's folders become one namespace, so nothing generic lands at the top of
site-packages: ``search_space/`` is ``effnas.search_space``, ``models/`` is ``effnas.models``, and so on. This
folder is the small core every layer may use: the error base (:mod:`effnas.errors`), safe file writes
(:mod:`effnas.writes`) and the output rule (:mod:`effnas.outputs`); and, on top of everything, the Python API
(:mod:`effnas.api`, :mod:`effnas.inference`, :mod:`effnas.exporting`), re-exported here:

    effnas.search(...), effnas.scale(...), effnas.train(...), effnas.compare(...)   the nas commands
    effnas.load(path)                     a trained network and its preprocessing
    effnas.export(path, format=..., out=...)   to ONNX or TorchScript, verified against torch

The API loads when one of its names is first used, so ``import effnas`` stays fast (no torch).

Layers, lowest first; a module imports only from its own layer or lower ones:
    effnas (core) -> search_space (specs, no torch) -> models -> scaling, nas.training -> results
    -> nas.search -> the Python API -> nas.cli
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# public name -> (module, attribute): loaded on first use (PEP 562)
_API = {
    "search": ("effnas.api", "search"), "scale": ("effnas.api", "scale"), "train": ("effnas.api", "train"),
    "compare": ("effnas.api", "compare"), "SearchResult": ("effnas.api", "SearchResult"),
    "ScaleResult": ("effnas.api", "ScaleResult"), "TrainResult": ("effnas.api", "TrainResult"),
    "CompareResult": ("effnas.api", "CompareResult"),
    "load": ("effnas.inference", "load"), "LoadedModel": ("effnas.inference", "LoadedModel"),
    "Preprocessing": ("effnas.inference", "Preprocessing"),
    "export": ("effnas.exporting", "export"), "ExportResult": ("effnas.exporting", "ExportResult"),
    "EffnasError": ("effnas.errors", "EffnasError"),
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'effnas' has no attribute {name!r}")
    module_name, attribute = _API[name]
    if module_name == "effnas.api":
        from effnas import api as module
    elif module_name == "effnas.inference":
        from effnas import inference as module  # type: ignore[no-redef]
    elif module_name == "effnas.exporting":
        from effnas import exporting as module  # type: ignore[no-redef]
    else:
        from effnas import errors as module  # type: ignore[no-redef]
    value = getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
