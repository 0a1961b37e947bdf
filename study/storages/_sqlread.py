"""Optuna's trials read with plain SQL over Optuna's own tables: the same ``FrozenTrial``
objects as its ORM reader, without one mapped object per row (see :mod:`study.storages._rdb`)."""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections import defaultdict
from collections.abc import Callable, Container, Iterable
from typing import Any

from optuna.distributions import json_to_distribution
from optuna.trial import FrozenTrial, TrialState

from study.storages._layout import table_mismatch

__all__ = ["LAYOUT_ERRORS", "NoStudy", "layout_mismatch", "read_trial", "read_trials"]


class NoStudy(KeyError):
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


LAYOUT_ERRORS = _layout_errors()


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
        problem = table_mismatch(inspector, table, columns, owner="Optuna")
        if problem is not None:
            return problem
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
            raise NoStudy(f"No study with study_id {study_id} exists.")
        query = _heads().where(where)
        if states is not None:
            query = query.where(trials_t.c.state.in_(list(states)))  # type: ignore[arg-type]
        heads = conn.execute(query.order_by(trials_t.c.trial_id)).all()
        if not heads:
            return []
        return _with_children(conn, heads, _child_queries(lambda table, child: child.join(
            trials_t, trials_t.c.trial_id == table.c.trial_id).where(where)))


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
    """Optuna stores naive UTC and hands out naive local time (``TrialModel.datetime_start``)."""
    if stamp is None:
        return None
    return stamp.replace(tzinfo=dt.timezone.utc).astimezone().replace(tzinfo=None)
