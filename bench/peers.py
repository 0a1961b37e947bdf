"""The service against its peers: what a user would write instead, on the same trials, in one
interleaved run with the bare loop as the baseline.

Variants, each on the trials of ``overhead_ratio`` (the plan's widths enqueued; fixed lr, batch
size and weight decay; digits; no pruning), each in a fresh Optuna SQLite storage and a fresh
MLflow SQLite store copied from the workspace's template:

- ``bare``: :func:`bench.overhead.bare_fit`, no Optuna, no MLflow (the baseline).
- ``service``: ``run_session``, which logs the full decomposition of every epoch.
- ``mlflowcb``: ``study.optimize`` with optuna-integration's ``MLflowCallback``: one run per
  trial with the final value, the params and Optuna's tags; nothing per epoch.
- ``docs``: the recipe of MLflow's docs: a parent ``mlflow.start_run``, a nested ``start_run``
  per trial, ``log_params``, ``log_metric`` of the training and validation losses each epoch,
  the best value and params on the parent.
- ``docs_async``: that recipe with ``synchronous=False`` and
  ``MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS=1`` (MLflow reads it as whole seconds, at each turn of
  its logging loop), flushed with ``mlflow.flush_async_logging()`` at the end. With MLflow's
  default (no buffering) every ``end_run`` waits up to a second for the logging thread's
  one-second ``Queue.get`` timeout.

Settings: ``short`` (the overhead figure's 3 epochs, about 0.3 s of training per trial here) and
``long`` (20 epochs, about 2.5 s: issue 22's "about 2 s per trial"). A peer's exclusive costs come
from clocks around its own calls: per epoch the logging hook, per trial ``study.optimize`` less the
training loops it ran, per session the rest (opening the stores, the parent run, the flush). The
ratios are wall-time medians over the bare loop's median in the same interleaved run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from bench.harness import (
    BATCH,
    EPOCHS,
    LR,
    WEIGHT_DECAY,
    Plan,
    Workspace,
    interleaved,
    median,
    sync,
)
from bench.overhead import bare_fit, prepare_service, run_service

PEERS = ("mlflowcb", "docs", "docs_async")
SETTINGS = {"short": EPOCHS, "long": 20}  # epochs per trial
# Plans that run the short setting only, with so many repeats (the full run runs both).
SHORT_ONLY = {"smoke": 1, "quick": 2}
# Seconds MLflow's async logging thread gathers data before a batch (an int, read by MLflow).
ASYNC_BUFFERING = "1"
_BUFFERING_VAR = "MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS"
# Environment that MLflow's fluent API writes (set_tracking_uri, set_experiment) or reads.
_FLUENT_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME",
                "MLFLOW_RUN_ID", _BUFFERING_VAR)
STUDY = "bench-peers"


def settings_for(plan: Plan) -> list[tuple[str, int, int]]:
    """``(setting, epochs, repeats)`` of ``plan``: the short setting only, two repeats, in the
    quick run; one in the smoke run (CI); both settings in the full run, the long one with half
    the repeats."""
    if plan.name in SHORT_ONLY:
        return [("short", SETTINGS["short"], SHORT_ONLY[plan.name])]
    return [("short", SETTINGS["short"], plan.overhead_repeats),
            ("long", SETTINGS["long"], max(plan.min_repeats, plan.overhead_repeats // 2))]


@dataclasses.dataclass
class Clock:
    """Exclusive seconds of one peer run, from clocks around its own calls."""

    wall: float = 0.0
    optimize: float = 0.0  # study.optimize: trials, their store calls and the callbacks
    fit: float = 0.0  # the training loops, their epoch hooks included
    hooks: float = 0.0  # the per-epoch logging

    def split(self, n_trials: int, epochs: int) -> dict[str, float]:
        """Seconds per trial (outside training and the epoch hooks), per epoch and per
        session."""
        return {"per_trial_fixed": (self.optimize - self.fit) / n_trials,
                "per_epoch": self.hooks / (n_trials * epochs),
                "session_fixed": self.wall - self.optimize}


@contextlib.contextmanager
def fluent(tracking: str, *, buffering: str | None = None) -> Iterator[None]:
    """MLflow's fluent API pointed at ``tracking``; its process-wide settings are put back
    afterwards (the service and the other variants must not inherit them)."""
    import mlflow

    saved = {name: os.environ.get(name) for name in _FLUENT_VARS}
    mlflow.set_tracking_uri(tracking)
    if buffering is not None:
        os.environ[_BUFFERING_VAR] = buffering
    try:
        yield
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run("KILLED")
        mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _params(trial: Any, widths: Sequence[int]) -> dict[str, Any]:
    return {"width": trial.suggest_int("width", min(widths), max(widths)), "lr": LR,
            "batch_size": BATCH, "weight_decay": WEIGHT_DECAY}


def enqueued_study(storage: str, widths: Sequence[int]) -> None:
    """A new Optuna study in ``storage`` with ``widths`` enqueued (untimed, like the service's
    :func:`bench.overhead.prepare_service`)."""
    import optuna

    study = optuna.create_study(study_name=STUDY, storage=storage, direction="minimize")
    for width in widths:
        study.enqueue_trial({"width": width})


def _timed_fit(clock: Clock, data: Any, width: int, epochs: int,
               on_epoch: Callable[[int, float, float], None] | None = None) -> float:
    start = time.perf_counter()
    value = bare_fit(data, width, epochs=epochs, on_epoch=on_epoch)
    clock.fit += time.perf_counter() - start
    return value


def run_mlflowcb(storage: str, tracking: str, data: Any, *, widths: Sequence[int],
                 epochs: int) -> Clock:
    """Optuna with optuna-integration's ``MLflowCallback`` (the final value per trial)."""
    import optuna
    from optuna_integration.mlflow import MLflowCallback

    clock = Clock()
    start = time.perf_counter()
    with fluent(tracking):
        study = optuna.load_study(study_name=STUDY, storage=storage)
        with warnings.catch_warnings():  # deprecated in optuna-integration 4.9 (still shipped)
            warnings.simplefilter("ignore")
            callback = MLflowCallback(tracking_uri=tracking, metric_name="val_loss")

        def objective(trial: Any) -> float:
            return _timed_fit(clock, data, _params(trial, widths)["width"], epochs)

        t = time.perf_counter()
        study.optimize(objective, n_trials=len(widths), callbacks=[callback])
        clock.optimize = time.perf_counter() - t
    clock.wall = time.perf_counter() - start
    return clock


