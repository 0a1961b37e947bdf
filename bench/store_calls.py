"""Each store call a trial makes, timed as the service makes it and as the stores' own clients
make it: what each change to the per-trial cost saves, measured in the same run.

- MLflow: ``Tracker`` (asynchronous epoch batches for the runs it creates, drained when the run
  is closed) against the same writes through ``MlflowClient`` synchronously
  (``Tracker(asynchronous=False)``), call by call and for a whole trial's writes.
- Optuna: ``StudyRDBStorage``'s plain-SQL read of a trial against Optuna's own
  ``RDBStorage.get_trial`` on the same storage (every write goes through Optuna's own methods).

Both sides run on the same fresh databases, alternating call by call, after a warm-up; the
figure is the median time of one call. An asynchronous epoch batch costs its caller only the
hand-over; its write is paid in the background or by the close, so the whole-trial row is the
one that says whether asynchronous logging pays.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.harness import Plan, Workspace, median

# Calls per side and kind (alternating): enough for a stable median, about a second in all;
# one in the smoke run, which checks that every call runs.
CALLS = {"smoke": 1, "quick": 15, "full": 40}
_PARAMS = {f"param_{i}": i for i in range(24)}  # about as many as a trial logs
_EPOCH = {"loss": 0.5, "data_loss": 0.4, "penalty": 0.1, "val_loss": 0.6,
          "val_accuracy": 0.8, "seconds": 0.2, "lr": 0.003}
_TRIAL_EPOCHS = 10


def _pair(n: int, reference: Callable[[int], Any], service: Callable[[int], Any]
          ) -> dict[str, float]:
    """Median seconds of one call of each side, alternating (after one warm-up call each)."""
    reference(0)
    service(0)
    times: dict[str, list[float]] = {"reference": [], "service": []}
    for i in range(1, n + 1):
        for name, fn in (("reference", reference), ("service", service))[::1 - 2 * (i % 2)]:
            start = time.perf_counter()
            fn(i)
            times[name].append(time.perf_counter() - start)
    return {name: median(values) for name, values in times.items()}


def bench_store_calls(ws: Workspace, plan: Plan) -> dict[str, Any]:
    """The per-call figures (see the module's docstring)."""
    import optuna

    from study.storages import StudyRDBStorage
    from study.tracking import Tracker

    n = CALLS.get(plan.name, CALLS["quick"])
    _, storage_url, tracking = ws.fresh("store-calls")
    service = Tracker(tracking, retry_seconds=0)
    reference = Tracker(tracking, retry_seconds=0, asynchronous=False)
    experiment_id = service.experiment_id("bench-store-calls")
    # Open runs made beforehand (not timed): params are written once per run, a run closes once.
    runs = {(side, use): [side.create_run(experiment_id, name="r", tags={})
                          for _ in range(n + 1)]
            for side in (service, reference) for use in ("params", "close", "epochs")}

    def mlflow(use: str, write: Callable[[Tracker, str, int], None]
               ) -> tuple[Callable[[int], Any], Callable[[int], Any]]:
        return (lambda i: write(reference, runs[(reference, use)][i], i),
                lambda i: write(service, runs[(service, use)][i], i))

    def whole_trial(tracker: Tracker, i: int) -> None:
        run = tracker.create_run(experiment_id, name="t", tags={"a": "b"})
        tracker.log_params(run, _PARAMS, metrics={"n_params": 1}, new_run=True)
        for epoch in range(1, _TRIAL_EPOCHS + 1):
            tracker.log_metrics(run, _EPOCH, step=epoch)
        tracker.close_run(run, "FINISHED", tags={"s": "COMPLETE"},
                          metrics={"final/val_loss": 0.1}, step=_TRIAL_EPOCHS)

    storage = StudyRDBStorage(storage_url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial_id = optuna.create_study(storage=storage, study_name="calls").ask()._trial_id
    orm = optuna.storages.RDBStorage
    rows = {
        "MLflow: create a trial run": _pair(
            n, lambda i: reference.create_run(experiment_id, name="t", tags={"a": "b"}),
            lambda i: service.create_run(experiment_id, name="t", tags={"a": "b"})),
        "MLflow: params + n_params (one batch)": _pair(n, *mlflow(
            "params", lambda t, run, i: t.log_params(run, _PARAMS, metrics={"n_params": 1},
                                                     new_run=True))),
        "MLflow: one epoch's metrics (one batch; asynchronous: the hand-over)": _pair(n, *mlflow(
            "epochs", lambda t, run, i: t.log_metrics(run, _EPOCH, step=i))),
        "MLflow: close a run (tags, final metrics, status; the batches in flight)": _pair(
            n, *mlflow("close", lambda t, run, i: t.close_run(
                run, "FINISHED", tags={"s": "COMPLETE"}, metrics={"final/val_loss": 0.1},
                step=3))),
        f"MLflow: a whole trial's writes ({_TRIAL_EPOCHS} epochs, no training between)": _pair(
            max(n // 3, min(n, 5)),  # a third of the calls, at least 5 (all, when fewer)
            lambda i: whole_trial(reference, i),
            lambda i: whole_trial(service, i)),
        "Optuna: read a running trial (get_trial)": _pair(
            n, lambda i: orm.get_trial(storage, trial_id), lambda i: storage.get_trial(trial_id)),
    }
    return {"calls": n, "rows": rows}


def section(doc: dict[str, Any]) -> dict[str, str]:
    """The fields of the template's ``store_calls`` section."""
    from bench.sections import table

    sc = doc["store_calls"]
    body = []
    for name, row in sc["rows"].items():
        ref, svc = row["reference"] * 1000, row["service"] * 1000
        body.append([name, f"{ref:.2f}", f"{svc:.2f}", f"{ref - svc:.2f}",
                     f"{ref / svc:.1f}x" if svc > 0 else "-"])
    return {"store_calls_n": str(sc["calls"]),
            "store_calls_table": table(["call", "through the store's client, ms",
                                        "as the service makes it, ms", "saving, ms",
                                        "speed-up"], body)}
