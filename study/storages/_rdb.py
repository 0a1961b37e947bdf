"""The RDB storage the service uses: Optuna's ``RDBStorage``, changed through public methods
only.

- ``get_all_trials``, ``get_trial`` and ``get_n_trials`` read with plain SQL
  (:mod:`study.storages._sqlread`, about ten times faster on a large study), where that reader
  knows the installed Optuna and the database; elsewhere, and after any layout error, Optuna's
  own reader serves them (one warning). Optuna's ``Study`` reads its trials through its own
  cache, which does not call them: what wants the fast read calls them on the storage (or
  :func:`read_trials`, or :class:`~study.runtime.lifecycle.TrialCounter` for counts).
- With ``storage_timeout``, public calls that fail on a lost connection are retried for up to
  that many seconds (:mod:`study.storages._retry`). A call whose reply was lost may have been
  committed, so the calls that differ when made twice are checked first: ``create_new_study``
  (the name is the key), ``delete_study`` and ``set_trial_state_values`` (a finished state).
  ``create_new_trial`` is not retried: the only key a client could give a new trial is an
  attr, which every reader of the trial would see (Optuna's storage contract wants a new trial
  with the template's attrs and no others), and Optuna's ``Study`` creates its trials through
  its cache, which never calls it.
- A heartbeat lost to a connection error is skipped.
- A SQLite file this storage opens runs in write-ahead-log mode (:mod:`study.storages._sqlite`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Container, Sequence
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from study.errors import StorageError
from study.storages._retry import (
    RETRIED_METHODS,
    UNSETTLED,
    StorageRetry,
    is_connection_error,
    retried,
)
from study.storages._sqlite import tune_sqlite_engine
from study.storages._sqlread import (
    LAYOUT_ERRORS,
    count_trials,
    fast_read_problem,
    read_trial,
)
from study.storages._sqlread import read_trials as _read_trials

__all__ = ["StudyRDBStorage", "read_trials"]

_logger = logging.getLogger(__name__)

# Optuna's prefix of a study created without a name (``optuna.create_study()``).
_NO_NAME_PREFIX = "no-name-"


class StudyRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage with fast trial reads, retries on a lost connection and WAL on
    SQLite (see the module's docstring).

    Args:
        url: The database URL, as for ``RDBStorage``.
        storage_timeout: Seconds to keep retrying calls that fail on a lost connection;
            ``None``: no retries.
        fast_reads: Whether ``get_all_trials`` and ``get_trial`` may use the plain-SQL reader.
        **kwargs: ``RDBStorage``'s other arguments.
    """

    def __init__(self, url: str, *, storage_timeout: float | None = None,
                 fast_reads: bool = True, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._retry = StorageRetry(url, storage_timeout) if storage_timeout else None
        self._fast_reads = fast_reads
        self._fast_checked = False
        self._tune_engine()

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)  # an unpickled storage gets a new engine
        self._tune_engine()

    def _tune_engine(self) -> None:
        """WAL on SQLite; elsewhere, with ``storage_timeout``, new connections retried while the
        server refuses them (see :meth:`StorageRetry.connect`)."""
        tune_sqlite_engine(self.engine)
        if self._retry is None or self.engine.dialect.name == "sqlite":
            return
        from sqlalchemy import event

        retry = self._retry

        def connect(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
            return retry.connect(lambda: dialect.connect(*cargs, **cparams),
                                 refused=dialect.loaded_dbapi.OperationalError)

        event.listen(self.engine, "do_connect", connect)

    def record_heartbeat(self, trial_id: int) -> None:
        """A beat lost to a connection error is skipped, not retried: beats are periodic, and
        the session's own calls report an outage (the heartbeat thread would only die)."""
        try:
            super().record_heartbeat(trial_id)
        except StorageError:
            return  # given up on: the session's own next call stops it in one line
        except Exception as exc:
            if not is_connection_error(exc):
                raise

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        """Optuna's ``get_all_trials``, read with plain SQL where the reader can (fresh
        objects each call, so ``deepcopy`` changes nothing there)."""
        if self._fast():
            try:
                return _read_trials(self.engine, study_id, states=states)
            except KeyError:
                raise  # no such study: Optuna's answer too
            except LAYOUT_ERRORS as exc:
                self._fast_off(f"{type(exc).__name__}: {exc}")
        return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        """Optuna's ``get_trial``, read with plain SQL where the reader can."""
        if self._fast():
            try:
                return read_trial(self.engine, trial_id)
            except KeyError:
                raise  # no such trial: Optuna's answer too
            except LAYOUT_ERRORS as exc:
                self._fast_off(f"{type(exc).__name__}: {exc}")
        return super().get_trial(trial_id)

    def get_n_trials(self, study_id: int,
                     state: tuple[TrialState, ...] | TrialState | None = None) -> int:
        """Optuna's ``get_n_trials``, one ``COUNT`` where the plain-SQL reader can (Optuna's
        reads every trial of those states to count them)."""
        if self._fast():
            states = (state,) if isinstance(state, TrialState) else state
            try:
                return count_trials(self.engine, study_id, states=states)
            except KeyError:
                raise
            except LAYOUT_ERRORS as exc:
                self._fast_off(f"{type(exc).__name__}: {exc}")
        return super().get_n_trials(study_id, state)

    def create_new_study(self, directions: Sequence[StudyDirection],
                         study_name: str | None = None) -> int:
        """Optuna's ``create_new_study``; after a lost reply, a study of the requested name is
        taken as the one this call created (a nameless study gets its name here first)."""
        if self._retry is None:
            return super().create_new_study(directions, study_name)
        name = f"{_NO_NAME_PREFIX}{uuid.uuid4()}" if study_name is None else study_name

        def settled() -> Any:
            try:
                return self.get_study_id_from_name(name)
            except KeyError:
                return UNSETTLED

        return self._retry.call_settled(
            lambda: super(StudyRDBStorage, self).create_new_study(directions, name),
            settled=settled)

    def delete_study(self, study_id: int) -> None:
        """Optuna's ``delete_study``; after a lost reply, a study that is gone is deleted."""
        if self._retry is None:
            return super().delete_study(study_id)

        def settled() -> Any:
            try:
                self.get_study_name_from_id(study_id)
            except KeyError:
                return None
            return UNSETTLED

        return self._retry.call_settled(
            lambda: super(StudyRDBStorage, self).delete_study(study_id), settled=settled)

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values: Sequence[float] | None = None) -> bool:
        """Optuna's ``set_trial_state_values``; after a lost reply, a trial already in the
        requested finished state with the requested values is done. A lost WAITING-to-RUNNING
        change is not: Optuna's answer for a trial another worker took (``False``) stands."""
        if self._retry is None:
            return super().set_trial_state_values(trial_id, state, values)

        def settled() -> Any:
            trial = self.get_trial(trial_id)
            wanted = None if values is None else list(values)
            if state.is_finished() and trial.state == state and (
                    wanted is None or trial.values == wanted):
                return True
            return UNSETTLED

        return self._retry.call_settled(
            lambda: super(StudyRDBStorage, self).set_trial_state_values(
                trial_id, state, values), settled=settled)

    def _fast(self) -> bool:
        """Whether the plain-SQL reader serves this storage (checked on first use)."""
        if self._fast_reads and not self._fast_checked:
            self._fast_checked = True
            problem = fast_read_problem(self)
            if problem is not None:
                self._fast_off(problem)
        return self._fast_reads

    def _fast_off(self, why: str) -> None:
        self._fast_reads = False
        _logger.warning("fast trial reads disabled (%s); using Optuna's reader", why)


for _name in RETRIED_METHODS:
    setattr(StudyRDBStorage, _name, retried(getattr(StudyRDBStorage, _name)))


def read_trials(storage: optuna.storages.BaseStorage | str,
                study_name: str) -> list[FrozenTrial]:
    """The trials of study ``study_name`` in ``storage`` (a storage, or a URL opened with
    :func:`~study.storages.create_storage`), read through its public ``get_all_trials``: with
    plain SQL on a :class:`StudyRDBStorage` that allows it, by Optuna's own reader elsewhere.
    The trials are fresh objects only where the storage makes them so; do not change them.

    Raises:
        StorageError: The storage cannot be opened or holds no study of that name.
    """
    if isinstance(storage, str):
        from study.storages._urls import create_storage

        opened = create_storage(storage)
        try:
            return read_trials(opened, study_name)
        finally:
            engine = getattr(opened, "engine", None)
            if engine is not None:
                engine.dispose()
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        raise StorageError(
            f"`study_name` must name a study in the storage, but got "
            f"study_name={study_name!r}.") from None
    return storage.get_all_trials(study_id, deepcopy=False)
