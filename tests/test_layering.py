"""Imports run one way (README "Development"): every import in ``study/`` (module level or
inside a function) goes to the same package or to a lower layer, and ``training/`` imports
neither Optuna nor MLflow. The CLI loads neither torch nor MLflow for ``--help``, ``status`` or a
bad flag, and the statistics of ``analysis/`` load none of torch, MLflow and Optuna.

The checker reads the source with :mod:`ast` and runs nothing; its own tests below plant
violations in a throw-away tree, so a checker that let everything through would fail here.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import REPO, cli_env

# Lowest first. A module may import its own package and any lower layer; packages that share
# a layer (analysis and landscape) stay out of each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("study.errors", "study.keys", "study._lazy"),
    ("study._validation", "study.redact", "study._text", "study._signals"),
    ("study._coerce",),
    ("study.training",),
    ("study.storages",),
    ("study.tracking",),
    ("study.config",),
    ("study.runtime",),
    ("study.analysis", "study.landscape"),
    ("study.report",),
    ("study.doctor",),
    ("study.explain", "study._cli_options"),
    ("study._cli_doctor",),
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


# --- light imports: the CLI answers --help, status and bad flags without torch or MLflow, and
# the statistics of analysis/ load none of torch, MLflow and Optuna (README "Development") ----

CLI_MODULES = ("study.cli", "study.__main__")
CLI_FORBIDDEN = ("torch", "mlflow")
# The analysis modules that read the stores; every other one does numbers only.
STORE_READERS = ("study.analysis.sources", "study.analysis.command")
STATISTICS_FORBIDDEN = ("torch", "mlflow", "optuna")


def statistics_modules(root: Path) -> list[str]:
    """Every module of ``study/analysis`` but the store readers (new ones are included)."""
    names = [module_name(p, root) for p in sorted((root / "study" / "analysis").glob("*.py"))]
    return [n for n in names if n not in STORE_READERS]


def _is_type_checking(node: ast.stmt) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return isinstance(test, ast.Name | ast.Attribute) and ast.unparse(test).endswith(
        "TYPE_CHECKING")


def _module_level(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """The imports a module runs when it is imported: not those in functions or classes, nor
    under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If) and not _is_type_checking(node):
            found += _module_level(node.body) + _module_level(node.orelse)
        elif isinstance(node, ast.Try | ast.With):
            blocks = [node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])]
            blocks += [h.body for h in getattr(node, "handlers", [])]
            found += [i for block in blocks for i in _module_level(block)]
    return found


