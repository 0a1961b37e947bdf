"""The analysis checked against the truth: simulated studies shaped like measured ones
(:mod:`study.analysis.simulation`: real architectures' parameter counts and ``||w||^2``, the
penalty ``wd * ||w||^2`` in l2-in-loss only, data losses falling with size and lr, heavy-tailed
noise, paired seeds in ``study explain``'s design), whose true size effects and threshold are
known. The 95% intervals must cover the truth in 90-98% of the studies, and no verdict may
contradict the truth.

204 studies (34 of each scenario), seeded; ``python bench/coverage.py`` runs more and prints
the table kept in bench/RESULTS.md.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest

from study.analysis import analyze
from study.analysis.simulation import REPLICATE_SCENARIO, SCENARIOS, Truth, simulate
from study.analysis.verdict import no_increase_tolerance

STUDIES_PER_SCENARIO = 34
NOMINAL = (0.90, 0.98)
PARTS = ("total", "data", "penalty")


def _covers(ci, value) -> bool:
    lo, hi = ci
    return (lo is None or lo <= value + 1e-12) and (hi is None or value - 1e-12 <= hi)


def _wrong(code: str, truth: dict[str, float], tolerance: float) -> bool:
    """Whether ``code`` contradicts the true parts (``inconclusive`` never does)."""
    t, d, p = truth["total"], truth["data"], truth["penalty"]
    return {"no-increase": t > tolerance * 1.5,
            "penalty": t <= 0 or p <= 0 or d >= tolerance,
            "both": t <= 0 or p <= 0 or d <= 0,
            "optimization": t <= 0 or d <= 0}.get(code, False)


@pytest.fixture(scope="module")
def outcomes() -> dict:
    truth = Truth()
    found: dict = defaultdict(list)
    for index, scenario in enumerate(SCENARIOS):
        for seed in range(STUDIES_PER_SCENARIO):
            table = simulate(scenario, 10_000 * index + seed)
            document = analyze(table, study_name="sim", early_epochs=1,
                               compare_widths=scenario.widths)
            for question, block in (("init", document["init"]), ("early", document)):
                ref = block["reference"]
                settings = {"widths": scenario.widths, "lr": ref["lr"],
                            "batch_size": round(ref["batch_size"])}
                true = truth.effects(question, weight_decay=ref["weight_decay"],
                                     mode=ref["penalty_mode"], **settings)
                for part in PARTS:
                    ci = block["decomposition"][f"width_effect_{part}"]["ci95"]
                    hit = _covers(ci, true[part])
                    found[(question, part)].append(hit)
                    found[(scenario.name, question, part)].append(hit)
                threshold = block["threshold"]
                true_threshold = truth.threshold(question, **settings)
                low, high = threshold["searched_range"]
                if true_threshold is not None and low <= true_threshold <= high:
                    found[(question, "threshold")].append(
                        _covers(threshold["ci95"], true_threshold))
                tolerance = no_increase_tolerance(
                    float(np.median(table[f"{question}_loss"].astype(float))))
                code = block["verdict"]["code"]
                found[(question, "wrong verdict")].append(_wrong(code, true, tolerance))
                found[(scenario.name, question, "code")].append(code)
    return found


@pytest.mark.parametrize("part", PARTS)
def test_size_effect_intervals_cover_the_truth_at_the_nominal_rate(outcomes, part):
    hits = outcomes[("init", part)] + outcomes[("early", part)]
    assert len(hits) == 2 * STUDIES_PER_SCENARIO * len(SCENARIOS)
    rate = float(np.mean(hits))
    assert NOMINAL[0] <= rate <= NOMINAL[1], f"{part}: coverage {rate:.3f}"


@pytest.mark.parametrize("question", ["init", "early"])
@pytest.mark.parametrize("part", PARTS)
def test_each_question_is_near_nominal(outcomes, question, part):
    # 204 intervals: a true coverage of 0.90-0.98 lands in 0.87-0.99 with probability > 0.99.
    rate = float(np.mean(outcomes[(question, part)]))
    assert 0.87 <= rate <= 0.99, f"{question} {part}: coverage {rate:.3f}"


@pytest.mark.parametrize("question", ["init", "early"])
def test_threshold_intervals_cover_the_truth_at_the_nominal_rate(outcomes, question):
    hits = outcomes[(question, "threshold")]
    assert len(hits) >= 100  # most scenarios have their true threshold in the searched range
    rate = float(np.mean(hits))
    assert NOMINAL[0] <= rate <= NOMINAL[1], f"{question} threshold: coverage {rate:.3f}"


@pytest.mark.parametrize("scenario", [s.name for s in SCENARIOS])
def test_no_scenario_is_far_from_nominal(outcomes, scenario):
    # 34 studies: a coverage of 0.95 lies above 0.82 with probability 0.999.
    for question in ("init", "early"):
        for part in PARTS:
            rate = float(np.mean(outcomes[(scenario, question, part)]))
            assert rate >= 0.82, f"{scenario}, {question} {part}: coverage {rate:.3f}"


@pytest.mark.parametrize("question", ["init", "early"])
def test_verdicts_do_not_contradict_the_truth(outcomes, question):
    wrong = outcomes[(question, "wrong verdict")]
    assert float(np.mean(wrong)) <= 0.03, f"{sum(wrong)} wrong verdicts of {len(wrong)}"


def test_a_strong_penalty_is_found_and_a_weak_one_is_not(outcomes):
    strong = outcomes[("explain, strong penalty", "early", "code")]
    weak = outcomes[("explain, weak penalty", "early", "code")]
    assert strong.count("penalty") / len(strong) >= 0.9, strong
    assert "penalty" not in weak, weak
    assert math.isclose(len(strong), STUDIES_PER_SCENARIO)


REPLICATES = 40


@pytest.fixture(scope="module")
def replicates() -> dict:
    """40 replicate studies of one setting, each analyzed between the searched widths."""
    scenario, truth = REPLICATE_SCENARIO, Truth()
    found: dict = defaultdict(list)
    for seed in range(REPLICATES):
        document = analyze(simulate(scenario, 77_000 + seed), study_name="sim", early_epochs=1,
                           compare_widths=scenario.widths)
        for question, block in (("init", document["init"]), ("early", document)):
            true = truth.effects(question, widths=scenario.widths, lr=1e-5, batch_size=64,
                                 weight_decay=1e-2, mode="l2-in-loss")
            for part in PARTS:
                effect = block["decomposition"][f"width_effect_{part}"]
                found[(question, part, "estimate")].append(effect["estimate"])
                found[(question, part, "se")].append(effect["se"])
                found[(question, part, "covers")].append(_covers(effect["ci95"], true[part]))
            found[(question, "code")].append(block["verdict"]["code"])
    return found


@pytest.mark.parametrize("question", ["init", "early"])
@pytest.mark.parametrize("part", PARTS)
def test_replicates_cover_their_common_truth(replicates, question, part):
    # 40 intervals: a true coverage of 0.95 lands at or above 0.85 with probability 0.99.
    rate = float(np.mean(replicates[(question, part, "covers")]))
    assert rate >= 0.85, f"{question} {part}: {rate:.3f}"


@pytest.mark.parametrize("question", ["init", "early"])
@pytest.mark.parametrize("part", PARTS)
def test_replicates_spread_as_their_standard_errors_say(replicates, question, part):
    spread = float(np.std(replicates[(question, part, "estimate")], ddof=1))
    se = float(np.mean(replicates[(question, part, "se")]))
    assert 0.5 <= spread / se <= 2.0, f"{question} {part}: sd {spread:.4f}, mean se {se:.4f}"


@pytest.mark.parametrize("question", ["init", "early"])
def test_replicates_agree_on_the_verdict(replicates, question):
    codes = replicates[(question, "code")]
    assert codes.count("penalty") / len(codes) >= 0.95, codes
