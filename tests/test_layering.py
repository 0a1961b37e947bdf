"""Imports run one way (README "Development"): every import in ``study/`` (module level or
inside a function) goes to the same package or to a lower layer, and ``training/`` imports
neither Optuna nor MLflow.

The checker reads the source with :mod:`ast` and runs nothing; its own tests below plant
violations in a throw-away tree, so a checker that let everything through would fail here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

# Lowest first. A module may import its own package and any lower layer; packages that share
# a layer (analysis and landscape) stay out of each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("study.errors", "study.keys"),
    ("study._validation", "study.redact"),
    ("study._coerce",),
    ("study.training",),
    ("study.storages",),
    ("study.tracking",),
    ("study.config",),
    ("study.runtime",),
    ("study.analysis", "study.landscape"),
    ("study.report",),
    ("study.explain", "study._cli_options"),
    ("study.cli",),
    ("study.mlproject", "study.__main__", "study"),
)
# Third-party packages a layer must never import.
FORBIDDEN = {"study.training": ("optuna", "mlflow"), "study.storages": ("mlflow",),
             "study.tracking": ("optuna",)}


def unit_of(module: str) -> str:
    """The layering unit of a dotted module name: its package under ``study`` (or itself)."""
    units = [u for layer in LAYERS for u in layer]
    matches = [u for u in units if module == u or module.startswith(u + ".")]
    if not matches:
        raise KeyError(f"{module} belongs to no layer; add it to LAYERS")
    return max(matches, key=len)


def rank_of(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, dotted name)`` of every import in ``tree``, nested ones included."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            base = node.module
            # `from study import x` names a submodule when x is one.
            found += [(node.lineno, f"{base}.{alias.name}" if base == "study" else base)
                      for alias in node.names]
    return found


def violations(root: Path) -> list[str]:
    """Every import in the ``study`` package under ``root`` that runs against the layers."""
    found = []
    for path in sorted((root / "study").rglob("*.py")):
        source = module_name(path, root)
        unit = unit_of(source)
        for line, target in imported(ast.parse(path.read_text(), filename=str(path))):
            where = f"{path.relative_to(root)}:{line}"
            top = target.split(".")[0]
            if top in FORBIDDEN.get(unit, ()):
                found.append(f"{where} {source} imports {target} ({unit} must not)")
            if top != "study" or target == "study":
                continue
            try:
                other = unit_of(target)
            except KeyError:
                other = unit_of(target.rsplit(".", 1)[0])  # `from study import name`
            if other == unit or other == "study":
                continue
            if rank_of(other) >= rank_of(unit):
                found.append(f"{where} {source} imports {target}: {other} is not below {unit}")
    return found


def test_the_package_imports_run_one_way():
    assert violations(REPO) == []


def test_every_module_belongs_to_a_layer():
    for path in (REPO / "study").rglob("*.py"):
        unit_of(module_name(path, REPO))  # raises for a module no layer names


# -- the checker itself --------------------------------------------------------------------------
def plant(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in {"study/__init__.py": "", **files}.items():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return tmp_path


def test_checker_flags_an_upward_import(tmp_path):
    root = plant(tmp_path, {"study/training/__init__.py": "",
                            "study/training/m.py": "def f():\n    from study.runtime import x\n",
                            "study/runtime/__init__.py": ""})
    (problem,) = violations(root)
    assert "study/training/m.py:2" in problem and "study.runtime is not below" in problem


def test_checker_flags_optuna_in_training(tmp_path):
    root = plant(tmp_path, {"study/training/__init__.py": "import optuna\n"})
    (problem,) = violations(root)
    assert "imports optuna" in problem


def test_checker_flags_a_sideways_import_between_analysis_and_landscape(tmp_path):
    root = plant(tmp_path, {"study/analysis/__init__.py": "from study.landscape import y\n",
                            "study/landscape/__init__.py": ""})
    assert len(violations(root)) == 1


@pytest.mark.parametrize("text", [
    "from study.training import Trainer\n",  # downward
    "from study import keys\n",  # the core layer, imported by name
    "from study.runtime.lifecycle import open_study\n",  # its own package
])
def test_checker_accepts_imports_that_run_down_or_stay_home(tmp_path, text):
    root = plant(tmp_path, {"study/keys.py": "", "study/training/__init__.py": "",
                            "study/runtime/__init__.py": "", "study/runtime/lifecycle.py": "",
                            "study/runtime/m.py": text})
    assert violations(root) == []


# --- sizes: modules under 400 lines, functions under 80 (README "Development") ---------------

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def oversized(root: Path) -> list[str]:
    """Modules over :data:`MAX_MODULE_LINES` and functions over :data:`MAX_FUNCTION_LINES`."""
    found = []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text()
        if len(source.splitlines()) > MAX_MODULE_LINES:
            found.append(f"{path.relative_to(root)}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name}: "
                                 f"{length} lines")
    return found


@pytest.mark.parametrize("folder", ["study", "bench"])
def test_modules_and_functions_stay_small(folder):
    assert oversized(REPO / folder) == []


def test_the_size_check_finds_a_long_module_and_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "long_function.py").write_text(f"def f():\n{body}\n")
    (tmp_path / "long_module.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    (tmp_path / "fine.py").write_text("def g():\n" + "    pass\n" * (MAX_FUNCTION_LINES - 1))
    assert oversized(tmp_path) == ["long_function.py:1 f: 81 lines",
                                   "long_module.py: 401 lines"]
