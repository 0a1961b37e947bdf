"""``study landscape``: probe the loss landscape of chosen trials and log it to their runs.

For each trial the final weights come from the trial run's artifact ``weights/final.pt`` (a
``state_dict`` loaded with ``torch.load(weights_only=True)``); when the run has none, the trial
is re-trained with its own hyperparameters, epochs, seed and init, and the weights are logged
then. The loss probed is what the trial optimized: mean cross-entropy on the training split
(eval mode, so BatchNorm uses its running statistics) plus the L2 penalty in ``l2-in-loss``
mode. See :mod:`study.landscape.directions` for the directions and :mod:`study.landscape.probes`
for the definitions of sharpness and flatness radius.

Per trial the run gets ``landscape/landscape_1d.png`` (or ``_2d``), ``landscape/landscape.json``
and the metrics (one batched write) ``landscape/sharpness`` and ``landscape/flatness_radius``
(means over the directions, each with ``_low``/``_high`` 95% bounds),
``landscape/hessian_top_eigenvalue`` and ``landscape/hessian_trace``; the study keeps the same
figures for reports (:mod:`study.landscape.results`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from study.config import StudyConfig, config_from_stored
from study.errors import ConfigError, TrackingError
from study.keys import CONFIG_ATTR, HPARAMS_ATTR, RUN_ID_ATTR, TRAIN_SEED_ATTR
from study.landscape import curvature, plots, probes
from study.landscape._weights import (
    HESSIAN_SAMPLES,
    trained_model,
    training_loss_fn,
    training_loss_tensor_fn,
)
from study.landscape.between import log_between
from study.landscape.directions import DIRECTION_LABELS, random_directions
from study.landscape.options import check_between, check_probe
from study.landscape.results import ATTR_FLATNESS, ATTR_SHARPNESS, store_probe_results
from study.landscape.select import select_trials
from study.runtime import open_study
from study.runtime.inputs import load_data
from study.tracking import Tracker, trial_run_name
from study.training import HParams, TensorData, count_parameters, resolve_device

__all__ = [
    "JSON_SCHEMA",
    "METRIC_FLATNESS",
    "METRIC_HESSIAN_TOP",
    "METRIC_HESSIAN_TRACE",
    "METRIC_SHARPNESS",
    "ProbeResult",
    "probe_between",
    "probe_trials",
]

METRIC_SHARPNESS = "landscape/sharpness"
METRIC_FLATNESS = "landscape/flatness_radius"
METRIC_HESSIAN_TOP = "landscape/hessian_top_eigenvalue"
METRIC_HESSIAN_TRACE = "landscape/hessian_trace"
JSON_SCHEMA = "study.landscape/1"


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """One probed trial."""

    trial_number: int
    run_id: str
    dim: int
    normalization: str
    n_directions: int
    sharpness: float
    sharpness_low: float | None
    sharpness_high: float | None
    flatness_radius: float
    flatness_low: float | None
    flatness_high: float | None
    flatness_censored: int  # directions along which the loss never rose enough (radius kept)
    hessian_top_eigenvalue: float
    hessian_trace: float
    center_loss: float
    width: int
    lr: float
    batch_size: int
    weight_decay: float
    penalty_mode: str
    n_params: int
    weights_source: str  # "artifact" (loaded) or "retrained" (and logged now)
    plot_path: Path
    json_path: Path
    weights_path: Path

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (paths as strings)."""
        return {k: str(v) if isinstance(v, Path) else v
                for k, v in dataclasses.asdict(self).items()}


