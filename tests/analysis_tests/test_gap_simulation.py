"""The gap block checked against the truth of simulated studies (study.analysis.gap_simulation:
batch-level training runs with per-trial learning rates, BatchNorm running statistics that
forget their start as (1 - momentum)^steps, dropout, growing overfitting, finite measurement
sets and pruned trials), whose expected parts come from the generative model.

The truth of a study is its expectation over trials given its data split (the validation set
and the training subset are shared by its trials; see study.analysis.gap). 100 studies of each
of 6 scenarios run by default; the variant marked ``slow`` runs 200.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np
import pytest
from scipy import stats

from study.analysis.gap import gap_block
from study.analysis.gap_simulation import GAP_SCENARIOS, simulate_gap
from study.analysis.gap_stats import threshold

PARTS = ("gap", "timing", "mode", "mode_batchnorm", "mode_dropout", "generalization", "lag")
LOSSES = ("train_data_loss", "val_loss")
STUDIES = 100
NOMINAL = (0.93, 0.97)
PER_PART = (0.91, 0.98)
SCENARIO = {s.name: s for s in GAP_SCENARIOS}


def _run(studies: int) -> dict:
    """Per part (and per scenario and part) whether each interval covered the truth; per
    scenario the verdicts, closing epochs and per-epoch entries beside the truth."""
    found: dict = defaultdict(list)
    for index, scenario in enumerate(GAP_SCENARIOS):
        name = scenario.name
        for seed in range(studies):
            trials, truth = simulate_gap(scenario, 10_000 * index + seed)
            block = gap_block(trials)
            for entry in block["epochs"]:
                for key in PARTS + LOSSES:
                    lo, hi = entry.get(key, {}).get("ci95", (None, None))
                    if lo is None or lo == hi:  # absent, one trial, or exactly 0 by design
                        continue
                    hit = lo <= truth.epochs[key][entry["epoch"] - 1] <= hi
                    found[key].append(hit)
                    found[(name, key)].append(hit)
            found[(name, "code")].append((block["verdict"]["code"], truth.code()))
            found[(name, "closes")].append((block["closes_at_epoch"], truth.closes_at()))
            found[(name, "studies")].append(({e["epoch"]: e for e in block["epochs"]}, truth))
    return found


@pytest.fixture(scope="module")
def outcomes() -> dict:
    return _run(STUDIES)


def test_part_intervals_cover_the_truth_at_95_percent(outcomes):
    hits = [hit for part in PARTS for hit in outcomes[part]]
    assert NOMINAL[0] <= float(np.mean(hits)) <= NOMINAL[1], f"{np.mean(hits):.3f}"


@pytest.mark.parametrize("part", PARTS)
def test_each_parts_intervals_cover_the_truth_near_95_percent(outcomes, part):
    # A part set by a per-trial constant (dropout's strength) gives about one independent
    # interval per study however many epochs it has: ~200 here, a standard error of 0.015.
    hits = outcomes[part]
    assert len(hits) >= 800
    assert PER_PART[0] <= float(np.mean(hits)) <= PER_PART[1], f"{part}: {np.mean(hits):.3f}"


@pytest.mark.parametrize("loss", LOSSES)
def test_loss_intervals_cover_the_truth(outcomes, loss):
    # The losses are skewed across trials (per-trial learning rates), which a t interval on
    # 12-16 trials pays for with a little coverage.
    assert 0.90 <= float(np.mean(outcomes[loss])) <= PER_PART[1]


@pytest.mark.parametrize("scenario", list(SCENARIO))
def test_no_scenario_is_far_from_nominal(outcomes, scenario):
    for part in PARTS:
        hits = outcomes[(scenario, part)]
        if hits:
            assert float(np.mean(hits)) >= 0.85, f"{scenario} {part}: {np.mean(hits):.3f}"


@pytest.mark.parametrize("scenario", list(SCENARIO))
def test_each_scenario_has_the_true_code_it_was_built_for(outcomes, scenario):
    truths = [true for _, true in outcomes[(scenario, "code")]]
    assert truths.count(SCENARIO[scenario].true_code) / len(truths) >= 0.95, truths


@pytest.mark.parametrize("scenario", list(SCENARIO))
def test_the_verdict_is_the_true_code_in_nine_studies_of_ten(outcomes, scenario):
    pairs = outcomes[(scenario, "code")]
    right = sum(found == true for found, true in pairs) / len(pairs)
    wrong = sum(found not in (true, "inconclusive") for found, true in pairs) / len(pairs)
    assert right >= 0.9, pairs
    assert wrong <= 0.02, pairs  # a wrong code, not an honest "inconclusive"


def test_the_lag_is_never_said_to_close_before_it_does(outcomes):
    early = []
    for scenario in SCENARIO:
        for found, true in outcomes[(scenario, "closes")]:
            early.append(found is not None and (true is None or found < true))
    assert float(np.mean(early)) <= 0.05


def test_the_lag_is_found_closed_within_two_epochs_of_the_truth(outcomes):
    late = []
    for scenario, setting in SCENARIO.items():
        for found, true in outcomes[(scenario, "closes")]:
            if true is not None and true <= setting.epochs - 2:  # room to show it closed
                late.append(found is None or found > true + 2)
    assert len(late) >= 100
    assert float(np.mean(late)) <= 0.1


def test_keras_momentum_truly_closes_later_than_pytorch_momentum(outcomes):
    keras = [true for _, true in outcomes[("keras batchnorm", "closes")]]
    pytorch = [true for _, true in outcomes[("pytorch batchnorm", "closes")]]
    assert None not in keras + pytorch
    assert np.mean(keras) >= np.mean(pytorch) + 1


def test_pytorch_momentum_settles_by_epoch_two_and_keras_momentum_does_not(outcomes):
    def settled(scenario: str) -> float:
        out = []
        for epochs, _ in outcomes[(scenario, "studies")]:
            lo, hi = epochs[2]["mode_batchnorm"]["ci95"]
            out.append(-epochs[2]["threshold"] <= lo and hi <= epochs[2]["threshold"])
        return float(np.mean(out))

    assert settled("pytorch batchnorm") >= 0.9
    assert settled("keras batchnorm") <= 0.05


def test_late_overfitting_is_carried_by_generalization(outcomes):
    found = [(epochs[8]["carrier"], truth.carrier(8))
             for epochs, truth in outcomes[("overfitting late", "studies")] if 8 in epochs]
    assert all(true == "generalization" for _, true in found)
    assert np.mean([f == t for f, t in found]) >= 0.9, found


# -- replicate studies of one setting on one data split -----------------------------------------
REPLICATES = 40


def test_replicate_studies_agree_within_their_intervals():
    scenario = SCENARIO["keras batchnorm"]
    blocks = [gap_block(simulate_gap(scenario, 500 + seed, split_seed=99)[0])
              for seed in range(REPLICATES)]
    agree = []
    for a, b in zip(blocks[::2], blocks[1::2], strict=True):  # disjoint, independent pairs
        for ea, eb in zip(a["epochs"], b["epochs"], strict=True):
            for part in ("gap", "timing", "mode_batchnorm", "generalization"):
                se = [_se(e[part], e["n"]) for e in (ea, eb)]
                diff = ea[part]["estimate"] - eb[part]["estimate"]
                agree.append(abs(diff) <= 1.96 * float(np.hypot(*se)))
    assert float(np.mean(agree)) >= 0.9, np.mean(agree)
    # This split's validation set makes the gap smaller than most (0.31 at epoch 1, against
    # 0.44 on average), so some replicates cannot show it past the threshold; none may say
    # anything else than the truth.
    codes = [b["verdict"]["code"] for b in blocks]
    assert set(codes) <= {"normalization-statistics", "inconclusive"}, codes
    assert codes.count("normalization-statistics") / len(codes) >= 0.8, codes


def _se(value: dict, n: int) -> float:
    lo, hi = value["ci95"]
    return (hi - lo) / (2 * stats.t.ppf(0.975, n - 1))


# -- the truth itself: the closed forms against the batch-level simulation -------------------
@pytest.mark.parametrize("scenario", GAP_SCENARIOS, ids=lambda s: s.name)
def test_the_truth_is_what_many_simulated_trials_average_to(scenario):
    big = dataclasses.replace(scenario, n_trials=2000, prune=0.0)
    trials, truth = simulate_gap(big, 7)
    keys = {"timing": "gap_timing", "mode": "gap_mode", "generalization": "gap_generalization",
            "train_data_loss": "data_loss", "val_loss": "val_loss"}
    for key, field in keys.items():
        values = np.array([[r[field] for r in t.curve] for t in trials])
        mean = values.mean(axis=0)
        se = values.std(axis=0, ddof=1) / np.sqrt(len(values))
        # 5 standard errors, plus the truth's own Monte Carlo error (well below 1e-3 nats)
        assert np.all(np.abs(mean - truth.epochs[key]) <= 5 * se + 2e-3), (key, mean,
                                                                          truth.epochs[key])


@pytest.mark.slow
def test_coverage_over_200_studies_per_scenario():
    found = _run(200)
    hits = [hit for part in PARTS for hit in found[part]]
    assert 0.935 <= float(np.mean(hits)) <= 0.965
    for part in PARTS:
        assert 0.92 <= float(np.mean(found[part])) <= 0.98, part
        for scenario in SCENARIO:
            if found[(scenario, part)]:
                assert float(np.mean(found[(scenario, part)])) >= 0.9, (scenario, part)


# --- settings that share training seeds (the gap experiment's replicates, a mode's control) --


def _paired_coverage(studies: int, *, clustered: bool) -> float:
    """Coverage of the pooled block's part intervals where seeds trained twice, under two
    settings that change nothing its parts read (as BatchNorm's momentum leaves the train-mode
    trajectory alone): a pair is one sample, whatever the count of trials says. Every third
    seed lost its second setting (a failed trial): the clusters are of unequal sizes."""
    hits = []
    for index, scenario in enumerate(GAP_SCENARIOS):
        for seed in range(studies):
            trials, truth = simulate_gap(scenario, 10_000 * index + seed)
            paired = [dataclasses.replace(t, group=group, seed=i if clustered else None)
                      for i, t in enumerate(trials) for group in ("a", "b")[:1 + (i % 3 > 0)]]
            for entry in gap_block(paired)["epochs"]:
                for key in PARTS:
                    lo, hi = entry.get(key, {}).get("ci95", (None, None))
                    if lo is not None and lo != hi:
                        hits.append(lo <= truth.epochs[key][entry["epoch"] - 1] <= hi)
    return float(np.mean(hits))


def test_trials_that_share_a_seed_are_one_sample_of_the_pooled_intervals():
    """Found by a first user: the gap experiment's pooled intervals counted a replicate's
    settings as independent trials. Counted so here, the intervals cover far less than 95%."""
    # 20 studies per scenario (a fifth of the main check's): its wider band.
    assert PER_PART[0] <= _paired_coverage(20, clustered=True) <= PER_PART[1]
    assert _paired_coverage(20, clustered=False) < 0.88


# --- a lag that grows past the threshold late: no closing "from epoch N on" may be claimed ----
def _growing_lag_study(rng: np.random.Generator, true_lag: list[float], *, n: int = 6,
                       spread: float = 0.03) -> list:
    """``n`` trials whose lag (all epoch averaging) is ``true_lag[k] + N(0, spread)`` at epoch
    k + 1, at a training loss of 1 (threshold 0.05): the truth is the list itself."""
    from study.analysis.gap import GapTrial

    trials = []
    for _ in range(n):
        lags = np.asarray(true_lag) + spread * rng.standard_normal(len(true_lag))
        curve = [{"epoch": k + 1, "data_loss": 1.0, "val_loss": 1.0 + lag, "gap_timing": lag,
                  "gap_mode": 0.0, "gap_generalization": 0.0} for k, lag in enumerate(lags)]
        trials.append(GapTrial(curve, has_batchnorm=False, has_dropout=False))
    return trials


def test_a_lag_truly_above_the_threshold_at_the_last_epoch_is_not_said_to_have_closed():
    """Found by a user: "no lag from 2" where the lag grew to +0.076 [+0.053, +0.099] against a
    threshold of 0.058 by epoch 4. Here the true lag is 0 at epoch 2 and 0.07 (above 0.05) at
    epoch 4: it has not closed, and the intervals straddle the threshold there most of the
    time, which the earlier rule ("shown above it at no later epoch") read as closed."""
    rng = np.random.default_rng(11)
    truth = [-0.3, 0.0, 0.055, 0.07]
    found = [gap_block(_growing_lag_study(rng, truth)) for _ in range(200)]
    closed = [b["closes_at_epoch"] is not None for b in found]
    assert float(np.mean(closed)) <= 0.05, np.mean(closed)
    straddled = [b["epochs"][-1]["lag"]["ci95"][0] <= 0.05 for b in found]
    assert float(np.mean(straddled)) >= 0.5  # the case the earlier rule called closed
    assert {b["closing_reading"] for b in found if b["closes_at_epoch"] is None} <= {
        "open", "unclear"}


def test_a_lag_truly_within_the_threshold_from_epoch_two_is_found_closed():
    """The other side: a lag truly 0 from epoch 2 on is found caught up (closed, or no lag
    from an epoch) in nearly every study, within an epoch of the truth."""
    rng = np.random.default_rng(12)
    found = [gap_block(_growing_lag_study(rng, [0.3, 0.0, 0.0, 0.0], spread=0.02))[
        "closes_at_epoch"] for _ in range(200)]
    assert float(np.mean([f is not None and 2 <= f <= 3 for f in found])) >= 0.9


# --- validation below training: "why does it lag?" is answered "it does not" -------------------
def test_none_is_said_only_where_validation_truly_lags_by_no_more_than_the_threshold(outcomes):
    """``none`` now also answers a gap shown below the threshold but not within it (validation
    below training, by how much the intervals cannot tell): the truth must have no lag worth
    explaining there."""
    said = []
    for scenario in SCENARIO:
        for (found, _), (_, truth) in zip(outcomes[(scenario, "code")],
                                          outcomes[(scenario, "studies")], strict=True):
            if found == "none":
                said.append(truth.epochs["gap"][0] <= threshold(truth.epochs["train_data_loss"][0]))
    assert len(said) >= 100 and all(said)


def test_validation_truly_a_little_below_training_is_none_not_inconclusive():
    """Found by a user: -0.050 [-0.080, -0.020] at epoch 1 was "inconclusive", which invites
    more trials for a question whose answer is already "validation does not lag". Truth here:
    the gap is -0.06 (threshold 0.05), near the threshold from below."""
    rng = np.random.default_rng(13)
    codes = [gap_block(_growing_lag_study(rng, [-0.06, -0.06]))["verdict"]["code"]
             for _ in range(200)]
    assert codes.count("none") / len(codes) >= 0.5, codes
    assert set(codes) <= {"none", "epoch-averaging", "inconclusive"}
    assert codes.count("inconclusive") / len(codes) <= 0.05
