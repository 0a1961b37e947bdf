"""Hyperparameter importance of a study's trials, with bootstrap intervals.

Each (target, evaluator) is computed on in-memory Optuna studies whose trial values are the
target (the objective, or the ``early_loss`` user attr), so both targets share one machinery.
The evaluator is always named and seeded explicitly: Optuna 5's default is PED-ANOVA.

``n_params`` is a derived driver: it is a deterministic increasing function of ``width``, so
the two are never evaluated together. A second pass replaces ``width`` by ``n_params``; only the
``n_params`` row (``derived=True``) comes from it, every other row from the first pass.

An evaluator that cannot run for a target (too few usable trials, a constant target, an Optuna
error) gives ONE row with ``param=None``, NaN importance and interval, and the reason in
``error``. A derived pass that cannot run (no usable ``n_params`` user attrs, an Optuna error)
gives an ``n_params`` row with NaN importance and its reason; the other rows are unaffected.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import threading
import warnings
from collections.abc import Iterator, Sequence
from numbers import Real
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from study._validation import fail
from study.redact import one_line

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

__all__ = [
    "COLUMNS",
    "DEFAULT_EVALUATORS",
    "EVALUATORS",
    "FOREST",
    "MIN_TRIALS",
    "PED_ANOVA_TARGET_QUANTILE",
    "TARGETS",
    "check_args",
    "importance_summary",
    "importance_table",
    "ped_anova_quantile",
]

EVALUATORS = ("fanova", "ped-anova", "mdi")
DEFAULT_EVALUATORS = ("fanova", "ped-anova")
TARGETS = ("objective", "early_loss")
DERIVED = "n_params"
SEARCHED_ORDER = ("width", "lr", "batch_size", "weight_decay", "penalty_mode")

# PED-ANOVA explains reaching the best 10% of the target (Optuna's default); Optuna recommends
# at least 5 trials in that top quantile: the smallest n with ceil(0.1 * n) >= 5 is 41.
PED_ANOVA_TARGET_QUANTILE = 0.1
# PED-ANOVA contrasts the best `quantile` of trials with the rest and needs >= 5 of them there;
# small studies widen the quantile (up to half) instead of getting no PED-ANOVA at all.
_PED_ANOVA_MIN_TOP = 5
_PED_ANOVA_MAX_QUANTILE = 0.5
MIN_TRIALS = {"fanova": 5, "mdi": 5, "ped-anova": 10}


def ped_anova_quantile(n_trials: int) -> float:
    """The target quantile used for ``n_trials``: 0.1, widened so >= 5 trials are on top."""
    return min(_PED_ANOVA_MAX_QUANTILE,
               max(PED_ANOVA_TARGET_QUANTILE, _PED_ANOVA_MIN_TOP / max(n_trials, 1)))
# Random forests: (n_trees for the point estimate, n_trees per bootstrap replicate, max_depth).
# Optuna's fANOVA is pure Python and costs per leaf, so the depth is capped (the same for point
# and replicates); fewer trees per replicate only add forest noise (wider intervals).
FOREST = {"fanova": (32, 4, 5), "mdi": (64, 8, 8)}
# Names in optuna.importance, looked up on use: Optuna loads only when a table is computed.
_FOREST_EVALUATORS = {"fanova": "FanovaImportanceEvaluator",
                      "mdi": "MeanDecreaseImpurityImportanceEvaluator"}

COLUMNS = (
    "target", "evaluator", "evaluator_seed", "bootstrap_seed", "n_usable", "n_trials",
    "n_bootstrap", "n_trees", "n_trees_bootstrap", "max_depth", "param", "importance",
    "ci_lo", "ci_hi", "derived", "error",
)
_DTYPES = {"evaluator_seed": "Int64", "n_trees": "Int64", "n_trees_bootstrap": "Int64",
           "max_depth": "Int64", "bootstrap_seed": "int64", "n_usable": "int64",
           "n_trials": "int64", "n_bootstrap": "int64", "importance": float, "ci_lo": float,
           "ci_hi": float, "derived": bool}


def importance_table(
    trials: Sequence[FrozenTrial], *, evaluators: Sequence[str] = DEFAULT_EVALUATORS,
    targets: Sequence[str] = TARGETS, seed: int = 0, n_bootstrap: int = 30,
    max_trials: int = 400,
) -> pd.DataFrame:
    """One row per (target, evaluator, param): point importance and a bootstrap interval.

    Usable trials: for ``objective`` the COMPLETE trials with a finite value; for
    ``early_loss`` the COMPLETE or PRUNED trials with a finite ``early_loss`` user attr; then a
    trial lacking one of the searched params (the union of those trials' params) is skipped.
    Both targets are minimized (PED-ANOVA explains the lowest 10%).

    Args:
        trials: The study's trials, in any states (FAIL and RUNNING ones are never used).
        evaluators: Names among :data:`EVALUATORS`.
        targets: Names among :data:`TARGETS`.
        seed: Seeds the forests (``seed`` for the point estimate with ``n_trees`` trees,
            ``seed + 1 + b`` for replicate ``b`` with ``n_trees_bootstrap``) and, per target,
            ``np.random.default_rng(seed)``, which subsamples and then draws the resamples
            shared by that target's evaluators.
        n_bootstrap: Resamples (with replacement) giving the 2.5/97.5 percentile interval;
            0 gives NaN intervals.
        max_trials: More usable trials than this are subsampled without replacement.

    Returns:
        A frame with :data:`COLUMNS`. ``importance`` sums to 1 per (target, evaluator) over the
        rows with ``derived=False``. ``n_usable`` counts usable trials, ``n_trials`` those
        evaluated. ``evaluator_seed`` and the forest columns are ``<NA>`` for PED-ANOVA, which is
        deterministic: only its intervals (and any subsample) depend on ``bootstrap_seed``.
        Failures are rows, never exceptions (see the module docstring).

    Raises:
        ConfigError: An unknown evaluator or target, or a bad seed or count.
    """
    evaluators, targets = check_args(evaluators, targets=targets, seed=seed,
                                     n_bootstrap=n_bootstrap, max_trials=max_trials)
    rows: list[dict[str, Any]] = []
    for target in targets:
        rows += _target_rows(list(trials), target, evaluators, seed=seed,
                             n_bootstrap=n_bootstrap, max_trials=max_trials)
    data = {c: pd.Series([r[c] for r in rows], dtype=_DTYPES.get(c, object)) for c in COLUMNS}
    return pd.DataFrame(data, columns=list(COLUMNS))


def check_args(
    evaluators: Sequence[str], *, targets: Sequence[str] = TARGETS, seed: int = 0,
    n_bootstrap: int = 30, max_trials: int = 400,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Check the arguments of :func:`importance_table` without loading Optuna (the CLI checks
    its flags with it before reading a study).

    Returns:
        The evaluators and the targets, in order, without repeats.

    Raises:
        ConfigError: An unknown evaluator or target, or a bad seed or count.
    """
    evaluators = _names("evaluators", evaluators, EVALUATORS)
    targets = _names("targets", targets, TARGETS)
    for field, value, low in (("seed", seed, 0), ("n_bootstrap", n_bootstrap, 0),
                              ("max_trials", max_trials, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            fail(field, value, f"an int >= {low}")
    return evaluators, targets


def importance_summary(table: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of :func:`importance_table` as JSON-ready dicts (NaN and ``<NA>`` become None)."""
    return [{key: _plain(value) for key, value in row.items()}
            for row in table.to_dict(orient="records")]


def _names(field: str, value: Sequence[str], allowed: tuple[str, ...]) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value)
    if not names:
        fail(field, value, "a non-empty list of " + ", ".join(allowed))
    for name in names:
        if name not in allowed:
            fail(field, name, "names among " + ", ".join(allowed))
    return tuple(dict.fromkeys(names))


def _finite(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _target_value(trial: FrozenTrial, target: str) -> float | None:
    from optuna.trial import TrialState

    value = None
    if target == "objective":
        if trial.state == TrialState.COMPLETE and trial.values and len(trial.values) == 1:
            value = trial.values[0]
    elif trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        value = trial.user_attrs.get("early_loss")
    return float(value) if _finite(value) else None


def _target_rows(
    trials: list[FrozenTrial], target: str, evaluators: tuple[str, ...], *, seed: int,
    n_bootstrap: int, max_trials: int,
) -> list[dict[str, Any]]:
    candidates = [(t, v) for t in trials if (v := _target_value(t, target)) is not None]
    names = {name for t, _ in candidates for name in t.params}
    searched = [p for p in SEARCHED_ORDER if p in names] + sorted(names - set(SEARCHED_ORDER))
    usable = [(t, v) for t, v in candidates if all(p in t.params for p in searched)]
    n_usable = len(usable)
    rng = np.random.default_rng(seed)
    if n_usable > max_trials:
        keep = np.sort(rng.choice(n_usable, size=max_trials, replace=False))
        usable = [usable[i] for i in keep]
    n = len(usable)
    values = np.array([v for _, v in usable])
    errors: dict[str, str] = {}
    for ev in evaluators:
        if n < MIN_TRIALS[ev]:
            errors[ev] = f"{n} usable trials for {target}, {ev} needs at least {MIN_TRIALS[ev]}"
        elif not searched:
            errors[ev] = f"no searched params among the {n} usable trials for {target}"
        elif np.ptp(values) == 0:
            errors[ev] = f"{target} is constant over the {n} usable trials"
    running = [ev for ev in evaluators if ev not in errors]
    pool, derived_error = _pool(usable, searched)
    passes = {"main": searched}
    if derived_error is None:
        passes["derived"] = [DERIVED if p == "width" else p for p in searched]
    # results[(ev, pass)]: the point estimate first, then one dict per replicate ({}: failed).
    failures: dict[tuple[str, str], str] = {}
    results: dict[tuple[str, str], list[dict[str, float]]] = {
        (ev, name): [] for ev in running for name in passes}
    draws = [np.arange(n)] + [rng.integers(0, n, size=n) for _ in range(n_bootstrap)] \
        if running else []
    for r, idx in enumerate(draws):
        study = _study([pool[i] for i in idx])
        for (ev, name), found in results.items():
            if r > 0 and not found[0]:
                continue  # the point estimate failed: no interval
            try:
                found.append(_evaluate(study, ev, passes[name], seed=seed + r, replicate=r > 0))
            except Exception as exc:  # one evaluator's failure must not end the table
                found.append({})
                if r == 0:
                    failures[(ev, name)] = one_line(f"{type(exc).__name__}: {exc}")
    rows = []
    for ev in evaluators:
        forest = FOREST.get(ev, (None, None, None))
        base = {"target": target, "evaluator": ev,
                "evaluator_seed": seed if ev in FOREST else None, "bootstrap_seed": seed,
                "n_usable": n_usable, "n_trials": n, "n_bootstrap": n_bootstrap,
                "n_trees": forest[0], "n_trees_bootstrap": forest[1], "max_depth": forest[2]}
        error = errors.get(ev) or failures.get((ev, "main"))
        if error:
            rows.append({**base, **_stats([], None), "derived": False, "error": error})
            continue
        main = results[(ev, "main")]
        rows += [{**base, **_stats(main, p), "derived": False, "error": None} for p in searched]
        if "width" in searched:
            error = derived_error or failures.get((ev, "derived"))
            stats = _stats([] if error else results[(ev, "derived")], DERIVED)
            rows.append({**base, **stats, "derived": True,
                         "error": f"{DERIVED} pass: {error}" if error else None})
    return rows


def _pool(usable: list[tuple[FrozenTrial, float]], searched: list[str]
          ) -> tuple[list[FrozenTrial], str | None]:
    """One evaluation trial per usable trial, also carrying ``n_params`` when derivable."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    sizes = [t.user_attrs.get(DERIVED) for t, _ in usable]
    good = [float(s) if _finite(s) and s > 0 else None for s in sizes]
    distinct = {s for s in good if s is not None}
    error = None
    if "width" not in searched:
        error = "width is not searched"
    elif len(distinct) < 2:
        error = f"fewer than 2 distinct {DERIVED} user attrs among the usable trials"
    else:
        dist = FloatDistribution(min(distinct), max(distinct), log=True)
    pool = []
    for (trial, value), size in zip(usable, good, strict=True):
        params = {p: trial.params[p] for p in searched}
        dists = {p: trial.distributions[p] for p in searched}
        if error is None and size is not None:
            params[DERIVED], dists[DERIVED] = size, dist
        made = create_trial(params=params, distributions=dists, value=value,
                            state=TrialState.COMPLETE)
        pool.append(_shared_trial_type()(**{k: getattr(made, k) for k in _FIELDS}, trial_id=-1))
    return pool, error


_FIELDS = ("number", "state", "value", "datetime_start", "datetime_complete", "params",
           "distributions", "user_attrs", "system_attrs", "intermediate_values")


@functools.cache
def _shared_trial_type() -> type[FrozenTrial]:
    """:class:`~optuna.trial.FrozenTrial` with a shallow deep copy (made on first use, so that
    importing this module does not load Optuna).

    ``Study.add_trials`` deep-copies every trial; a bootstrap replicate adds hundreds of them,
    and those copies (mostly of distributions) would cost as much as the evaluators. The
    evaluation studies never mutate params or distributions, so replicates share them.
    """
    from optuna.trial import FrozenTrial

    class SharedTrial(FrozenTrial):
        def __deepcopy__(self, memo: dict[int, Any]) -> SharedTrial:
            return copy.copy(self)

    return SharedTrial


class _ThisThread(logging.Filter):
    """Drops the records logged by the thread that made it; other threads' records pass."""

    def __init__(self) -> None:
        super().__init__()
        self._thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self._thread


@contextlib.contextmanager
def _unlogged(logger: logging.Logger) -> Iterator[None]:
    """Silence ``logger`` for this thread inside the block; the user's verbosity and every
    other logger and thread are left as they were."""
    dropped = _ThisThread()
    logger.addFilter(dropped)
    try:
        yield
    finally:
        logger.removeFilter(dropped)


def _study(pool: list[FrozenTrial]) -> optuna.Study:
    import optuna

    # No "A new study created in memory" line per replicate. Optuna names its loggers after
    # their modules, so the storage class tells which logger says it.
    storage = optuna.storages.InMemoryStorage()
    with _unlogged(logging.getLogger(type(storage).__module__)):
        study = optuna.create_study(storage=storage, direction="minimize")
    study.add_trials(pool)
    return study


def _evaluate(study: optuna.Study, name: str, params: list[str], *, seed: int,
              replicate: bool) -> dict[str, float]:
    import optuna.importance
    from optuna.importance import PedAnovaImportanceEvaluator

    if name == "ped-anova":
        quantile = ped_anova_quantile(len(study.get_trials(deepcopy=False)))
        evaluator: Any = PedAnovaImportanceEvaluator(target_quantile=quantile)
    else:
        n_trees, n_trees_bootstrap, max_depth = FOREST[name]
        n_trees = n_trees_bootstrap if replicate else n_trees
        forest = getattr(optuna.importance, _FOREST_EVALUATORS[name])
        evaluator = forest(n_trees=n_trees, max_depth=max_depth, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PED-ANOVA warns about small regimes per replicate
        # Sorted: Optuna 5's MDI labels its importances in the order of `params` but computes
        # them in the sorted order of the distributions, so any other order mislabels them.
        found = optuna.importance.get_param_importances(
            study, evaluator=evaluator, params=sorted(params), normalize=True)
    return {k: float(v) for k, v in found.items()}


def _stats(results: list[dict[str, float]], param: str | None) -> dict[str, Any]:
    """The point estimate (first result) and the percentile interval of the replicates."""
    point = results[0].get(param, math.nan) if results else math.nan
    reps = np.array([r.get(param, math.nan) for r in results[1:]], dtype=float)
    reps = reps[np.isfinite(reps)]
    lo, hi = np.percentile(reps, [2.5, 97.5]) if reps.size >= 2 else (math.nan, math.nan)
    return {"param": param, "importance": float(point), "ci_lo": float(lo), "ci_hi": float(hi)}


def _plain(value: Any) -> Any:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value
