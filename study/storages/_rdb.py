"""The RDB storage the service uses: Optuna's, with fast trial reads and dead-trial reasons.

Optuna's ``RDBStorage`` reads trials through the SQLAlchemy ORM: one mapped object per param,
value, attribute and intermediate-value row, then one :class:`~optuna.trial.FrozenTrial` per
trial. On 10,000 trials that is about 175,000 objects and 7-8 s on SQLite, which every
``study analyze``, every report and every TPE suggestion on a large study pays.
:class:`StudyRDBStorage` reads the same rows with six plain SQL queries (Optuna's own table
definitions, so the schema is the installed Optuna's) and builds the same ``FrozenTrial``
objects from them.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Container, Iterable
from typing import Any

import optuna
from optuna.distributions import json_to_distribution
from optuna.trial import FrozenTrial, TrialState

from study.storages._retry import RETRIED_METHODS, StorageRetry, is_connection_error, retried
from study.storages._sqlite import tune_sqlite_engine

__all__ = ["StudyRDBStorage", "layout_mismatch", "read_trials"]

_logger = logging.getLogger(__name__)


class StudyRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage with three changes.

    - Trials are read with plain SQL queries instead of the ORM (same ``FrozenTrial`` objects,
      about ten times faster). The tables and columns it reads are checked against the
      installed Optuna and the database once; on any mismatch, or any layout error while
      reading, Optuna's own reader is used instead, with a warning.
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
        if self.engine.name not in _UPSERT_DIALECTS:
            for key, value in attrs.items():
                self.set_trial_user_attr(trial_id, key, value)
            return
        import sqlalchemy.exc
        from optuna.storages._rdb import models

        model = models.TrialUserAttributeModel
        insert = _UPSERT_DIALECTS[self.engine.name]()(model).values(
            [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
             for key, value in attrs.items()])
        upsert = insert.on_conflict_do_update(index_elements=[model.trial_id, model.key],
                                              set_={"value_json": insert.excluded.value_json})
        session = self.scoped_session()
        try:
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
            self.check_trial_is_updatable(trial_id, trial.state)  # a finished trial is final
            session.execute(upsert)
            session.commit()
        except sqlalchemy.exc.SQLAlchemyError as exc:
            session.rollback()
            # What Optuna's own writes raise (and what the retry wrapper recognizes).
            raise optuna.exceptions.StorageInternalError(
                "An exception is raised during the commit.") from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            self.scoped_session.remove()

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
            self._layout_checked = True
            problem = layout_mismatch(self.engine)
            if problem is not None:
                self._disable_fast_reads(problem)
        if self._fast_reads:
            try:
                return read_trials(self.engine, study_id, states=states,
                                   included_trial_ids=included_trial_ids,
                                   trial_id_greater_than=trial_id_greater_than)
            except _NoStudy:
                raise
            except _LAYOUT_ERRORS as exc:
                # The installed Optuna's tables differ from the ones this was written for.
                self._disable_fast_reads(str(exc))
        return super()._get_trials(study_id, states, included_trial_ids, trial_id_greater_than)

    def _disable_fast_reads(self, why: str) -> None:
        self._fast_reads = False
        _logger.warning("fast trial reads disabled (%s); using Optuna's reader", why)


for _name in RETRIED_METHODS:
    setattr(StudyRDBStorage, _name, retried(getattr(StudyRDBStorage, _name)))


def _sqlite_insert() -> Any:
    from sqlalchemy.dialects.sqlite import insert

    return insert


def _postgresql_insert() -> Any:
    from sqlalchemy.dialects.postgresql import insert

    return insert


# Dialects whose INSERT ... ON CONFLICT DO UPDATE writes many attrs in one statement.
_UPSERT_DIALECTS = {"sqlite": _sqlite_insert, "postgresql": _postgresql_insert}


class _NoStudy(KeyError):
    """No study with this id (Optuna's contract: a ``KeyError``), not a layout problem."""


# Columns the fast reader selects, per Optuna model.
_READ_COLUMNS = {
    "StudyModel": ("study_id",),
    "TrialModel": ("trial_id", "number", "study_id", "state", "datetime_start",
                   "datetime_complete"),
    "TrialParamModel": ("trial_id", "param_id", "param_name", "param_value",
                        "distribution_json"),
    "TrialValueModel": ("trial_id", "objective", "value", "value_type"),
    "TrialIntermediateValueModel": ("trial_id", "step", "intermediate_value",
                                    "intermediate_value_type"),
    "TrialUserAttributeModel": ("trial_id", "key", "value_json"),
    "TrialSystemAttributeModel": ("trial_id", "key", "value_json"),
}


def _layout_errors() -> tuple[type[BaseException], ...]:
    import sqlalchemy.exc

    return (AttributeError, ImportError, TypeError, ValueError, LookupError,
            sqlalchemy.exc.NoSuchColumnError, sqlalchemy.exc.ProgrammingError)


_LAYOUT_ERRORS = _layout_errors()


def layout_mismatch(engine: Any) -> str | None:
    """What the fast reader needs that the installed Optuna's models or the database lack;
    ``None`` when every table and column it reads is there."""
    import sqlalchemy as sa

    try:
        from optuna.storages._rdb import models
    except ImportError as exc:
        return f"Optuna's RDB models cannot be imported: {exc}"
    inspector = sa.inspect(engine)
    for name, columns in _READ_COLUMNS.items():
        model = getattr(models, name, None)
        table = getattr(model, "__table__", None)
        if table is None:
            return f"Optuna has no {name}"
        missing = [c for c in columns if c not in table.c]
        if missing:
            return f"Optuna's {table.name} has no {', '.join(missing)}"
        try:
            present = {c["name"] for c in inspector.get_columns(table.name)}
        except sa.exc.NoSuchTableError:
            return f"the database has no table {table.name}"
        missing = [c for c in columns if c not in present]
        if missing:
            return f"the database's {table.name} has no {', '.join(missing)}"
    return None


def read_trials(
    engine: Any,
    study_id: int,
    *,
    states: Container[TrialState] | None = None,
    included_trial_ids: Iterable[int] = (),
    trial_id_greater_than: int = -1,
) -> list[FrozenTrial]:
    """The trials of a study in an Optuna RDB database, as ``RDBStorage._get_trials`` returns
    them: trials with an id above ``trial_id_greater_than`` or in ``included_trial_ids`` (all
    when -1), in ``states`` (all when ``None``), ordered by trial id.

    Raises:
        KeyError: No study with this id.
    """
    import sqlalchemy as sa
    from optuna.storages._rdb import models

    trials_t = models.TrialModel.__table__
    included = {i for i in included_trial_ids if i <= trial_id_greater_than}
    if trial_id_greater_than > -1:
        wanted = trials_t.c.trial_id > trial_id_greater_than
        if included:
            wanted = sa.or_(wanted, trials_t.c.trial_id.in_(included))
    else:
        wanted = sa.true()
    where = sa.and_(trials_t.c.study_id == study_id, wanted)
    # One connection, the trials first: a trial's rows are written before (or with) its state,
    # so the child rows read after its state are at least as complete as that state.
    with engine.connect() as conn:
        study_t = models.StudyModel.__table__
        if conn.execute(sa.select(study_t.c.study_id).where(study_t.c.study_id == study_id)
                        ).first() is None:
            raise _NoStudy(f"No study with study_id {study_id} exists.")
        query = sa.select(trials_t.c.trial_id, trials_t.c.number, trials_t.c.state,
                          trials_t.c.datetime_start, trials_t.c.datetime_complete).where(where)
        if states is not None:
            query = query.where(trials_t.c.state.in_(list(states)))  # type: ignore[arg-type]
        heads = conn.execute(query.order_by(trials_t.c.trial_id)).all()
        if not heads:
            return []

        def rows(model: Any, *columns: str, order: str | None = None) -> list[Any]:
            table = model.__table__
            child = (sa.select(table.c.trial_id, *(getattr(table.c, c) for c in columns))
                     .join(trials_t, trials_t.c.trial_id == table.c.trial_id).where(where))
            if order is not None:
                child = child.order_by(getattr(table.c, order))
            return conn.execute(child).all()

        params = rows(models.TrialParamModel, "param_name", "param_value", "distribution_json",
                      order="param_id")
        values = rows(models.TrialValueModel, "objective", "value", "value_type")
        inter = rows(models.TrialIntermediateValueModel, "step", "intermediate_value",
                     "intermediate_value_type")
        user = rows(models.TrialUserAttributeModel, "key", "value_json")
        system = rows(models.TrialSystemAttributeModel, "key", "value_json")

    return _frozen_trials(heads, params, values, inter, user, system)


def _frozen_trials(heads: list[Any], params: list[Any], values: list[Any], inter: list[Any],
                   user: list[Any], system: list[Any]) -> list[FrozenTrial]:
    """``FrozenTrial`` objects from the trial rows and their child rows (see read_trials)."""
    from optuna.storages._rdb import models

    distribution = functools.lru_cache(maxsize=None)(json_to_distribution)  # few distinct
    to_value = models.TrialValueModel.stored_repr_to_value
    to_inter = models.TrialIntermediateValueModel.stored_repr_to_intermediate_value
    dists = _grouped((t, name, distribution(j)) for t, name, _, j in params)
    param_values = _grouped((t, name, distribution(j).to_external_repr(v))
                            for t, name, v, j in params)
    objectives = _grouped((t, objective, to_value(v, kind)) for t, objective, v, kind in values)
    steps = _grouped((t, step, to_inter(v, kind)) for t, step, v, kind in inter)
    user_attrs = _grouped((t, key, json.loads(v)) for t, key, v in user)
    system_attrs = _grouped((t, key, json.loads(v)) for t, key, v in system)

    trials = []
    for trial_id, number, state, start, complete in heads:
        trial_values = objectives.get(trial_id)
        trials.append(FrozenTrial(
            number=number, state=state, value=None,
            values=[trial_values[i] for i in range(len(trial_values))] if trial_values else None,
            datetime_start=_local(start), datetime_complete=_local(complete),
            params=param_values.get(trial_id, {}), distributions=dists.get(trial_id, {}),
            user_attrs=user_attrs.get(trial_id, {}), system_attrs=system_attrs.get(trial_id, {}),
            intermediate_values=steps.get(trial_id, {}), trial_id=trial_id,
        ))
    return trials


def _grouped(rows: Iterable[tuple[int, Any, Any]]) -> dict[int, dict[Any, Any]]:
    """``(trial_id, key, value)`` rows as ``{trial_id: {key: value}}``, in row order."""
    grouped: dict[int, dict[Any, Any]] = defaultdict(dict)
    for trial_id, key, value in rows:
        grouped[trial_id][key] = value
    return grouped


def _local(stamp: dt.datetime | None) -> dt.datetime | None:
    """Optuna stores naive UTC and hands out naive local time (``TrialModel.datetime_start``)."""
    if stamp is None:
        return None
    return stamp.replace(tzinfo=dt.timezone.utc).astimezone().replace(tzinfo=None)
