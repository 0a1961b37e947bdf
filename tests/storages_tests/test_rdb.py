"""The service's RDB storage reads the same trials as Optuna's own ORM reader, on SQLite and on
PostgreSQL, for every state, value kind, filter and attribute, and steps aside for Optuna's
reader on a version or layout it does not know."""

from __future__ import annotations

import math
import time

import optuna
import pytest
import sqlalchemy as sa
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from study.errors import StorageError
from study.storages import StudyRDBStorage, create_storage, read_trials
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
    orm = optuna.storages.RDBStorage(url)  # Optuna's own reader, on its own engine
    study_id = storage.get_study_id_from_name("s")
    trials = storage.get_all_trials(study_id, deepcopy=False)
    assert len(trials) == 6
    assert {t.state for t in trials} == set(TrialState)  # all five states
    for states in (None, (TrialState.COMPLETE, TrialState.PRUNED), (TrialState.RUNNING,), ()):
        _same(storage.get_all_trials(study_id, states=states),
              orm.get_all_trials(study_id, states=states))
        assert storage.get_n_trials(study_id, states) == orm.get_n_trials(study_id, states)
    assert storage.get_n_trials(study_id, TrialState.FAIL) == 1  # a bare state, as Optuna's
    ids = [storage.get_trial_id_from_study_id_trial_number(study_id, t.number) for t in trials]
    _same([storage.get_trial(i) for i in ids], [orm.get_trial(i) for i in ids])
    _same(read_trials(storage, "s"), orm.get_all_trials(study_id))
    assert storage._fast_reads  # the fast path served every read above
    orm.engine.dispose()
    storage.engine.dispose()


def test_sqlite_reads_match_optuna(tmp_path):
    _check_against_orm(f"sqlite:///{tmp_path / 'optuna.db'}")


def test_postgresql_reads_match_optuna():
    with postgres_database() as name:
        _check_against_orm(postgres_url(name))


@pytest.fixture
def new_york(monkeypatch):
    """The process in a time zone far from UTC, with summer time (trial times are stored in
    UTC and handed out in local time)."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_reads_match_optuna_away_from_utc(tmp_path, new_york):
    assert time.localtime().tm_gmtoff != 0
    _check_against_orm(f"sqlite:///{tmp_path / 'optuna.db'}")


def test_a_missing_trial_is_optunas_key_error(storage_url):
    storage = create_storage(storage_url)
    optuna.create_study(storage=storage).ask()
    with pytest.raises(KeyError, match="trial_id 99"):
        storage.get_trial(99)
    assert storage._fast_reads


def test_a_missing_study_is_optunas_key_error(storage_url):
    storage = create_storage(storage_url)
    with pytest.raises(KeyError, match="study_id 99"):
        storage.get_all_trials(99)
    assert storage._fast_reads


def test_counting_a_missing_study_is_optunas_key_error(storage_url):
    storage = create_storage(storage_url)
    optuna.create_study(storage=storage).ask()
    with pytest.raises(KeyError, match="study_id 99"):
        storage.get_n_trials(99)
    assert storage._fast_reads


def test_read_trials_of_a_missing_study_names_it(storage_url):
    storage = create_storage(storage_url)
    with pytest.raises(StorageError, match=r"^`study_name` must name a study in the storage, "
                                           r"but got study_name='nope'\.$"):
        read_trials(storage, "nope")


def test_read_trials_opens_a_url_and_reads_any_storage(tmp_path, storage_url):
    optuna.create_study(study_name="s", storage=create_storage(storage_url)).add_trial(
        create_trial(state=TrialState.COMPLETE, value=2.0))
    assert [t.value for t in read_trials(storage_url, "s")] == [2.0]
    journal = create_storage(f"journal:{tmp_path / 'j.log'}")
    optuna.create_study(study_name="j", storage=journal).add_trial(
        create_trial(state=TrialState.COMPLETE, value=3.0))
    assert [t.value for t in read_trials(journal, "j")] == [3.0]


def test_a_study_through_optunas_cache_sees_new_trials(storage_url):
    storage = create_storage(storage_url)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask({"lr": DISTS["lr"]})
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING]
    study.tell(trial, 0.5)
    study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-1, log=True), n_trials=2)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert trials[0].value == 0.5
    assert [t.number for t in read_trials(storage, "s")] == [0, 1, 2]


def test_a_pickled_storage_keeps_fast_reads_and_wal(storage_url):
    import pickle

    from study.storages import _sqlite

    storage = create_storage(storage_url)
    optuna.create_study(study_name="s", storage=storage).add_trial(
        create_trial(state=TrialState.COMPLETE, value=1.0))
    copy = pickle.loads(pickle.dumps(storage))
    assert isinstance(copy, StudyRDBStorage)
    assert copy.engine is not storage.engine
    assert sa.event.contains(copy.engine, "connect", _sqlite._pragmas)
    (trial,) = copy.get_all_trials(copy.get_study_id_from_name("s"))
    assert trial.value == 1.0
    assert copy._fast_reads


# --- the fast reader steps aside when it does not know Optuna or the tables -------------------


def test_the_installed_optuna_and_a_new_database_fit_the_fast_reader(storage_url):
    from study.storages._sqlread import fast_read_problem

    assert fast_read_problem(create_storage(storage_url)) is None


def test_another_optuna_major_version_uses_optunas_reader(storage_url, monkeypatch, caplog):
    storage = create_storage(storage_url)
    optuna.create_study(study_name="s", storage=storage).add_trial(
        create_trial(state=TrialState.COMPLETE, value=1.0))
    monkeypatch.setattr(optuna, "__version__", "6.0.0")
    with caplog.at_level("WARNING"):
        (trial,) = read_trials(storage, "s")
    assert trial.value == 1.0
    assert storage.get_n_trials(storage.get_study_id_from_name("s"), TrialState.COMPLETE) == 1
    assert not storage._fast_reads
    assert "fast trial reads disabled (written for Optuna 5, not 6.0.0); using Optuna's " \
           "reader" in caplog.text


def test_another_schema_revision_uses_optunas_reader(storage_url, caplog):
    optuna.create_study(study_name="s", storage=create_storage(storage_url)).add_trial(
        create_trial(state=TrialState.COMPLETE, value=1.0))
    # What a database migrated by a later Optuna would look like to this reader.
    with sa.create_engine(storage_url).begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'v9.0.0.a'"))
    storage = StudyRDBStorage(storage_url, skip_compatibility_check=True)
    with caplog.at_level("WARNING"):
        (trial,) = read_trials(storage, "s")
    assert trial.value == 1.0
    assert not storage._fast_reads
    assert "written for Optuna's schema v3.2.0.a, not v9.0.0.a" in caplog.text


def test_a_renamed_column_uses_optunas_reader_with_a_warning(storage_url, caplog):
    study = optuna.create_study(storage=create_storage(storage_url), study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    # What a future Optuna with another table layout would look like to this reader.
    with sa.create_engine(storage_url).begin() as conn:
        conn.execute(sa.text("ALTER TABLE trial_user_attributes RENAME COLUMN value_json "
                             "TO value"))
    storage = create_storage(storage_url)
    with caplog.at_level("WARNING"), pytest.raises(optuna.exceptions.StorageInternalError):
        storage.get_all_trials(storage.get_study_id_from_name("s"))  # Optuna's reader fails too
    assert not storage._fast_reads
    assert "fast trial reads disabled (the database's trial_user_attributes has no " \
           "value_json); using Optuna's reader" in caplog.text