def _source(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _lazy_exports(root: Path, package: str) -> dict[str, str]:
    """A package's PEP 562 table ``_EXPORTS = {name: module}`` (empty when it has none)."""
    path = _source(root, package)
    for node in ast.parse(path.read_text()).body if path else []:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "_EXPORTS":
            return ast.literal_eval(node.value)
    return {}


def _targets(root: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules an import loads: the named one, or for ``from pkg import name`` the
    submodule ``name`` or the module that ``pkg`` exports it from lazily."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level or not node.module:
        return []
    if not node.module.startswith("study"):
        return [node.module]
    found = [node.module]
    for alias in node.names:
        sub = f"{node.module}.{alias.name}"
        found.append(sub if _source(root, sub) else
                     _lazy_exports(root, node.module).get(alias.name, node.module))
    return found


def heavy_imports(root: Path, module: str, forbidden: Sequence[str]) -> list[str]:
    """Chains of module-level imports from ``module`` (parent packages included) to a
    ``forbidden`` package, e.g. ``study.analysis.regression -> study.analysis.table -> optuna``."""
    found, seen, todo = [], set(), [(module, (module,))]
    while todo:
        name, chain = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name.split(".")[0] in forbidden:
            found.append(" -> ".join(chain))
            continue
        parts = name.split(".")
        todo += [(p, (*chain, p)) for p in (".".join(parts[:i]) for i in range(1, len(parts)))]
        path = _source(root, name) if name.split(".")[0] == "study" else None
        for node in _module_level(ast.parse(path.read_text()).body) if path else []:
            todo += [(t, (*chain, t)) for t in _targets(root, node) if t not in seen]
    return sorted(found)


@pytest.mark.parametrize("module", CLI_MODULES)
def test_the_cli_imports_neither_torch_nor_mlflow_when_it_loads(module):
    assert heavy_imports(REPO, module, CLI_FORBIDDEN) == []


def test_the_statistics_of_analysis_import_neither_torch_mlflow_nor_optuna():
    modules = statistics_modules(REPO)
    assert {"study.analysis.regression", "study.analysis.estimate"} <= set(modules)
    found = [chain for m in modules for chain in heavy_imports(REPO, m, STATISTICS_FORBIDDEN)]
    assert found == []


def _loaded_by(code: str, cwd: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          env=cli_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_a_fresh_process_importing_the_cli_loads_neither_torch_nor_mlflow(tmp_path):
    code = ("import json, sys; import study.cli; "
            f"print(json.dumps(sorted({{*{CLI_FORBIDDEN!r}}} & set(sys.modules))))")
    assert _loaded_by(code, tmp_path) == []


def test_a_fresh_process_importing_the_statistics_loads_none_of_torch_mlflow_optuna(tmp_path):
    # Imported one by one: a heavy package is blamed on the first module that loaded it.
    code = ("import importlib, json, sys\nfound = {}\n"
            f"for m in {statistics_modules(REPO)!r}:\n"
            "    importlib.import_module(m)\n"
            f"    found[m] = sorted({{*{STATISTICS_FORBIDDEN!r}}} & set(sys.modules))\n"
            "print(json.dumps(found))")
    loaded = _loaded_by(code, tmp_path)
    assert {m: found for m, found in loaded.items() if found} == {}


# Real commands in fresh processes; `-X importtime` lists every module each one loaded.
COMMANDS = {
    "help": (["--help"], 0, "Commands:"),
    "run_help": (["run", "--help"], 0, "--n-trials"),
    "bad_value": (["run", "--lr-min", "-1"], 1, "`lr_min` must be > 0"),
    "bad_type": (["run", "--epochs", "x"], 2, "'x' is not a whole number"),
    "bad_workers": (["run", "--workers", "0"], 1, "`workers` must be >= 1"),
    "bad_trials_per_gpu": (["run", "--trials-per-gpu", "0"], 1, "`trials_per_gpu` must be > 0"),
    "bad_sampler": (["worker", "--sampler", "x"], 1, "`sampler` must be one of"),
    "bad_width": (["trial", "--width", "0"], 1, "`width` must be > 0"),
    "missing_npz": (["run", "--dataset", "npz:missing.npz"], 1,
                    "`dataset` must name an existing .npz file"),
    "missing_folder": (["doctor", "--dataset", "imagefolder:missing"], 1,
                       "`dataset` must name a folder of class sub-folders"),
    "bad_storage": (["status", "--storage", "notaurl"], 1, "`storage` must be"),
    "bad_compare_widths": (["analyze", "--compare-widths", "5,2"], 1, "`compare_widths` must"),
    "bad_evaluator": (["report", "--evaluators", "shap"], 1, "`evaluators` must be names among"),
    "bad_replicates": (["explain", "--replicates", "0"], 1, "`replicates` must be an integer"),
    "bad_dim": (["landscape", "--dim", "3"], 1, "`dim` must be 1 or 2"),
    "bad_between": (["landscape", "--between", "3"], 1, "`between` must be two different"),
    "status": (["status", "--storage", "sqlite:///optuna.db", "--study-name", "s"], 0,
               "trials: 0 running"),
}
_IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def command_runs(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, set[str]]]:
    """Each command run once by ``python -m study``, concurrently, in an empty folder beside
    one study of no trials (for ``status``)."""
    cwd = tmp_path_factory.mktemp("commands")
    import optuna

    from study.config import StudyConfig
    from study.keys import CONFIG_ATTR

    storage = "sqlite:///optuna.db"
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{cwd / 'optuna.db'}")
    study.set_user_attr(CONFIG_ATTR, StudyConfig(study_name="s", storage=storage).study_settings())

    def run(args: list[str]) -> tuple[subprocess.CompletedProcess, set[str]]:
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "study", *args],
                              cwd=cwd, env=cli_env(), capture_output=True, text=True,
                              timeout=120)
        return proc, {m.split(".")[0] for m in _IMPORTED.findall(proc.stderr)}

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {case: pool.submit(run, args) for case, (args, _, _) in COMMANDS.items()}
        return {case: future.result() for case, future in futures.items()}


