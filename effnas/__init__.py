"""effnas: training-aware neural architecture search in the style of EfficientNetV2.

Installed, the repository's folders become one namespace, so nothing generic lands at the top of
site-packages: ``search_space/`` is ``effnas.search_space``, ``models/`` is ``effnas.models``, and so on. This
folder is the small core every layer may use: the error base (:mod:`effnas.errors`) and safe file writes
(:mod:`effnas.writes`).

Layers, lowest first; a module imports only from its own layer or lower ones:
    effnas (core) -> search_space (specs, no torch) -> models -> scaling, nas.training -> results
    -> nas.search -> nas.cli
"""

__version__ = "0.1.0"
