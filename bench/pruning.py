"""``pruning_epoch_saving`` / ``pruning_best_ratio``: the default (median) pruner against
``pruner="none"`` (and Hyperband in the full run), same seed, sampler and data, medians over
seeds; plus the median rule replayed offline on the unpruned study's own trials."""

from __future__ import annotations

import gc
import io
import math
import statistics
import time
from collections.abc import Sequence
from typing import Any

from bench.harness import MEDIAN_STARTUP_TRIALS, Plan, Workspace, log, median


def _study_run(ws: Workspace, plan: Plan, device: Any, data: Any, seed: int,
               pruner: str) -> tuple[dict[str, Any], list[Any]]:
    """One default study with ``pruner`` in fresh stores; its figures and its trials."""
    import optuna
    from optuna.trial import TrialState

    from study.config import StudyConfig
    from study.runtime.session import run_session

    _, storage, tracking = ws.fresh(f"pruning-{pruner}")
    config = StudyConfig(study_name="bench-pruning", storage=storage, tracking_uri=tracking,
                         experiment="bench", n_trials=plan.pruning_trials, pruner=pruner,
                         seed=seed, device=str(device))
    gc.collect()
    start = time.perf_counter()
    result = run_session(config, data=data, out=io.StringIO())
    seconds = time.perf_counter() - start
    trials = optuna.load_study(study_name=config.study_name,
                               storage=storage).get_trials(deepcopy=False)
    return {
        "seconds": seconds,
        "epochs": sum(len(t.intermediate_values) for t in trials),
        "n_pruned": sum(t.state is TrialState.PRUNED for t in trials),
        "n_failed": sum(t.state is TrialState.FAIL for t in trials),
        "best": result.best_value,
    }, trials


def _seed_row(ws: Workspace, plan: Plan, device: Any, seed: int, pruners: list[str],
              reverse: bool) -> dict[str, Any]:
    """Every pruner on one seed, plus the replay of the median rule on the unpruned trials."""
    from optuna.trial import TrialState

    from study.training.data import load_dataset

    data = load_dataset("digits", seed=seed, device=device)
    row: dict[str, Any] = {"seed": seed}
    for pruner in pruners[::-1] if reverse else pruners:
        row[pruner], trials = _study_run(ws, plan, device, data, seed, pruner)
        if pruner == "none":
            complete = [t for t in trials if t.state is TrialState.COMPLETE]
            epochs_replay, best_replay = replay_median_rule(complete)
            row["replay"] = {
                "epochs": epochs_replay, "best": best_replay,
                "rank_corr": rank_correlation([t.intermediate_values[1] for t in complete],
                                              [t.value for t in complete]),
            }
    unpruned = row["none"]
    for pruner in (p for p in pruners if p != "none"):
        row[pruner]["saving"] = 1 - row[pruner]["epochs"] / unpruned["epochs"]
        row[pruner]["best_ratio"] = row[pruner]["best"] / unpruned["best"]
        row[pruner]["time_ratio"] = row[pruner]["seconds"] / unpruned["seconds"]
    replay = row["replay"]
    replay["saving"] = 1 - replay["epochs"] / unpruned["epochs"]
    replay["best_ratio"] = (replay["best"] / unpruned["best"]
                            if replay["best"] is not None else math.nan)
    log(f"  seed {seed}: " + "; ".join(
        f"{p}: {row[p]['epochs']} epochs, {row[p]['n_pruned']} pruned, best "
        f"{row[p]['best']:.4f}, {row[p]['seconds']:.1f} s" for p in pruners))
    return row


def bench_pruning(ws: Workspace, plan: Plan, device: Any) -> dict[str, Any]:
    from study.config import StudyConfig

    pruners = ["median", "none"] + (["hyperband"] if plan.pruning_hyperband else [])
    per_seed = [_seed_row(ws, plan, device, seed, pruners, reverse=r % 2 == 1)
                for r, seed in enumerate(plan.pruning_seeds)]
    summary = {p: {k: median([row[p][k] for row in per_seed])
                   for k in ("saving", "best_ratio", "time_ratio")}
               for p in pruners if p != "none"}
    summary["replay"] = {k: median([row["replay"][k] for row in per_seed])
                         for k in ("saving", "best_ratio", "rank_corr")}
    # The median pruner waits for its start-up trials and prunes no earlier than epoch
    # `early_epochs`: an upper bound of the saving (arithmetic, not a measurement).
    default = StudyConfig()
    n, early, epochs = plan.pruning_trials, default.early_epochs, default.epochs
    cap = max(n - MEDIAN_STARTUP_TRIALS, 0) / n * (epochs - early) / epochs
    study = {"n_trials": n, "epochs": epochs, "early_epochs": early,
             "n_startup_trials": MEDIAN_STARTUP_TRIALS, "sampler": default.sampler,
             "width": [default.width_min, default.width_max],
             "lr": [default.lr_min, default.lr_max], "batch_sizes": list(default.batch_sizes),
             "weight_decay": [default.weight_decay_min, default.weight_decay_max]}
    return {"per_seed": per_seed, "summary": summary, "pruners": pruners, "cap": cap,
            "n_trials": n, "study": study}


def replay_median_rule(trials: Sequence[Any], n_startup: int = MEDIAN_STARTUP_TRIALS,
                       warmup: int = 1) -> tuple[int, float | None]:
    """Apply Optuna's MedianPruner rule offline to the trials of an unpruned study, in order.

    The same trials, so TPE's divergence plays no part: the rule alone. A trial is stopped
    after step s when at least ``n_startup`` earlier trials completed and its best value so far
    is above the median, at step s, of the completed ones. Returns the epochs trained and the
    best final value among the trials that complete.
    """
    completed: list[dict[int, float]] = []
    finals: list[float] = []
    epochs = 0
    for trial in trials:
        values = dict(sorted(trial.intermediate_values.items()))
        stopped = False
        for step, _ in values.items():
            epochs += 1
            if len(completed) >= n_startup and step >= warmup:
                seen = [v for s, v in values.items() if s <= step]
                others = [c[step] for c in completed if step in c]
                if others and min(seen) > statistics.median(others):
                    stopped = True
                    break
        if not stopped:
            completed.append(values)
            if trial.value is not None:
                finals.append(trial.value)
    return epochs, min(finals) if finals else None


def rank_correlation(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation (ties averaged)."""
    import pandas as pd

    return float(pd.Series(list(xs)).corr(pd.Series(list(ys)), method="spearman"))