@pytest.mark.parametrize("case", COMMANDS)
def test_help_status_and_bad_flags_load_neither_torch_nor_mlflow(command_runs, case):
    proc, loaded = command_runs[case]
    _, code, text = COMMANDS[case]
    assert (proc.returncode, text in proc.stdout + proc.stderr) == (code, True), proc.stderr[-800:]
    assert "click" in loaded  # the import list was read
    assert loaded & set(CLI_FORBIDDEN) == set()


def test_no_lazily_exported_name_is_also_a_submodule():
    # Once the submodule is imported it becomes the package's attribute, and the name would
    # give the module instead of the function (`study.analysis.analyze`).
    for init in (REPO / "study").rglob("__init__.py"):
        package = module_name(init, REPO)
        clashes = [name for name in _lazy_exports(REPO, package)
                   if _source(REPO, f"{package}.{name}")]
        assert clashes == [], f"{package} exports {clashes} lazily"


def test_every_name_a_package_exports_lazily_resolves():
    for init in (REPO / "study").rglob("__init__.py"):
        package = importlib.import_module(module_name(init, REPO))
        assert set(_lazy_exports(REPO, package.__name__)) <= set(package.__all__)
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"


# -- the light-import checker itself ---------------------------------------------------------------
def test_checker_follows_a_chain_of_module_level_imports(tmp_path):
    root = plant(tmp_path, {"study/analysis/__init__.py": "",
                            "study/analysis/regression.py": "from study.analysis.table import x\n",
                            "study/analysis/table.py": "import numpy\nimport optuna.trial\n"})
    assert statistics_modules(root) == ["study.analysis", "study.analysis.regression",
                                        "study.analysis.table"]
    assert heavy_imports(root, "study.analysis.regression", STATISTICS_FORBIDDEN) == [
        "study.analysis.regression -> study.analysis.table -> optuna.trial"]


def test_checker_follows_a_name_a_package_exports_lazily(tmp_path):
    exports = '_EXPORTS = {"Net": "study.training.net"}\n'
    root = plant(tmp_path, {"study/training/__init__.py": exports,
                            "study/training/net.py": "if True:\n    import torch\n",
                            "study/cli.py": "from study.training import Net\n"})
    assert heavy_imports(root, "study.cli", CLI_FORBIDDEN) == [
        "study.cli -> study.training.net -> torch"]


def test_checker_finds_a_heavy_import_in_a_parent_package(tmp_path):
    root = plant(tmp_path, {"study/analysis/__init__.py": "import mlflow\n",
                            "study/analysis/span.py": ""})
    assert heavy_imports(root, "study.analysis.span", STATISTICS_FORBIDDEN) == [
        "study.analysis.span -> study.analysis -> mlflow"]


def test_checker_accepts_imports_in_functions_and_for_type_checking(tmp_path):
    root = plant(tmp_path, {"study/cli.py": (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n"
        "def f():\n    import mlflow\nclass C:\n    def g(self):\n        import torch\n")})
    assert heavy_imports(root, "study.cli", CLI_FORBIDDEN) == []
