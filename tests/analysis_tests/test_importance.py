"""Hyperparameter importance on real in-memory Optuna trials with a known ground truth.

The objective depends strongly on ``lr`` and weakly on ``width``; ``early_loss`` depends on
``n_params = 63 * width**2 + 200`` only. No mocks: the evaluators are Optuna's own.
"""

from __future__ import annotations

import json
import logging
import math
import threading

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from study.analysis.importance import (
    COLUMNS,
    MIN_TRIALS,
    _unlogged,
    importance_summary,
    importance_table,
)
from study.errors import ConfigError

DISTRIBUTIONS = {
    "width": IntDistribution(4, 32, log=True),
    "lr": FloatDistribution(1e-4, 1e-2, log=True),
    "batch_size": CategoricalDistribution([32, 64, 128]),
    "weight_decay": FloatDistribution(1e-5, 1e-2, log=True),
    "penalty_mode": CategoricalDistribution(["l2-in-loss", "none"]),
}


def make_trials(n: int, *, seed: int = 0, state: TrialState = TrialState.COMPLETE,
                drop: tuple[str, ...] = (), early: bool = True, sizes: bool = True,
                lr_low: float = 1e-4) -> list[optuna.trial.FrozenTrial]:
    """``n`` trials whose value is ``(log10 lr + 2.5)**2`` plus a little width and noise."""
    rng = np.random.default_rng(seed)
    dists = {**DISTRIBUTIONS, "lr": FloatDistribution(lr_low, 1e-2, log=True)}
    trials = []
    for _ in range(n):
        width = round(math.exp(rng.uniform(math.log(4), math.log(32))))
        params = {"width": width, "lr": math.exp(rng.uniform(math.log(lr_low), math.log(1e-2))),
                  "batch_size": int(rng.choice([32, 64, 128])),
                  "weight_decay": math.exp(rng.uniform(math.log(1e-5), math.log(1e-2))),
                  "penalty_mode": str(rng.choice(["l2-in-loss", "none"]))}
        n_params = 63 * width**2 + 200
        value = (math.log10(params["lr"]) + 2.5) ** 2 + 0.02 * math.log(width) \
            + 0.01 * rng.normal()
        attrs = {"n_params": n_params} if sizes else {}
        if early:
            attrs["early_loss"] = math.log(n_params) + 0.05 * rng.normal()
        trials.append(optuna.trial.create_trial(
            params={k: v for k, v in params.items() if k not in drop},
            distributions={k: v for k, v in dists.items() if k not in drop},
            value=value if state == TrialState.COMPLETE else None,
            user_attrs=attrs, state=state))
    return trials


def rows(table: pd.DataFrame, target: str, evaluator: str) -> pd.DataFrame:
    return table[(table.target == target) & (table.evaluator == evaluator)]


def importance(table: pd.DataFrame, target: str, evaluator: str) -> dict[str, float]:
    part = rows(table, target, evaluator)
    return dict(zip(part.param, part.importance, strict=True))


@pytest.fixture(scope="module")
def trials() -> list[optuna.trial.FrozenTrial]:
    return make_trials(60)


@pytest.fixture(scope="module")
def table(trials) -> pd.DataFrame:
    return importance_table(trials, seed=0, n_bootstrap=10)


def test_columns_and_no_errors(table):
    assert tuple(table.columns) == COLUMNS
    assert table.error.isna().all()
    assert set(table.n_trials) == {60}


@pytest.mark.parametrize("evaluator", ["fanova", "ped-anova"])
def test_lr_dominates_the_objective(table, evaluator):
    found = importance(table, "objective", evaluator)
    found.pop("n_params")
    assert max(found, key=found.get) == "lr"
    assert found["lr"] > 0.5


@pytest.mark.parametrize("evaluator", ["fanova", "ped-anova"])
def test_n_params_is_a_derived_driver_of_early_loss(table, evaluator):
    part = rows(table, "early_loss", evaluator)
    derived = part[part.derived]
    assert list(derived.param) == ["n_params"]
    assert derived.importance.iloc[0] > 0.5
    assert not part[part.param != "n_params"].derived.any()
    searched = importance(table, "early_loss", evaluator)
    searched.pop("n_params")
    assert max(searched, key=searched.get) == "width"