def run_docs(storage: str, tracking: str, data: Any, *, widths: Sequence[int], epochs: int,
             asynchronous: bool = False) -> Clock:
    """The recipe of MLflow's docs: nested runs, ``log_metric`` per epoch; asynchronous
    logging with a one-second buffering when ``asynchronous``."""
    import mlflow
    import optuna

    clock, sync = Clock(), not asynchronous
    start = time.perf_counter()
    with fluent(tracking, buffering=ASYNC_BUFFERING if asynchronous else None):
        study = optuna.load_study(study_name=STUDY, storage=storage)
        mlflow.set_experiment(STUDY)

        def on_epoch(epoch: int, train_loss: float, val_loss: float) -> None:
            t = time.perf_counter()
            mlflow.log_metric("train_loss", train_loss, step=epoch, synchronous=sync)
            mlflow.log_metric("val_loss", val_loss, step=epoch, synchronous=sync)
            clock.hooks += time.perf_counter() - t

        def objective(trial: Any) -> float:
            params = _params(trial, widths)
            with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
                mlflow.log_params(params, synchronous=sync)
                return _timed_fit(clock, data, params["width"], epochs, on_epoch)

        with mlflow.start_run(run_name=STUDY):
            t = time.perf_counter()
            study.optimize(objective, n_trials=len(widths))
            clock.optimize = time.perf_counter() - t
            mlflow.log_params(study.best_params, synchronous=sync)
            mlflow.log_metric("best_val_loss", study.best_value, synchronous=sync)
        if asynchronous:
            mlflow.flush_async_logging()
    clock.wall = time.perf_counter() - start
    return clock


PEER_RUNNERS: dict[str, Callable[..., Clock]] = {
    "mlflowcb": run_mlflowcb,
    "docs": run_docs,
    "docs_async": functools.partial(run_docs, asynchronous=True),
}


