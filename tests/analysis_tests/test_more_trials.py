"""The command that runs the trials an inconclusive size question needs, after the answer of a
searched study (`study explain` designs say it in replicates, their own way)."""

from __future__ import annotations

import pytest

from study.analysis.command import more_trials_line


def _document(*, explain: bool | None = False, needed: int | None = 26,
              init_needed: int | None = None, used: int = 20) -> dict:
    return {"design": {"sampler": "tpe", "explain": explain}, "n_trials_used": used,
            "n_trials_by_state": {"COMPLETE": 12, "PRUNED": 8, "FAIL": 2},
            "verdict": {"code": "inconclusive", **({"trials_needed": needed} if needed else {})},
            "init": {"verdict": {"code": "inconclusive",
                                 **({"trials_needed": init_needed} if init_needed else {})}}}


def test_an_inconclusive_study_gets_the_command_that_decides_it(monkeypatch):
    """Found by a new user: "about 6 more trials (26 in total) would decide" named no command;
    `study run --n-trials 26` did decide it."""
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    assert more_trials_line(_document(), study_name="cnn-width") == (
        "more trials: study run --study-name cnn-width --n-trials 26 (with the same store "
        "flags) runs 6 more (about 26 usable trials would decide, if the estimate holds).")


def test_the_budget_counts_finished_trials_not_usable_ones(monkeypatch):
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    line = more_trials_line(_document(used=18, needed=24), study_name="s")  # 20 finished
    assert "--n-trials 26" in line and "runs 6 more" in line


def test_the_smaller_of_the_two_questions_counts_and_mlflow_run_spells_it_so(monkeypatch):
    monkeypatch.setenv("MLFLOW_RUN_ID", "r")
    line = more_trials_line(_document(needed=40, init_needed=30), study_name="my study")
    assert line.startswith("more trials: mlflow run . -e study -P study_name='my study' "
                           "-P n_trials=30 ")


@pytest.mark.parametrize("document", [
    _document(explain=True),  # its own advice, in replicates
    _document(explain=None),  # read from MLflow: not known to be a searched study
    _document(needed=None),  # decided, or no estimate
    _document(needed=20),  # already that many
])
def test_nothing_is_said_where_no_command_of_study_run_would_decide_it(document):
    assert more_trials_line(document, study_name="s") is None