def test_same_seed_gives_the_same_table(trials, table):
    pd.testing.assert_frame_equal(importance_table(trials, seed=0, n_bootstrap=10), table)


def test_another_seed_changes_fanova_and_the_intervals(trials, table):
    other = importance_table(trials, seed=1, n_bootstrap=10)
    fanova = other.evaluator == "fanova"
    assert not np.allclose(other[fanova].importance, table[fanova].importance)
    assert set(other[fanova].evaluator_seed) == {1}
    ped = other.evaluator == "ped-anova"  # deterministic point estimate, reseeded bootstrap
    np.testing.assert_allclose(other[ped].importance, table[ped].importance)
    assert not np.allclose(other[ped].ci_lo, table[ped].ci_lo)
    assert set(other.bootstrap_seed) == {1}


def test_evaluators_and_their_seeds_are_recorded(table):
    assert set(table.evaluator) == {"fanova", "ped-anova"}
    fanova = table[table.evaluator == "fanova"]
    assert set(fanova.evaluator_seed) == {0} and set(fanova.n_trees.dropna()) == {32}
    ped = table[table.evaluator == "ped-anova"]
    assert ped.evaluator_seed.isna().all() and ped.n_trees.isna().all()
    assert set(table.bootstrap_seed) == {0} and set(table.n_bootstrap) == {10}


def test_intervals_are_ordered_and_mostly_contain_the_estimate(table):
    assert (table.ci_lo <= table.ci_hi).all()
    inside = (table.ci_lo - 1e-9 <= table.importance) & (table.importance <= table.ci_hi + 1e-9)
    assert inside.mean() >= 0.7


def test_importance_sums_to_one_over_searched_params(table):
    sums = table[~table.derived].groupby(["target", "evaluator"]).importance.sum()
    assert len(sums) == 4
    np.testing.assert_allclose(sums, 1.0, atol=1e-6)


def test_too_few_trials_give_error_rows():
    few = importance_table(make_trials(3), n_bootstrap=2)
    assert len(few) == 4 and few.param.isna().all() and few.importance.isna().all()
    assert few.error.str.contains("needs at least").all()
    some = importance_table(make_trials(MIN_TRIALS["ped-anova"] - 1), targets=("objective",),
                            n_bootstrap=2)
    assert rows(some, "objective", "fanova").error.isna().all()
    assert "needs at least 10" in rows(some, "objective", "ped-anova").error.iloc[0]
    enough = importance_table(make_trials(MIN_TRIALS["ped-anova"]), targets=("objective",),
                              evaluators=("ped-anova",), n_bootstrap=2)
    assert enough.error.isna().all()


def test_states_decide_which_trials_count():
    trials = (make_trials(50) + make_trials(10, seed=1, state=TrialState.PRUNED)
              + make_trials(3, seed=2, state=TrialState.PRUNED, early=False)
              + make_trials(5, seed=3, state=TrialState.FAIL)
              + make_trials(4, seed=4, drop=("penalty_mode",)))
    found = importance_table(trials, evaluators=("fanova",), n_bootstrap=2)
    assert set(rows(found, "objective", "fanova").n_usable) == {50}
    assert set(rows(found, "early_loss", "fanova").n_usable) == {60}


def test_more_than_max_trials_are_subsampled():
    found = importance_table(make_trials(120), evaluators=("fanova",), targets=("objective",),
                             n_bootstrap=2, max_trials=50)
    assert set(found.n_trials) == {50} and set(found.n_usable) == {120}
    assert found.error.isna().all()


def test_mdi_on_request(trials):
    found = importance_table(trials, evaluators=("mdi",), n_bootstrap=3)
    assert set(found.evaluator) == {"mdi"} and set(found.evaluator_seed) == {0}
    objective = importance(found, "objective", "mdi")
    objective.pop("n_params")
    assert max(objective, key=objective.get) == "lr"
    early = importance(found, "early_loss", "mdi")
    assert early["n_params"] > 0.5
    early.pop("n_params")  # Optuna's MDI mislabels params passed unsorted: guard against it
    assert max(early, key=early.get) == "width"


