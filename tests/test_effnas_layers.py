"""The house's floors, checked from the code: no import runs from a lower layer to a higher one, no module
imports itself round a circle, and the spec layer works without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"effnas": "effnas", "search_space": "effnas.search_space", "models": "effnas.models",
           "scaling": "effnas.scaling", "results": "effnas.results", "nas": "effnas.nas"}

# Lowest first. A module may import its own layer's modules and lower layers' only. The package's face, ``effnas``
# itself, sits on top: it re-exports the Python API, loading it on first use.
LAYERS = (
    ("effnas.errors", "effnas.writes", "effnas.outputs", "effnas.lazy"),
    ("effnas.search_space",),
    ("effnas.models",),
    ("effnas.scaling", "effnas.nas.training"),
    ("effnas.results",),
    ("effnas.nas.search",),
    ("effnas.api", "effnas.inference", "effnas.exporting", "effnas.run_config"),
    ("effnas.nas.cli", "effnas.nas.__main__", "effnas.nas", "effnas"),
)


def project_modules() -> dict[str, Path]:
    modules = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


MODULES = project_modules()


def layer_of(module: str) -> int:
    best, level = "", -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, level = prefix, index
    assert level >= 0, f"{module} belongs to no layer: add it to LAYERS"
    return level


def imports_of(module: str) -> set[str]:
    """Every project module that ``module`` imports, at the top or inside a function (both are dependencies)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def test_every_module_is_in_a_layer():
    for module in MODULES:
        layer_of(module)


def test_no_import_runs_up_a_layer():
    upward = sorted(f"{module} -> {target}" for module, targets in GRAPH.items() for target in targets
                    if layer_of(target) > layer_of(module))
    assert upward == []


def test_no_import_circle():
    """Depth-first search over the module graph; a back edge is a circle. A package's face (``__init__``)
    counts as a module: a submodule that imports its own package's face closes a circle through it."""
    state: dict[str, int] = {}
    circles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                circles.append(" -> ".join(path[path.index(target):] + [target]) if target in path else target)
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_spec_layer_needs_no_torch(tmp_path):
    """Specs, block strings, the published models, uniform scaling and the search space load and validate
    in a process where importing torch fails."""
    script = tmp_path / "no_torch.py"
    script.write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is blocked in this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from effnas.search_space import (SpecError, default_space, get_spec, load_arch, scale_uniform,\n"
        "                                 spec_from_dict, zoo_names)\n"
        "spec = get_spec('efficientnetv2-s')\n"
        "assert spec_from_dict(spec.to_dict()) == spec\n"
        "assert scale_uniform(spec, 2.0, 2.0).stages[0].out_channels > spec.stages[0].out_channels\n"
        "space = default_space()\n"
        "assert space.backbone.stages\n"
        "try:\n"
        "    spec_from_dict({'stages': [], 'stem_channels': 0})\n"
        "except SpecError:\n"
        "    pass\n"
        "else:\n"
        "    raise AssertionError('a bad spec was accepted')\n"
        "assert 'torch' not in sys.modules\n"
        "print(len(zoo_names()))\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]



@pytest.mark.slow  # a whole search in its own process
def test_a_cpu_search_process_never_imports_torch(tmp_path):
    """``nas search --device cpu`` only proposes candidates and records them: its workers train, so its own
    process starts without paying for torch (the workers still import it, and the search completes)."""
    (tmp_path / "space.json").write_text('{"width": 0.25, "depth": 0.25, "image_size": 32, "head_channels": 16}')
    script = (
        "import sys\n"
        "from effnas.nas.cli.main import main\n"
        f"rc = main(['search', '--data', 'synthetic:200x16', '--epochs', '1', '--batch-size', '32', '--workers', '1',"
        f" '--threads', '1', '--space', {str(tmp_path / 'space.json')!r}, '--device', 'cpu', '--controller', 'random',"
        f" '--quiet', '--budget', '1', '--out', {str(tmp_path / 'run')!r}])\n"
        "print(rc, 'torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["0", "False"], result.stdout[-500:]
    assert (tmp_path / "run" / "best.json").is_file()

@pytest.mark.parametrize("folder", ["search_space", "models", "scaling", "results", "nas"])
def test_installed_names_are_under_the_effnas_namespace(folder):
    """What pip installs maps each repository folder into ``effnas.``: no generic top-level name."""
    import importlib

    module = importlib.import_module(FOLDERS[folder])
    assert Path(module.__file__).resolve().parent == (ROOT / folder).resolve()