def logged(tracking: str) -> dict[str, Any]:
    """What a store holds, counted through ``MlflowClient``: runs, params, metric rows (every
    logged value of every key, from its history) per key."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking)
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids, max_results=50_000) if ids else []
    rows: dict[str, int] = {}
    for run in runs:
        for key in run.data.metrics:
            rows[key] = rows.get(key, 0) + len(client.get_metric_history(run.info.run_id, key))
    return {"runs": len(runs), "params": sum(len(r.data.params) for r in runs),
            "metric_rows": sum(rows.values()), "metric_rows_by_key": rows}


def _setting(ws: Workspace, data: Any, widths: Sequence[int], device: Any, *, epochs: int,
             repeats: int) -> dict[str, Any]:
    """Every variant at one setting, interleaved; medians, exclusive costs and what each logs."""
    clocks: dict[str, list[Clock]] = {name: [] for name in PEERS}
    stores: dict[str, str] = {}

    def bare() -> float:
        start = time.perf_counter()
        for width in widths:
            bare_fit(data, width, epochs=epochs)
        sync(device)
        return time.perf_counter() - start

    def service() -> float:
        config = prepare_service(ws, widths, str(device), "peer-service", epochs=epochs)
        stores["service"] = config.tracking_uri
        gc.collect()
        return run_service(config, data)[0]

    def peer(name: str) -> Callable[[], float]:
        def variant() -> float:
            _, storage, tracking = ws.fresh(f"peer-{name}")
            enqueued_study(storage, widths)
            stores[name] = tracking
            gc.collect()
            clock = PEER_RUNNERS[name](storage, tracking, data, widths=widths, epochs=epochs)
            clocks[name].append(clock)
            return clock.wall

        return variant

    times = interleaved({"bare": bare, "service": service,
                         **{name: peer(name) for name in PEERS}}, repeats)
    med = {name: median(values) for name, values in times.items()}
    n = len(widths)
    out: dict[str, Any] = {
        "epochs": epochs, "repeats": repeats, "widths": list(widths), "times": times,
        "median": med, "bare_per_trial": med["bare"] / n,
        "ratio": {name: med[name] / med["bare"] for name in med if name != "bare"},
        "logged": {name: logged(uri) for name, uri in stores.items()},
    }
    out["costs"] = {name: {key: median([c.split(n, epochs)[key] for c in runs[1:]])
                           for key in ("per_trial_fixed", "per_epoch", "session_fixed")}
                    for name, runs in clocks.items()}  # runs[0]: the warm-up
    return out


def bench_peers(ws: Workspace, data: Any, plan: Plan, device: Any) -> dict[str, Any]:
    """Each setting of ``plan`` (:func:`settings_for`), one after the other."""
    start = time.perf_counter()
    settings = {name: _setting(ws, data, plan.widths, device, epochs=epochs, repeats=repeats)
                for name, epochs, repeats in settings_for(plan)}
    return {"peers": list(PEERS), "dataset": "digits", "settings": settings,
            "seconds": time.perf_counter() - start}


def figures(peers: dict[str, Any]) -> list[tuple[str, float]]:
    """The ``name=value`` figures: ``peer_<name>_...`` at the short setting, the same names
    with ``_long`` at the long one; ``peer_service_*`` is the service in the same run."""
    pairs: list[tuple[str, float]] = []
    for setting, s in peers["settings"].items():
        sfx = "" if setting == "short" else f"_{setting}"
        pairs += [(f"peer_bare_seconds_per_trial{sfx}", s["bare_per_trial"]),
                  (f"peer_service_ratio{sfx}", s["ratio"]["service"]),
                  (f"peer_service_metric_rows{sfx}", s["logged"]["service"]["metric_rows"])]
        for name in peers["peers"]:
            cost = s["costs"][name]
            pairs += [(f"peer_{name}_fixed_ms_per_trial{sfx}", cost["per_trial_fixed"] * 1000),
                      (f"peer_{name}_epoch_ms{sfx}", cost["per_epoch"] * 1000),
                      (f"peer_{name}_ratio{sfx}", s["ratio"][name]),
                      (f"peer_{name}_metric_rows{sfx}", s["logged"][name]["metric_rows"])]
    return pairs


def log_lines(peers: dict[str, Any]) -> list[str]:
    """One line per variant and setting, for the progress log."""
    lines = [f"{peers['seconds']:.0f} s in all"]
    for setting, s in peers["settings"].items():
        lines.append(f"{setting} ({s['epochs']} epochs): bare "
                     f"{s['bare_per_trial']:.3f} s per trial")
        for name, ratio in s["ratio"].items():
            cost = s["costs"].get(name)
            fixed = (f", {cost['per_trial_fixed'] * 1000:.0f} ms fixed per trial, "
                     f"{cost['per_epoch'] * 1000:.1f} ms per epoch" if cost else "")
            lines.append(f"  {name}: {ratio:.3f}x{fixed}, "
                         f"{s['logged'][name]['metric_rows']} metric rows")
    return lines


# What each variant's store holds per trial, by construction (the table's last column).
LOGS = {
    "service": "params, the decomposed curves (total, data, penalty, weight norm, the gap's "
               "parts) every epoch, the loss at initialization, summaries, weights",
    "mlflowcb": "params and the final value",
    "docs": "params, training and validation loss every epoch, the best value on the parent",
    "docs_async": "the same as the docs recipe",
}
_NAMES = {"service": "service", "mlflowcb": "Optuna + `MLflowCallback`",
          "docs": "MLflow docs recipe", "docs_async": "MLflow docs recipe, asynchronous"}


def _row(s: dict[str, Any], name: str, service: dict[str, float]) -> list[str]:
    cost = s.get("costs", {}).get(name)
    fixed, epoch = (f"{cost['per_trial_fixed'] * 1000:.1f}", f"{cost['per_epoch'] * 1000:.2f}") \
        if cost else (f"{service['per_trial_fixed'] * 1000:.1f} (section 1)",
                      f"{service['per_epoch'] * 1000:.2f} (section 1)")
    return [_NAMES[name], f"{s['ratio'][name]:.3f}", fixed, epoch,
            str(s["logged"][name]["metric_rows"]), LOGS[name]]


def _target_setting(p: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The setting the target is read at: the long one (about 2 s per trial) when measured."""
    name = "long" if "long" in p["settings"] else next(iter(p["settings"]))
    return name, p["settings"][name]


