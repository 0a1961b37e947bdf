"""Optuna storages from a URL: SQLite (one process), a journal file (several processes on one
machine), PostgreSQL or MySQL (many machines), through Optuna's public storage API, with a
plain-SQL trial reader and retries on a lost database connection."""

from __future__ import annotations

from typing import TYPE_CHECKING

from study._lazy import lazy_exports

if TYPE_CHECKING:
    from study.storages._rdb import StudyRDBStorage, read_trials
    from study.storages._urls import (
        JOURNAL_PREFIX,
        check_storage_url,
        create_storage,
        shown_storage,
        storage_kind,
    )

__all__ = [
    "JOURNAL_PREFIX",
    "StudyRDBStorage",
    "check_storage_url",
    "create_storage",
    "read_trials",
    "shown_storage",
    "storage_kind",
]

_EXPORTS = {
    "StudyRDBStorage": "study.storages._rdb",
    "read_trials": "study.storages._rdb",
    "JOURNAL_PREFIX": "study.storages._urls",
    "check_storage_url": "study.storages._urls",
    "create_storage": "study.storages._urls",
    "shown_storage": "study.storages._urls",
    "storage_kind": "study.storages._urls",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
