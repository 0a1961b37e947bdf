"""The note of a resumed study that keeps stored settings this command could seem to change:
an environment variable's value, and under ``mlflow run`` the parameters left at their
MLproject defaults (a ``-P`` equal to a default cannot be told from one not given)."""

from __future__ import annotations

from study.config import StudyConfig
from study.runtime.lifecycle import kept_settings_note

STORED = StudyConfig(study_name="quick", epochs=2, batch_sizes=(32,))


def test_under_mlflow_run_the_non_default_stored_settings_are_named():
    note = kept_settings_note(STORED, {}, environ={"MLFLOW_RUN_ID": "r1"})
    assert note == ("note: study 'quick' keeps the settings it was created with: epochs=2, "
                    "batch_sizes=32 (-P values equal to the MLproject defaults count as not "
                    "given).")


def test_a_setting_given_explicitly_is_not_named():
    note = kept_settings_note(STORED, {"epochs": 2}, environ={"MLFLOW_RUN_ID": "r1"})
    assert note is not None and "epochs" not in note and "batch_sizes=32" in note


def test_outside_mlflow_run_a_flag_left_out_says_nothing():
    assert kept_settings_note(STORED, {}, environ={}) is None


def test_a_stored_study_at_the_defaults_says_nothing_under_mlflow_run():
    assert kept_settings_note(StudyConfig(), {}, environ={"MLFLOW_RUN_ID": "r1"}) is None


def test_an_environment_value_that_differs_is_named_as_such():
    note = kept_settings_note(StudyConfig(), {}, environ={"MLFLOW_EXPERIMENT_NAME": "other"})
    assert note == ("note: study 'cnn-width' keeps the settings it was created with: "
                    "experiment='study' (MLFLOW_EXPERIMENT_NAME='other' applies to new "
                    "studies).")


def test_an_environment_value_equal_to_the_stored_one_says_nothing():
    assert kept_settings_note(StudyConfig(), {}, environ={"MLFLOW_EXPERIMENT_NAME": "study"}) \
        is None
