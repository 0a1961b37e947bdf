"""The service's RDB storage passes Optuna's own storage conformance suite
(``optuna.testing.pytest_storages.StorageTestCase``), as the service builds it (retries on,
fast reads on), on SQLite and on PostgreSQL.

The suite is a class of tests over a ``storage`` fixture that a subclass provides: that is its
public way to plug a storage in.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from optuna.testing.pytest_storages import StorageTestCase

from study.storages import StudyRDBStorage, create_storage
from tests.servers import postgres_database, postgres_url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def _database(request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[StudyRDBStorage]:
    """One storage per database for the whole suite (opening one costs about a second)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('conformance') / 'optuna.db'}"
        built = create_storage(url, storage_timeout=30)
        yield built
        built.engine.dispose()
        return
    with postgres_database() as name:
        built = create_storage(postgres_url(name), storage_timeout=30)
        yield built
        built.engine.dispose()


@pytest.fixture
def storage(_database: StudyRDBStorage) -> Iterator[StudyRDBStorage]:
    """The storage, empty: each test starts and leaves it with no study (deleted through the
    storage's own ``delete_study``)."""
    for study in _database.get_all_studies():
        _database.delete_study(study._study_id)
    yield _database
    for study in _database.get_all_studies():
        _database.delete_study(study._study_id)


class TestStudyRDBStorage(StorageTestCase):
    """Every test of Optuna's suite, run on :class:`StudyRDBStorage`."""

    @pytest.fixture(autouse=True)
    def _served_by_the_fast_reader(self, storage: StudyRDBStorage) -> Iterator[None]:
        assert isinstance(storage, StudyRDBStorage)
        yield
        assert storage._fast_reads  # no read fell back to Optuna's reader
