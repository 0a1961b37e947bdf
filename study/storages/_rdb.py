"""The RDB storage the service uses: Optuna's, with fast trial reads and dead-trial reasons.

Optuna's ``RDBStorage`` reads trials through the SQLAlchemy ORM: one mapped object per param,
value, attribute and intermediate-value row, then one :class:`~optuna.trial.FrozenTrial` per
trial. On 10,000 trials that is about 175,000 objects and 7-8 s on SQLite, which every
``study analyze``, every report and every TPE suggestion on a large study pays.
:class:`StudyRDBStorage` reads the same rows with six plain SQL queries (Optuna's own table
definitions, so the schema is the installed Optuna's) and builds the same ``FrozenTrial``
objects from them (:mod:`study.storages._sqlread`). A running trial is read back four times
and written once per epoch: those reads, the per-epoch intermediate value and the batched user
attrs also skip the ORM (about a millisecond each).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Container
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from study.storages._layout import UPSERT_DIALECTS, upsert_insert
from study.storages._retry import RETRIED_METHODS, StorageRetry, is_connection_error, retried
from study.storages._sqlite import tune_sqlite_engine
from study.storages._sqlread import (
    LAYOUT_ERRORS,
    NoStudy,
    layout_mismatch,
    read_trial,
    read_trials,
)

__all__ = ["StudyRDBStorage", "layout_mismatch", "read_trials"]

_logger = logging.getLogger(__name__)


class StudyRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage with these changes.

    - Trials are read with plain SQL queries instead of the ORM (same ``FrozenTrial`` objects,
      about ten times faster). The tables and columns it reads are checked against the
      installed Optuna and the database once; on any mismatch, or any layout error while
      reading, Optuna's own reader is used instead, with a warning.
    - On SQLite and PostgreSQL an intermediate value, and several user attrs at once
      (:meth:`set_trial_user_attrs`), are written as one upsert in one transaction.
    - ``on_stale(storage, trial_id)`` is called for each trial whose heartbeat went stale while
      it is still RUNNING: Optuna fails it right after, and a failed trial can no longer be
      annotated (its stale-trial callback only sees the failed trial). Crash recovery uses it
      to record why the trial died.
    - SQLite databases use write-ahead logging (see :mod:`study.storages._sqlite`).
    - With ``storage_timeout``, calls that fail on a lost connection are retried for up to
      that many seconds (a database restart), see :mod:`study.storages._retry`.
    """

    _fast_reads = True
    _layout_checked = False

    def __init__(self, url: str, *,
                 on_stale: Callable[[optuna.storages.BaseStorage, int], None] | None = None,
                 storage_timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.on_stale = on_stale
        self._retry = StorageRetry(url, storage_timeout) if storage_timeout else None
        tune_sqlite_engine(self.engine)

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)  # an unpickled storage gets a new engine
        tune_sqlite_engine(self.engine)

    def record_heartbeat(self, trial_id: int) -> None:
        """A beat lost to a connection error is skipped, not retried: beats are periodic, and
        the session's own calls report an outage (the heartbeat thread would only die)."""
        try:
            super().record_heartbeat(trial_id)
        except Exception as exc:
            if not is_connection_error(exc):
                raise

    def set_trial_user_attrs(self, trial_id: int, attrs: dict[str, Any]) -> None:
        """Several user attrs of one trial in one transaction and one statement (a trial's
        store cost is mostly per statement and per commit). Optuna's own per-key write is used
        where its internals differ from the ones this was written for."""
        if not self._fast_writes():
            for key, value in attrs.items():
                self.set_trial_user_attr(trial_id, key, value)
            return
        self._write(trial_id, "user_attrs", [
            {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
            for key, value in attrs.items()])

    def set_trial_intermediate_value(self, trial_id: int, step: int,
                                     intermediate_value: float) -> None:
        """Optuna's write (a value reported again at a step replaces it), as one upsert."""
        if not self._fast_writes():
            super().set_trial_intermediate_value(trial_id, step, intermediate_value)
            return
        from optuna.storages._rdb import models

        stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(
            intermediate_value)
        self._write(trial_id, "intermediate_value", [
            {"trial_id": trial_id, "step": step, "intermediate_value": stored,
             "intermediate_value_type": kind}])

    def get_trial(self, trial_id: int) -> FrozenTrial:
        """Optuna's ``get_trial`` with plain SQL (see the module's docstring)."""
        if self._fast_reads:
            try:
                return read_trial(self.engine, trial_id)
            except KeyError:
                raise
            except LAYOUT_ERRORS as exc:
                self._disable_fast_reads(str(exc))
        return super().get_trial(trial_id)

    def _fast_writes(self) -> bool:
        """Whether this database takes the one-statement writes (an upsert dialect, and the
        layout the reader checked)."""
        if self._fast_reads and not self._layout_checked:
            self._check_layout()
        return self._fast_reads and self.engine.name in UPSERT_DIALECTS

    def _write(self, trial_id: int, kind: str, rows: list[dict[str, Any]]) -> None:
        """Upsert ``rows`` with statement ``kind`` (see :func:`_statements`) in one transaction
        if trial ``trial_id`` may still be updated, raising what Optuna's own writes raise."""
        import sqlalchemy.exc
        from optuna.storages._rdb import models

        statements = _statements(self.engine.name)
        try:
            with self.engine.begin() as conn:
                state = conn.execute(statements["state"], {"trial_id": trial_id}).scalar()
                if state is None:
                    raise KeyError(models.NOT_FOUND_MSG)
                self.check_trial_is_updatable(trial_id, state)  # a finished trial is final
                conn.execute(statements[kind], rows)
        except sqlalchemy.exc.IntegrityError as exc:
            # As Optuna's own writes of these rows: another process raced this one.
            _logger.debug("Ignoring %r: a concurrent write of the same trial.", exc)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            # What Optuna's own writes raise (and what the retry wrapper recognizes).
            raise optuna.exceptions.StorageInternalError(
                "An exception is raised during the commit.") from exc

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        if self.on_stale is not None:
            for trial_id in stale:
                self.on_stale(self, trial_id)
        return stale

    def _get_trials(
        self,
        study_id: int,
        states: Container[TrialState] | None,
        included_trial_ids: set[int],
        trial_id_greater_than: int,
    ) -> list[FrozenTrial]:
        if self._fast_reads and not self._layout_checked:
            self._check_layout()
        if self._fast_reads:
            try:
                return read_trials(self.engine, study_id, states=states,
                                   included_trial_ids=included_trial_ids,
                                   trial_id_greater_than=trial_id_greater_than)
            except NoStudy:
                raise
            except LAYOUT_ERRORS as exc:
                # The installed Optuna's tables differ from the ones this was written for.
                self._disable_fast_reads(str(exc))
        return super()._get_trials(study_id, states, included_trial_ids, trial_id_greater_than)

    def _check_layout(self) -> None:
        self._layout_checked = True
        problem = layout_mismatch(self.engine)
        if problem is not None:
            self._disable_fast_reads(problem)

    def _disable_fast_reads(self, why: str) -> None:
        self._fast_reads = False
        _logger.warning("fast trial reads disabled (%s); using Optuna's reader", why)


for _name in RETRIED_METHODS:
    setattr(StudyRDBStorage, _name, retried(getattr(StudyRDBStorage, _name)))


@functools.cache
def _statements(dialect: str) -> dict[str, Any]:
    """The statements of the one-transaction writes, built once per dialect (building them
    costs more than running them): a trial's state, and the upserts of user attrs (a key set
    again replaces its value) and of an intermediate value (likewise per step)."""
    import sqlalchemy as sa
    from optuna.storages._rdb import models

    trials = models.TrialModel.__table__
    insert = upsert_insert(dialect)

    def upsert(model: Any, keys: tuple[str, ...], values: tuple[str, ...]) -> Any:
        statement = insert(model.__table__)
        return statement.on_conflict_do_update(
            index_elements=[model.__table__.c[k] for k in keys],
            set_={v: statement.excluded[v] for v in values})

    return {
        "state": sa.select(trials.c.state).where(trials.c.trial_id == sa.bindparam("trial_id")),
        "user_attrs": upsert(models.TrialUserAttributeModel, ("trial_id", "key"),
                             ("value_json",)),
        "intermediate_value": upsert(models.TrialIntermediateValueModel, ("trial_id", "step"),
                                     ("intermediate_value", "intermediate_value_type")),
    }


