"""``analysis_seconds_10k`` / ``report_seconds_10k``: ``study analyze`` / ``study report``
(``analyze_study`` / ``report_study``) on 10,000 synthetic trials (the plan's
``synthetic_trials``: fewer in the smoke run), beside the trial table read through the study's
SQL reader and through Optuna's own ORM reader; where each command's time goes, by stage."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from bench.costmeter import CostMeter
from bench.harness import (
    PRIMARY,
    REPORT_EVALUATORS,
    Plan,
    Workspace,
    interleaved,
    log,
    median,
)

_COUNTER = itertools.count()
STATE_SHARES = (0.62, 0.33, 0.05)  # COMPLETE, PRUNED, FAIL


def _sampled_params(config: Any, n: int, rng: Any) -> list[tuple[int, float, int, float]]:
    import numpy as np

    widths = np.clip(np.round(np.exp(rng.uniform(np.log(config.width_min),
                                                  np.log(config.width_max + 0.5), n))),
                     config.width_min, config.width_max).astype(int)
    lrs = 10 ** rng.uniform(np.log10(config.lr_min), np.log10(config.lr_max), n)
    batches = rng.choice(np.asarray(config.batch_sizes), n)
    decays = 10 ** rng.uniform(np.log10(config.weight_decay_min),
                               np.log10(config.weight_decay_max), n)
    return [(int(w), float(lr), int(b), float(wd))
            for w, lr, b, wd in zip(widths, lrs, batches, decays, strict=True)]


def _synthetic_trial(config: Any, i: int, params: tuple[int, float, int, float],
                     state: Any, n_params: int, noise: Any, dists: dict[str, Any]) -> Any:
    """One finished trial as the objective leaves it."""
    from optuna.trial import TrialState, create_trial

    width, lr, bs, wd = params
    data0 = float(max(2.3 - 0.3 * (math.log10(lr) + 4) + 0.08 * (math.log10(n_params) - 4)
                      + 0.03 * math.log2(bs / 64) + noise[0], 0.05))
    penalty = wd * 0.6 * math.sqrt(n_params)
    epochs = config.epochs
    run = {TrialState.COMPLETE: epochs, TrialState.PRUNED: 1 + i % (epochs - 1),
           TrialState.FAIL: i % 2}[state]
    curve, inter = [], {}
    for e in range(1, run + 1):
        d = data0 * 0.55 ** (e - 1)
        val = float(max(d * 0.9 + 0.05 + noise[1] * 0.3, 0.01))
        curve.append([d + penalty, d, penalty, val, min(max(1 - val / 2.5, 0.0), 1.0)])
        inter[e] = val
    hparams = {"width": width, "lr": lr, "batch_size": bs, "weight_decay": wd,
               "penalty_mode": config.penalty_mode[0]}
    attrs: dict[str, Any] = {"worker": "bench:1", "mlflow_run_id": uuid.uuid4().hex,
                             "hparams": hparams, "n_params": n_params, "curve": curve}
    if run >= config.early_epochs:
        attrs.update(early_loss=curve[0][0], early_data_loss=curve[0][1],
                     early_penalty=curve[0][2])
    value = None
    if state is TrialState.COMPLETE:
        attrs.update(final_val_loss=curve[-1][3], final_val_accuracy=curve[-1][4])
        value = curve[-1][3]
    elif state is TrialState.PRUNED:
        value = curve[-1][3]
    else:
        attrs["failure"] = "RuntimeError: synthetic failure"
    return create_trial(state=state, value=value,
                        params={"width": width, "lr": lr, "batch_size": bs, "weight_decay": wd},
                        distributions=dists, user_attrs=attrs, intermediate_values=inter)


def synthetic_trials(config: Any, n: int, seed: int = 0) -> list[Any]:
    """``n`` finished trials as the objective leaves them: params, intermediate values and the
    user attrs it writes (worker, mlflow_run_id, hparams, n_params, early_*, curve, final_*,
    failure), in the shares :data:`STATE_SHARES` of COMPLETE, PRUNED (after epoch 1 or 2) and
    FAIL."""
    import numpy as np
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )
    from optuna.trial import TrialState

    from study.training.models import build_model, count_parameters

    rng = np.random.default_rng(seed)
    dists = {
        "width": IntDistribution(config.width_min, config.width_max, log=True),
        "lr": FloatDistribution(config.lr_min, config.lr_max, log=True),
        "batch_size": CategoricalDistribution(list(config.batch_sizes)),
        "weight_decay": FloatDistribution(config.weight_decay_min, config.weight_decay_max,
                                          log=True),
    }
    n_params = {w: count_parameters(build_model("cnn", width=w, in_channels=1, n_classes=10,
                                                input_size=(8, 8)))
                for w in range(config.width_min, config.width_max + 1)}
    params = _sampled_params(config, n, rng)
    states = rng.choice(3, n, p=list(STATE_SHARES))
    noise = rng.normal(0, 0.03, (n, 4))
    kinds = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return [_synthetic_trial(config, i, params[i], kinds[states[i]], n_params[params[i][0]],
                             noise[i], dists) for i in range(n)]


def _bulk_insert_sqlite(storage: Any, study_id: int, trials: Sequence[Any]) -> int:
    """Write trials straight into Optuna's RDB tables in one transaction (``add_trials`` takes
    ~20 ms per trial on SQLite: minutes for 10,000); returns the rows written. Set-up only;
    reads go through the storage. Depends on Optuna's private ``optuna.storages._rdb.models``.
    """
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models
    from sqlalchemy import insert

    rows: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    utc = dt.timezone.utc
    for trial_id, trial in enumerate(trials, start=1):
        rows[models.TrialModel].append({
            "trial_id": trial_id, "number": trial_id - 1, "study_id": study_id,
            "state": trial.state,
            "datetime_start": trial.datetime_start.astimezone(utc).replace(tzinfo=None),
            "datetime_complete": trial.datetime_complete.astimezone(utc).replace(tzinfo=None),
        })
        for name, value in trial.params.items():
            dist = trial.distributions[name]
            rows[models.TrialParamModel].append({
                "trial_id": trial_id, "param_name": name,
                "param_value": dist.to_internal_repr(value),
                "distribution_json": distribution_to_json(dist)})
        if trial.values:
            rows[models.TrialValueModel].append({
                "trial_id": trial_id, "objective": 0, "value": trial.values[0],
                "value_type": models.TrialValueModel.TrialValueType.FINITE})
        for step, value in trial.intermediate_values.items():
            rows[models.TrialIntermediateValueModel].append({
                "trial_id": trial_id, "step": step, "intermediate_value": value,
                "intermediate_value_type":
                    models.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE})
        for key, value in trial.user_attrs.items():
            rows[models.TrialUserAttributeModel].append({
                "trial_id": trial_id, "key": key, "value_json": json.dumps(value)})
    with storage.engine.begin() as conn:
        for model, batch in rows.items():
            conn.execute(insert(model.__table__), batch)
    return sum(len(batch) for batch in rows.values())


def build_synthetic_study(ws: Workspace, kind: str,
                          trials: Sequence[Any]) -> tuple[Any, dict[str, Any]]:
    """A study of ``trials`` in a ``journal`` or ``sqlite`` storage with its stored config and
    an MLflow parent run (so analyze/report log their artifacts as they do for real)."""
    import optuna

    from study.config import StudyConfig
    from study.keys import CONFIG_ATTR, PARENT_RUN_ATTR
    from study.storages import create_storage
    from study.tracking import Tracker

    start = time.perf_counter()
    folder, sqlite_url, tracking = ws.fresh(f"synthetic-{kind}")
    storage_url = f"journal:{folder / 'optuna.journal'}" if kind == "journal" else sqlite_url
    config = StudyConfig(study_name="bench-10k", storage=storage_url, tracking_uri=tracking,
                         experiment="bench")
    tracker = Tracker(tracking)
    parent = tracker.create_run(tracker.experiment_id(config.experiment), name="bench-10k",
                                tags={"study.role": "parent", "study.name": "bench-10k"})
    storage = create_storage(storage_url)
    study = optuna.create_study(study_name=config.study_name, storage=storage)
    study.set_user_attr(CONFIG_ATTR, config.study_settings())
    study.set_user_attr(PARENT_RUN_ATTR, parent)
    built: dict[str, Any] = {}
    if kind == "journal":
        study.add_trials(trials)
    else:
        built["rows"] = _bulk_insert_sqlite(storage, study._study_id, trials)
        storage.engine.dispose()
    built["build_seconds"] = time.perf_counter() - start
    return config, built


# stage -> the functions it times (every binding of each, see CostMeter.patch_bindings)
def _stage_functions() -> list[tuple[str, Callable[..., Any]]]:
    import study.report.command  # noqa: F401  (binds the stage functions it calls)
    from study.analysis.analyze import analyze, write_analysis
    from study.analysis.command import log_to_parent, open_tracker
    from study.analysis.importance import importance_table
    from study.analysis.sources import load_study_data
    from study.report.writers import write_report

    return [
        ("read the trials + trial_table", load_study_data),
        ("analyze (regressions, verdict)", analyze),
        ("importance_table (forests, bootstrap)", importance_table),
        ("write_report (figures, HTML, Markdown, JSON, CSV)", write_report),
        ("write analysis.json", write_analysis),
        ("log the folder to the parent run", log_to_parent),
        ("open the tracking store", open_tracker),
    ]


def command_stages(run: Callable[[], float], command: str) -> dict[str, float]:
    """Seconds of each stage of one ``analyze_study`` or ``report_study`` call."""
    meter = CostMeter()
    stages = _stage_functions()
    for label, function in stages:
        meter.patch_bindings(function, label, label)
    try:
        wall = run()
    finally:
        meter.restore()
    meter.require(label for label, _ in stages
                  if command == "report" or not label.startswith(("importance", "write_report")))
    seconds = {k: v for (k, _), v in meter.seconds.items()}
    seconds["other"] = max(wall - sum(seconds.values()), 0.0)
    seconds["total"] = wall
    return seconds


def _variants(ws: Workspace, config: Any, kind: str, n: int,
              n_bootstrap: int) -> dict[str, Callable[[], float]]:
    """Each timed call on one storage of ``n`` trials: table, table through the ORM, analyze,
    report (``n_bootstrap`` resamples of its importance intervals)."""
    from study.analysis import analyze_study, trial_table
    from study.report import report_study
    from study.runtime.lifecycle import open_study, open_study_trials

    def table(orm: bool = False) -> float:
        begin = time.perf_counter()
        if orm:  # the baseline: Optuna's Study.get_trials, through its ORM reader
            frame = trial_table(open_study(config))
        else:  # what `study analyze` does: the storage's get_all_trials (the SQL reader)
            study, trials = open_study_trials(config)
            frame = trial_table(study, trials=trials)
        seconds = time.perf_counter() - begin
        if len(frame) != n:
            raise RuntimeError(f"table has {len(frame)} rows, expected {n}")
        return seconds

    def analysis() -> float:
        out = ws.root / f"analysis-{kind}-{next(_COUNTER)}"
        begin = time.perf_counter()
        document, _, logged = analyze_study(config, output_dir=out)
        seconds = time.perf_counter() - begin
        if document["n_trials_total"] != n or logged.run_id is None:
            raise RuntimeError(f"analysis saw {document['n_trials_total']} trials; "
                               f"logged: {logged}")
        return seconds

    def report() -> float:
        out = ws.root / f"report-{kind}-{next(_COUNTER)}"
        begin = time.perf_counter()
        _, files, _ = report_study(config, output_dir=out, evaluators=REPORT_EVALUATORS,
                                   seed=0, n_bootstrap=n_bootstrap)
        seconds = time.perf_counter() - begin
        if not files:
            raise RuntimeError("report wrote no files")
        return seconds

    return {"table": table, "table_orm": lambda: table(orm=True), "analysis": analysis,
            "report": report}


def _default_max_trials() -> int:
    """``study report``'s cap on the trials the importance table uses (subsampled above)."""
    import inspect

    from study.analysis.importance import importance_table

    return int(inspect.signature(importance_table).parameters["max_trials"].default)


