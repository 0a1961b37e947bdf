"""Hand-built report inputs: a trial table, an analysis document, importance rows, meta."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

MODES = ("l2-in-loss", "coupled")


def n_params_of(width: int) -> int:
    """A CNN-like parameter count: grows with width squared."""
    return int(4 * 9 * width * 2 + 9 * width * width * 2 * 3 + 20 * width + 10 * 2 * width + 10)


def make_table(n: int = 60, *, seed: int = 0, epochs: int = 6, modes: tuple[str, ...] = MODES,
               fail_every: int = 11, prune_every: int = 7, curves: bool = True) -> pd.DataFrame:
    """``n`` trials: mostly COMPLETE, some PRUNED (short curves) and FAIL (NaN, diagnosis)."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for number in range(n):
        width = int(2 ** rng.uniform(2, 6) + 0.5)
        lr = float(10 ** rng.uniform(-4, -1.5))
        batch = int(rng.choice([32, 64, 128]))
        wd = float(10 ** rng.uniform(-6, -2))
        mode = modes[number % len(modes)]
        n_params = n_params_of(width)
        state = "COMPLETE"
        if fail_every and number % fail_every == fail_every - 1:
            state = "FAIL"
        elif prune_every and number % prune_every == prune_every - 1:
            state = "PRUNED"
        row: dict[str, Any] = {
            "number": number, "state": state, "width": width, "lr": lr, "batch_size": batch,
            "weight_decay": wd, "penalty_mode": mode, "n_params": n_params,
            "mlflow_run_id": f"{number:032x}", "diagnosis": None,
        }
        if state == "FAIL":
            row.update(early_loss=math.nan, early_data_loss=math.nan, early_penalty=math.nan,
                       final_val_loss=math.nan, final_val_accuracy=math.nan, value=math.nan,
                       curve=None, diagnosis="non-finite loss (nan) at epoch 2")
            rows.append(row)
            continue
        data0 = 2.3 + 0.08 * math.log10(n_params) - 0.15 * math.log10(lr / 1e-3) \
            + rng.normal(0, 0.05)
        pen0 = wd * 3.0 * math.sqrt(n_params) if mode == "l2-in-loss" else 0.0
        n_epochs = 2 if state == "PRUNED" else epochs
        curve = []
        for epoch in range(n_epochs):
            data = data0 * math.exp(-0.35 * epoch) + 0.05
            pen = pen0 * (1 - 0.1 * epoch)
            curve.append([data + pen, data, pen, data * 1.1, min(0.99, 0.3 + 0.12 * epoch)])
        row.update(early_loss=curve[0][0], early_data_loss=curve[0][1], early_penalty=curve[0][2],
                   final_val_loss=curve[-1][3] if state == "COMPLETE" else math.nan,
                   final_val_accuracy=curve[-1][4] if state == "COMPLETE" else math.nan,
                   value=curve[-1][3] if state == "COMPLETE" else math.nan,
                   curve=curve if curves else None)
        rows.append(row)
    frame = pd.DataFrame(rows)
    for column in ("number", "width", "batch_size", "n_params"):
        frame[column] = frame[column].astype("Int64")
    return frame


def _coef(estimate: float, half: float, p: float | None) -> dict[str, Any]:
    return {"estimate": estimate, "ci95": [estimate - half, estimate + half], "p_value": p}


def make_analysis(study_name: str = "demo", *, verdict: str | None = None) -> dict[str, Any]:
    """A ``study.analysis/2`` document of a simulated two-mode study (``verdict`` overrides
    its code, to exercise the badge)."""
    from study.analysis import analyze
    from study.analysis.simulation import SCENARIOS, simulate

    document = analyze(simulate(SCENARIOS[2], 0), study_name=study_name, early_epochs=1,
                       sampler="random")
    if verdict is not None:
        document["verdict"]["code"] = verdict
    return document


