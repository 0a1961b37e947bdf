"""Optuna's trials read with plain SQL over Optuna's own tables: the same ``FrozenTrial``
objects as its ORM reader, without one mapped object per row.

Optuna's ``RDBStorage`` builds one mapped object per param, value, attribute and intermediate
value, then one ``FrozenTrial`` per trial: on 10,000 trials about 175,000 objects and 7-8 s on
SQLite. This reader selects the same rows with six queries (Optuna's own table definitions)
and is about ten times faster. It only reads, and it is the one module of the service that
touches Optuna's internals (``optuna.storages._rdb.models``). Before its first read it checks
that it knows the installed Optuna and the database (:func:`fast_read_problem`): Optuna 5, the
schema revision, SQLite or PostgreSQL, times stored as naive UTC, every table and column read.
Anything else, and any layout error while reading, sends the caller to Optuna's own reader.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections import defaultdict
from collections.abc import Callable, Container, Iterable
from typing import Any

from optuna.distributions import json_to_distribution
from optuna.trial import FrozenTrial, TrialState

__all__ = ["LAYOUT_ERRORS", "count_trials", "fast_read_problem", "read_trial", "read_trials"]

# What this reader was written for and twin-tested against (tests/storages_tests/test_rdb.py).
_OPTUNA_MAJORS = ("5",)
_SCHEMAS = ("v3.2.0.a",)  # Optuna's alembic revision of the tables
_DIALECTS = ("sqlite", "postgresql")

# Columns the reader selects, per Optuna model.
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


# Errors that mean "Optuna's tables are not what this reader knows" (not a lost connection).
LAYOUT_ERRORS = _layout_errors()


def fast_read_problem(storage: Any) -> str | None:
    """Why the reader cannot serve Optuna RDB storage ``storage``; ``None`` when it can."""
    import optuna

    if optuna.__version__.split(".")[0] not in _OPTUNA_MAJORS:
        return f"written for Optuna 5, not {optuna.__version__}"
    dialect = storage.engine.dialect.name
    if dialect not in _DIALECTS:
        return f"written for SQLite and PostgreSQL, not {dialect}"
    try:
        from optuna.storages._rdb import models

        schema = storage.get_current_version()
        if schema not in _SCHEMAS:
            return f"written for Optuna's schema {', '.join(_SCHEMAS)}, not {schema}"
        return _times_problem(models) or _columns_problem(storage.engine, models)
    except LAYOUT_ERRORS as exc:
        return f"{type(exc).__name__}: {exc}"


def _times_problem(models: Any) -> str | None:
    """Whether Optuna stores a trial's times as naive UTC and hands them out as naive local
    time (Optuna 5), as :func:`_local` does: checked on Optuna's own model."""
    import sqlalchemy as sa

    column = models.TrialModel.__table__.c.datetime_start
    attribute = sa.inspect(models.TrialModel).get_property_by_column(column).key
    probe = dt.datetime(2024, 7, 1, 12, 30, 15, 123456)  # naive local, in summer time if any
    trial = models.TrialModel()
    trial.datetime_start = probe
    stored = getattr(trial, attribute)
    if stored != probe.astimezone(dt.timezone.utc).replace(tzinfo=None):
        return "Optuna does not store trial times as naive UTC"
    if trial.datetime_start != _local(stored):
        return "Optuna does not hand out trial times as naive local time"
    return None


def _columns_problem(engine: Any, models: Any) -> str | None:
    """What the reader selects that Optuna's models or the database's tables lack."""
    import sqlalchemy as sa

    inspector = sa.inspect(engine)
    for name, columns in _READ_COLUMNS.items():
        table = getattr(getattr(models, name, None), "__table__", None)
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


def read_trials(engine: Any, study_id: int, *,
                states: Container[TrialState] | None = None) -> list[FrozenTrial]:
    """The trials of a study in an Optuna RDB database, as ``RDBStorage.get_all_trials``
    returns them: in ``states`` (all when ``None``), ordered by trial id.

    Raises:
        KeyError: No study with this id.
    """
    import sqlalchemy as sa
    from optuna.storages._rdb import models

    trials_t = models.TrialModel.__table__
    where = trials_t.c.study_id == study_id
    if states is not None:
        where = sa.and_(where, trials_t.c.state.in_(list(states)))  # type: ignore[arg-type]
    # One connection, the trials first: a trial's rows are written before (or with) its state,
    # so the child rows read after its state are at least as complete as that state.
    with engine.connect() as conn:
        study_t = models.StudyModel.__table__
        if conn.execute(sa.select(study_t.c.study_id).where(study_t.c.study_id == study_id)
                        ).first() is None:
            raise KeyError(f"No study with study_id {study_id} exists.")
        heads = conn.execute(_heads().where(where).order_by(trials_t.c.trial_id)).all()
        if not heads:
            return []
        return _with_children(conn, heads, _child_queries(lambda table, child: child.join(
            trials_t, trials_t.c.trial_id == table.c.trial_id).where(where)))


