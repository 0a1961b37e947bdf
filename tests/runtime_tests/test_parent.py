"""The study's parent run when the tracking store is not the one the study recorded: refused
(another store), or started again with a warning (the same store, the run gone)."""

from __future__ import annotations

import shutil

import optuna
import pytest
from mlflow import MlflowClient

from study.config import StudyConfig
from study.errors import TrackingError
from study.keys import PARENT_RUN_ATTR, PARENT_STORE_ATTR
from study.runtime.parent import check_parent_store, open_parent_run
from study.tracking import Tracker


@pytest.fixture
def stores(tmp_path, mlflow_template_db):
    """Two migrated MLflow stores and an in-memory study whose parent run is in the first."""
    for name in ("home.db", "other.db"):
        shutil.copyfile(mlflow_template_db, tmp_path / name)
    home, other = (f"sqlite:///{tmp_path / n}" for n in ("home.db", "other.db"))
    study = optuna.create_study(study_name="s")
    run_id, _, _ = open_parent_run(Tracker(home), study, StudyConfig(study_name="s"))
    return tmp_path, home, other, study, run_id


def test_a_session_given_another_store_is_refused_and_changes_nothing(stores):
    _, home, other, study, run_id = stores
    with pytest.raises(TrackingError, match=(
            rf"^study 's' has its parent run {run_id} in another MLflow tracking store "
            rf"\({home}\) than {other}; pass the one it was created with \(--tracking-uri "
            rf"{home}, or MLFLOW_TRACKING_URI\)\.$")):
        open_parent_run(Tracker(other), study, StudyConfig(study_name="s"))
    assert study.user_attrs[PARENT_RUN_ATTR] == run_id
    assert study.user_attrs[PARENT_STORE_ATTR] == home
    assert MlflowClient(other).search_runs(["0"]) == []


def test_the_same_store_without_the_run_starts_a_new_parent_with_a_warning(stores, capsys):
    _, home, _, study, run_id = stores
    study.set_user_attr(PARENT_RUN_ATTR, "0" * 32)  # a run this store does not hold
    new_id, _, created = open_parent_run(Tracker(home), study, StudyConfig(study_name="s"))
    assert created and new_id != run_id
    assert f"warning: parent run {'0' * 32} of study 's' is not in {home}; starting a new " \
           f"parent run." in capsys.readouterr().err
    assert study.user_attrs[PARENT_RUN_ATTR] == new_id


def test_a_missing_local_store_is_refused_before_it_is_created(stores):
    tmp_path, home, _, study, _ = stores
    absent = f"sqlite:///{tmp_path / 'absent.db'}"
    with pytest.raises(TrackingError, match=rf"in another MLflow tracking store \({home}\) than "
                                            rf"{absent};"):
        check_parent_store(study.user_attrs, study_name="s", tracking_uri=absent)
    assert not (tmp_path / "absent.db").exists()


@pytest.mark.parametrize("case", ["existing file", "the recorded store", "no parent yet"])
def test_the_early_check_leaves_other_stores_to_the_parent_lookup(stores, case):
    tmp_path, home, other, study, _ = stores
    attrs = {} if case == "no parent yet" else study.user_attrs
    uri = {"existing file": other, "the recorded store": home,
           "no parent yet": f"sqlite:///{tmp_path / 'new.db'}"}[case]
    known = check_parent_store(attrs, study_name="s", tracking_uri=uri)  # no error
    assert known is (case == "the recorded store")  # a failure there is an outage, no typo
