"""The MLflow client wrapper: explicit run ids, batched writes, retries on transient failures.

Everything goes through an explicit :class:`~mlflow.MlflowClient` and explicit run ids: MLflow's
active-run stack is thread-local, so nothing here relies on ``mlflow.start_run``.

The params, metrics and closing tags of the nested runs a tracker created (the trial runs, whose
data nothing reads before they close) go through MLflow's asynchronous logging
(``MlflowClient.log_batch(..., synchronous=False)``): the training loop
hands a batch over and goes on, and closing the run (``MlflowClient.set_terminated`` drains
MLflow's queue first) writes what is left before the status. MLflow buffers only when
``MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS`` is set (the batches of that many seconds in one write);
without it, each batch is written alone and closing a run waits up to a second for MLflow's
logging thread to stop. A tracker sets it to 1 while it has batches in flight, only where the
user has not set it, and removes it once they are written. Other runs (a parent run, the run
``mlflow run`` opens) are written synchronously. A tracker made with ``close_in_background``
closes its trial runs (weights upload, drain, status) on one background thread
(:class:`~study.tracking._closer.Closer`); :meth:`Tracker.wait_closed` waits for them.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from study.errors import TrackingError
from study.redact import one_line, redact
from study.tracking._artifacts import ArtifactsMixin
from study.tracking._closer import Closer
from study.tracking._local import check_local_folder
from study.tracking._retry import with_retries
from study.tracking.filters import tag_equals, tags_match

__all__ = ["BUFFERING_ENV", "CREATE_KEY_TAG", "PARENT_RUN_TAG", "Tracker"]

# MLflow's documented system tag that nests a run under another.
PARENT_RUN_TAG = "mlflow.parentRunId"
# A key the tracker generates for each run it creates: a retried create finds the run made by
# an attempt whose reply was lost, instead of making a second one.
CREATE_KEY_TAG = "study.create_key"
BUFFERING_ENV = "MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS"
# MLflow caps a param value at 6000 characters; config values are far below it.
_PARAM_LIMIT = 6000
# A batch handed to MLflow this long ago has been written or has failed (its queue writes each
# second): checked when the run's next batch is handed over.
_SETTLED_SECONDS = 2.0


def _now_ms() -> int:
    return int(time.time() * 1000)


class Tracker(ArtifactsMixin):
    """A thin, explicit-id wrapper over :class:`MlflowClient` for the study's run layout.

    Transient failures (connection refused, a server error, a locked database) are retried with
    exponential backoff for up to ``retry_seconds``; then :class:`TrackingError` says the
    store is unreachable, so a worker stops instead of training trials whose logs would be lost.

    Args:
        tracking_uri: MLflow tracking URI; ``None`` uses ``MLFLOW_TRACKING_URI`` or MLflow's
            default (``sqlite:///mlflow.db``).
        retry_seconds: How long to keep retrying a transient failure.
        asynchronous: Log the batches of the nested runs this tracker creates through
            MLflow's asynchronous logging (written within a second, and before the run's
            status when it is closed); ``False`` writes every batch before returning.
        close_in_background: Close those runs (weights upload, the queue's drain, the status)
            on a background thread, in order, so the next trial need not wait; an error is
            raised at the next create or close, or by :meth:`wait_closed`, which a session
            calls before it ends.
        known: The URI reached this store before (a study recorded its parent run there):
            a failure of the first call is an outage, not a typo (no fast refusal of a host
            name that does not resolve).
        pause: Called while a retry of the store's opening waits (see ``with_retries``): the
            command's interrupt check, so that a Ctrl-C held while the stores open stops a
            wait for a store that does not answer; before anything of a study is made there.

    Raises:
        TrackingError: The tracking store cannot be reached.
    """

    def __init__(self, tracking_uri: str | None = None, *, retry_seconds: float = 120.0,
                 asynchronous: bool = True, close_in_background: bool = False,
                 known: bool = False, pause: Callable[[], None] | None = None) -> None:
        self.retry_seconds = retry_seconds
        self._known, self._pause = known, pause  # the opening's only: see `pause`
        self.asynchronous = asynchronous
        self._closer: Closer | None = None
        self._nested: set[str] = set()  # open runs created here under a parent: asynchronous
        self._pending: dict[str, list[tuple[float, Any, dict[str, list[Any]]]]] = {}
        self._set_buffering = False
        # A hand-over racing a close (MLflow shuts its queue down) is never written: a hang.
        self._queue_lock = threading.Lock()
        shown = redact(tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "default"))
        try:
            check_local_folder(tracking_uri)
            self.client = MlflowClient(tracking_uri)
            self.tracking_uri = self.client.tracking_uri
        except Exception as exc:  # MlflowException for unsupported schemes, driver errors
            raise TrackingError(f"`tracking_uri` could not be opened: {shown}: "
                                f"{one_line(exc)}") from None
        # MLflow's "View run <URI>" links name the URI as given: a secret one is redacted
        # through a process-wide stdout redirection, never on a background thread.
        shown = redact(self.tracking_uri)  # named as resolved from here on, not "default"
        self._secret_uri = shown != self.tracking_uri
        if close_in_background and asynchronous and not self._secret_uri:
            self._closer = Closer()
        self._opened = False  # until then an outage is no study's to resume
        try:
            self._call(self.client.search_experiments, max_results=1)
        except TrackingError as exc:
            raise TrackingError(f"`tracking_uri` could not be opened: {shown}: {exc}") from None
        self._opened, self._pause = True, None

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
        """Create a run (RUNNING) and return its id; nest it when ``parent_run_id`` is given.

        Idempotent across retries: the run carries a key generated here (tag
        ``study.create_key``), and a retry after a transient failure first looks for a run with
        that key (an earlier attempt the store made but whose reply was lost) and returns it.
        """
        if self._closer is not None:
            self._closer.raise_failed()
        key = uuid.uuid4().hex
        all_tags = {**tags, CREATE_KEY_TAG: key}
        if parent_run_id:
            all_tags[PARENT_RUN_TAG] = parent_run_id
        attempts = 0

        def create_run() -> Any:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                made = self.client.search_runs([experiment_id], tag_equals(CREATE_KEY_TAG, key),
                                               max_results=1)
                if made:
                    return made[0]
            return self.client.create_run(experiment_id, tags=all_tags, run_name=name)

        run_id = self._call(create_run).info.run_id
        if parent_run_id and self.asynchronous:
            self._nested.add(run_id)
        return run_id

    def set_tags(self, run_id: str, tags: Mapping[str, Any], *,
                 metrics: Mapping[str, float] | None = None, step: int = 0) -> None:
        """Set several tags (and log ``metrics`` at ``step``) in one call."""
        self._log_batch(run_id, **_tags_and_metrics(tags, metrics, step))

    def close_run(self, run_id: str, status: str, *, tags: Mapping[str, Any],
                  metrics: Mapping[str, float] | None = None, step: int = 0) -> None:
        """Set ``tags``, log ``metrics`` at ``step`` and terminate ``run_id`` with an MLflow
        ``status``, after every batch logged to it (the status is written last; for a nested
        run this tracker created, the closing batch joins the asynchronous ones in one write)."""
        batch = _tags_and_metrics(tags, metrics, step)
        if run_id not in self._nested:
            self._log_batch(run_id, **batch)
            self._terminate(run_id, status)
            return
        self._log_async(run_id, **batch)
        if self._closer is None:
            self._terminate(run_id, status)
            return
        self._closer.submit(self._finish, run_id, status, self._detach(run_id))

    def wait_closed(self) -> None:
        """Wait for the runs being closed in the background (see ``close_in_background``).

        Raises:
            TrackingError: One of them could not be closed.
        """
        if self._closer is None:
            return
        try:
            self._closer.wait()
        finally:
            self._unset_buffering()

    def log_params(self, run_id: str, params: Mapping[str, Any], *,
                   metrics: Mapping[str, float] | None = None, new_run: bool = False) -> None:
        """Log params (and ``metrics`` at step 0) in one batch, skipping keys the run already
        has (MLflow params are write-once; ``mlflow run`` logs the entry point's own parameters
        first): asynchronously for a nested run this tracker created, as :meth:`log_metrics`.
        ``new_run``: the run was just created here and has none, so skip the look-up."""
        existing = {} if new_run else self._call(self.client.get_run, run_id).data.params
        fresh = [Param(k, redact(str(v))[:_PARAM_LIMIT]) for k, v in params.items()
                 if k not in existing and v is not None]
        timestamp = _now_ms()
        batch = [Metric(k, float(v), timestamp, 0) for k, v in (metrics or {}).items()]
        if run_id in self._nested:
            self._log_async(run_id, params=fresh, metrics=batch)
        elif fresh or batch:
            self._log_batch(run_id, params=fresh, metrics=batch)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], *, step: int = 0) -> None:
        """Log several metrics at ``step`` in one batch: handed to MLflow's asynchronous logging
        for a nested run this tracker created (written at the latest when it is closed), else
        written now."""
        timestamp = _now_ms()
        batch = [Metric(k, float(v), timestamp, step) for k, v in metrics.items()]
        if not batch:
            return
        if run_id in self._nested:
            self._log_async(run_id, metrics=batch)
        else:
            self._log_batch(run_id, metrics=batch)

    def end_run(self, run_id: str, status: str) -> None:
        """Terminate ``run_id`` with an MLflow status (FINISHED, FAILED, KILLED), after every
        batch logged to it; RUNNING reopens a terminated run (a resumed study's parent)."""
        if status == "RUNNING":
            return self._call(self.client.update_run, run_id, status=status)
        self._terminate(run_id, status)

    def find_runs(self, experiment_id: str, filter_string: str = "", *,
                  tags: Mapping[str, str] | None = None) -> list[Any]:
        """All runs of ``experiment_id`` matching ``filter_string`` and carrying exactly the
        ``tags`` (any values: quoted for MLflow's filter grammar by
        :func:`~study.tracking.filters.tag_equals`), every page."""
        tags = dict(tags or {})
        clauses = [c for c in (filter_string, *(tag_equals(k, v) for k, v in tags.items())) if c]
        runs: list[Any] = []
        token = None
        while True:
            page = self._call(
                self.client.search_runs, [experiment_id], " and ".join(clauses),
                max_results=1000, page_token=token,
            )
            runs.extend(run for run in page if tags_match(run, tags))
            token = page.token
            if not token:
                return runs

    # -- writes -------------------------------------------------------------------------------
    def _log_batch(self, run_id: str, *, metrics: list[Metric] | None = None,
                   params: list[Param] | None = None, tags: list[RunTag] | None = None) -> None:
        """One batched write, now (retried while the store is unreachable)."""
        if metrics or params or tags:
            self._call(self.client.log_batch, run_id, metrics=metrics or [],
                       params=params or [], tags=tags or [])

    def _log_async(self, run_id: str, *, metrics: list[Metric],
                   params: list[Param] | None = None, tags: list[RunTag] | None = None) -> None:
        """Hand a batch to MLflow's asynchronous logging (written within a second, batches of
        the same run in one write); kept until the run's close checks that it was written."""
        batch = {"metrics": metrics, "params": params or [], "tags": tags or []}
        if not any(batch.values()):
            return
        self._check_written(run_id)
        if BUFFERING_ENV not in os.environ:
            # Read by MLflow's logging thread on each round: set only while batches are in
            # flight, and only where the user has not set it.
            os.environ[BUFFERING_ENV] = "1"
            self._set_buffering = True
        try:
            with self._queue_lock:
                operation = self.client.log_batch(run_id, **batch, synchronous=False)
        except Exception:  # the queue refused the batch: write it now instead
            self._log_batch(run_id, **batch)
            return
        self._pending.setdefault(run_id, []).append((time.monotonic(), operation, batch))

    def _check_written(self, run_id: str) -> None:
        """Forget the batches of ``run_id`` that MLflow wrote (those handed over long enough
        ago to be done); where one failed, write every batch still pending now, with retries,
        so an unreachable store stops the trial at this step, as a synchronous write would."""
        pending = self._pending.get(run_id, [])
        settled = time.monotonic() - _SETTLED_SECONDS
        while pending and pending[0][0] < settled:
            if _failed(pending[0][1]):
                # The batches merged into a failed write follow it (MLflow reports them done).
                batches = [batch for _, _, batch in self._pending.pop(run_id)]
                try:
                    for batch in batches:
                        self._log_batch(run_id, **batch)
                except BaseException:
                    self._unset_buffering()  # the trial stops here: nothing left in flight
                    raise
                return
            pending.pop(0)

    def _terminate(self, run_id: str, status: str) -> None:
        """Close ``run_id``: MLflow's ``set_terminated`` drains its asynchronous queue, then
        writes the status. Where the queue failed to write, the run's batches are written again
        (with retries), and the status after them, so the status stays the last write."""
        pending = self._detach(run_id)
        try:
            self._finish(run_id, status, pending)
        finally:
            if self._closer is None:
                self._unset_buffering()

    def _detach(self, run_id: str) -> list[tuple[float, Any, dict[str, list[Any]]]]:
        """Forget ``run_id`` as an open asynchronous run; returns its batches in flight."""
        self._nested.discard(run_id)
        return self._pending.pop(run_id, [])

    def _unset_buffering(self) -> None:
        """Remove the buffering this tracker set, once no batch of it is in flight."""
        if self._set_buffering and not self._pending:
            os.environ.pop(BUFFERING_ENV, None)
            self._set_buffering = False

    def _finish(self, run_id: str, status: str,
                pending: list[tuple[float, Any, dict[str, list[Any]]]]) -> None:
        """Write the status of ``run_id`` after its batches (``pending``: those handed to
        MLflow's queue and not yet known to be written)."""
        self._call(self._set_terminated, run_id, status)
        if any(_failed(operation) for _, operation, _ in pending):
            # MLflow writes a run's queued batches as one and, when that write fails, reports
            # the ones merged into it as done: all of them are written again (a metric already
            # stored is skipped, a param or tag rewritten with its value).
            for _, _, batch in pending:
                self._log_batch(run_id, **batch)
            self._call(self._set_terminated, run_id, status)

    def _set_terminated(self, run_id: str, status: str) -> None:
        """``MlflowClient.set_terminated``, the links it prints redacted (a secret URI)."""
        printed = io.StringIO()
        with self._queue_lock, contextlib.ExitStack() as stack:
            if self._secret_uri:
                stack.callback(lambda: sys.stdout.write(redact(printed.getvalue())))
                stack.enter_context(contextlib.redirect_stdout(printed))
            self.client.set_terminated(run_id, status=status)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return with_retries(fn, *args, uri=self.tracking_uri, seconds=self.retry_seconds,
                            opened=self._opened, known=self._opened or self._known,
                            pause=self._pause, **kwargs)


def _failed(operation: Any) -> bool:
    """Whether an asynchronous write (MLflow's ``RunOperations``, already finished) failed."""
    try:
        operation.wait()
    except MlflowException:
        return True
    return False


def _tags_and_metrics(tags: Mapping[str, Any], metrics: Mapping[str, float] | None,
                      step: int) -> dict[str, list[Any]]:
    """``tags`` and ``metrics`` (at ``step``, timestamped now) as MLflow entities."""
    timestamp = _now_ms()
    return {"tags": [RunTag(k, str(v)) for k, v in tags.items()],
            "metrics": [Metric(k, float(v), timestamp, step) for k, v in (metrics or {}).items()]}
