"""The session's count of trials by state agrees with the study's own trials, on the service's
RDB storage (one COUNT) and on a journal storage (Optuna's count), queued trials included."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from study.runtime.lifecycle import FINISHED_STATES, TrialCounter
from study.storages import create_storage


@pytest.fixture(params=["sqlite", "journal"])
def storage(request, tmp_path):
    url = (f"sqlite:///{tmp_path / 'optuna.db'}" if request.param == "sqlite"
           else f"journal:{tmp_path / 'optuna.log'}")
    return create_storage(url)


def _study(storage) -> optuna.Study:
    study = optuna.create_study(storage=storage, study_name="s")
    for state in (TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
        study.add_trial(create_trial(state=state, value=None if state is TrialState.FAIL
                                     else 1.0))
    study.ask()  # RUNNING
    for x in range(3):
        study.enqueue_trial({"x": x})  # WAITING
    optuna.create_study(storage=storage, study_name="other").add_trial(
        create_trial(state=TrialState.COMPLETE, value=0.0))  # another study's: not counted
    return study


@pytest.mark.parametrize("states", [FINISHED_STATES, (TrialState.RUNNING,),
                                    (TrialState.WAITING,), (TrialState.FAIL,), ()])
def test_the_counts_are_the_studys_own(storage, states):
    study = _study(storage)
    counter = TrialCounter.of(storage, "s")
    assert counter(*states) == len(study.get_trials(deepcopy=False, states=states))


def test_the_counts_see_a_trial_told_after_the_counter_was_made(storage):
    study = _study(storage)
    counter = TrialCounter.of(storage, "s")
    assert counter(*FINISHED_STATES) == 3
    trial = study.ask()  # the first queued trial
    study.tell(trial, 0.5)
    assert counter(*FINISHED_STATES) == 4
    assert counter(TrialState.WAITING) == 2


def test_a_counter_of_a_missing_study_is_refused(storage):
    with pytest.raises(KeyError):
        TrialCounter.of(storage, "missing")
