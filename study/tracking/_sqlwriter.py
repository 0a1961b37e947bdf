"""A trial run's writes straight into an MLflow SQL store: one transaction, a few statements.

``MlflowClient.log_batch`` on a database store opens three or four ORM sessions (each with its
own PRAGMAs on SQLite and its own look-up of the run), ``set_terminated`` reads the whole run
back and ``create_run`` reads it back too: about 3-4 ms and a dozen statements each here, which
a trial pays at its start, once per epoch and at its close. :class:`SqlRunWriter` writes the
same rows through MLflow's own table definitions (so the schema is the installed MLflow's) in
one transaction of two to five statements. Whatever it does not cover goes through the client,
which keeps MLflow's own semantics and error messages: an inactive or missing run, a row that
already exists (a retried batch, a param logged again), ``mlflow.*`` tags (``mlflow.runName``
also renames the run), batches over MLflow's size limits (the client splits them), metrics of
an active logged model, an unnamed run, stores other than MLflow's own class (workspaces),
dialects without an upsert, and a layout it was not written for (checked once, with a warning).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from study.storages._layout import UPSERT_DIALECTS, table_mismatch, upsert_insert

__all__ = ["SqlRunWriter", "writer_layout_mismatch"]

_logger = logging.getLogger(__name__)

# Columns written or read, per MLflow model (mlflow.store.tracking.dbmodels.models).
_COLUMNS = {
    "SqlExperiment": ("experiment_id", "artifact_location", "lifecycle_stage"),
    "SqlRun": ("run_uuid", "name", "artifact_uri", "experiment_id", "source_type",
               "source_name", "entry_point_name", "user_id", "status", "start_time",
               "end_time", "deleted_time", "source_version", "lifecycle_stage"),
    "SqlMetric": ("key", "value", "timestamp", "step", "is_nan", "run_uuid"),
    "SqlLatestMetric": ("key", "value", "timestamp", "step", "is_nan", "run_uuid"),
    "SqlParam": ("key", "value", "run_uuid"),
    "SqlTag": ("key", "value", "run_uuid"),
}


def writer_layout_mismatch(engine: Any) -> str | None:
    """What the writer needs that the installed MLflow or the database lacks; ``None`` when
    every table and column it writes is there."""
    import sqlalchemy as sa

    try:
        from mlflow.store.tracking.dbmodels import models
        from mlflow.utils import validation
    except ImportError as exc:
        return f"MLflow's SQL models cannot be imported: {exc}"
    if not callable(getattr(validation, "_validate_batch_log_data", None)):
        return "MLflow has no _validate_batch_log_data"
    inspector = sa.inspect(engine)
    for name, columns in _COLUMNS.items():
        table = getattr(getattr(models, name, None), "__table__", None)
        if table is None:
            return f"MLflow has no {name}"
        required = [c.name for c in table.c if c.name not in columns and not c.nullable
                    and c.default is None and c.server_default is None
                    and not (c.primary_key and c.autoincrement is not False)]
        if required and name != "SqlExperiment":  # experiments are only read
            return f"MLflow's {table.name} requires {', '.join(required)}"
        problem = table_mismatch(inspector, table, columns, owner="MLflow")
        if problem is not None:
            return problem
    return None


class SqlRunWriter:
    """Batched writes to the runs of one MLflow ``SqlAlchemyStore``, in its own database.

    Both writes return ``False`` (or ``None``), having written nothing, where the client must
    do the write instead (see the module's docstring); database errors propagate (SQLAlchemy's,
    so a locked or lost database is retried like the client's own errors). The statements are
    built once: building one costs more than running it.
    """

    def __init__(self, store: Any) -> None:
        import sqlalchemy as sa
        from mlflow.store.tracking.dbmodels import models

        self._store = store
        self._engine = store.engine
        upsert = upsert_insert(self._engine.name)
        experiments, runs = models.SqlExperiment.__table__, models.SqlRun.__table__
        latest, tags = models.SqlLatestMetric.__table__, models.SqlTag.__table__
        run = sa.bindparam("run")
        tag_upsert = upsert(tags)
        self._sql = {
            "experiment": sa.select(experiments.c.lifecycle_stage,
                                    experiments.c.artifact_location).where(
                experiments.c.experiment_id == sa.bindparam("experiment")),
            "stage": sa.select(runs.c.lifecycle_stage).where(runs.c.run_uuid == run),
            "new_run": sa.insert(runs),
            "params": sa.insert(models.SqlParam.__table__),
            "metrics": sa.insert(models.SqlMetric.__table__),
            "tags": tag_upsert.on_conflict_do_update(
                index_elements=[tags.c.key, tags.c.run_uuid],
                set_={"value": tag_upsert.excluded.value}),
            # Locked until the commit (as MLflow does; SQLite locks the whole file anyway):
            # two workers closing a session log the parent run's summary at once.
            "latest": sa.select(latest.c.key, latest.c.step, latest.c.timestamp,
                                latest.c.value).where(
                latest.c.run_uuid == run,
                latest.c.key.in_(sa.bindparam("keys", expanding=True)))
            .order_by(latest.c.key).with_for_update(),  # in key order, as MLflow: no deadlock
            "new_latest": sa.insert(latest),
            # Executemany: the WHERE binds carry the row's key, the rest is the SET.
            "newer_latest": sa.update(latest).where(latest.c.run_uuid == sa.bindparam("b_run"),
                                                    latest.c.key == sa.bindparam("b_key")),
            "end": sa.update(runs).where(runs.c.run_uuid == run,
                                         runs.c.lifecycle_stage == "active").values(
                status=sa.bindparam("status"), end_time=sa.bindparam("end_time")),
        }

    @classmethod
    def open(cls, client: Any) -> SqlRunWriter | None:
        """The writer for ``client``'s store, or ``None`` (a tracking server, another store,
        another dialect, or a layout this was not written for)."""
        try:
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        except ImportError:
            return None
        store = getattr(getattr(client, "_tracking_client", None), "store", None)
        # Exactly MLflow's store: a subclass may scope what a write sees (workspaces do).
        if type(store) is not SqlAlchemyStore or store.engine.name not in UPSERT_DIALECTS:
            return None
        problem = writer_layout_mismatch(store.engine)
        if problem is None and not callable(getattr(store, "sanitize_metric_value", None)):
            problem = "MLflow's SqlAlchemyStore has no sanitize_metric_value"
        if problem is not None:
            _logger.warning("direct run writes disabled (%s); using MlflowClient", problem)
            return None
        return cls(store)

    def create_run(self, experiment_id: str, *, name: str, tags: Sequence[Any],
                   start_time: int) -> tuple[str, str] | None:
        """Create a RUNNING run named ``name`` with ``tags`` (``RunTag``s, no
        ``mlflow.runName``) in active experiment ``experiment_id``, as
        ``MlflowClient.create_run`` does; its id and artifact URI, or ``None`` when the client
        must."""
        import uuid

        from mlflow.entities import RunTag
        from mlflow.utils.uri import append_to_uri_path

        if not name or any(t.key == "mlflow.runName" for t in tags):
            return None  # the client names an unnamed run
        run_id = uuid.uuid4().hex
        sql = self._sql
        with self._engine.begin() as conn:
            found = conn.execute(sql["experiment"], {"experiment": int(experiment_id)}).first()
            if found is None or found.lifecycle_stage != "active":
                return None
            artifact_uri = append_to_uri_path(found.artifact_location, run_id, "artifacts")
            user = next((t.value for t in tags if t.key == "mlflow.user"), "unknown")
            conn.execute(sql["new_run"], {
                "run_uuid": run_id, "name": name, "artifact_uri": artifact_uri,
                "experiment_id": int(experiment_id), "source_type": "UNKNOWN",
                "source_name": "", "entry_point_name": "", "user_id": user,
                "status": "RUNNING", "start_time": start_time, "end_time": None,
                "deleted_time": None, "source_version": "", "lifecycle_stage": "active"})
            conn.execute(sql["tags"],
                         _key_values(run_id, [*tags, RunTag("mlflow.runName", name)]))
        return run_id, artifact_uri

    def log_batch(self, run_id: str, *, metrics: Sequence[Any] = (),
                  params: Sequence[Any] = (), tags: Sequence[Any] = (),
                  end: tuple[str, int] | None = None) -> bool:
        """Write ``metrics``, ``params`` and ``tags`` (MLflow entities) to active run
        ``run_id`` in one transaction, as ``MlflowClient.log_batch`` would, and with ``end``
        (status, end time) terminate it there too; ``False`` when the client must (nothing
        written)."""
        import sqlalchemy as sa
        from mlflow.utils.validation import _validate_batch_log_data

        if any(t.key.startswith("mlflow.") for t in tags) or len(metrics) > 1000 \
                or len(params) > 100 or len(tags) > 100:
            return False  # MLflow's special tags; batches over its limits the client splits
        if metrics and (any(getattr(m, "model_id", None) for m in metrics)
                        or _active_model_id() is not None):
            return False  # metrics of a logged model: the client links them to it
        metrics, params, tags = _validate_batch_log_data(list(metrics), list(params),
                                                         list(tags))
        rows = self._metric_rows(run_id, metrics)
        sql = self._sql
        try:
            with self._engine.begin() as conn:
                if conn.execute(sql["stage"], {"run": run_id}).scalar() != "active":
                    raise _UseClient
                if params:
                    conn.execute(sql["params"], _key_values(run_id, params))
                if rows:
                    conn.execute(sql["metrics"], rows)
                    self._update_latest(conn, run_id, rows)
                if tags:
                    conn.execute(sql["tags"], _key_values(run_id, tags))
                if end is not None and conn.execute(sql["end"], {
                        "run": run_id, "status": end[0], "end_time": end[1]}).rowcount != 1:
                    raise _UseClient
        except (_UseClient, sa.exc.IntegrityError):
            return False  # rolled back: the client dedups a retried batch or says why not
        return True

    def _metric_rows(self, run_id: str, metrics: Sequence[Any]) -> list[dict[str, Any]]:
        """The metric rows, stored as MLflow stores them (NaN as 0 with ``is_nan``, infinities
        as the largest floats), duplicates within the batch dropped."""
        rows, seen = [], set()
        for m in metrics:
            is_nan, value = self._store.sanitize_metric_value(float(m.value))
            row = {"key": m.key, "value": value, "timestamp": int(m.timestamp),
                   "step": int(m.step or 0), "is_nan": is_nan, "run_uuid": run_id}
            identity = (row["key"], row["timestamp"], row["step"], value, is_nan)
            if identity not in seen:
                seen.add(identity)
                rows.append(row)
        return rows

    def _update_latest(self, conn: Any, run_id: str, rows: list[dict[str, Any]]) -> None:
        """Keep ``latest_metrics`` at each key's most recent value: the largest (step,
        timestamp, value), MLflow's order."""

        def order(row: Any) -> tuple[int, int, float]:
            return (row["step"], row["timestamp"], row["value"])

        newest: dict[str, dict[str, Any]] = {}
        for row in rows:
            if row["key"] not in newest or order(row) > order(newest[row["key"]]):
                newest[row["key"]] = row
        stored = {r.key: r._mapping for r in conn.execute(
            self._sql["latest"], {"run": run_id, "keys": sorted(newest)})}
        fresh = [row for key, row in newest.items() if key not in stored]
        newer = [row for key, row in newest.items()
                 if key in stored and order(row) > order(stored[key])]
        if fresh:
            conn.execute(self._sql["new_latest"], fresh)
        if newer:
            conn.execute(self._sql["newer_latest"], [
                {"b_run": run_id, "b_key": r["key"], "value": r["value"],
                 "timestamp": r["timestamp"], "step": r["step"], "is_nan": r["is_nan"]}
                for r in newer])


def _key_values(run_id: str, entities: Sequence[Any]) -> list[dict[str, Any]]:
    """The rows of params or tags (``key``/``value`` entities) of run ``run_id``."""
    return [{"key": e.key, "value": e.value, "run_uuid": run_id} for e in entities]


def _active_model_id() -> str | None:
    """The logged model MLflow links new metrics to (``mlflow.set_active_model``), if any."""
    try:
        from mlflow.tracking.fluent import get_active_model_id
    except ImportError:
        return None
    return get_active_model_id()


class _UseClient(Exception):
    """Inside the transaction: roll back, the client does this write."""
