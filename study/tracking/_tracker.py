"""The MLflow client wrapper: explicit run ids, batched writes, retries on transient failures.

Everything goes through an explicit :class:`~mlflow.MlflowClient` and explicit run ids: MLflow's
active-run stack is thread-local, so nothing here relies on ``mlflow.start_run``.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from study.errors import TrackingError
from study.redact import one_line, redact
from study.storages._sqlite import tune_sqlite_engine
from study.tracking._errors import is_transient
from study.tracking._sqlwriter import SqlRunWriter

__all__ = ["Tracker"]

# MLflow caps a param value at 6000 characters; config values are far below it.
_PARAM_LIMIT = 6000
_FIRST_DELAY, _MAX_DELAY = 1.0, 30.0
def _now_ms() -> int:
    return int(time.time() * 1000)


class Tracker:
    """A thin, explicit-id wrapper over :class:`MlflowClient` for the study's run layout.

    Transient failures (connection refused, a server error, a locked database) are retried with
    exponential backoff for up to ``retry_seconds``; then :class:`TrackingError` says the
    store is unreachable, so a worker stops instead of training trials whose logs would be lost.

    Args:
        tracking_uri: MLflow tracking URI; ``None`` uses ``MLFLOW_TRACKING_URI`` or MLflow's
            default (``sqlite:///mlflow.db``).
        retry_seconds: How long to keep retrying a transient failure.
        direct_writes: Write runs straight into a database store where possible
            (:class:`~study.tracking._sqlwriter.SqlRunWriter`); ``False`` sends every write
            through ``MlflowClient``.

    Raises:
        TrackingError: The tracking store cannot be reached.
    """

    def __init__(self, tracking_uri: str | None = None, *, retry_seconds: float = 120.0,
                 direct_writes: bool = True) -> None:
        self.retry_seconds = retry_seconds
        self._artifact_uris: dict[str, str] = {}  # of the runs created here
        shown = redact(tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "default"))
        try:
            self.client = MlflowClient(tracking_uri)
            self.tracking_uri = self.client.tracking_uri
        except Exception as exc:  # MlflowException for unsupported schemes, driver errors
            raise TrackingError(
                f"`tracking_uri` could not be opened: {shown}: {one_line(exc)}"
            ) from None
        if redact(self.tracking_uri) != self.tracking_uri:
            # MLflow prints "View run <URI>/#/..." links with the URI as given, password and all.
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        try:
            self._call(self.client.search_experiments, max_results=1)
        except TrackingError as exc:
            raise TrackingError(f"`tracking_uri` could not be opened: {shown}: {exc}") from None
        engine = getattr(getattr(self.client._tracking_client, "store", None), "engine", None)
        self._writer: SqlRunWriter | None = None
        if engine is not None:  # a database store in this process (not a tracking server)
            tune_sqlite_engine(engine)
            self._writer = SqlRunWriter.open(self.client) if direct_writes else None

    # -- experiments and runs -----------------------------------------------------------------
    def experiment_id(self, name: str) -> str:
        """The id of experiment ``name``, created when missing (restored when deleted)."""
        experiment = self._call(self.client.get_experiment_by_name, name)
        if experiment is None:
            return self._call(self.client.create_experiment, name)
        if experiment.lifecycle_stage == "deleted":
            self._call(self.client.restore_experiment, experiment.experiment_id)
        return experiment.experiment_id

    def experiment_name(self, experiment_id: str) -> str:
        """The name of experiment ``experiment_id``."""
        return self._call(self.client.get_experiment, experiment_id).name

    def get_run(self, run_id: str) -> Any | None:
        """The run ``run_id``, or ``None`` when it does not exist or was deleted (an
        unreachable store is retried, then an error, never taken for a missing run)."""

        def get_run(run_id: str) -> Any | None:
            try:
                return self.client.get_run(run_id)
            except MlflowException as exc:
                if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    return None
                raise

        run = self._call(get_run, run_id)
        return None if run is None or run.info.lifecycle_stage == "deleted" else run

    def create_run(
        self, experiment_id: str, *, name: str, tags: Mapping[str, str],
        parent_run_id: str | None = None,
    ) -> str:
        """Create a run (RUNNING) and return its id; nest it when ``parent_run_id`` is given."""
        all_tags = dict(tags)
        if parent_run_id:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
        writer = self._writer
        if writer is not None:
            made = self._call(writer.create_run, experiment_id, name=name, start_time=_now_ms(),
                              tags=[RunTag(k, str(v)) for k, v in all_tags.items()])
            if made is not None:
                self._artifact_uris[made[0]] = made[1]
                return made[0]
        run = self._call(
            self.client.create_run, experiment_id, tags=all_tags, run_name=name
        )
        self._artifact_uris[run.info.run_id] = run.info.artifact_uri
        return run.info.run_id

    def set_tags(self, run_id: str, tags: Mapping[str, Any], *,
                 metrics: Mapping[str, float] | None = None, step: int = 0) -> None:
        """Set several tags (and log ``metrics`` at ``step``) in one call."""
        self._log_batch(run_id, **_tags_and_metrics(tags, metrics, step))

    def close_run(self, run_id: str, status: str, *, tags: Mapping[str, Any],
                  metrics: Mapping[str, float] | None = None, step: int = 0) -> None:
        """Set ``tags``, log ``metrics`` at ``step`` and terminate ``run_id`` with an MLflow
        ``status``: one write where the store takes it."""
        self._log_batch(run_id, **_tags_and_metrics(tags, metrics, step), status=status)

    def log_params(self, run_id: str, params: Mapping[str, Any], *,
                   metrics: Mapping[str, float] | None = None, new_run: bool = False) -> None:
        """Log params (and ``metrics`` at step 0) in one call, skipping keys the run already
        has (MLflow params are write-once; ``mlflow run`` logs the entry point's own parameters
        first). ``new_run``: the run was just created here and has none, so skip the look-up."""
        existing = {} if new_run else self._call(self.client.get_run, run_id).data.params
        fresh = [
            Param(k, redact(str(v))[:_PARAM_LIMIT])
            for k, v in params.items()
            if k not in existing and v is not None
        ]
        timestamp = _now_ms()
        batch = [Metric(k, float(v), timestamp, 0) for k, v in (metrics or {}).items()]
        if fresh or batch:
            self._log_batch(run_id, params=fresh, metrics=batch)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], *, step: int = 0) -> None:
        """Log several metrics at ``step`` in one batched call."""
        timestamp = _now_ms()
        batch = [Metric(k, float(v), timestamp, step) for k, v in metrics.items()]
        if batch:
            self._log_batch(run_id, metrics=batch)

    def log_state_dict(self, run_id: str, state_dict: Mapping[str, Any], path: str) -> None:
        """Save a model's ``state_dict`` with ``torch.save`` and log it as artifact ``path``."""
        import tempfile

        import torch

        tensors = {k: v.detach().cpu() for k, v in state_dict.items()}
        folder, _, name = path.rpartition("/")
        local_root = _local_path(self._artifact_uris.get(run_id))
        if local_root is not None:
            # A run this process created, with artifacts on a local disk: written in place
            # (no temporary copy, and no look-up of the run to find where they go).
            target = os.path.join(local_root, folder, name)
            try:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                torch.save(tensors, target)
            except OSError as exc:
                raise TrackingError(f"could not log {path} to run {run_id}: "
                                    f"{one_line(exc)}") from None
            return
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, name)
            torch.save(tensors, local)
            self._call(self.client.log_artifact, run_id, local, artifact_path=folder or None)

    def log_table(self, run_id: str, table: Any, artifact_file: str) -> None:
        """Log a DataFrame as an MLflow table artifact (the UI's artifact view shows it as a
        table, and ``mlflow.load_table`` reads it back).

        Raises:
            TrackingError: The tracking store refused it.
        """
        self._call(self.client.log_table, run_id, data=table, artifact_file=artifact_file)

    def log_artifacts(self, run_id: str, local: str | os.PathLike[str], artifact_path: str) -> None:
        """Log ``local`` (a file, or a folder's files) under ``artifact_path`` of ``run_id``.

        Raises:
            TrackingError: The artifact store refused it.
        """
        local = os.fspath(local)
        try:
            if os.path.isdir(local):
                self.client.log_artifacts(run_id, local, artifact_path=artifact_path or None)
            else:
                self.client.log_artifact(run_id, local, artifact_path=artifact_path or None)
        except Exception as exc:  # artifact stores raise their own types (OSError, boto, ...)
            raise TrackingError(f"could not log {local} to run {run_id}: {one_line(exc)}") \
                from None

    def end_run(self, run_id: str, status: str) -> None:
        """Terminate ``run_id`` with an MLflow status (FINISHED, FAILED, KILLED)."""
        self._log_batch(run_id, status=status)

    def _log_batch(self, run_id: str, *, metrics: list[Metric] | None = None,
                   params: list[Param] | None = None, tags: list[RunTag] | None = None,
                   status: str | None = None) -> None:
        """One batched write, terminating the run with ``status`` when given: straight into a
        database store where it can, else (and where the direct write declines) through the
        client."""
        batch = {"metrics": metrics or [], "params": params or [], "tags": tags or []}
        writer = self._writer
        end = None if status is None else (status, _now_ms())
        if writer is not None and self._call(writer.log_batch, run_id, **batch, end=end):
            return
        if any(batch.values()):
            self._call(self.client.log_batch, run_id, **batch)
        if status is not None:
            self._call(self.client.set_terminated, run_id, status=status)

    def find_runs(self, experiment_id: str, filter_string: str) -> list[Any]:
        """All runs of ``experiment_id`` matching ``filter_string`` (every page)."""
        runs: list[Any] = []
        token = None
        while True:
            page = self._call(
                self.client.search_runs, [experiment_id], filter_string,
                max_results=1000, page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + self.retry_seconds
        delay = _FIRST_DELAY
        while True:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # MlflowException, requests and driver errors
                if not is_transient(exc):
                    raise TrackingError(f"MLflow {fn.__name__} failed: {one_line(exc)}") from None
                if time.monotonic() + delay > deadline:
                    raise TrackingError(
                        f"MLflow tracking store {redact(self.tracking_uri)} unreachable for "
                        f"{self.retry_seconds:g} s ({one_line(exc)}); stopping. Run the same "
                        f"command again when it is back: the study resumes."
                    ) from None
                print(f"warning: MLflow {fn.__name__} failed ({one_line(exc)[:160]}); "
                      f"retrying in {delay:g} s", file=sys.stderr, flush=True)
                time.sleep(delay)
                delay = min(delay * 2, _MAX_DELAY)


def _tags_and_metrics(tags: Mapping[str, Any], metrics: Mapping[str, float] | None,
                      step: int) -> dict[str, list[Any]]:
    """``tags`` and ``metrics`` (at ``step``, timestamped now) as MLflow entities."""
    timestamp = _now_ms()
    return {"tags": [RunTag(k, str(v)) for k, v in tags.items()],
            "metrics": [Metric(k, float(v), timestamp, step) for k, v in (metrics or {}).items()]}


def _local_path(uri: str | None) -> str | None:
    """The folder of a local artifact URI (a path or ``file:``), else ``None``."""
    if not uri:
        return None
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        return urllib.request.url2pathname(parsed.path)
    if parsed.scheme == "" and os.path.isabs(uri):
        return uri
    return None
