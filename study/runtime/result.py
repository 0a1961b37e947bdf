"""What a session of a study reports when it ends: the counts, the best trial."""

from __future__ import annotations

import dataclasses
from typing import Any

import optuna

from study.config import StudyConfig
from study.keys import HPARAMS_ATTR
from study.runtime._interrupted import interrupted_trials
from study.runtime.lifecycle import count_states, n_finished
from study.runtime.parent import best_trial

__all__ = ["SessionResult", "session_result"]


@dataclasses.dataclass(frozen=True)
class SessionResult:
    """What one session did and where the study stands."""

    study_name: str
    parent_run_id: str
    counts: dict[str, int]
    n_finished: int
    n_trials: int
    best_value: float | None
    best_params: dict[str, Any] | None
    objective: str = "val_loss"  # what best_value is (the study's metric)
    # Failed trials a Ctrl-C or SIGTERM stopped (and queued again): nothing went wrong in them.
    interrupted: int = 0


def session_result(study: optuna.Study, config: StudyConfig, *,
                   parent_run_id: str) -> SessionResult:
    """The result of a session of ``study`` (``config``: its settings, this session's budget)."""
    best = best_trial(study)
    return SessionResult(
        study_name=study.study_name, parent_run_id=parent_run_id,
        counts=count_states(study), n_finished=n_finished(study), n_trials=config.n_trials,
        best_value=None if best is None else best.value,
        best_params=None if best is None else dict(best.user_attrs.get(HPARAMS_ATTR, best.params)),
        objective=config.objective,
        interrupted=len(interrupted_trials(study, None)),
    )
