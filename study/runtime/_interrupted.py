"""The line an interrupted session ends with: which of its trials failed and were queued again."""

from __future__ import annotations

from collections.abc import Mapping

import optuna
from optuna.trial import TrialState

from study.errors import StudyError
from study.keys import FAILURE_ATTR, WORKER_ATTR
from study.runtime.objective import INTERRUPTED
from study.runtime.recovery import RETRIED_FROM_ATTR

__all__ = ["interrupt_summary", "interrupted_trials"]


def interrupted_trials(study: optuna.Study, own: str | None) -> set[int]:
    """The numbers of the study's trials an interrupt failed: those of the process stamped
    ``own`` (a worker's, not its neighbours'), or every one."""
    try:
        return {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                if t.user_attrs.get(FAILURE_ATTR) == INTERRUPTED
                # A trial stopped before it was stamped is this process's (or nobody's).
                and (own is None or t.user_attrs.get(WORKER_ATTR) in (own, None))}
    except StudyError:  # the storage went away too: the summary says less
        return set()


def interrupt_summary(study: optuna.Study, before: set[int], own: str | None, *,
                      known: Mapping[int, bool] | None = None) -> str:
    """``interrupted: trial 7 failed and queued again; run the same command to resume``;
    ``known``: the trials this process failed (number -> queued again), whatever a read of
    the storage finds."""
    resume = "run the same command to resume"
    known = known or {}
    failed = sorted((interrupted_trials(study, own) | set(known)) - before)
    if not failed:
        return f"interrupted; {resume}"
    try:
        retried = {t.user_attrs.get(RETRIED_FROM_ATTR) for t in study.get_trials(
            deepcopy=False, states=(TrialState.WAITING,))}
    except StudyError:
        if not set(failed) <= set(known):  # the storage went away: say what is known
            return f"interrupted: {_trials(failed)} failed; {resume}"
        retried = set()
    queued = [n for n in failed if n in retried or known.get(n)]
    spent = [n for n in failed if n not in queued]
    parts = [f"{_trials(queued)} failed and queued again"] if queued else []
    parts += [f"{_trials(spent)} failed (retried too often to queue again)"] if spent else []
    return f"interrupted: {', '.join(parts)}; {resume}"


def _trials(numbers: list[int]) -> str:
    return f"trial{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))}"
