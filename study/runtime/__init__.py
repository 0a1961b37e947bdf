"""The runtime: the search space and objective, the session loop that runs a study's trials,
local workers, crash recovery, progress and status, and ``study trial``'s single run."""

from study.runtime.lifecycle import count_states, n_finished, open_study, prepare_study
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
    "prepare_study",
    "run_session",
    "run_single_trial",
    "run_with_workers",
    "study_status",
    "suggest_hparams",
    "train_logged",
    "trial_params",
]
