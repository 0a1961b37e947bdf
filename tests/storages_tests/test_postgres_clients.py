"""One PostgreSQL URL for every client: the study written through the service is read by
Optuna's own CLI from the project's environment, with the bare ``postgresql://`` URL (psycopg 3,
the ``postgres`` extra's driver). Real PostgreSQL; fails under CI=true when it is missing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna

from study.storages import create_storage
from tests.servers import postgres_database, postgres_url


def test_optunas_cli_reads_a_study_the_service_wrote_with_the_same_bare_url():
    with postgres_database() as name:
        url = postgres_url(name)
        assert url.startswith("postgresql://")  # no driver named
        storage = create_storage(url)
        study = optuna.create_study(study_name="shared", storage=storage)
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
        storage.engine.dispose()
        optuna_cli = Path(sys.executable).with_name("optuna")
        out = subprocess.run([str(optuna_cli), "trials", "--study-name", "shared", "--storage",
                              url, "-f", "json"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        rows = json.loads(out.stdout)
        assert sorted(row["number"] for row in rows) == [0, 1, 2]
        assert {row["state"] for row in rows} == {"COMPLETE"}


def test_the_service_names_no_driver_when_psycopg_3_is_installed():
    from study.storages._urls import _with_driver

    url = "postgresql://postgres@127.0.0.1:5432/db"
    assert _with_driver(url) == url
