"""Scale-out: several worker processes on one study, through the real ``study`` command.

Real parts only: PostgreSQL databases made and dropped per test, an ``mlflow server`` process on
a free loopback port (one per module), ``study run --workers N`` starting real ``study worker``
subprocesses, real (tiny) training on digits. Each study is read back from both stores.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from study.keys import BUDGET_ATTR
from tests.conftest import cli_env, run_cli
from tests.servers import (
    check_scaled_study,
    experiment_runs,
    n_finished,
    postgres_url,
    stderr_lines,
    study_trials,
    study_user_attrs,
    timeline,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("clean_env")]

# About a second per trial on 2 CPU cores.
TINY = ["--epochs", "1", "--width-min", "4", "--width-max", "8", "--batch-sizes", "64",
        "--device", "cpu", "--pruner", "none"]
BUDGET = 6




def _study(args: list[str], cwd: Path, timeout: float = 300) -> tuple[object, float]:
    """Run ``study ARGS``; returns the completed process and its wall-clock seconds."""
    start = time.monotonic()
    proc = run_cli(args, cwd=cwd, env=cli_env(), timeout=timeout)
    return proc, time.monotonic() - start


def _trial_throughput(trials: list[optuna.trial.FrozenTrial]) -> float:
    """Finished trials per second, from the first trial's start to the last one's end."""
    done = [t for t in trials if t.state.is_finished()]
    span = (max(t.datetime_complete for t in done)
            - min(t.datetime_start for t in done)).total_seconds()
    return len(done) / span


# --- two workers on PostgreSQL ------------------------------------------------------------------


def test_two_workers_share_a_postgresql_study_and_throughput(server, new_postgres_database,
                                                             tmp_path, capsys):
    pg_two, pg_one = postgres_url(new_postgres_database()), postgres_url(new_postgres_database())
    common = ["run", "--study-name", "w", "--tracking-uri", server.uri, "--n-trials", str(BUDGET),
              *TINY]

    two, two_seconds = _study([*common, "--workers", "2", "--storage", pg_two,
                               "--experiment", "workers-2"], tmp_path)
    one, one_seconds = _study([*common, "--storage", pg_one, "--experiment", "workers-1"],
                              tmp_path)

    assert two.returncode == 0, two.stderr
    assert one.returncode == 0, one.stderr
    # the budget met; workers that finish at once may pass it (README)
    assert f"/{BUDGET} finished" in two.stdout or f"finished, budget {BUDGET}" in two.stdout
    trials = check_scaled_study(pg_two, server.uri, "workers-2", "w", BUDGET, workers=2)
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2, f"both workers should have run trials: {timeline(trials)}"
    one_trials = check_scaled_study(pg_one, server.uri, "workers-1", "w", BUDGET)

    ratio = _trial_throughput(trials) / _trial_throughput(one_trials)
    with capsys.disabled():
        print(f"\n[workers] {BUDGET} trials: 1 worker {one_seconds:.1f} s wall, 2 workers "
              f"{two_seconds:.1f} s wall (process start-up included); "
              f"throughput_ratio_2_workers={ratio:.2f} (trials/s between first start and "
              f"last end), wall_ratio={one_seconds / two_seconds:.2f}")


# --- journal storage ----------------------------------------------------------------------------


def test_two_workers_on_a_journal_file_meet_the_budget(server, tmp_path):
    storage = f"journal:{tmp_path / 'journal.log'}"

    proc, _ = _study(["run", "--workers", "2", "--storage", storage, "--study-name", "j",
                      "--tracking-uri", server.uri, "--experiment", "journal",
                      "--n-trials", str(BUDGET), *TINY], tmp_path)

    assert proc.returncode == 0, proc.stderr
    # MLflow's "View run" links, one per trial on a server, stay out of the output, and the
    # workers' own summaries too: stdout is the study's one summary (found by a user).
    assert "View run" not in proc.stdout + proc.stderr
    assert "worker done" not in proc.stdout and proc.stdout.count("study 'j': ") == 1
    trials = check_scaled_study(storage, server.uri, "journal", "j", BUDGET, workers=2)
    assert len({t.user_attrs["worker"] for t in trials}) == 2, timeline(trials)


# --- refused worker counts ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def refused_runs(tmp_path_factory, mlflow_template_db) -> dict[str, tuple]:
    """`--workers 2` on SQLite and `--workers 0`, run concurrently, each in its own directory
    (whose tracking store is a copy of the template: untouched means nothing was created)."""
    cases = {"sqlite_two": ["--workers", "2"], "zero": ["--workers", "0"]}
    jobs = {}
    for case, extra in cases.items():
        d = tmp_path_factory.mktemp(f"refused-{case}")
        storage = f"sqlite:///{d / 'optuna.db'}"
        args = ["run", "--storage", storage, "--tracking-uri", f"sqlite:///{d / 'mlflow.db'}",
                "--n-trials", "2", *TINY, *extra]
        jobs[case] = (args, d, storage)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {case: pool.submit(run_cli, args, cwd=d, env=cli_env())
                   for case, (args, d, _) in jobs.items()}
        return {case: (futures[case].result(), *jobs[case][1:]) for case in cases}


def test_workers_with_sqlite_storage_is_refused_in_one_line(refused_runs):
    proc, cwd, _ = refused_runs["sqlite_two"]

    assert proc.returncode == 1, proc.stderr
    (line,) = stderr_lines(proc.stderr)
    assert line.startswith("error: `workers`")
    assert "workers=2" in line
    assert "journal:" in line and "postgresql://" in line
    assert proc.stdout == ""
    assert sorted(p.name for p in cwd.iterdir()) == []  # no optuna.db, no mlflow.db


def test_zero_workers_is_refused_in_one_line(refused_runs):
    proc, cwd, _ = refused_runs["zero"]

    assert proc.returncode == 1, proc.stderr
    (line,) = stderr_lines(proc.stderr)
    assert line.startswith("error: `workers` must be >= 1")
    assert "workers=0" in line
    assert sorted(p.name for p in cwd.iterdir()) == []


# --- `study worker` -----------------------------------------------------------------------------


def test_worker_joins_only_existing_studies_and_takes_their_config_and_budget(
        tmp_path, mlflow_template_db):
    import shutil

    from mlflow import MlflowClient

    shutil.copyfile(mlflow_template_db, tmp_path / "mlflow.db")
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    where = ["--storage", storage, "--tracking-uri", tracking, "--device", "cpu"]

    # 1. No study anywhere: one line, nothing created.
    missing, _ = _study(["worker", "--study-name", "w", *where], tmp_path)
    assert missing.returncode == 1, missing.stderr
    (line,) = stderr_lines(missing.stderr)
    assert line.startswith("error: `storage` must point to an existing study database")
    assert not (tmp_path / "optuna.db").exists()
    assert MlflowClient(tracking).search_runs(["0"]) == []

    # 2. `study run` creates the study: budget 3, epochs 1, width <= 8; its 0.2 s timeout
    #    ends the session after its first trial, leaving the rest of the budget to workers.
    created, _ = _study(["run", "--study-name", "w", "--experiment", "wk", "--n-trials", "3",
                         "--timeout", "0.2", *where, *TINY], tmp_path)
    assert created.returncode == 0, created.stderr
    first = n_finished(study_trials(storage, "w"))
    assert 1 <= first < 3, "the 0.2 s timeout should stop the session after one trial"
    assert study_user_attrs(storage, "w")[BUDGET_ATTR] == 3

    # 3. Another study name in the same storage, and 4. a study-defining flag that differs
    #    from the stored config (both refused before anything runs; run concurrently).
    #    5. The study's tracking store is not the worker's (found by a first user: the study
    #    was created against a local mlflow.db, the workers given the cluster's server).
    #    6. So is `study run` given another store (found by a second user: it started a new
    #    parent run there and re-pointed the study, locking out every worker given the right
    #    one), and 7. a worker given a local store that does not exist (it created it).
    shutil.copyfile(mlflow_template_db, tmp_path / "other.db")
    elsewhere = ["--tracking-uri", f"sqlite:///{tmp_path / 'other.db'}"]
    absent = ["--tracking-uri", f"sqlite:///{tmp_path / 'absent.db'}"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        refused = pool.map(lambda argv: _study([*argv[:1], *where, *argv[1:]], tmp_path)[0],
                           [["worker", "--study-name", "nope"],
                            ["worker", "--study-name", "w", "--epochs", "5"],
                            ["worker", "--study-name", "w", *elsewhere],
                            ["run", "--study-name", "w", *elsewhere],
                            ["worker", "--study-name", "w", *absent]])
        other, conflict, lost, moved, created_store = list(refused)
    home = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for proc, here in ((lost, "other.db"), (moved, "other.db"), (created_store, "absent.db")):
        assert proc.returncode == 1, proc.stderr
        (line,) = stderr_lines(proc.stderr)
        assert line.startswith("error: study 'w' has its parent run ") and \
            f"in another MLflow tracking store ({home}) than sqlite:///{tmp_path / here}; " \
            f"pass the one it was created with (--tracking-uri {home}, or " \
            f"MLFLOW_TRACKING_URI)." in line
    assert not (tmp_path / "absent.db").exists()
    assert MlflowClient(f"sqlite:///{tmp_path / 'other.db'}").search_runs(["0"]) == []
    assert study_user_attrs(storage, "w")["mlflow_tracking_uri"] == home
    assert other.returncode == 1, other.stderr
    (line,) = stderr_lines(other.stderr)
    assert "`study_name` must name an existing study" in line
    assert "study_name='nope'" in line and "known: w" in line
    assert optuna.study.get_all_study_names(storage) == ["w"]

    assert conflict.returncode == 1, conflict.stderr
    (line,) = stderr_lines(conflict.stderr)
    assert "`epochs` conflicts with study 'w'" in line
    assert "epochs=1" in line and "epochs=5" in line
    assert n_finished(study_trials(storage, "w")) == first

    # 6. No search-space flags (defaults: epochs 3, width up to 32, budget 20): the worker
    #    trains with the stored config up to the stored budget.
    joined, _ = _study(["worker", "--study-name", "w", *where], tmp_path)
    assert joined.returncode == 0, joined.stderr
    assert "worker done, study 'w': 3/3 finished" in joined.stdout
    trials = study_trials(storage, "w")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    runs = experiment_runs(tracking, "wk")
    trial_runs = [r for r in runs if r.data.tags.get("study.role") == "trial"]
    assert len(trial_runs) == 3
    assert {r.data.params["epochs"] for r in trial_runs} == {"1"}
    assert all(int(r.data.params["width"]) <= 8 for r in trial_runs)
    assert all(r.data.params["batch_size"] == "64" for r in trial_runs)
    (parent,) = [r for r in runs if r.data.tags.get("study.role") == "parent"]
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == {parent.info.run_id}


# --- unreachable and malformed PostgreSQL URLs ---------------------------------------------------


BAD_URLS = {
    "unreachable": ("postgresql://postgres@127.0.0.1:1/x", "1",
                    "`storage` could not be opened: postgresql://postgres@127.0.0.1:1/x: "),
    "unreachable-workers": ("postgresql://postgres@127.0.0.1:1/x", "2",
                            "`storage` could not be opened: postgresql://postgres@127.0.0.1:1/x: "),
    "malformed": ("postgresql://postgres@127.0.0.1:notaport/x", "2",
                  "`storage` must be sqlite:///FILE, journal:PATH or postgresql://"),
}


@pytest.fixture(scope="module")
def bad_url_runs(tmp_path_factory, mlflow_template_db) -> dict[str, tuple]:
    """Every bad URL run once, concurrently; returns (process, seconds) per case."""
    import shutil

    def one(case: str) -> tuple:
        storage, workers, _ = BAD_URLS[case]
        d = tmp_path_factory.mktemp(f"bad-url-{case}")
        shutil.copyfile(mlflow_template_db, d / "mlflow.db")
        return _study(["run", "--storage", storage, "--workers", workers,
                       "--tracking-uri", f"sqlite:///{d / 'mlflow.db'}", "--n-trials", "2",
                       *TINY], d, timeout=120)

    with ThreadPoolExecutor(max_workers=len(BAD_URLS)) as pool:
        return dict(zip(BAD_URLS, pool.map(one, BAD_URLS), strict=True))


@pytest.mark.parametrize("case", BAD_URLS)
def test_bad_postgresql_url_is_one_line_quickly(case, bad_url_runs):
    proc, seconds = bad_url_runs[case]

    assert proc.returncode == 1, proc.stderr
    (line,) = stderr_lines(proc.stderr)
    assert line.startswith(f"error: {BAD_URLS[case][2]}"), line
    assert "Traceback" not in proc.stderr
    # Connection refused is immediate; 30 s allows three CLIs starting at once on 2 busy cores.
    assert seconds < 30, f"took {seconds:.1f} s"
