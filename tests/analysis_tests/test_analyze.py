"""The analysis.json document, schema study.analysis/3: the keys of /1 for the early window,
the same block for initialization, the threshold; JSON-clean; 10,000 trials."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from study.analysis import analyze, trial_table, write_analysis
from study.analysis.analyze import QUESTION_KEYS
from study.analysis.simulation import SCENARIOS, Scenario, simulate
from study.analysis.table import TABLE_COLUMNS

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPEC_KEYS = {"schema", "study_name", "n_trials_used", "early_epochs", "models",
             "decomposition", "verdict"}
V2_KEYS = {"init", "threshold", "by_weight_decay", "by_mode", "reference", "design"}
DECOMPOSITION_KEYS = {"width_effect_total", "width_effect_data", "width_effect_penalty",
                      "penalty_share"}


def _floats(value: Any) -> list[float]:
    if isinstance(value, dict):
        return [f for v in value.values() for f in _floats(v)]
    if isinstance(value, list):
        return [f for v in value for f in _floats(v)]
    return [value] if isinstance(value, float) else []


@pytest.fixture(scope="module")
def document() -> dict:
    return analyze(simulate(SCENARIOS[2], 1), study_name="cnn-width", early_epochs=2,
                   sampler="tpe")


def test_document_has_the_keys_of_both_schemas(document):
    assert set(document) >= SPEC_KEYS | V2_KEYS
    assert document["schema"] == "study.analysis/3"
    assert (document["study_name"], document["early_epochs"]) == ("cnn-width", 2)


def test_the_init_block_answers_the_same_way_as_the_early_window(document):
    assert set(document["init"]) == set(QUESTION_KEYS)
    for block in (document, document["init"]):
        assert set(block["decomposition"]) == DECOMPOSITION_KEYS
        assert set(block["models"]) >= {"data", "penalty", "total"}


def _noise_free_trials() -> pd.DataFrame:
    """24 l2-in-loss trials whose losses are exact functions of the hyperparameters (the
    coefficients of :func:`test_decomposition_recovers_the_known_effects_of_noise_free_trials`)."""
    rng = np.random.default_rng(7)
    widths = np.tile([2, 4, 8, 16, 32, 64], 4)
    n = len(widths)
    lr = 10 ** rng.uniform(-4, -2, n)
    bs = rng.choice([32, 64, 128], n)
    wd = 10 ** rng.uniform(-5, -2, n)
    P = 30 * widths**2 + 200 * widths + 50
    x, L, B, D = np.log10(P), np.log10(lr), np.log10(bs), np.log10(wd)
    init_data = 2.3 - 0.02 * x + 0.01 * B
    early_data = 2.0 - 0.1 * x + 0.3 * L + 0.05 * B + 0.02 * D + 0.04 * x * (L + 3) \
        + 0.01 * x * D
    init_w, early_w = 0.5 + 0.3 * widths, 0.8 + 0.45 * widths + 0.02 * widths * (L + 3)
    table = pd.DataFrame({
        "number": np.arange(n), "state": "COMPLETE", "width": widths, "lr": lr,
        "batch_size": bs, "weight_decay": wd, "penalty_mode": "l2-in-loss", "n_params": P,
        "train_seed": np.arange(n), "init_data_loss": init_data, "init_penalty": wd * init_w,
        "init_loss": init_data + wd * init_w, "init_weight_sq_norm": init_w,
        "early_data_loss": early_data, "early_penalty": wd * early_w,
        "early_loss": early_data + wd * early_w})
    for column in TABLE_COLUMNS:
        if column not in table:
            table[column] = None
    return table


def test_decomposition_recovers_the_known_effects_of_noise_free_trials():
    table = _noise_free_trials()
    found = analyze(table, study_name="s", early_epochs=1, compare_widths=(2, 64))
    # The truth, by hand: read at the median log10 lr and weight decay, per decade of
    # parameters between widths 2 and 64.
    L, D = np.median(np.log10(table["lr"])), np.median(np.log10(table["weight_decay"]))
    decades = np.log10((30 * 64**2 + 200 * 64 + 50) / (30 * 2**2 + 200 * 2 + 50))
    truth = {"init": {"data": -0.02, "penalty": 10**D * 0.3 * 62 / decades},
             "early": {"data": -0.1 + 0.04 * (L + 3) + 0.01 * D,
                       "penalty": 10**D * (0.45 + 0.02 * (L + 3)) * 62 / decades}}
    for block, known in ((found["init"], truth["init"]), (found, truth["early"])):
        d = block["decomposition"]
        assert d["width_effect_data"]["estimate"] == pytest.approx(known["data"], rel=1e-8)
        assert d["width_effect_penalty"]["estimate"] == pytest.approx(known["penalty"],
                                                                      rel=1e-8)
        assert d["width_effect_total"]["estimate"] == pytest.approx(
            known["data"] + known["penalty"], rel=1e-8)


def test_by_weight_decay_spans_the_studied_range_with_its_decades(document):
    decays = [row["weight_decay"] for row in document["by_weight_decay"]]
    low, high = document["threshold"]["studied_range"]
    assert decays[0] == low and decays[-1] == high
    assert {1e-4, 1e-3} <= set(decays)
    penalties = [row["penalty"]["estimate"] for row in document["by_weight_decay"]]
    assert penalties == sorted(penalties)  # the penalty part grows with weight decay


def test_each_mode_is_answered_at_the_reference_weight_decay(document):
    assert set(document["by_mode"]) == {"l2-in-loss", "none"}
    assert document["by_mode"]["none"]["penalty"]["estimate"] == 0.0
    assert document["reference"]["penalty_mode"] == "l2-in-loss"


def test_the_threshold_block_has_an_interval_and_says_how_it_was_found(document):
    found = document["threshold"]
    assert set(found) == {"estimate", "ci95", "status", "reason", "studied_range",
                          "searched_range", "basis", "extrapolated"}
    assert found["status"] in ("inside", "outside", "always", "never", "none")


def test_the_verdict_names_the_code_of_both_questions(document):
    verdict = document["verdict"]
    assert {"code", "text", "why", "init_code"} <= set(verdict)
    assert verdict["init_code"] == document["init"]["verdict"]["code"]


def test_document_survives_a_json_round_trip_without_nan(document):
    assert json.loads(json.dumps(document, allow_nan=False)) == document
    assert all(math.isfinite(f) for f in _floats(document))


def test_write_analysis_writes_indented_json(document, tmp_path: Path):
    path = write_analysis(document, tmp_path / "sub" / "analysis.json")
    text = path.read_text(encoding="utf-8")
    assert json.loads(text) == document and text.startswith('{\n  "schema"')


def test_no_usable_trials_still_gives_a_schema_valid_document():
    table = simulate(SCENARIOS[0], 2).head(5).copy()
    table["state"] = "RUNNING"
    document = analyze(table, study_name="s", early_epochs=1)
    assert set(document) >= SPEC_KEYS | V2_KEYS
    assert document["n_trials_used"] == 0 and document["n_trials_total"] == 5
    assert document["verdict"]["code"] == document["verdict"]["init_code"] == "inconclusive"
    assert document["decomposition"] is None
    json.dumps(document, allow_nan=False)


def test_failed_trials_count_at_initialization_but_not_in_the_early_window():
    table = simulate(SCENARIOS[0], 3)
    table.loc[:4, "state"] = "FAIL"
    table.loc[:4, ["early_loss", "early_data_loss", "early_penalty"]] = np.nan
    document = analyze(table, study_name="s", early_epochs=1)
    assert document["n_trials_used"] == len(table) - 5
    assert document["init"]["n_trials_used"] == len(table)


def test_analyze_reads_a_real_optuna_trial_table():
    study = optuna.create_study()
    table = simulate(SCENARIOS[1], 4)
    columns = ("init_loss", "init_data_loss", "init_penalty", "early_loss", "early_data_loss",
               "early_penalty")
    for row in table.to_dict("records"):
        hparams = {k: row[k] for k in ("width", "lr", "batch_size", "weight_decay",
                                       "penalty_mode")}
        attrs = {"hparams": hparams, "n_params": int(row["n_params"]),
                 "train_seed": int(row["train_seed"]), **{k: float(row[k]) for k in columns}}
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=1.0,
                                     params={"lr": float(row["lr"])}, user_attrs=attrs,
                                     distributions={"lr": FloatDistribution(1e-6, 1.0)}))
    from_study = analyze(trial_table(study), study_name="s", early_epochs=1)
    direct = analyze(table, study_name="s", early_epochs=1)
    assert from_study["decomposition"] == direct["decomposition"]
    assert from_study["init"]["threshold"] == direct["init"]["threshold"]


def test_ten_thousand_trials_are_analysed():
    big = Scenario("big", 10_000, (2, 64), (1e-4, 1e-2), (1e-5, 1e-2),
                   modes=("l2-in-loss", "coupled", "none"))
    table = simulate(big, 5)
    start = time.perf_counter()
    document = analyze(table, study_name="s", early_epochs=1)
    print(f"analyze() of 10,000 trials: {time.perf_counter() - start:.3f} s")
    assert document["n_trials_used"] == 10_000
    assert document["models"]["data"]["cov_type"] == "HC3"
    json.dumps(document, allow_nan=False)


def test_the_verdict_text_opens_with_one_line_per_question(document):
    verdict = document["verdict"]
    first, second, blank, *_ = verdict["text"].split("\n")
    assert (first, second) == (verdict["lines"]["init"], verdict["lines"]["early"])
    assert blank == ""
    assert first.startswith(f"At initialization: {verdict['init_code'].replace('-', ' ')}. ")
    assert second.startswith(f"Over the first 2 epochs: {verdict['code'].replace('-', ' ')}. ")
    assert verdict["text"].endswith(verdict["detail"])
    assert "`" not in verdict["text"]  # no Markdown in plain text


def test_the_lines_name_the_compared_widths_and_their_parameter_counts():
    scenario = SCENARIOS[3]  # explain, strong penalty: widths 2 to 64
    found = analyze(simulate(scenario, 2), study_name="s", early_epochs=1,
                    compare_widths=scenario.widths)
    line = found["verdict"]["lines"]["init"]
    assert line.startswith("At initialization: penalty. Bigger models start higher")
    assert "width 2 to 64, 344 to 261k parameters" in line
    assert found["reference"]["widths"] == [2, 64]
    assert found["reference"]["span"]["source"] == "configured"


def test_an_unsettled_total_says_it_holds_both_a_fall_and_a_rise():
    scenario = SCENARIOS[5]  # explain at lr 1e-3: a small rise at initialization, seed-noisy
    found = analyze(simulate(scenario, 0), study_name="s", early_epochs=1,
                    compare_widths=scenario.widths)
    total = found["init"]["decomposition"]["width_effect_total"]
    assert found["init"]["verdict"]["code"] == "inconclusive" and total["ci95"][0] <= 0
    line = found["verdict"]["lines"]["init"]
    assert line.startswith("At initialization: inconclusive. Cannot tell yet whether bigger "
                           "models start higher (width 2 to 64, 344 to 261k parameters): ")
    assert "holds both a fall and a rise" in line and "too wide to tell" not in line


def test_too_few_trials_state_no_threshold():
    table = simulate(SCENARIOS[0], 3).head(6)
    found = analyze(table, study_name="s", early_epochs=1, compare_widths=(4, 32))
    for block in (found, found["init"]):
        assert block["threshold"]["estimate"] is None
        assert "fewer than the 8" in block["threshold"]["reason"]
    assert "exceeds" not in found["verdict"]["detail"]


def test_too_few_trials_read_the_same_on_both_lines():
    found = analyze(simulate(SCENARIOS[0], 3).head(5), study_name="s", early_epochs=1,
                    compare_widths=(4, 32))
    for line in found["verdict"]["lines"].values():
        assert ": inconclusive. Cannot tell yet: only 5 usable trials" in line
        assert "[" not in line  # no interval from a regression without residual df


def test_too_few_trials_give_their_advice_once_in_the_detail():
    """Found by a new user: "run at least 3 more (...)" four times, in both lines and twice
    in the paragraph under them."""
    found = analyze(simulate(SCENARIOS[0], 3).head(5), study_name="s", early_epochs=1,
                    compare_widths=(4, 32))
    detail = found["verdict"]["detail"]
    assert detail.count("run at least 3 more") == 1
    assert "Inconclusive, for the same reason." in detail


def test_different_reasons_are_each_given_in_the_detail(document):
    assert "for the same reason" not in document["verdict"]["detail"]


@pytest.mark.parametrize("n", [4, 12])  # below and above the 8 trials a verdict needs
def test_a_study_of_one_size_says_the_size_question_is_not_asked_not_run_more(n):
    """Found by a first user: a gap experiment (one width) was told to "run at least 4 more"
    trials, which can never give a size effect; a later one, run with --width-min 4, was told
    to set "--width-min below --width-max", which the gap experiment ignores."""
    table = _noise_free_trials()
    table = table[table["width"] == 8].head(n) if n <= 4 else \
        pd.concat([table[table["width"] == 8]] * 3).head(n).assign(number=range(n))
    found = analyze(table, study_name="s", early_epochs=1)
    assert found["verdict"]["size_asked"] is False
    # A question the trials cannot ask is not an open one ("inconclusive" says run more).
    assert found["verdict"]["code"] == found["verdict"]["init_code"] == "not-asked"
    assert found["init"]["verdict"]["one_size"] is True
    why = ("Every trial has one size (width 8, 3,570 parameters): a size effect needs several "
           "widths; ask it with study explain --question size, or study run with --width-min "
           "below --width-max.")
    assert found["verdict"]["lines"] == {"init": f"At initialization: not asked. {why}",
                                         "early": f"Over the first epoch: not asked. {why}"}
    # What the terminal and the MLflow description print in place of both lines.
    assert found["verdict"]["headline"] == f"Model size: not asked. {why}"
    assert "more" not in found["verdict"]["text"]
    assert found["verdict"]["detail"].startswith("The size question is not asked here")


def test_a_study_of_several_sizes_is_asked(document):
    assert document["verdict"]["size_asked"] is True
    assert "one_size" not in document["init"]["verdict"]


def test_the_reference_batch_size_is_written_without_float_noise():
    """Found by a user: analysis.json held ``"batch_size": 32.00000000000001`` (the median's
    10 ** log10(32))."""
    table = _noise_free_trials()
    table["batch_size"] = np.where(np.arange(len(table)) % 2, 16, 64)  # geometric middle 32
    found = analyze(table, study_name="s", early_epochs=1, compare_widths=(2, 64))
    assert found["reference"]["batch_size"] == 32.0
    assert '"batch_size": 32.0' in json.dumps(found["reference"])


@pytest.mark.parametrize(("n", "short"), [(8, True), (9, False)])
def test_a_regression_with_too_few_trials_for_its_coefficients_says_how_many_more(n, short):
    """Found by a first user: "Cannot tell yet: no size effect could be estimated." after 8
    trials, with neither a reason nor a count."""
    found = analyze(_noise_free_trials().head(n), study_name="s", early_epochs=1)
    why = found["verdict"]["why"]
    assert ("has 8 coefficients and 8 usable trials; run at least 1 more" in why) is short
    assert "no size effect could be estimated" not in found["verdict"]["lines"]["early"]


def test_an_open_early_window_keeps_its_count_of_trials_in_the_document_verdict():
    """Found by a first user: explain never named the --replicates for "about 10 more trials
    (34 in total)": the count was dropped from the document's verdict, where explain reads it."""
    from study.explain import _more_replicates

    table = _noise_free_trials()
    noise = np.random.default_rng(3).normal(0, 0.2, len(table))
    table["early_data_loss"] += noise
    table["early_loss"] += noise
    found = analyze(table, study_name="s", early_epochs=1)
    verdict = found["verdict"]
    assert verdict["code"] == "inconclusive"
    assert f"({verdict['trials_needed']} in total)" in verdict["why"]
    (line,) = _more_replicates(found, per_replicate=6, replicates=4)
    assert line.startswith(f"more trials: the same command with --replicates "
                           f"{-(-verdict['trials_needed'] // 6)} runs ")
