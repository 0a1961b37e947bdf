"""What the size-effect figure draws (study.analysis.curves): each group's trials, adjusted to
its setting, scatter around its own fitted curve, in every part and both questions."""

from __future__ import annotations

import numpy as np
import pytest

from study.analysis import analyze
from study.analysis.simulation import SCENARIOS, simulate


@pytest.mark.parametrize("seed", [0, 2])
@pytest.mark.parametrize("question", ["init", "early"])
@pytest.mark.parametrize("part", ["data", "penalty", "total"])
def test_adjusted_trials_scatter_around_their_groups_curve(question, part, seed):
    scenario = SCENARIOS[0]  # lr, batch size and weight decay all vary: every shift is used
    document = analyze(simulate(scenario, seed), study_name="s", early_epochs=1,
                       compare_widths=scenario.widths)
    curves = (document["init"] if question == "init" else document)["curves"]
    points = {k: np.asarray(v, dtype=float) for k, v in curves["points"].items()}
    for g, group in enumerate(curves["groups"]):
        member = points["group"] == g
        if member.sum() < 3:
            continue
        fitted = np.interp(np.log10(points["n_params"][member]), np.log10(group["n_params"]),
                           group[part])
        residual = points[part][member] - fitted
        # robust: an adjusted point thrown far off must not widen its own yardstick
        mad = float(np.median(np.abs(residual - np.median(residual))))
        spread = float(np.ptp(group[part])) + 1.4826 * mad
        assert abs(float(np.median(residual))) <= 0.5 * spread + 1e-9, group["label"]
        assert float(np.max(np.abs(residual))) <= 6 * spread + 0.05, group["label"]