def summary_row(doc: dict[str, Any]) -> list[str]:
    """The summary table's row: the service's ratio against the docs recipe's."""
    name, s = _target_setting(doc["peers"])
    ratio, docs = s["ratio"]["service"], s["ratio"]["docs"]
    sfx = "" if name == "short" else f"_{name}"
    at_2s = name == "long"
    return [f"`peer_service_ratio{sfx}`", f"{ratio:.3f}",
            f"<= docs recipe ({docs:.3f})" if at_2s else "none at this setting",
            ("yes" if ratio <= docs else "**no**") if at_2s else "-",
            f"{s['epochs']} epochs, {s['bare_per_trial']:.2f} s of training per trial; "
            f"MLflowCallback {s['ratio']['mlflowcb']:.3f}, docs recipe asynchronous "
            f"{s['ratio']['docs_async']:.3f} (section 1d)"]


def section(doc: dict[str, Any]) -> dict[str, str]:
    """The fields of the template's ``peers`` section: a table per setting."""
    from bench.sections import table

    p, service = doc["peers"], doc["overhead"]["decomposition"]
    parts = []
    for setting, s in p["settings"].items():
        rows = [_row(s, name, service) for name in ("service", *p["peers"])]
        verdict = "no worse than" if s["ratio"]["service"] <= s["ratio"]["docs"] else "above"
        parts.append(
            f"**{setting}**: {s['epochs']} epochs, {s['bare_per_trial']:.2f} s of bare training "
            f"per trial, {s['repeats']} interleaved repeats; the service's ratio is {verdict} "
            f"the docs recipe's.\n\n"
            + table(["variant", "ratio to bare", "fixed ms per trial", "ms per epoch",
                     "metric rows", "what it logs"], rows))
    return {"peers_seconds": f"{p['seconds']:.0f}", "peers_dataset": p["dataset"],
            "peers_tables": "\n\n".join(parts)}
