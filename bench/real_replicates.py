"""Real replicate studies of one setting: do their answers agree within their intervals?

Issue 21's setting (digits, ``l2-in-loss``, weight decay 1e-2, lr 1e-5, widths 2-64, random
sampler, one epoch), run ``studies`` times with seeds 0.. through ``run_session``, each analyzed
between the searched widths as ``study analyze`` does. There is no known truth on real trials:
the check is that each study's 95% interval holds the mean of the replicates, and that the
estimates spread as their standard errors say (SD / mean SE within a factor 2).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from bench.harness import Plan, Workspace

PARTS = ("total", "data", "penalty")
QUESTIONS = ("init", "early")
WIDTHS = (2, 64)
# (studies, trials each): the eight 12-trial studies; fewer and smaller when quick. The
# smoke run's are the least that give every figure: two studies for an SD, four trials for an
# interval (analyze leaves a three-trial study without one).
SIZES = {"smoke": (2, 4), "quick": (2, 8), "full": (8, 12)}


def replicate_config(storage: str, tracking: str, device: str, *, seed: int,
                     n_trials: int) -> Any:
    from study.config import StudyConfig

    return StudyConfig(study_name=f"bench-replicate-{seed}", storage=storage,
                       tracking_uri=tracking, experiment="bench-replicates", dataset="digits",
                       penalty_mode=("l2-in-loss",), weight_decay_min=1e-2,
                       weight_decay_max=1e-2, lr_min=1e-5, lr_max=1e-5,
                       width_min=WIDTHS[0], width_max=WIDTHS[1], sampler="random",
                       pruner="none", epochs=1, early_epochs=1, n_trials=n_trials,
                       device=device, seed=seed)


def bench_real_replicates(ws: Workspace, data: Any, plan: Plan, device: Any) -> dict[str, Any]:
    """Run the replicates and summarize their agreement per question and part."""
    import optuna

    from study.analysis import analyze, trial_table
    from study.runtime.session import run_session

    studies, n_trials = SIZES[plan.name]
    found: dict[str, list[Any]] = {}
    codes: dict[str, list[str]] = {q: [] for q in QUESTIONS}
    for seed in range(studies):
        _, storage, tracking = ws.fresh(f"replicate-{seed}")
        config = replicate_config(storage, tracking, str(device), seed=seed, n_trials=n_trials)
        run_session(config, data=data, out=io.StringIO())
        study = optuna.load_study(study_name=config.study_name, storage=storage)
        document = analyze(trial_table(study), study_name=config.study_name, early_epochs=1,
                           compare_widths=WIDTHS)
        for question, block in (("init", document["init"]), ("early", document)):
            codes[question].append(block["verdict"]["code"])
            for part in PARTS:
                effect = block["decomposition"][f"width_effect_{part}"]
                found.setdefault(f"{question}/{part}", []).append(
                    (effect["estimate"], effect["se"], *effect["ci95"]))
    return {"studies": studies, "trials": n_trials, "widths": list(WIDTHS),
            "codes": codes, **{key: summarize(rows) for key, rows in found.items()}}


def summarize(rows: list[tuple[float, float, float, float]]) -> dict[str, Any]:
    """Mean, SD, mean SE, SD / SE and how many intervals hold the mean of the estimates."""
    values = np.asarray(rows, dtype=float)
    estimate, se, lo, hi = values.T
    mean = float(np.mean(estimate))
    sd = float(np.std(estimate, ddof=1)) if len(estimate) > 1 else 0.0
    mean_se = float(np.mean(se))
    return {"estimates": estimate.tolist(), "mean": mean, "sd": sd, "mean_se": mean_se,
            "ratio": sd / mean_se if mean_se > 0 else None,
            "cover_mean": int(np.sum((lo <= mean) & (mean <= hi)))}


def table_lines(result: dict[str, Any]) -> list[str]:
    """The replicates as Markdown rows (question/part)."""
    lines = ["| question/part | mean per decade | SD of the estimates | mean standard error | "
             "SD / SE | intervals holding the mean |", "|---|---|---|---|---|---|"]
    for question in QUESTIONS:
        for part in PARTS:
            r = result[f"{question}/{part}"]
            ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
            lines.append(f"| {question}/{part} | {r['mean']:+.4f} | {r['sd']:.4f} | "
                         f"{r['mean_se']:.4f} | {ratio} | {r['cover_mean']} of "
                         f"{result['studies']} |")
    verdicts = "; ".join(f"{q}: {', '.join(result['codes'][q])}" for q in QUESTIONS)
    return [*lines, "", f"Verdicts, {verdicts}."]


def figures(result: dict[str, Any]) -> list[tuple[str, float]]:
    """``name=value`` pairs: SD / SE and the share of intervals holding the mean."""
    pairs = []
    for question in QUESTIONS:
        for part in ("total", "penalty"):
            r = result[f"{question}/{part}"]
            if r["ratio"] is not None:
                pairs.append((f"real_replicate_sd_se_ratio_{question}_{part}", r["ratio"]))
            pairs.append((f"real_replicate_cover_mean_{question}_{part}",
                          r["cover_mean"] / result["studies"]))
    return pairs
