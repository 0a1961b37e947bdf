"""Optuna storages from a URL: SQLite (one process), a journal file (several processes on one
machine), PostgreSQL or MySQL (many machines), with fast trial reads and tuned SQLite."""

from study.storages._rdb import StudyRDBStorage, read_trials
from study.storages._sqlite import tune_sqlite_engine
from study.storages._urls import JOURNAL_PREFIX, check_storage_url, create_storage, storage_kind

__all__ = [
    "JOURNAL_PREFIX",
    "StudyRDBStorage",
    "check_storage_url",
    "create_storage",
    "read_trials",
    "storage_kind",
    "tune_sqlite_engine",
]
