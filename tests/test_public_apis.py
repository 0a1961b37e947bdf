"""MLflow and Optuna through their supported interfaces only (README "Development").

Every import in ``study/`` is read with :mod:`ast`: no module imports a private module of MLflow
or Optuna (a path component starting with ``_``), MLflow's store or utility internals, or reaches
into the private attributes of their objects, except the one read-only trial reader
(``study/storages/_sqlread.py``), which falls back to Optuna's API on a layout it does not know.
The checker's own tests plant violations in a throw-away tree, so a checker that let everything
through would fail here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

# The one module allowed to read Optuna's tables (read-only, twin-tested, with a fallback).
READER = "study/storages/_sqlread.py"
# MLflow packages that are implementation, not API, even where their names have no underscore.
MLFLOW_INTERNALS = ("mlflow.store", "mlflow.utils", "mlflow.tracking.fluent",
                    "mlflow.tracking._tracking_service", "mlflow.server")
# Private attributes of MLflow and Optuna objects that the code once reached into.
PRIVATE_ATTRIBUTES = {"_storage", "_trial_id", "_cached_frozen_trial", "_backend",
                      "_tracking_client", "_study_id", "_get_trials", "_get_stale_trial_ids",
                      "_create_scoped_session"}
# Loggers of private modules: their messages are not an interface.
PRIVATE_LOGGER_PREFIXES = ("optuna.study._", "optuna.storages._", "mlflow.store")


def _private_module(name: str) -> bool:
    parts = name.split(".")
    if parts[0] not in ("mlflow", "optuna"):
        return False
    return (any(p.startswith("_") for p in parts[1:])
            or any(name == m or name.startswith(m + ".") for m in MLFLOW_INTERNALS))


def findings(root: Path) -> list[str]:
    """``path:line: what`` for every use of a private interface under ``root/study``."""
    found = []
    for path in sorted((root / "study").rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if relative == READER:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=relative)):
            where = f"{relative}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                found += [f"{where}: import {a.name}" for a in node.names
                          if _private_module(a.name)]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names
                                         if node.module in ("mlflow", "optuna")]
                found += [f"{where}: from {n}" for n in names if _private_module(n)]
            elif isinstance(node, ast.Attribute) and node.attr in PRIVATE_ATTRIBUTES:
                found += [f"{where}: .{node.attr}"]
            elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and node.value.startswith(PRIVATE_LOGGER_PREFIXES)):
                found += [f"{where}: {node.value!r}"]
    return found


def test_the_code_uses_only_public_mlflow_and_optuna_interfaces():
    assert findings(REPO) == []


def test_only_the_reader_touches_optunas_tables():
    reader = (REPO / READER).read_text()
    assert "optuna.storages._rdb" in reader  # the exception is real, and it is this module
    writes = [w for w in ("insert(", "update(", "delete(", ".begin()") if w in reader]
    assert writes == [], "the reader must stay read-only"


@pytest.mark.parametrize("planted", [
    "from optuna.storages._rdb import models\n",
    "import mlflow.store.tracking.sqlalchemy_store\n",
    "from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID\n",
    "from mlflow.tracking.fluent import get_active_model_id\n",
    "from optuna import _imports\n",
    "def f(trial):\n    return trial._trial_id\n",
    "def f(study):\n    return study._storage.get_trial(0)\n",
    "import logging\nlogging.getLogger('optuna.study._optimize')\n",
])
def test_the_checker_catches_a_planted_private_use(tmp_path, planted):
    (tmp_path / "study" / "runtime").mkdir(parents=True)
    (tmp_path / "study" / "runtime" / "planted.py").write_text(planted)
    assert len(findings(tmp_path)) == 1


@pytest.mark.parametrize("allowed", [
    "from mlflow import MlflowClient\n",
    "from mlflow.entities import Metric, Param, RunTag\n",
    "from mlflow.exceptions import MlflowException\n",
    "import optuna\nfrom optuna.storages import RetryFailedTrialCallback\n",
    "from optuna.trial import FrozenTrial, TrialState\n",
    "def f(trial):\n    return trial.number, trial.study.trials\n",
])
def test_the_checker_lets_public_interfaces_through(tmp_path, allowed):
    (tmp_path / "study" / "runtime").mkdir(parents=True)
    (tmp_path / "study" / "runtime" / "ok.py").write_text(allowed)
    assert findings(tmp_path) == []
