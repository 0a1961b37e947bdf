"""Optuna's log lines about trials failed by our own errors, said once instead of three times."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from study.errors import StudyError

__all__ = ["one_line_trial_failures"]


class _StudyErrorsSaidOnce(logging.Filter):
    """Drop what Optuna logs about a trial failed by one of our errors (the parameters, the
    error with its traceback, then "failed with value None"): the progress line or the
    session's one-line error already says why, with the trial number."""

    def __init__(self) -> None:
        super().__init__()
        self._said: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and isinstance(record.exc_info[1], StudyError):
            self._said.add(message.split(" failed with parameters", 1)[0])  # "Trial 7"
            return False
        head, sep, _ = message.partition(" failed with value ")
        if sep and head in self._said:
            self._said.discard(head)
            return False
        return True


@contextlib.contextmanager
def one_line_trial_failures() -> Iterator[None]:
    logger = logging.getLogger("optuna.study._optimize")  # where Optuna logs failed trials
    only_lines = _StudyErrorsSaidOnce()
    logger.addFilter(only_lines)
    try:
        yield
    finally:
        logger.removeFilter(only_lines)
