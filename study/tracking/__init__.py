"""MLflow tracking: the client wrapper (explicit run ids, batched writes, retries) and the
study's run layout (parent, session and trial runs)."""

from study.tracking._tracker import Tracker
from study.tracking.runs import (
    OWNER_TAG,
    TRIAL_STATUS,
    claim_parent_run,
    end_trial_run,
    find_parent_run,
    start_trial_run,
    tag_session,
    trial_run_name,
)

__all__ = [
    "OWNER_TAG",
    "TRIAL_STATUS",
    "Tracker",
    "claim_parent_run",
    "end_trial_run",
    "find_parent_run",
    "start_trial_run",
    "tag_session",
    "trial_run_name",
]
