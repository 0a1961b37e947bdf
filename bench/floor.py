"""``floor_fixed_ms_per_trial``: the least a trial can cost the stores on this machine while
keeping the contract of SPEC sections 5 and 9 through MLflow's and Optuna's supported APIs, so
that ``fixed_ms_per_trial`` is read as a ratio against a floor measured in the same run
(``fixed_over_floor``), not only against an absolute number of milliseconds.

One floor trial, with no training, makes only the calls the contract cannot do without:

- Optuna (the service's storage class on a fresh SQLite file, trials enqueued as in
  :func:`bench.overhead.prepare_service`): ask, the four suggested hyperparameters, the nine
  user attrs SPEC names (``mlflow_run_id``, ``n_params``, ``init_*`` and ``early_*``: one
  ``Trial.set_user_attr`` each, Optuna has no call that sets several) and tell;
- MLflow (``MlflowClient`` on a fresh SQLite store): the nested trial run with its name and
  tags, its params with ``n_params`` and the ``init/*`` metrics in one ``log_batch``, and its
  close: the state tags and the summary metrics (``early/*``, ``final/*``) in one more, then
  ``set_terminated``. All synchronous: the least work, wherever it runs.

Left out, so that the floor is a lower bound: per-epoch writes (the service's per-epoch cost is
subtracted from ``fixed_ms_per_trial`` too), the weights artifact (not in the SPEC), Optuna's
heartbeat and everything the service adds for recovery, retries and progress. The floor is wall
time per trial over a study of ``n`` trials, a median over repeats on fresh stores (the first, a
warm-up, dropped).
"""

from __future__ import annotations

import gc
import time
from typing import Any

from bench.harness import BATCH, EPOCHS, LR, WEIGHT_DECAY, Plan, Workspace, median

# The SPEC's user attrs (sections 5 and 9): what the floor trial writes to Optuna.
SPEC_ATTRS = ("mlflow_run_id", "n_params", "early_loss", "early_data_loss", "early_penalty",
              "init_loss", "init_data_loss", "init_penalty", "init_weight_sq_norm")
# What closing a trial run writes (SPEC sections 5 and 10): state tags, then summary metrics.
_STATE_TAGS = ("study.state", "optuna.trial_state")
_SUMMARY_METRICS = ("early/loss", "early/data_loss", "early/penalty", "final/val_loss",
                    "final/val_accuracy")
STUDY = "bench-floor"


def _params(n_params: int) -> dict[str, str]:
    """The params the service logs for a trial of the overhead figure (their count and
    sizes matter, not their values)."""
    from study.config import StudyConfig
    from study.runtime.space import trial_params
    from study.training import HParams

    config = StudyConfig(dataset="digits", epochs=EPOCHS, seed=0)
    hp = HParams(8, LR, BATCH, WEIGHT_DECAY)
    return {k: str(v) for k, v in trial_params(hp, config, device="cpu", n_params=n_params,
                                                seed=0, input_shape=(1, 8, 8)).items()}


def floor_study(storage_url: str, tracking: str, widths: tuple[int, ...], *,
                close: bool) -> float:
    """Seconds of one study (:data:`STUDY`) of ``len(widths)`` floor trials in new stores at
    ``storage_url`` and ``tracking``; ``close``: with the runs' close."""
    import optuna
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    from study.storages import create_storage

    storage = create_storage(storage_url)
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="minimize")
    for width in widths:
        study.enqueue_trial({"width": width})
    client = MlflowClient(tracking)
    experiment_id = client.create_experiment(STUDY)
    parent = client.create_run(experiment_id, run_name=STUDY).info.run_id
    params = [Param(k, v) for k, v in _params(1000).items()]

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_int("width", min(widths), max(widths), log=True)
        trial.suggest_float("lr", LR, LR, log=True)
        trial.suggest_categorical("batch_size", [BATCH])
        trial.suggest_float("weight_decay", WEIGHT_DECAY, WEIGHT_DECAY, log=True)
        run_id = client.create_run(
            experiment_id, run_name=f"trial-{trial.number:04d}",
            tags={"mlflow.parentRunId": parent, "study.role": "trial",
                  "optuna.study_name": STUDY, "optuna.trial_number": str(trial.number)},
        ).info.run_id
        now = int(time.time() * 1000)
        client.log_batch(run_id, params=params, metrics=[
            Metric(k, 0.5, now, 0) for k in ("n_params", "init/loss", "init/data_loss",
                                              "init/penalty", "init/weight_sq_norm")])
        for key in SPEC_ATTRS:
            trial.set_user_attr(key, run_id if key == "mlflow_run_id" else 0.5)
        if close:
            client.log_batch(run_id, tags=[RunTag(k, "COMPLETE") for k in _STATE_TAGS],
                             metrics=[Metric(k, 0.5, now, 1) for k in _SUMMARY_METRICS])
            client.set_terminated(run_id, "FINISHED")
        return 0.5

    gc.collect()
    start = time.perf_counter()
    study.optimize(objective, n_trials=len(widths))
    seconds = time.perf_counter() - start
    storage.engine.dispose()
    return seconds


def bench_floor(ws: Workspace, plan: Plan) -> dict[str, Any]:
    """The floor per trial (see the module's docstring), and the same without the runs'
    close (what is left on the trial's path when the close is handed to another thread), over
    ``plan.overhead_repeats`` studies of the overhead figure's widths each, interleaved, after
    one warm-up round."""
    widths = tuple(plan.widths)
    runs: dict[str, list[float]] = {"with_close": [], "without_close": []}
    for i in range(plan.overhead_repeats + 1):
        for name in list(runs)[::1 - 2 * (i % 2)]:
            _, storage, tracking = ws.fresh(f"floor-{name}-{i}")
            seconds = floor_study(storage, tracking, widths, close=name == "with_close")
            if i:
                runs[name].append(seconds / len(widths))
    return {"widths": list(widths), "attrs": list(SPEC_ATTRS), "per_trial": runs,
            "per_trial_median": median(runs["with_close"]),
            "per_trial_median_without_close": median(runs["without_close"])}


def floor_note(doc: dict[str, Any]) -> str:
    """The sentence of bench/RESULTS.md that reads the fixed cost against the floor."""
    f, d = doc.get("floor"), doc["overhead"]["decomposition"]
    if not f:
        return "The floor (`bench/floor.py`) was not measured in this run."
    floor, fixed = f["per_trial_median"], d["per_trial_fixed"]
    open_only = f.get("per_trial_median_without_close")
    return (f"Against the floor of the same run (`bench/floor.py`: the least a trial can cost "
            f"the stores here under the SPEC's contract through supported APIs, no training): "
            f"**{floor * 1000:.0f} ms per trial**"
            + (f", {open_only * 1000:.0f} ms without the run's close" if open_only else "")
            + f"; the service's fixed cost is **{fixed / floor:.2f}x** the floor "
            f"(`fixed_over_floor`).")
