"""Every input is checked before a store is opened: a bad one leaves no file behind. The real
``study`` command in an empty folder, with the default (relative) store paths."""

from __future__ import annotations

import pytest

from tests.conftest import cli_env, run_cli
from tests.servers import stderr_lines

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("clean_env")]


RUN = ["run", "--n-trials", "1", "--epochs", "1", "--device", "cpu"]


@pytest.mark.parametrize(("argv", "error"), [
    ([*RUN, "--dataset", "npz:/nonexistent.npz"],
     "error: `dataset` must name an existing .npz file"),
    ([*RUN, "--batch-sizes", "100000"], "error: `batch_sizes` must be <= the"),
    # The Optuna file's folder is checked before MLflow's file is created beside the command.
    ([*RUN, "--storage", "sqlite:///missing/optuna.db"],
     "error: `storage` could not be opened: sqlite:///missing/optuna.db: "),
    ([*RUN, "--storage", "journal:missing/optuna.journal"],
     "error: `storage` could not be opened: journal:missing/optuna.journal: "),
    (["trial", "--epochs", "1", "--device", "cpu", "--batch-size", "100000"],
     "error: `batch_size` must be <= the"),
    # MLflow would make the folders: a typo would log the study to a database nobody opens.
    ([*RUN, "--tracking-uri", "sqlite:///missing/mlflow.db"],
     "error: `tracking_uri` could not be opened: sqlite:///missing/mlflow.db: "),
    (["trial", "--epochs", "1", "--device", "cpu", "--tracking-uri",
      "sqlite:///missing/mlflow.db"],
     "error: `tracking_uri` could not be opened: sqlite:///missing/mlflow.db: "),
    # Found by users: MLflow answered these with a paragraph on its file store or its model
    # registry; a raw '@' in a password made psycopg name the password's second half as a host.
    ([*RUN, "--tracking-uri", "127.0.0.1:5077"],
     "error: `tracking_uri` must be http(s)://HOST:PORT, sqlite:///FILE or a database URL "
     "(postgresql://...), but got tracking_uri='127.0.0.1:5077' (did you mean "
     "http://127.0.0.1:5077?)."),
    ([*RUN, "--tracking-uri", "./mlruns"],
     "error: `tracking_uri` must be http(s)://HOST:PORT, sqlite:///FILE or a database URL "
     "(postgresql://...), but got tracking_uri='./mlruns' (a folder of MLflow's file store, "
     "which is not supported: a local store is sqlite:///mlflow.db)."),
    ([*RUN, "--storage", "postgresql://u:pa@ss@127.0.0.1:5432/db"],
     "error: `storage` must be a URL whose user name and password write '@' as %40 "
     "(percent-encoded), but got storage='postgresql://u:***@127.0.0.1:5432/db'."),
])
def test_a_bad_input_leaves_no_store_behind(argv, error, tmp_path):
    proc = run_cli(argv, cwd=tmp_path, env=cli_env(), timeout=300)

    assert proc.returncode == 1, proc.stderr
    (line,) = stderr_lines(proc.stderr)
    assert line.startswith(error), line
    assert sorted(p.name for p in tmp_path.iterdir()) == []
