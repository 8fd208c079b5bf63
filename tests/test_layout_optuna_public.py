"""Product code uses Optuna's public API only: a private name (``study._storage``, ``trial._trial_id``,
``optuna.storages._rdb``) is free to change in any Optuna release, so one found in the product's packages fails
here, naming the file and line."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("effnas", "search_space", "models", "scaling", "results", "nas")


def _private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


# A private name Optuna defines: an attribute it assigns on ``self``, or a function or class of its own.
_DEFINED = re.compile(r"self\.(_[A-Za-z]\w*)\s*(?::[^=\n]*)?=(?!=)|(?:def|class)\s+(_[A-Za-z]\w*)")


@functools.lru_cache(maxsize=1)
def optuna_private_names() -> frozenset[str]:
    """Every private attribute, function and class name Optuna's own source defines (read as text: parsing all
    of it would cost seconds)."""
    names = {first or second for path in Path(optuna.__file__).parent.rglob("*.py")
             for first, second in _DEFINED.findall(path.read_text(encoding="utf-8"))}
    return frozenset(name for name in names if _private(name))


def private_optuna_uses(source: str) -> list[tuple[int, str]]:
    """(line, what) for each private Optuna module imported, private name imported from Optuna, or Optuna private
    attribute read off anything but the code's own ``self`` or ``cls``."""
    found = []
    private = optuna_private_names()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "optuna":
            if any(_private(part) for part in node.module.split(".")):
                found.append((node.lineno, f"from {node.module} import ..."))
            found += [(node.lineno, f"from {node.module} import {alias.name}")
                      for alias in node.names if _private(alias.name)]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, f"import {alias.name}") for alias in node.names
                      if alias.name.split(".")[0] == "optuna" and any(_private(p) for p in alias.name.split("."))]
        elif isinstance(node, ast.Attribute) and node.attr in private:
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append((node.lineno, f"._{node.attr.lstrip('_')}"))
    return found


def test_the_scan_finds_each_kind_of_private_use():
    source = ("from optuna.storages._rdb import models\n"
              "import optuna.storages._rdb.models\n"
              "from optuna.samplers import _base\n"
              "storage = study._storage\n"
              "number = trial._trial_id + study._study_id\n"
              "self._storage = None\n")
    assert [line for line, _ in private_optuna_uses(source)] == [1, 2, 3, 4, 5, 5]


def test_product_code_uses_no_private_optuna_name():
    found = [f"{path.relative_to(ROOT)}:{line}: {what}"
             for folder in PRODUCT for path in sorted((ROOT / folder).rglob("*.py"))
             for line, what in private_optuna_uses(path.read_text(encoding="utf-8"))]
    assert not found, "private Optuna names (use Optuna's public API):\n" + "\n".join(found)