def count_trials(engine: Any, study_id: int, *,
                 states: Container[TrialState] | None = None) -> int:
    """How many trials of a study are in ``states`` (all when ``None``), as
    ``RDBStorage.get_n_trials`` counts them: one ``COUNT``, no trial read.

    Raises:
        KeyError: No study with this id.
    """
    import sqlalchemy as sa
    from optuna.storages._rdb import models

    trials_t, study_t = models.TrialModel.__table__, models.StudyModel.__table__
    where = trials_t.c.study_id == study_id
    if states is not None:
        where = sa.and_(where, trials_t.c.state.in_(list(states)))  # type: ignore[arg-type]
    counted = sa.select(sa.func.count()).select_from(trials_t).where(where).scalar_subquery()
    with engine.connect() as conn:
        row = conn.execute(sa.select(study_t.c.study_id, counted)
                           .where(study_t.c.study_id == study_id)).first()
    if row is None:
        raise KeyError(f"No study with study_id {study_id} exists.")
    return int(row[1])


def read_trial(engine: Any, trial_id: int) -> FrozenTrial:
    """One trial, as ``RDBStorage.get_trial`` returns it.

    Raises:
        KeyError: No trial with this id.
    """
    heads_query, children = _one_trial_queries()
    bound = {"trial_id": trial_id}
    with engine.connect() as conn:
        heads = conn.execute(heads_query, bound).all()
        if not heads:
            raise KeyError(f"No trial with trial_id {trial_id} exists.")
        return _with_children(conn, heads, children, bound)[0]


@functools.cache
def _one_trial_queries() -> tuple[Any, list[Any]]:
    """The queries of one trial (bound parameter ``trial_id``), built once: a running trial
    is read back several times, and building the statements costs more than running them."""
    import sqlalchemy as sa
    from optuna.storages._rdb import models

    trial_id = sa.bindparam("trial_id")
    heads = _heads().where(models.TrialModel.__table__.c.trial_id == trial_id)
    return heads, _child_queries(lambda table, child: child.where(table.c.trial_id == trial_id))


def _heads() -> Any:
    import sqlalchemy as sa
    from optuna.storages._rdb import models

    trials_t = models.TrialModel.__table__
    return sa.select(trials_t.c.trial_id, trials_t.c.number, trials_t.c.state,
                     trials_t.c.datetime_start, trials_t.c.datetime_complete)


def _child_queries(restrict: Callable[[Any, Any], Any]) -> list[Any]:
    """The queries of the child rows (params, values, intermediate values, user and system
    attrs), each narrowed by ``restrict(table, query)`` to the trials read."""
    import sqlalchemy as sa
    from optuna.storages._rdb import models

    def query(model: Any, *columns: str, order: str | None = None) -> Any:
        table = model.__table__
        child = restrict(table, sa.select(table.c.trial_id,
                                          *(getattr(table.c, c) for c in columns)))
        return child if order is None else child.order_by(getattr(table.c, order))

    return [query(models.TrialParamModel, "param_name", "param_value", "distribution_json",
                  order="param_id"),
            query(models.TrialValueModel, "objective", "value", "value_type"),
            query(models.TrialIntermediateValueModel, "step", "intermediate_value",
                  "intermediate_value_type"),
            query(models.TrialUserAttributeModel, "key", "value_json"),
            query(models.TrialSystemAttributeModel, "key", "value_json")]


def _with_children(conn: Any, heads: list[Any], children: list[Any],
                   bound: dict[str, Any] | None = None) -> list[FrozenTrial]:
    """The ``FrozenTrial`` objects of ``heads`` (trial rows), their child rows read on
    ``conn`` by ``children`` (see :func:`_child_queries`)."""
    params, values, inter, user, system = (conn.execute(q, bound).all() for q in children)
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
    """Optuna 5 stores naive UTC and hands out naive local time (``TrialModel.datetime_start``,
    checked by :func:`_times_problem`)."""
    if stamp is None:
        return None
    return stamp.replace(tzinfo=dt.timezone.utc).astimezone().replace(tzinfo=None)