# -- input ---------------------------------------------------------------------------------------
def _hparams(trial: FrozenTrial, config: StudyConfig) -> HParams:
    stored = trial.user_attrs.get(HPARAMS_ATTR)
    values = dict(stored) if isinstance(stored, Mapping) else \
        {**config.fixed_dimensions, **trial.params}
    names = {f.name for f in dataclasses.fields(HParams)}
    try:
        hp = HParams(**{k: v for k, v in values.items() if k in names})
        return HParams(width=int(hp.width), lr=float(hp.lr), batch_size=int(hp.batch_size),
                       weight_decay=float(hp.weight_decay), penalty_mode=str(hp.penalty_mode),
                       optimizer=str(hp.optimizer), momentum=float(hp.momentum),
                       dropout=float(hp.dropout), bn_momentum=float(hp.bn_momentum))
    except (TypeError, ValueError):
        raise ConfigError(
            f"`trials` must name trials with recorded hyperparameters, but trial "
            f"{trial.number} has hparams={stored!r}."
        ) from None


# -- orchestration -------------------------------------------------------------------------------
def probe_trials(
    config: StudyConfig,
    *,
    trials: str = "best",
    where: str | None = None,
    dim: int = 1,
    radius: float = 1.0,
    n_points: int = 21,
    seed: int = 0,
    output_dir: Path,
    n_directions: int = 5,
    normalization: str = "filter",
) -> list[ProbeResult]:
    """Probe the loss landscape of ``trials`` of the study named in ``config``; log the results.

    Args:
        config: Locates the study (``study_name``, ``storage``, ``tracking_uri``) and gives the
            ``device``; model, dataset, init, epochs and seed come from the stored study.
        trials: ``"best"``, ``"all"`` or ``"N,M"``: numbers of COMPLETE trials.
        where: Keep trials whose hyperparameters match, e.g. ``"batch_size=32"``
            (:mod:`study.landscape.select`).
        dim: 1 (curves) or 2 (a contour surface; sharpness and flatness read on its axes).
        radius: Grid half-width, in the normalization's units.
        n_points: Grid points per axis.
        seed: Seed of the random directions (the same for every trial, so probes compare).
        output_dir: Local copies go to ``output_dir/trial-NNNN/``.
        n_directions: Directions of a 1D probe (sharpness and flatness average over them).
        normalization: ``filter``, ``layer`` or ``none`` (:mod:`study.landscape.directions`).

    Returns:
        One :class:`ProbeResult` per trial, in the order asked.

    Raises:
        ConfigError: Bad selection or probe settings, or trials that are unknown or not
            COMPLETE.
        StorageError: The study does not exist.
        TrackingError: A trial run is missing, or its weights cannot be read or logged.
    """
    check_probe(trials=trials, where=where, dim=dim, radius=radius, n_points=n_points,
                n_directions=n_directions, seed=seed, normalization=normalization)
    study, settings = _study_and_settings(config)
    chosen = select_trials(study, trials, where)
    tracker = Tracker(config.tracking_uri)
    runs = {trial.number: trial_run_id(tracker, study, trial) for trial in chosen}
    device = resolve_device(config.device)
    data = load_data(settings, device=device)
    output_dir = Path(output_dir)
    probe = Probe(dim=dim, radius=radius, n_points=n_points, seed=seed,
                  n_directions=n_directions if dim == 1 else 2, normalization=normalization)
    return [_probe_one(study, trial, runs[trial.number], settings, data, tracker, probe,
                       output_dir=output_dir) for trial in chosen]


def probe_between(config: StudyConfig, *, between: str, output_dir: Path,
                  n_points: int = 41) -> tuple[Any, Path, list[str]]:
    """Interpolate between two COMPLETE trials' final weights (:mod:`study.landscape.between`);
    returns the interpolation, the figure's path and the two runs it was logged to.

    Raises:
        ConfigError: Bad ``between``, trials that are unknown or not COMPLETE, or trials of
            different architectures.
        StorageError: The study does not exist.
        TrackingError: A trial run is missing, or its weights cannot be read or logged.
    """
    a, b = check_between(between, n_points=n_points)
    study, settings = _study_and_settings(config)
    trials = select_trials(study, f"{a},{b}")
    tracker = Tracker(config.tracking_uri)
    runs = [trial_run_id(tracker, study, t) for t in trials]
    data = load_data(settings, device=resolve_device(config.device))
    hps = [_hparams(t, settings) for t in trials]
    title = f"{study.study_name}: trial {a} -> trial {b}"
    line, png = log_between(trials, runs, hps, settings, data, tracker,
                            output_dir=Path(output_dir), title=title, n_points=n_points)
    return line, png, runs


