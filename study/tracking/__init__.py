"""MLflow tracking: the client wrapper (explicit run ids, batched writes, retries) and the
study's run layout (parent, session and trial runs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from study._lazy import lazy_exports

if TYPE_CHECKING:
    from study.tracking._tracker import Tracker
    from study.tracking._uri import check_tracking_uri
    from study.tracking.filters import tag_equals, tags_match
    from study.tracking.runs import (
        OWNER_TAG,
        STATE_TAG,
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
    "STATE_TAG",
    "TRIAL_STATUS",
    "Tracker",
    "check_tracking_uri",
    "claim_parent_run",
    "end_trial_run",
    "find_parent_run",
    "start_trial_run",
    "tag_equals",
    "tag_session",
    "tags_match",
    "trial_run_name",
]

_EXPORTS = {
    "Tracker": "study.tracking._tracker",
    "check_tracking_uri": "study.tracking._uri",
    "OWNER_TAG": "study.tracking.runs",
    "STATE_TAG": "study.tracking.runs",
    "tag_equals": "study.tracking.filters",
    "tags_match": "study.tracking.filters",
    "TRIAL_STATUS": "study.tracking.runs",
    "claim_parent_run": "study.tracking.runs",
    "end_trial_run": "study.tracking.runs",
    "find_parent_run": "study.tracking.runs",
    "start_trial_run": "study.tracking.runs",
    "tag_session": "study.tracking.runs",
    "trial_run_name": "study.tracking.runs",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