def test_an_evaluator_error_is_a_row_not_an_exception():
    # Two lr ranges: fANOVA refuses a dynamic search space, PED-ANOVA handles it.
    trials = make_trials(30) + make_trials(30, seed=1, lr_low=1e-5)
    found = importance_table(trials, targets=("objective",), n_bootstrap=2)
    fanova = rows(found, "objective", "fanova")
    assert len(fanova) == 1 and "ValueError" in fanova.error.iloc[0]
    assert "\n" not in fanova.error.iloc[0]
    assert rows(found, "objective", "ped-anova").error.isna().all()


def test_no_derived_row_without_width():
    found = importance_table(make_trials(20, drop=("width",)), evaluators=("fanova",),
                             n_bootstrap=2)
    assert "n_params" not in set(found.param) and not found.derived.any()


def test_without_n_params_attrs_the_derived_row_says_why():
    found = importance_table(make_trials(20, sizes=False), evaluators=("fanova",),
                             targets=("objective",), n_bootstrap=2)
    derived = found[found.derived]
    assert list(derived.param) == ["n_params"] and derived.importance.isna().all()
    assert derived.error.iloc[0].startswith("n_params pass:")
    assert found[~found.derived].error.isna().all()


def test_unknown_evaluator_is_a_config_error(trials):
    with pytest.raises(ConfigError, match="evaluators") as info:
        importance_table(trials, evaluators=("fanova", "shap"))
    assert "'shap'" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(("field", "value"), [("n_bootstrap", -1), ("max_trials", 0),
                                               ("targets", ("val_loss",)), ("seed", 1.5)])
def test_bad_arguments_are_config_errors(trials, field, value):
    with pytest.raises(ConfigError, match=f"`{field}`"):
        importance_table(trials, **{field: value})


def test_summary_is_json_ready(table):
    errors = importance_table(make_trials(3), n_bootstrap=2)
    summary = importance_summary(pd.concat([table, errors], ignore_index=True))
    text = json.dumps(summary, allow_nan=False)
    assert len(json.loads(text)) == len(table) + len(errors)
    assert summary[-1]["importance"] is None and summary[-1]["error"]
    assert summary[0]["evaluator_seed"] == 0 and isinstance(summary[0]["derived"], bool)


@pytest.mark.parametrize(("n", "quantile"), [(10, 0.5), (20, 0.25), (50, 0.1), (400, 0.1)])
def test_ped_anova_quantile_keeps_five_trials_on_top(n, quantile):
    from study.analysis.importance import ped_anova_quantile

    assert ped_anova_quantile(n) == pytest.approx(quantile)
    assert n * ped_anova_quantile(n) >= 5


# --- Optuna's logging is left as the user set it ------------------------------------------------
class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def optuna_info_records():
    """Optuna at INFO, its records collected; the verbosity restored afterwards."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    records = _Records()
    logging.getLogger("optuna").addHandler(records)
    yield records
    logging.getLogger("optuna").removeHandler(records)
    optuna.logging.set_verbosity(before)


def test_the_table_logs_no_study_creation_and_keeps_the_verbosity(optuna_info_records):
    importance_table(make_trials(12), evaluators=("fanova",), n_bootstrap=2)
    assert optuna.logging.get_verbosity() == optuna.logging.INFO
    assert not [m for m in optuna_info_records.messages if "A new study created" in m]
    optuna.create_study()  # the same line from the user's own code still gets through
    assert [m for m in optuna_info_records.messages if "A new study created" in m]


def test_the_silenced_logger_drops_this_threads_records_only(optuna_info_records):
    logger = logging.getLogger(optuna.storages.InMemoryStorage.__module__)
    filters = list(logger.filters)
    with _unlogged(logger):
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
        logger.info("from this thread")
        other = threading.Thread(target=logger.info, args=("from another thread",))
        other.start()
        other.join()
    assert optuna_info_records.messages == ["from another thread"]
    assert logger.filters == filters
