"""The analysis.json document: SPEC section 6 schema, JSON-clean, fast on 10,000 trials."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from study.analysis import analyze, trial_table, write_analysis
from tests.analysis_tests.synth import synthetic_table

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPEC_KEYS = {"schema", "study_name", "n_trials_used", "early_epochs", "models",
             "decomposition", "verdict"}
MODEL_KEYS = {"formula", "n", "r2", "coefficients"}


def _floats(value: Any) -> list[float]:
    if isinstance(value, dict):
        return [f for v in value.values() for f in _floats(v)]
    if isinstance(value, list):
        return [f for v in value for f in _floats(v)]
    return [value] if isinstance(value, float) else []


@pytest.fixture(scope="module")
def document() -> dict:
    table = synthetic_table(50, seed=1, data_size=-0.1, penalty_size=0.3,
                            modes=("l2-in-loss", "none"))
    return analyze(table, study_name="cnn-width", early_epochs=2)


def test_document_has_every_spec_key(document: dict) -> None:
    assert set(document) >= SPEC_KEYS
    assert document["schema"] == "study.analysis/1"
    assert (document["study_name"], document["early_epochs"]) == ("cnn-width", 2)
    assert document["n_trials_used"] == 50


def test_models_are_exactly_the_four_spec_models(document: dict) -> None:
    assert set(document["models"]) == {"total", "data", "penalty", "explain"}
    for model in document["models"].values():
        assert set(model) == MODEL_KEYS
        for coefficient in model["coefficients"].values():
            assert set(coefficient) == {"estimate", "ci95", "p_value"}
            assert len(coefficient["ci95"]) == 2


def test_decomposition_and_verdict_have_exactly_the_spec_keys(document: dict) -> None:
    assert set(document["decomposition"]) == {
        "width_effect_total", "width_effect_data", "width_effect_penalty", "penalty_share"}
    for key in ("width_effect_total", "width_effect_data", "width_effect_penalty"):
        assert set(document["decomposition"][key]) == {"estimate", "ci95"}
    assert set(document["verdict"]) == {"code", "text"}


def test_decomposition_models_share_one_design(document: dict) -> None:
    terms = [list(document["models"][k]["coefficients"]) for k in ("total", "data", "penalty")]
    assert terms[0] == terms[1] == terms[2]
    assert "mode[l2-in-loss]" in terms[0]


def test_extras_name_the_medians_and_dropped_terms(document: dict) -> None:
    assert document["n_trials_total"] == 50
    assert document["medians"]["lr"] > 0 and document["medians"]["batch_size"] > 0
    assert "penalty_mode" not in document["dropped"]
    assert document["mode_reference"] == "none"


def test_document_survives_a_json_round_trip(document: dict) -> None:
    assert json.loads(json.dumps(document, allow_nan=False)) == document


def test_write_analysis_writes_indented_json(document: dict, tmp_path: Path) -> None:
    path = write_analysis(document, tmp_path / "analysis" / "analysis.json")
    text = path.read_text(encoding="utf-8")
    assert json.loads(text) == document and text.startswith('{\n  "schema"')


def test_degenerate_numbers_become_none_not_nan() -> None:
    # Penalty identically 0: its r2 and p-values are undefined.
    table = synthetic_table(30, seed=2, data_size=0.1, penalty_noise=0.0, modes=("none",))
    document = analyze(table, study_name="s", early_epochs=1)
    json.dumps(document, allow_nan=False)
    assert document["models"]["penalty"]["r2"] is None
    assert not [f for f in _floats(document) if not math.isfinite(f)]


def test_no_usable_trials_still_gives_a_schema_valid_document() -> None:
    table = synthetic_table(5, seed=2)
    table["state"] = "FAIL"
    document = analyze(table, study_name="s", early_epochs=1)
    assert set(document) >= SPEC_KEYS and set(document["models"]["total"]) == MODEL_KEYS
    assert document["n_trials_used"] == 0 and document["n_trials_total"] == 5
    assert document["verdict"]["code"] == "inconclusive"
    assert document["decomposition"]["width_effect_total"] is None
    json.dumps(document, allow_nan=False)


def test_only_usable_trials_are_counted() -> None:
    table = synthetic_table(30, seed=3, penalty_size=0.2)
    table.loc[:4, "state"] = "FAIL"
    table.loc[5:7, "state"] = "PRUNED"
    table.loc[5, "early_loss"] = np.nan  # pruned before the early window
    document = analyze(table, study_name="s", early_epochs=1)
    assert document["n_trials_used"] == 24  # 30 - 5 failed - 1 pruned early
    assert document["n_trials_by_state"] == {"FAIL": 5, "PRUNED": 3, "COMPLETE": 22}


def test_analyze_reads_a_real_optuna_trial_table() -> None:
    study = optuna.create_study()
    table = synthetic_table(20, seed=4, data_size=-0.1, penalty_size=0.3)
    for row in table.to_dict("records"):
        hparams = {k: row[k] for k in ("width", "lr", "batch_size", "weight_decay",
                                       "penalty_mode")}
        attrs = {"hparams": {k: v.item() if hasattr(v, "item") else v
                             for k, v in hparams.items()},
                 "n_params": int(row["n_params"]),
                 **{k: float(row[k]) for k in ("early_loss", "early_data_loss",
                                               "early_penalty")}}
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=float(row["value"]),
                                     params={"lr": float(row["lr"])}, user_attrs=attrs,
                                     distributions={"lr": FloatDistribution(1e-5, 1.0)}))
    from_study = analyze(trial_table(study), study_name="s", early_epochs=1)
    direct = analyze(table, study_name="s", early_epochs=1)
    assert from_study["decomposition"] == direct["decomposition"]
    assert from_study["verdict"]["code"] == "penalty"


def test_ten_thousand_trials_are_analysed() -> None:
    table = synthetic_table(10_000, seed=5, data_size=0.05, size_x_lr=-0.2, penalty_size=0.2,
                            modes=("l2-in-loss", "coupled", "none"))
    start = time.perf_counter()
    document = analyze(table, study_name="s", early_epochs=1)
    print(f"analyze() of 10,000 trials: {time.perf_counter() - start:.3f} s")
    assert document["n_trials_used"] == 10_000
    json.dumps(document, allow_nan=False)
