"""``floor_fixed_ms_per_trial``: an estimate of the least a trial can cost the stores on this
machine while keeping the contract of SPEC sections 5 and 9 through MLflow's and Optuna's
supported APIs, measured in the same run as ``fixed_ms_per_trial`` and interleaved with it, so
that the service's fixed cost is read as a ratio against it (``fixed_over_floor``), not only
against an absolute number of milliseconds.

A floor trial trains nothing and makes only the calls the contract cannot do without:

- Optuna (the service's storage class on a fresh SQLite file, the widths enqueued as in
  :func:`bench.overhead.prepare_service`): ask, the one searched hyperparameter (the overhead
  figure fixes the others, and the service suggests only what is searched), the nine user attrs
  the SPEC names (``mlflow_run_id``, ``n_params``, ``init_*`` and ``early_*``: one
  ``Trial.set_user_attr`` each, as Optuna has no call that sets several) and tell;
- MLflow (``MlflowClient`` on a fresh SQLite store): the nested trial run with its name and
  tags; with its close, one ``log_batch`` of its params, ``n_params``, the ``init/*``,
  ``early/*`` and ``final/*`` metrics and the state tags, then ``set_terminated``.

Two variants: ``floor`` leaves the close out (what stays on a trial's path when everything
after the run's creation is written by another thread, as the service does with its close: the
figure ``fixed_ms_per_trial``, main-thread time, is compared with this one), ``floor_with_close``
makes it synchronously (all the work, wherever it runs). Left out of both: per-epoch writes
(subtracted from ``fixed_ms_per_trial`` too), the weights artifact (not in the SPEC), Optuna's
heartbeat and what the service adds for recovery, retries and progress. Each is the wall time
of a study of ``n`` trials over ``n``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bench.harness import BATCH, EPOCHS, LR, WEIGHT_DECAY, Workspace, median

# The SPEC's user attrs (sections 5 and 9): what the floor trial writes to Optuna.
SPEC_ATTRS = ("mlflow_run_id", "n_params", "early_loss", "early_data_loss", "early_penalty",
              "init_loss", "init_data_loss", "init_penalty", "init_weight_sq_norm")
# What a trial run holds beyond its params (SPEC sections 5, 9 and 10).
_STATE_TAGS = ("study.state", "optuna.trial_state")
_METRICS = ("n_params", "init/loss", "init/data_loss", "init/penalty", "init/weight_sq_norm",
            "early/loss", "early/data_loss", "early/penalty", "final/val_loss",
            "final/val_accuracy")
VARIANTS = ("floor", "floor_with_close")
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


def floor_study(storage_url: str, tracking: str, widths: Sequence[int], *,
                close: bool) -> float:
    """Seconds of one study (:data:`STUDY`) of ``len(widths)`` floor trials in new stores at
    ``storage_url`` and ``tracking``; ``close``: with the runs' close."""
    import optuna
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    from study.runtime._optuna_logs import optuna_quiet
    from study.storages import create_storage

    storage = create_storage(storage_url)
    client = MlflowClient(tracking)
    try:
        study = optuna.create_study(study_name=STUDY, storage=storage, direction="minimize")
        for width in widths:
            study.enqueue_trial({"width": width})
        experiment_id = client.create_experiment(STUDY)
        parent = client.create_run(experiment_id, run_name=STUDY).info.run_id
        params = [Param(k, v) for k, v in _params(1000).items()]

        def objective(trial: optuna.Trial) -> float:
            trial.suggest_int("width", min(widths), max(widths), log=True)
            run_id = client.create_run(
                experiment_id, run_name=f"trial-{trial.number:04d}",
                tags={"mlflow.parentRunId": parent, "study.role": "trial",
                      "optuna.study_name": STUDY, "optuna.trial_number": str(trial.number)},
            ).info.run_id
            for key in SPEC_ATTRS:
                trial.set_user_attr(key, run_id if key == "mlflow_run_id" else 0.5)
            if close:
                now = int(time.time() * 1000)
                client.log_batch(run_id, params=params,
                                 metrics=[Metric(k, 0.5, now, 0) for k in _METRICS],
                                 tags=[RunTag(k, "COMPLETE") for k in _STATE_TAGS])
                client.set_terminated(run_id, "FINISHED")
            return 0.5

        start = time.perf_counter()
        with optuna_quiet():  # as the service: no log line per trial (it reads the study again)
            study.optimize(objective, n_trials=len(widths))
        return time.perf_counter() - start
    finally:
        storage.engine.dispose()
        client._tracking_client.store.engine.dispose()  # MLflow caches one store per URI


def floor_variants(ws: Workspace, widths: Sequence[int]) -> dict[str, Callable[[], float]]:
    """The two variants (see the module's docstring) as :func:`bench.harness.interleaved`
    takes them: each on fresh stores, returning the seconds of its study."""
    def variant(close: bool) -> Callable[[], float]:
        def run() -> float:
            _, storage, tracking = ws.fresh("floor-with-close" if close else "floor")
            return floor_study(storage, tracking, widths, close=close)
        return run

    return {"floor": variant(False), "floor_with_close": variant(True)}


def floor_result(times: Mapping[str, list[float]], n_trials: int) -> dict[str, Any]:
    """``doc["floor"]``: seconds per trial of each variant's repeats, and their medians."""
    per_trial = {name: [s / n_trials for s in times[name]] for name in VARIANTS}
    return {"attrs": list(SPEC_ATTRS), "per_trial": per_trial,
            "per_trial_median": median(per_trial["floor"]),
            "per_trial_median_with_close": median(per_trial["floor_with_close"])}


def floor_note(doc: Mapping[str, Any]) -> str:
    """The sentence of bench/RESULTS.md that reads the fixed cost against the floor."""
    f, d = doc.get("floor"), doc["overhead"]["decomposition"]
    if not f or "per_trial_median_with_close" not in f:
        return "The floor (`bench/floor.py`) was not measured in this run."
    floor, fixed = f["per_trial_median"], d["per_trial_fixed"]
    return (f"Against the floor, interleaved with the variants above (`bench/floor.py`: an "
            f"estimate of the least a trial can cost the stores here under the SPEC's contract "
            f"through supported APIs, no training): **{floor * 1000:.0f} ms per trial** on the "
            f"trial's path, {f['per_trial_median_with_close'] * 1000:.0f} ms with the run's "
            f"close made synchronously; the service's fixed cost is **{fixed / floor:.2f}x** "
            f"the floor (`fixed_over_floor`).")
