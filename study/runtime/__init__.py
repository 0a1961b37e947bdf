"""The runtime: the search space and objective, the session loop that runs a study's trials,
local workers, crash recovery, progress and status, and ``study trial``'s single run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from study._lazy import lazy_exports

if TYPE_CHECKING:
    from study.runtime.lifecycle import (
        count_states,
        n_finished,
        open_study,
        open_study_trials,
        prepare_study,
    )
    from study.runtime.objective import Objective, train_logged
    from study.runtime.session import SessionResult, run_session, run_with_workers
    from study.runtime.single import SingleTrialResult, run_single_trial
    from study.runtime.space import suggest_hparams, trial_params
    from study.runtime.status import study_status
    from study.runtime.workers import check_workers

__all__ = [
    "Objective",
    "SessionResult",
    "SingleTrialResult",
    "check_workers",
    "count_states",
    "n_finished",
    "open_study",
    "open_study_trials",
    "prepare_study",
    "run_session",
    "run_single_trial",
    "run_with_workers",
    "study_status",
    "suggest_hparams",
    "train_logged",
    "trial_params",
]

_EXPORTS = {
    "count_states": "study.runtime.lifecycle",
    "n_finished": "study.runtime.lifecycle",
    "open_study": "study.runtime.lifecycle",
    "open_study_trials": "study.runtime.lifecycle",
    "prepare_study": "study.runtime.lifecycle",
    "Objective": "study.runtime.objective",
    "train_logged": "study.runtime.objective",
    "SessionResult": "study.runtime.session",
    "run_session": "study.runtime.session",
    "run_with_workers": "study.runtime.session",
    "SingleTrialResult": "study.runtime.single",
    "run_single_trial": "study.runtime.single",
    "suggest_hparams": "study.runtime.space",
    "trial_params": "study.runtime.space",
    "study_status": "study.runtime.status",
    "check_workers": "study.runtime.workers",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