def _study_and_settings(config: StudyConfig) -> tuple[optuna.Study, StudyConfig]:
    """The study and the settings it was created with (model, dataset, epochs, seed)."""
    study = open_study(config)
    stored = study.user_attrs.get(CONFIG_ATTR)
    if not isinstance(stored, Mapping):
        raise ConfigError(f"`study_name` must name a study created by this tool, but got "
                          f"study_name={config.study_name!r}, which has no stored settings.")
    return study, config_from_stored(stored, config)


def trial_run_id(tracker: Tracker, study: optuna.Study, trial: FrozenTrial) -> str:
    """The MLflow run of ``trial``.

    Raises:
        TrackingError: It has none in this tracking store.
    """
    run_id = trial.user_attrs.get(RUN_ID_ATTR)
    if not run_id or tracker.get_run(run_id) is None:
        raise TrackingError(
            f"trial {trial.number} of study {study.study_name!r} has no MLflow run "
            f"{run_id or '(none recorded)'} in this tracking store; pass the study's "
            "--tracking-uri."
        )
    return run_id


@dataclasses.dataclass(frozen=True)
class Probe:
    """The settings of one probe (the same for every trial of a call)."""

    dim: int
    radius: float
    n_points: int
    seed: int
    n_directions: int
    normalization: str


def _measure(model: Any, loss_fn: Any, loss_tensor_fn: Any, probe: Probe
             ) -> tuple[probes.Curve1D | probes.Surface2D, dict[str, Any]]:
    """The probe's grid and every figure of one trial's weights."""
    common = dict(radius=probe.radius, n_points=probe.n_points, seed=probe.seed,
                  normalization=probe.normalization)
    grid = (probes.probe_1d(model, loss_fn, n_directions=probe.n_directions, **common)
            if probe.dim == 1 else probes.probe_2d(model, loss_fn, **common))
    directions = random_directions(model, probe.n_directions, probe.seed,
                                   normalization=probe.normalization)
    radii = curvature.flatness_radii(model, loss_fn, directions, rise=probes.FLATNESS_RISE,
                                     radius=probe.radius)
    was_training = model.training
    model.eval()  # the Hessian of the loss the probes read (BatchNorm's running statistics)
    try:
        top = curvature.hessian_top_eigenvalue(model, loss_tensor_fn, seed=probe.seed)
        trace, _ = curvature.hessian_trace(model, loss_tensor_fn, seed=probe.seed)
    finally:
        model.train(was_training)
    sharp = curvature.mean_interval(probes.sharpness_per_direction(grid))
    flat = curvature.mean_interval(radii)
    return grid, {
        "sharpness": sharp.mean, "sharpness_low": sharp.low, "sharpness_high": sharp.high,
        "flatness_radius": flat.mean, "flatness_low": flat.low, "flatness_high": flat.high,
        "flatness_censored": sum(r >= probe.radius for r in radii),
        "hessian_top_eigenvalue": top, "hessian_trace": trace,
    }


