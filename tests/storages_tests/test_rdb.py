"""The service's RDB storage reads the same trials as Optuna's own ORM reader, on SQLite and on
PostgreSQL, for every state, value kind, filter and attribute."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import RDBStorage
from optuna.trial import TrialState, create_trial

from study.storages import create_storage
from study.storages._rdb import StudyRDBStorage
from tests.servers import postgres_database, postgres_url

DISTS = {
    "width": IntDistribution(4, 64, log=True),
    "lr": FloatDistribution(1e-4, 1e-1, log=True),
    "batch_size": CategoricalDistribution([32, 64, 128]),
    "penalty_mode": CategoricalDistribution(["l2-in-loss", "none"]),
}


def _only(*names: str) -> dict:
    return {name: DISTS[name] for name in names}


def _fill(study: optuna.Study) -> None:
    """Trials of every state and value kind: inf values, NaN and inf intermediate values,
    nested user attrs, system attrs, params in a non-alphabetical order, a multi-row trial."""
    study.add_trial(create_trial(
        state=TrialState.COMPLETE, value=0.25,
        params={"width": 16, "lr": 1e-3, "batch_size": 64, "penalty_mode": "none"},
        distributions=DISTS, intermediate_values={0: 0.5, 1: 0.25},
        user_attrs={"curve": [[1.0, 0.9, 0.1]], "hparams": {"width": 16}, "n_params": 1234},
        system_attrs={"fixed_params": {"lr": 1e-3}},
    ))
    study.add_trial(create_trial(
        state=TrialState.PRUNED, value=float("inf"),
        params={"lr": 5e-2, "width": 4}, distributions=_only("lr", "width"),
        intermediate_values={0: float("nan"), 1: float("-inf")},
    ))
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"failure": "boom"}))
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=-float("inf"),
                                 params={"batch_size": 128},
                                 distributions=_only("batch_size")))
    running = study.ask(DISTS)  # RUNNING, with params and a report
    running.report(0.75, step=0)
    running.set_user_attr("worker", "host:1")
    study.enqueue_trial({"width": 8})  # WAITING (asked after: ask would take it)


def _same(fast: list, slow: list) -> None:
    assert [t.number for t in fast] == [t.number for t in slow]
    for a, b in zip(fast, slow, strict=True):
        assert a._trial_id == b._trial_id
        assert a.state == b.state
        assert (a.values is None) == (b.values is None)
        if a.values is not None:
            assert a.values == b.values
        assert list(a.params.items()) == list(b.params.items())  # same order too
        assert a.distributions == b.distributions
        assert a.user_attrs == b.user_attrs
        assert a.system_attrs == b.system_attrs
        assert a.datetime_start == b.datetime_start
        assert a.datetime_complete == b.datetime_complete
        assert a.intermediate_values.keys() == b.intermediate_values.keys()
        for step, value in a.intermediate_values.items():
            other = b.intermediate_values[step]
            assert value == other or (math.isnan(value) and math.isnan(other))


def _check_against_orm(url: str) -> None:
    storage = create_storage(url)
    assert isinstance(storage, StudyRDBStorage)
    study = optuna.create_study(study_name="s", storage=storage)
    _fill(study)
    optuna.create_study(study_name="other", storage=storage).add_trial(
        create_trial(state=TrialState.COMPLETE, value=1.0))
    study_id = study._study_id
    trials = storage.get_all_trials(study_id, deepcopy=False)
    assert len(trials) == 6
    assert {t.state for t in trials} == set(TrialState)  # all five states
    ids = [t._trial_id for t in trials]
    for states, included, greater in (
        (None, set(), -1),
        ((TrialState.COMPLETE, TrialState.PRUNED), set(), -1),
        ((TrialState.RUNNING,), set(), -1),
        (None, set(), ids[2]),
        (None, {ids[0], ids[1]}, ids[3]),
        (None, set(), ids[-1]),
    ):
        _same(storage._get_trials(study_id, states, included, greater),
              RDBStorage._get_trials(storage, study_id, states, included, greater))
    _same([storage.get_trial(i) for i in ids], [RDBStorage.get_trial(storage, i) for i in ids])
    assert storage._fast_reads  # the fast path served every read above


def test_sqlite_reads_match_optuna(tmp_path):
    _check_against_orm(f"sqlite:///{tmp_path / 'optuna.db'}")


def test_postgresql_reads_match_optuna():
    with postgres_database() as name:
        _check_against_orm(postgres_url(name))


def test_a_missing_trial_is_optunas_key_error(tmp_path):
    storage = create_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    optuna.create_study(storage=storage).ask()
    with pytest.raises(KeyError, match="trial_id 99"):
        storage.get_trial(99)


def test_missing_study_is_optunas_key_error(tmp_path):
    storage = create_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    with pytest.raises(KeyError, match="study_id 99"):
        storage._get_trials(99, None, set(), -1)


def test_study_through_the_cache_sees_new_trials(tmp_path):
    # Optuna's cache asks only for unfinished and newer trials: they must come back updated.
    storage = create_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask({"lr": DISTS["lr"]})
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING]
    study.tell(trial, 0.5)
    study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-1, log=True), n_trials=2)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert trials[0].value == 0.5
    assert study.best_trial.number in (0, 1, 2)


def test_a_pickled_storage_keeps_fast_reads_and_wal(tmp_path):
    import pickle

    from study.storages import _sqlite

    storage = create_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    optuna.create_study(study_name="s", storage=storage).add_trial(
        create_trial(state=TrialState.COMPLETE, value=1.0))
    copy = pickle.loads(pickle.dumps(storage))
    assert isinstance(copy, StudyRDBStorage)
    assert copy.engine is not storage.engine
    assert sqlalchemy_event_contains(copy.engine, _sqlite._pragmas)
    (trial,) = copy.get_all_trials(copy.get_study_id_from_name("s"))
    assert trial.value == 1.0


def sqlalchemy_event_contains(engine, fn) -> bool:
    import sqlalchemy

    return sqlalchemy.event.contains(engine, "connect", fn)


# --- the fast reader steps aside when the tables are not the ones it was written for ----------


def test_a_healthy_database_fits_the_fast_reader(tmp_path):
    from study.storages._rdb import layout_mismatch

    storage = create_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    assert layout_mismatch(storage.engine) is None


def test_a_renamed_column_disables_fast_reads_with_a_warning(tmp_path, caplog):
    import sqlalchemy as sa

    from study.storages._rdb import layout_mismatch

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(storage=create_storage(url), study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    # What a future Optuna with another table layout would look like to this reader.
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text("ALTER TABLE trial_user_attributes RENAME COLUMN value_json "
                             "TO value"))
    storage = create_storage(url)
    assert layout_mismatch(storage.engine) == \
        "the database's trial_user_attributes has no value_json"
    with caplog.at_level("WARNING"), pytest.raises(optuna.exceptions.StorageInternalError):
        storage._get_trials(storage.get_study_id_from_name("s"), None, set(), -1)
    assert not storage._fast_reads
    assert "fast trial reads disabled (the database's trial_user_attributes has no " \
           "value_json); using Optuna's reader" in caplog.text


def _check_batched_user_attrs(url: str) -> None:
    storage = create_storage(url)
    study = optuna.create_study(storage=storage, study_name="attrs")
    trial = study.ask()
    storage.set_trial_user_attr(trial._trial_id, "kept", 1)
    storage.set_trial_user_attr(trial._trial_id, "replaced", "old")
    attrs = {"replaced": "new", "curve": [{"epoch": 1, "loss": 0.5}], "n": 3, "none": None}
    storage.set_trial_user_attrs(trial._trial_id, attrs)
    # Read back through Optuna's own ORM reader, not ours.
    orm = optuna.storages.RDBStorage(url)
    assert orm.get_trial(trial._trial_id).user_attrs == {"kept": 1, **attrs}
    study.tell(trial, 1.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_user_attrs(trial._trial_id, {"late": 1})
    assert "late" not in orm.get_trial(trial._trial_id).user_attrs


def test_batched_user_attrs_upsert_in_sqlite_and_refuse_finished_trials(tmp_path):
    _check_batched_user_attrs(f"sqlite:///{tmp_path / 'o.db'}")


def test_batched_user_attrs_upsert_in_postgresql_and_refuse_finished_trials():
    with postgres_database() as name:
        _check_batched_user_attrs(postgres_url(name))


def test_set_user_attrs_updates_the_running_trial_as_set_user_attr_does(tmp_path):
    from study.runtime._attrs import set_user_attrs

    study = optuna.create_study(storage=create_storage(f"sqlite:///{tmp_path / 'o.db'}"))
    trial = study.ask()
    set_user_attrs(trial, {"a": 1, "b": [2]})
    assert trial.user_attrs == {"a": 1, "b": [2]}
    assert study.trials[0].user_attrs == {"a": 1, "b": [2]}


def _check_intermediate_values(url: str) -> None:
    storage = create_storage(url)
    study = optuna.create_study(storage=storage, study_name="steps")
    trial = study.ask()
    for step, value in ((1, 0.5), (2, float("nan")), (3, float("inf")), (4, -float("inf"))):
        trial.report(value, step)
    # A step written again (trial.report ignores it; the storage replaces it, as Optuna's).
    storage.set_trial_intermediate_value(trial._trial_id, 1, 0.25)
    # Read back through Optuna's own ORM reader, not ours.
    orm = optuna.storages.RDBStorage(url)
    got = orm.get_trial(trial._trial_id).intermediate_values
    assert got[1] == 0.25 and math.isnan(got[2])
    assert (got[3], got[4]) == (float("inf"), -float("inf"))
    study.tell(trial, 1.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_intermediate_value(trial._trial_id, 5, 0.1)
    assert 5 not in orm.get_trial(trial._trial_id).intermediate_values
    with pytest.raises(KeyError):
        storage.set_trial_intermediate_value(trial._trial_id + 100, 1, 0.1)


def test_intermediate_values_upsert_in_sqlite_and_refuse_finished_trials(tmp_path):
    _check_intermediate_values(f"sqlite:///{tmp_path / 'o.db'}")


def test_intermediate_values_upsert_in_postgresql_and_refuse_finished_trials():
    with postgres_database() as name:
        _check_intermediate_values(postgres_url(name))
