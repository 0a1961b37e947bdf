"""Every trial trains with its own seed, and its loss before the first update is logged to both
stores (SPEC section 9). Real Optuna and MLflow SQLite stores, real training on digits."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState

from study.config import StudyConfig
from study.keys import TRAIN_SEED_ATTR
from study.runtime.lifecycle import load_study, prepare_study, sampler_seed
from study.runtime.recovery import retry_trial, worker_identity, worker_salt
from study.runtime.session import run_session
from study.runtime.space import train_seed

pytestmark = pytest.mark.usefixtures("clean_env")
INIT_METRICS = {"init/loss", "init/data_loss", "init/penalty", "init/weight_sq_norm"}


def config_of(storage_url: str, tracking_uri: str, **overrides) -> StudyConfig:
    values = dict(study_name="seeds", storage=storage_url, tracking_uri=tracking_uri,
                  experiment="exp", epochs=1, width_min=4, width_max=4, batch_sizes=(64,),
                  lr_min=1e-3, lr_max=1e-3, weight_decay_min=1e-2, weight_decay_max=1e-2,
                  n_trials=3, sampler="random", pruner="none", device="cpu",
                  penalty_mode=("l2-in-loss", "none"))
    values.update(overrides)
    return StudyConfig(**values)


@pytest.fixture
def finished(storage_url, tracking_uri, mlflow_client):
    config = config_of(storage_url, tracking_uri)
    run_session(config)
    study = optuna.load_study(study_name="seeds", storage=storage_url)
    runs = {r.data.tags["optuna.trial_number"]: r for r in mlflow_client.search_runs(
        [mlflow_client.get_experiment_by_name("exp").experiment_id],
        "tags.`study.role` = 'trial'")}
    return config, study, runs


def test_the_training_seed_is_derived_from_the_study_seed_and_the_trial_number():
    assert train_seed(0, 1) == train_seed(0, 1)
    assert len({train_seed(0, n) for n in range(100)}) == 100
    assert train_seed(0, 1) != train_seed(1, 1)


def test_each_trial_records_its_own_seed_in_both_stores(finished):
    config, study, runs = finished
    seeds = [t.user_attrs[TRAIN_SEED_ATTR] for t in study.trials]
    assert seeds == [train_seed(config.seed, t.number) for t in study.trials]
    assert len(set(seeds)) == len(seeds)
    for trial in study.trials:
        params = runs[str(trial.number)].data.params
        assert params["train_seed"] == str(trial.user_attrs[TRAIN_SEED_ATTR])
        assert params["seed"] == str(config.seed)  # the study's: it still picks the data split


def test_same_width_different_seeds_start_from_different_weights(finished):
    _, study, _ = finished
    norms = {t.user_attrs["init_weight_sq_norm"] for t in study.trials}
    assert len(norms) == len(study.trials)  # width 4 for all: only the seed differs


def test_the_loss_before_the_first_update_is_in_both_stores(finished):
    _, study, runs = finished
    for trial in study.trials:
        metrics = runs[str(trial.number)].data.metrics
        assert set(metrics) >= INIT_METRICS
        for name in INIT_METRICS:
            assert trial.user_attrs[name.replace("/", "_")] == pytest.approx(metrics[name])
        assert metrics["init/loss"] == pytest.approx(metrics["init/data_loss"]
                                                     + metrics["init/penalty"], rel=1e-12)
        assert 1.5 < metrics["init/data_loss"] < 3.5  # about ln 10 for ten classes


def test_the_initial_penalty_is_the_weight_decay_times_the_squared_norm_or_zero(finished):
    _, study, runs = finished
    modes = {t.params.get("penalty_mode") for t in study.trials}
    assert modes == {"l2-in-loss", "none"}  # seed 0 draws both modes in three trials
    for trial in study.trials:
        metrics = runs[str(trial.number)].data.metrics
        if trial.params["penalty_mode"] == "l2-in-loss":
            assert metrics["init/penalty"] == pytest.approx(
                1e-2 * metrics["init/weight_sq_norm"], rel=1e-12)
        else:
            assert metrics["init/penalty"] == 0.0


def test_a_retried_trial_keeps_its_seed(storage_url, tracking_uri):
    config = config_of(storage_url, tracking_uri, n_trials=1)
    run_session(config)
    study = load_study(prepare_study(config)).study
    (first,) = study.get_trials(deepcopy=False)
    retry_trial(study, first)  # as crash recovery does for a trial whose worker died
    run_session(config.replace(n_trials=2))
    retried = [t for t in optuna.load_study(study_name="seeds", storage=storage_url).trials
               if t.user_attrs.get("retried_from") == first.number]
    assert len(retried) == 1
    assert retried[0].user_attrs[TRAIN_SEED_ATTR] == first.user_attrs[TRAIN_SEED_ATTR]
    assert math.isclose(retried[0].user_attrs["init_weight_sq_norm"],
                        first.user_attrs["init_weight_sq_norm"], rel_tol=1e-12)


def test_a_retry_of_retries_that_never_recorded_a_seed_takes_the_first_ones(storage_url,
                                                                           tracking_uri):
    config = config_of(storage_url, tracking_uri, n_trials=1)
    study = load_study(prepare_study(config)).study
    run_session(config)  # trial 0, so the dead series below does not start at 0
    # Trial 1 and its retry 2 die before recording a seed; 3 retries 2.
    for _ in range(2):
        dying = study.ask()  # the queued retry, once there is one
        dead = study.tell(dying, state=TrialState.FAIL)
        assert TRAIN_SEED_ATTR not in dead.user_attrs
        assert retry_trial(study, dead, reason="its worker process died")

    run_session(config.replace(n_trials=2))

    trials = optuna.load_study(study_name="seeds", storage=storage_url).trials
    assert [t.user_attrs.get("retried_from") for t in trials] == [None, None, 1, 2]
    assert trials[3].state == TrialState.COMPLETE
    assert trials[3].user_attrs[TRAIN_SEED_ATTR] == train_seed(config.seed, 1)
    assert trials[3].user_attrs["retry_reason"] == "its worker process died"


def test_a_worker_records_its_sampler_seed_and_what_salted_it(storage_url, tracking_uri,
                                                             monkeypatch):
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "5")
    config = config_of(storage_url, tracking_uri, n_trials=1)
    run_session(config)  # `study run` creates the study; its sampler is not salted

    run_session(config.replace(n_trials=2), worker=True, given={"n_trials": 2})

    first, second = optuna.load_study(study_name="seeds", storage=storage_url).trials
    assert first.user_attrs["sampler_seed"] == {"seed": config.seed}
    recorded = second.user_attrs["sampler_seed"]
    assert recorded["salt_of"] == worker_identity()  # this process, as the worker
    assert recorded["salt_of"].endswith(" JOB_COMPLETION_INDEX=5")
    salt = worker_salt(recorded["salt_of"])
    assert recorded["seed"] == sampler_seed(config, n_existing=1, salt=salt) != config.seed + 1
