"""Several user attrs of a running trial in one storage write."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

__all__ = ["set_user_attrs"]


def set_user_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """Set ``attrs`` on ``trial`` as :meth:`optuna.Trial.set_user_attr` would, in one
    transaction where the storage offers it (:class:`study.storages.StudyRDBStorage`), else
    one call per key."""
    storage = trial.storage
    backend = getattr(storage, "_backend", storage)  # Optuna wraps RDB storages in a cache
    write = getattr(backend, "set_trial_user_attrs", None)
    cached = getattr(trial, "_cached_frozen_trial", None)
    if write is None or cached is None:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    write(trial._trial_id, dict(attrs))
    cached.user_attrs.update(attrs)  # what trial.user_attrs returns, as set_user_attr keeps it
