"""``overhead_ratio_default``: a default study (TPE over width, learning rate, batch size and
weight decay; the median pruner) through ``run_session``, over the bare loop replaying exactly
what it trained: each trial's sampled configuration and training seed, for as many epochs as it
ran before it finished or was pruned.

Unlike ``overhead_ratio`` (every dimension fixed, no pruner, enqueued trials), this includes
the sampler's and the pruner's own time and the store calls a pruned trial makes.
"""

from __future__ import annotations

import gc
import io
import time
from typing import Any

from bench.harness import EPOCHS, Plan, Workspace, median, sync
from bench.overhead import bare_fit

# Enough trials for the median pruner to act (it waits for 5 completed ones); the smoke run
# trains one (bench/pruning.py runs the pruner there).
N_TRIALS = {"smoke": 1, "quick": 8, "full": 16}


def default_config(storage: str, tracking: str, device: str, n_trials: int) -> Any:
    """The default study's search space, sampler and pruner; digits, 3 epochs."""
    from study.config import StudyConfig

    return StudyConfig(study_name="bench-default", storage=storage, tracking_uri=tracking,
                       experiment="bench-default", epochs=EPOCHS, n_trials=n_trials,
                       device=device, seed=0)


def _service(ws: Workspace, data: Any, device: Any, n_trials: int) -> tuple[float, list[Any]]:
    """One default study in fresh stores: its wall time and its finished trials."""
    import optuna

    from study.runtime.session import run_session

    _, storage, tracking = ws.fresh("default")
    config = default_config(storage, tracking, str(device), n_trials)
    gc.collect()
    start = time.perf_counter()
    run_session(config, data=data, out=io.StringIO())
    sync(device)
    seconds = time.perf_counter() - start
    trials = optuna.load_study(study_name=config.study_name, storage=storage).get_trials(
        deepcopy=False)
    return seconds, [t for t in trials if t.state.is_finished()]


def _replay(data: Any, device: Any, trials: list[Any]) -> float:
    """The bare loop on each trial's configuration, seed and number of epochs."""
    from study.keys import HPARAMS_ATTR, TRAIN_SEED_ATTR

    gc.collect()
    start = time.perf_counter()
    for trial in trials:
        hp = trial.user_attrs[HPARAMS_ATTR]
        epochs = max(len(trial.intermediate_values), 1)
        bare_fit(data, hp["width"], epochs=epochs, lr=hp["lr"], batch_size=hp["batch_size"],
                 weight_decay=hp["weight_decay"], seed=int(trial.user_attrs[TRAIN_SEED_ATTR]))
    sync(device)
    return time.perf_counter() - start


def bench_default_study(ws: Workspace, data: Any, plan: Plan, device: Any) -> dict[str, Any]:
    """Service and replay, interleaved (service first, then replay first, ...) after one
    warm-up pair, at least ``plan.min_repeats`` times. The study is seeded, so every repeat
    trains the warm-up's trials; the figure is the median of the per-repeat ratios."""
    n_trials = N_TRIALS.get(plan.name, N_TRIALS["quick"])
    _, trials = _service(ws, data, device, n_trials)
    _replay(data, device, trials)
    plan_of = [(t.number, t.params, len(t.intermediate_values)) for t in trials]
    rows = []
    for repeat in range(max(plan.overhead_repeats, plan.min_repeats)):
        if repeat % 2:
            bare = _replay(data, device, trials)
            service, again = _service(ws, data, device, n_trials)
        else:
            service, again = _service(ws, data, device, n_trials)
            bare = _replay(data, device, trials)
        if [(t.number, t.params, len(t.intermediate_values)) for t in again] != plan_of:
            raise RuntimeError("the seeded default study trained other trials on a repeat")
        rows.append({"service": service, "bare": bare, "n_trials": len(trials),
                     "epochs": sum(max(len(t.intermediate_values), 1) for t in trials),
                     "pruned": sum(t.state.name == "PRUNED" for t in trials)})
    return {"n_trials": n_trials, "rows": rows,
            "ratio": median([r["service"] / r["bare"] for r in rows]),
            "median": {"service": median([r["service"] for r in rows]),
                       "bare": median([r["bare"] for r in rows])}}


def section(doc: dict[str, Any]) -> dict[str, str]:
    """The fields of the template's ``default_study`` section."""
    from bench.sections import spread, table

    ds = doc["default_study"]
    rows = ds["rows"]
    first = rows[0]
    service = [r["service"] for r in rows]
    bare = [r["bare"] for r in rows]
    return {
        "n_trials": str(first["n_trials"]), "epochs": str(EPOCHS),
        "pruned": str(first["pruned"]), "trained_epochs": str(first["epochs"]),
        "default_table": table(["variant", "wall time, median (min, max, n)"],
                               [["service (default study)", spread(service)],
                                ["bare loop (replay)", spread(bare)]]),
        "ratio": f"{ds['ratio']:.3f}",
        "bare_trial_ms": f"{ds['median']['bare'] / first['n_trials'] * 1000:.0f}",
    }