def _probe_one(
    study: optuna.Study, trial: FrozenTrial, run_id: str, settings: StudyConfig,
    data: TensorData, tracker: Tracker, probe: Probe, *, output_dir: Path,
) -> ProbeResult:
    hp = _hparams(trial, settings)
    trial_dir = output_dir / trial_run_name(trial.number)
    trial_dir.mkdir(parents=True, exist_ok=True)
    model, source, weights_path, check = trained_model(trial, run_id, hp, settings, data,
                                                         tracker, trial_dir)
    losses = dict(penalty_mode=hp.penalty_mode, weight_decay=hp.weight_decay)
    grid, figures = _measure(model, training_loss_fn(data, **losses),
                             training_loss_tensor_fn(data, **losses), probe)
    title = (f"{study.study_name}, trial {trial.number} "
             f"({DIRECTION_LABELS[probe.normalization]})\n"
             f"width {hp.width}, lr {hp.lr:.3g}, batch {hp.batch_size}, "
             f"wd {hp.weight_decay:.3g} ({hp.penalty_mode})")
    png = (plots.plot_1d(grid, title, flatness=figures["flatness_radius"],
                         normalization=probe.normalization) if probe.dim == 1
           else plots.plot_2d(grid, title, normalization=probe.normalization))
    plot_path = trial_dir / f"landscape_{probe.dim}d.png"  # reports/<study>/landscape/trial-N/
    plot_path.write_bytes(png)
    document = {
        "schema": JSON_SCHEMA,
        "study_name": study.study_name,
        "trial_number": trial.number,
        "run_id": run_id,
        "hparams": dataclasses.asdict(hp),
        "model": settings.model,
        "dataset": settings.dataset,
        "init": settings.init,
        "epochs": settings.epochs,
        "train_seed": int(trial.user_attrs.get(TRAIN_SEED_ATTR, settings.seed)),
        "n_params": count_parameters(model),
        "weights_source": source,
        **check,
        "loss": "mean training cross-entropy (eval mode) + L2 penalty when l2-in-loss",
        "normalization": probe.normalization,
        **{k: _finite_or_none(v) for k, v in figures.items()},
        "sharpness_distance": probes.SHARPNESS_DISTANCE,
        "flatness_rise": probes.FLATNESS_RISE,
        "hessian_samples": min(data.n_train, HESSIAN_SAMPLES),
        "probe": grid.to_dict(),
    }
    json_path = trial_dir / "landscape.json"
    json_path.write_text(json.dumps(document, indent=1, allow_nan=False) + "\n")

    tracker.log_artifacts(run_id, plot_path, "landscape")
    tracker.log_artifacts(run_id, json_path, "landscape")
    metrics = {METRIC_SHARPNESS: figures["sharpness"], METRIC_FLATNESS: figures["flatness_radius"],
               METRIC_HESSIAN_TOP: figures["hessian_top_eigenvalue"],
               METRIC_HESSIAN_TRACE: figures["hessian_trace"]}
    for name, low, high in ((METRIC_SHARPNESS, "sharpness_low", "sharpness_high"),
                            (METRIC_FLATNESS, "flatness_low", "flatness_high")):
        if figures[low] is not None:
            metrics.update({f"{name}_low": figures[low], f"{name}_high": figures[high]})
    tracker.set_tags(run_id, {"landscape.normalization": probe.normalization,
                              "landscape.directions": str(probe.n_directions)},
                     metrics={k: v for k, v in metrics.items() if math.isfinite(v)})
    store_probe_results(study, trial, {ATTR_SHARPNESS: _finite_or_none(figures["sharpness"]),
                                       ATTR_FLATNESS: figures["flatness_radius"],
                                       **{f"landscape_{k}": _finite_or_none(v)
                                          for k, v in figures.items()
                                          if k not in ("sharpness", "flatness_radius")},
                                       "landscape_normalization": probe.normalization})
    return ProbeResult(
        trial_number=trial.number, run_id=run_id, dim=probe.dim,
        normalization=probe.normalization, n_directions=probe.n_directions, **figures,
        center_loss=grid.center_loss, width=hp.width, lr=hp.lr, batch_size=hp.batch_size,
        weight_decay=hp.weight_decay, penalty_mode=hp.penalty_mode,
        n_params=count_parameters(model), weights_source=source, plot_path=plot_path,
        json_path=json_path, weights_path=weights_path,
    )


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
