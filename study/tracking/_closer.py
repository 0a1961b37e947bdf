"""Closing trial runs off the training loop's path: in order, on one thread, errors kept.

A trial run's close (upload its weights, drain MLflow's asynchronous queue, write the status) is
work nothing in the study waits for: the next trial's sampling reads Optuna, never MLflow. A
:class:`Closer` runs those closes on one background thread, in the order they were handed over,
so the status of a run is still written after everything logged to it. A close that failed is
raised at the next hand-over or at :meth:`Closer.wait`, as a synchronous close would have been
one trial earlier; a process killed before its closes ran leaves runs RUNNING, which the next
session closes (``study.runtime.recovery.close_orphan_runs``).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

__all__ = ["Closer"]


class Closer:
    """One background thread that runs closes in order and keeps their errors."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._futures: list[Future[Any]] = []

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` after every close handed over before it.

        Raises:
            Exception: The error of an earlier close that failed.
        """
        self.raise_failed()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="study-close")
        self._futures.append(self._executor.submit(fn, *args))

    def raise_failed(self) -> None:
        """Forget the closes that are done; raise the error of the first one that failed."""
        done = [f for f in self._futures if f.done()]
        self._futures = [f for f in self._futures if not f.done()]
        for future in done:
            error = future.exception()
            if error is not None:
                raise error

    def wait(self) -> None:
        """Wait for every close handed over; raise the first error among them.

        Raises:
            Exception: The error of the first close that failed.
        """
        futures, self._futures = self._futures, []
        first: BaseException | None = None
        for future in futures:
            error = future.exception()
            if error is not None and first is None:
                first = error
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if first is not None:
            raise first