def bench_analysis(ws: Workspace, plan: Plan) -> dict[str, Any]:
    from study.config import StudyConfig

    n = plan.synthetic_trials
    start = time.perf_counter()
    trials = synthetic_trials(StudyConfig(), n)
    states = Counter(t.state.name for t in trials)
    results: dict[str, Any] = {
        "generate_seconds": time.perf_counter() - start, "n": n, "primary": PRIMARY,
        "states": {k: states[k] for k in ("COMPLETE", "PRUNED", "FAIL")},
        "evaluators": list(REPORT_EVALUATORS), "n_bootstrap": plan.report_bootstrap,
        "importance_max_trials": _default_max_trials(),
    }
    for kind in [PRIMARY, "journal"] if plan.journal_10k else [PRIMARY]:
        log(f"  building {n} trials in a {kind} storage (not timed) ...")
        config, built = build_synthetic_study(ws, kind, trials)
        results[kind] = built
        variants = _variants(ws, config, kind, n, plan.report_bootstrap)
        if plan.profile:  # one call of each command, by stage (also warms them up)
            results[kind]["stages"] = {"analyze": command_stages(variants["analysis"],
                                                                 "analyze")}
            if kind == PRIMARY:
                results[kind]["stages"]["report"] = command_stages(variants["report"],
                                                                   "report")
        if kind == PRIMARY:
            times = interleaved({k: variants[k] for k in ("table", "analysis", "table_orm")},
                                plan.analysis_repeats)
            times["report"] = interleaved({"report": variants["report"]},
                                          plan.report_repeats, warmup=0)["report"]
        else:
            times = interleaved({k: variants[k] for k in ("table", "analysis")},
                                max(plan.min_repeats, plan.analysis_repeats // 2), warmup=0)
        results[kind].update(times=times, median={k: median(v) for k, v in times.items()})
        log(f"  {kind}: " + ", ".join(f"{k} {median(v):.2f} s" for k, v in times.items()))
    return results