def make_analysis_v1(study_name: str = "demo", *, verdict: str = "both") -> dict[str, Any]:
    """A ``study.analysis/1`` document (as older versions wrote it) whose size effects add
    up (total = data + penalty)."""
    design = "log10_n_params * log10_lr + log10_batch_size + C(penalty_mode)"

    def model(response: str, size: float, half: float) -> dict[str, Any]:
        return {
            "formula": f"{response} ~ {design}", "n": 54, "r2": 0.71,
            "coefficients": {
                "Intercept": _coef(2.1, 0.2, 1e-12),
                "log10_n_params": _coef(size, half, 0.003),
                "log10_lr": _coef(-0.15, 0.03, 2e-7),
                "log10_n_params:log10_lr": _coef(0.01, 0.02, 0.41),
                "log10_batch_size": _coef(0.02, 0.05, 0.55),
                "penalty_mode[T.l2-in-loss]": _coef(0.05, 0.02, None),
            },
        }

    return {
        "schema": "study.analysis/1", "study_name": study_name, "n_trials_used": 54,
        "early_epochs": 1,
        "models": {"total": model("early_loss", 0.25, 0.1),
                   "data": model("early_data_loss", 0.1, 0.08),
                   "penalty": model("early_penalty", 0.15, 0.03),
                   "explain": model("early_loss", 0.2, 0.12)},
        "decomposition": {
            "width_effect_total": {"estimate": 0.25, "ci95": [0.15, 0.35]},
            "width_effect_data": {"estimate": 0.1, "ci95": [0.02, 0.18]},
            "width_effect_penalty": {"estimate": 0.15, "ci95": [0.12, 0.18]},
            "penalty_share": 0.6,
        },
        "verdict": {"code": verdict,
                    "text": "Both the L2 penalty (+0.15 per decade, 95% CI [0.12, 0.18]) and the "
                            "data loss (+0.10 per decade, 95% CI [0.02, 0.18]) rise with the "
                            "parameter count; the penalty carries 60% of the increase."},
        "medians": {"lr": 0.001, "batch_size": 64},
        "dropped": [],
        "n_trials_total": 60,
    }


def make_importance(*, seed: int = 0, n_bootstrap: int = 30) -> pd.DataFrame:
    """Two targets x (fanova, ped-anova, mdi), one failed mdi row, n_params derived."""
    rows: list[dict[str, Any]] = []
    params = {"lr": 0.45, "width": 0.25, "weight_decay": 0.2, "batch_size": 0.1}
    for target in ("objective", "early_loss"):
        for k, evaluator in enumerate(("fanova", "ped-anova", "mdi")):
            base = {"target": target, "evaluator": evaluator,
                    "evaluator_seed": None if evaluator == "ped-anova" else seed,
                    "bootstrap_seed": seed, "n_trials": 54, "n_bootstrap": n_bootstrap}
            for j, (param, value) in enumerate(params.items()):
                v = value * (1 + 0.1 * k) / (1 + 0.1 * k * (j == 0))
                rows.append({**base, "param": param, "importance": v, "ci_lo": v * 0.7,
                             "ci_hi": min(1.0, v * 1.3), "derived": False, "error": None})
            rows.append({**base, "param": "n_params", "importance": 0.25, "ci_lo": 0.2,
                         "ci_hi": 0.3, "derived": True, "error": None})
    rows.append({"target": "early_loss", "evaluator": "mdi", "evaluator_seed": seed,
                 "bootstrap_seed": seed, "n_trials": 54, "n_bootstrap": n_bootstrap,
                 "param": "penalty_mode", "importance": math.nan, "ci_lo": math.nan,
                 "ci_hi": math.nan, "derived": False, "error": "ValueError: constant column"})
    frame = pd.DataFrame(rows)
    frame["evaluator_seed"] = frame["evaluator_seed"].astype("Int64")
    return frame


def make_meta(study_name: str = "demo", table: pd.DataFrame | None = None) -> dict[str, Any]:
    counts = table["state"].value_counts().to_dict() if table is not None else {}
    return {
        "study_name": study_name,
        "storage": "postgresql://alice:***@db.example/optuna",
        "tracking_uri": "sqlite:///mlflow.db",
        "parent_run_id": "0123456789abcdef0123456789abcdef",
        "generated_at": "2025-01-01T12:00:00+00:00",
        "config": {"dataset": "digits", "model": "cnn", "epochs": 6, "early_epochs": 1,
                   "batch_sizes": [32, 64, 128], "penalty_mode": list(MODES)},
        "counts": counts,
    }


def make_gap_block(scenario: str = "keras batchnorm", *, seed: int = 1,
                   groups: tuple[str, ...] = (), early_epochs: int = 1) -> dict[str, Any]:
    """A ``gap`` block of a simulated study (:mod:`study.analysis.gap_simulation`); with
    ``groups``, one setting per named scenario (``scenario`` is then ignored)."""
    from study.analysis.gap import GapTrial, gap_block
    from study.analysis.gap_simulation import GAP_SCENARIOS, simulate_gap

    named = {s.name: s for s in GAP_SCENARIOS}
    if not groups:
        return gap_block(simulate_gap(named[scenario], seed)[0], early_epochs=early_epochs)
    trials = [GapTrial(t.curve, t.has_batchnorm, t.has_dropout, f"adam, {name}")
              for name in groups for t in simulate_gap(named[name], seed)[0]]
    return gap_block(trials, early_epochs=early_epochs)


def make_analysis_v3(gap: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """A ``study.analysis/3`` document: :func:`make_analysis` plus a ``gap`` block (a Keras
    BatchNorm study's unless given)."""
    document = make_analysis(**kwargs)
    document["schema"] = "study.analysis/3"
    document["gap"] = make_gap_block() if gap is None else gap
    return document
