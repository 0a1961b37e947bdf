"""Fixtures of the report tests: hand-built inputs (no Optuna, no MLflow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.report_tests.factory import make_analysis, make_importance, make_meta, make_table


@pytest.fixture
def inputs() -> dict[str, Any]:
    """Keyword arguments of ``write_report`` for a 60-trial study."""
    table = make_table(60)
    return {"analysis": make_analysis(), "table": table, "importance": make_importance(),
            "meta": make_meta(table=table)}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Path],
                                                                Path]:
    """One report of a 60-trial study, shared by the read-only tests of a module."""
    from study.report import write_report

    table = make_table(60)
    inputs = {"analysis": make_analysis(), "table": table, "importance": make_importance(),
              "meta": make_meta(table=table)}
    out = tmp_path_factory.mktemp("report") / "out"
    return inputs, write_report(out, **inputs), out


@pytest.fixture
def empty_importance() -> pd.DataFrame:
    return pd.DataFrame(columns=["target", "evaluator", "evaluator_seed", "bootstrap_seed",
                                 "n_trials", "n_bootstrap", "param", "importance", "ci_lo",
                                 "ci_hi", "derived", "error"])
