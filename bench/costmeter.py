"""Exclusive wall time of instrumented calls: where the service's time goes.

The instrumentation wraps methods of classes (``Tracker``, Optuna's storages, sampler and
pruners, ``Trainer``) and module-level functions. A function imported with ``from x import f``
is a separate binding in each importing module, so :meth:`CostMeter.patch_bindings` wraps it in
every ``study`` module that holds it; :meth:`CostMeter.require` then fails loudly when an
expected category saw no call (a target that moved in ``study/`` would otherwise vanish from the
decomposition without a trace).
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_MISSING = object()

TRIAL_RUN = "MLflow: create trial run"
TRIAL_PARAMS = "MLflow: params + n_params (one batch)"
TRIAL_METRICS = "MLflow: metrics (one batch per epoch + summaries)"
TRIAL_WEIGHTS = "MLflow: weights artifact (torch.save + log_artifact)"
TRIAL_CLOSE = "MLflow: close trial run (state tag + status)"
MLFLOW_OTHER = "MLflow: client, parent run, summary"
OPTUNA_STORAGE = "Optuna: storage reads/writes"
OPTUNA_SAMPLER = "Optuna: sampler"
OPTUNA_PRUNER = "Optuna: pruner"
TRAIN_FIT = "training: Trainer.fit (steps + validation)"
TRAIN_BUILD = "training: model build + optimizer"
TRAIN_INIT = "training: loss at initialization (before the first update)"
GLUE = "glue: Objective, ask/tell, callbacks (Python)"
SESSION_OPEN = "session: open (Python)"
SESSION_SUMMARY = "session: summary (Python)"
OTHER = "other Python (not instrumented)"

# Every category a service run must see at least once (checked after each instrumented run).
# Not the pruner: with --pruner none (the overhead figure's trials) it is never consulted.
SERVICE_CATEGORIES = (TRIAL_RUN, TRIAL_PARAMS, TRIAL_METRICS, TRIAL_WEIGHTS, TRIAL_CLOSE,
                      MLFLOW_OTHER, OPTUNA_STORAGE, OPTUNA_SAMPLER, TRAIN_FIT,
                      TRAIN_BUILD, TRAIN_INIT, GLUE, SESSION_OPEN, SESSION_SUMMARY)


class CostMeter:
    """Exclusive wall time of instrumented calls on the main thread, by category and scope:
    ``epoch`` (made while ``Trainer.fit`` runs: the per-epoch callbacks), ``trial`` (inside
    Optuna's ``_run_trial``, outside training) or ``session`` (opening the stores, summary).

    A call nested in a call of the same group counts for the outer one; a call of another group
    is subtracted from its caller, so the categories add up without double counting.
    """

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.calls: dict[tuple[str, str], int] = defaultdict(int)
        self.background: dict[str, float] = defaultdict(float)  # other threads (heartbeat)
        self._stack: list[list[Any]] = []
        self._depth = {"trial": 0, "epoch": 0}
        self._patches: list[tuple[Any, str, Any]] = []

    def _scope(self) -> str:
        return next((s for s in ("epoch", "trial") if self._depth[s]), "session")

    def _wrap(self, original: Callable[..., Any], category: str, group: str,
              opens: str | None) -> Callable[..., Any]:
        meter = self

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            stack = meter._stack
            if threading.current_thread() is not threading.main_thread():
                begin = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    meter.background[category] += time.perf_counter() - begin
            if stack and stack[-1][1] == group and opens is None:
                return original(*args, **kwargs)
            key = (category, "trial" if opens == "trial" else meter._scope())
            frame = [category, group, time.perf_counter(), 0.0]
            stack.append(frame)
            if opens:
                meter._depth[opens] += 1
            try:
                return original(*args, **kwargs)
            finally:
                if opens:
                    meter._depth[opens] -= 1
                stack.pop()
                elapsed = time.perf_counter() - frame[2]
                meter.seconds[key] += elapsed - frame[3]
                meter.calls[key] += 1
                if stack:
                    stack[-1][3] += elapsed

        return wrapper

    def patch(self, owner: Any, name: str, category: str, group: str, *,
              opens: str | None = None) -> None:
        """Time ``owner.name`` (a class or a module); ``opens`` names the scope its callees
        are in."""
        if isinstance(owner, type) and isinstance(owner.__dict__.get(name),
                                                  staticmethod | classmethod):
            return
        original = getattr(owner, name)
        before = owner.__dict__.get(name, _MISSING) if isinstance(owner, type) else original
        self._patches.append((owner, name, before))
        setattr(owner, name, self._wrap(original, category, group, opens))

    def patch_bindings(self, function: Callable[..., Any], category: str, group: str, *,
                       opens: str | None = None, package: str = "study") -> None:
        """Time the module-level ``function`` in every module of ``package`` that binds it
        (its own module and each ``from ... import`` of it)."""
        name = function.__name__
        owners = [module for key, module in list(sys.modules.items())
                  if (key == package or key.startswith(package + "."))
                  and getattr(module, "__dict__", {}).get(name) is function]
        if not owners:
            raise RuntimeError(f"{function.__module__}.{name} is bound in no {package} module")
        for module in owners:
            self.patch(module, name, category, group, opens=opens)

    def restore(self) -> None:
        for owner, name, before in reversed(self._patches):
            if before is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, before)
        self._patches.clear()

    def require(self, categories: Iterable[str]) -> None:
        """Fail when one of ``categories`` saw no call: its target moved or is not called."""
        seen = {category for (category, _), count in self.calls.items() if count}
        missing = [c for c in categories if c not in seen]
        if missing:
            raise RuntimeError(f"instrumentation saw no call of {missing}: a patched name in "
                               f"study/ moved (see bench/costmeter.py)")

    @contextlib.contextmanager
    def installed(self) -> Iterator[CostMeter]:
        """The service's instrumentation: training, MLflow, Optuna and the session's glue."""
        try:
            _install_service(self)
            yield self
        finally:
            self.restore()


def _install_service(meter: CostMeter) -> None:
    import optuna
    from optuna.storages import BaseStorage
    from optuna.storages.journal import JournalStorage

    import study.runtime.objective  # binds start_trial_run and end_trial_run (patched below)
    import study.runtime.session
    from study.tracking import Tracker, end_trial_run, start_trial_run
    from study.training.trainer import Trainer

    meter.patch(Trainer, "fit", TRAIN_FIT, "train", opens="epoch")
    meter.patch(Trainer, "__init__", TRAIN_BUILD, "train")
    meter.patch(Trainer, "initial_losses", TRAIN_INIT, "train")
    meter.patch_bindings(start_trial_run, TRIAL_RUN, "mlflow")
    meter.patch_bindings(end_trial_run, TRIAL_CLOSE, "mlflow")
    for name, category in (("log_params", TRIAL_PARAMS), ("log_metrics", TRIAL_METRICS),
                           ("log_state_dict", TRIAL_WEIGHTS)):
        meter.patch(Tracker, name, category, "mlflow")
    for name in ("__init__", "experiment_id", "experiment_name", "get_run", "create_run",
                 "set_tags", "end_run", "find_runs", "log_artifacts"):
        meter.patch(Tracker, name, MLFLOW_OTHER, "mlflow")
    storage_methods = [n for n in vars(BaseStorage) if not n.startswith("_")]
    storage_methods += ["record_heartbeat", "get_heartbeat_interval", "get_stale_trial_ids"]
    for cls in (optuna.storages.RDBStorage, optuna.storages._CachedStorage, JournalStorage):
        for name in storage_methods:
            if callable(getattr(cls, name, None)):
                meter.patch(cls, name, OPTUNA_STORAGE, "optuna-storage")
    for name in ("infer_relative_search_space", "sample_relative", "sample_independent",
                 "before_trial", "after_trial"):
        meter.patch(optuna.samplers.TPESampler, name, OPTUNA_SAMPLER, "optuna-sampler")
    for cls in (optuna.pruners.PercentilePruner, optuna.pruners.NopPruner,
                optuna.pruners.SuccessiveHalvingPruner, optuna.pruners.HyperbandPruner):
        meter.patch(cls, "prune", OPTUNA_PRUNER, "optuna-pruner")
    meter.patch(optuna.study._optimize, "_run_trial", GLUE, "glue", opens="trial")
    meter.patch(study.runtime.session, "_open_session", SESSION_OPEN, "session")
    meter.patch(study.runtime.session, "_summarize", SESSION_SUMMARY, "session")
