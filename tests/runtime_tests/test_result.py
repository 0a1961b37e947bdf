"""What a session reports when it ends (study.runtime.result) and how the CLI says it."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState, create_trial

from study.config import StudyConfig
from study.keys import FAILURE_ATTR, INTERRUPTED
from study.runtime.result import session_result


def test_failed_trials_that_an_interrupt_stopped_are_counted_apart(tmp_path, capsys):
    """Found by a new user: the resumed run said '1 failed' where `study status` said
    '1 fail (1 interrupted)'."""
    from study.cli import _print_result

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage)
    for failure in (INTERRUPTED, "RuntimeError: boom", INTERRUPTED):
        study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={FAILURE_ATTR: failure}))
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.5))

    result = session_result(study, StudyConfig(study_name="s", n_trials=1),
                            parent_run_id="0" * 32)
    assert (result.counts["FAIL"], result.interrupted, result.n_finished) == (3, 2, 1)
    _print_result(result)
    assert capsys.readouterr().out.splitlines()[0] == (
        f"study 's': 1/1 finished (1 complete, 0 pruned, 3 failed (2 interrupted)); "
        f"parent run {'0' * 32}")
