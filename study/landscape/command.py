"""``study landscape``: probe the loss landscape of chosen trials and log it to their runs.

For each trial the final weights come from the trial run's artifact ``weights/final.pt`` (a
``state_dict`` loaded with ``torch.load(weights_only=True)``); when the run has none, the trial
is re-trained with its own hyperparameters, epochs, seed and init, and the weights are logged
then. The loss probed is what the trial optimized: mean cross-entropy on the training split
(eval mode, so BatchNorm uses its running statistics) plus the L2 penalty in ``l2-in-loss``
mode. See :mod:`study.landscape.directions` for the directions and :mod:`study.landscape.probes`
for the definitions of sharpness and flatness radius.

Per trial the run gets ``landscape/landscape_1d.png`` (or ``_2d``), ``landscape/landscape.json``
and the metrics ``landscape/sharpness`` and ``landscape/flatness_radius`` (one batched write);
the Optuna trial gets the user attrs ``landscape_sharpness`` and ``landscape_flatness_radius``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from study.config import StudyConfig, config_from_stored
from study.errors import ConfigError, TrackingError
from study.keys import CONFIG_ATTR, HPARAMS_ATTR, RUN_ID_ATTR, TRAIN_SEED_ATTR
from study.landscape import plots, probes
from study.landscape._weights import trained_model, training_loss_fn
from study.landscape.results import ATTR_FLATNESS, ATTR_SHARPNESS, store_probe_results
from study.runtime import open_study
from study.runtime.inputs import load_data
from study.tracking import Tracker, trial_run_name
from study.training import HParams, TensorData, count_parameters, resolve_device

__all__ = [
    "JSON_SCHEMA",
    "METRIC_FLATNESS",
    "METRIC_SHARPNESS",
    "ProbeResult",
    "parse_trials",
    "probe_trials",
]

METRIC_SHARPNESS = "landscape/sharpness"
METRIC_FLATNESS = "landscape/flatness_radius"
JSON_SCHEMA = "study.landscape/1"
_TRIALS_ALLOWED = "best or comma-separated trial numbers (e.g. 3,7)"


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """One probed trial."""

    trial_number: int
    run_id: str
    dim: int
    sharpness: float
    flatness_radius: float
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
def parse_trials(trials: str) -> str | list[int]:
    """``"best"`` or a list of distinct trial numbers from ``"N,M"``.

    Raises:
        ConfigError: Anything else (one line naming ``trials``).
    """
    if not isinstance(trials, str):
        raise ConfigError(f"`trials` must be {_TRIALS_ALLOWED}, but got trials={trials!r}.")
    text = trials.strip()
    if text.lower() == "best":
        return "best"
    numbers: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not (item.isascii() and item.isdigit()):
            raise ConfigError(f"`trials` must be {_TRIALS_ALLOWED}, but got trials={trials!r}.")
        if int(item) not in numbers:
            numbers.append(int(item))
    return numbers


def _check_args(dim: Any, radius: Any, n_points: Any, n_directions: Any, seed: Any) -> None:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim not in (1, 2):
        raise ConfigError(f"`dim` must be 1 or 2, but got dim={dim!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"`seed` must be an integer >= 0, but got seed={seed!r}.")
    # The probes validate radius, n_points and n_directions; fail before any data is loaded.
    probes.check_probe_args(radius, n_points)
    if isinstance(n_directions, bool) or not isinstance(n_directions, int) or n_directions < 1:
        raise ConfigError(
            f"`n_directions` must be an integer >= 1, but got n_directions={n_directions!r}."
        )


def _numbers(trials: Sequence[FrozenTrial]) -> str:
    numbers = [str(t.number) for t in trials]
    if not numbers:
        return "none"
    return ", ".join(numbers[:30]) + (", ..." if len(numbers) > 30 else "")


def _select(study: optuna.Study, wanted: str | list[int], raw: str) -> list[FrozenTrial]:
    all_trials = study.get_trials(deepcopy=False)
    complete = [t for t in all_trials if t.state is TrialState.COMPLETE]
    allowed = f"COMPLETE trials of study {study.study_name!r} (allowed: {_numbers(complete)})"
    if wanted == "best":
        if not complete:
            raise ConfigError(f"`trials` must name {allowed}, but got trials={raw!r} and the "
                              "study has no complete trial yet.")
        return [study.best_trial]
    by_number = {t.number: t for t in all_trials}
    chosen = []
    for number in wanted:
        trial = by_number.get(number)
        if trial is None:
            raise ConfigError(f"`trials` must name {allowed}, but got trials={raw!r}: trial "
                              f"{number} does not exist.")
        if trial.state is not TrialState.COMPLETE:
            raise ConfigError(f"`trials` must name {allowed}, but got trials={raw!r}: trial "
                              f"{number} is {trial.state.name}.")
        chosen.append(trial)
    return chosen


def _hparams(trial: FrozenTrial, config: StudyConfig) -> HParams:
    stored = trial.user_attrs.get(HPARAMS_ATTR)
    values = dict(stored) if isinstance(stored, Mapping) else \
        {**config.fixed_dimensions, **trial.params}
    names = {f.name for f in dataclasses.fields(HParams)}
    try:
        hp = HParams(**{k: v for k, v in values.items() if k in names})
        return HParams(width=int(hp.width), lr=float(hp.lr), batch_size=int(hp.batch_size),
                       weight_decay=float(hp.weight_decay), penalty_mode=str(hp.penalty_mode))
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
    dim: int = 1,
    radius: float = 1.0,
    n_points: int = 21,
    seed: int = 0,
    output_dir: Path,
    n_directions: int = 1,
) -> list[ProbeResult]:
    """Probe the loss landscape of ``trials`` of the study named in ``config``; log the results.

    Args:
        config: Locates the study (``study_name``, ``storage``, ``tracking_uri``) and gives the
            ``device``; model, dataset, init, epochs and seed come from the stored study.
        trials: ``"best"`` or ``"N,M"``: numbers of COMPLETE trials.
        dim: 1 (curves) or 2 (a contour surface; sharpness and flatness read on its axes).
        radius: Grid half-width in filter-normalized units.
        n_points: Grid points per axis.
        seed: Seed of the random directions (not of the data split, which is the study's).
        output_dir: Local copies go to ``output_dir/trial-NNNN/``.
        n_directions: Directions of a 1D probe (sharpness and flatness use them all).

    Returns:
        One :class:`ProbeResult` per trial, in the order asked.

    Raises:
        ConfigError: Bad ``trials``, ``dim`` or probe settings, or trials that are unknown or
            not COMPLETE.
        StorageError: The study does not exist.
        TrackingError: A trial run is missing, or its weights cannot be read or logged.
    """
    _check_args(dim, radius, n_points, n_directions, seed)
    wanted = parse_trials(trials)
    study = open_study(config)
    stored = study.user_attrs.get(CONFIG_ATTR)
    if not isinstance(stored, Mapping):
        raise ConfigError(f"`study_name` must name a study created by this tool, but got "
                          f"study_name={config.study_name!r}, which has no stored settings.")
    settings = config_from_stored(stored, config)
    chosen = _select(study, wanted, trials)
    tracker = Tracker(config.tracking_uri)
    runs = {}
    for trial in chosen:
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if not run_id or tracker.get_run(run_id) is None:
            raise TrackingError(
                f"trial {trial.number} of study {study.study_name!r} has no MLflow run "
                f"{run_id or '(none recorded)'} in this tracking store; pass the study's "
                "--tracking-uri."
            )
        runs[trial.number] = run_id
    device = resolve_device(config.device)
    data = load_data(settings, device=device)
    output_dir = Path(output_dir)
    results = []
    for trial in chosen:
        results.append(_probe_one(study, trial, runs[trial.number], settings, data, tracker,
                                  dim=dim, radius=radius, n_points=n_points, seed=seed,
                                  n_directions=n_directions, output_dir=output_dir))
    return results


def _probe_one(
    study: optuna.Study, trial: FrozenTrial, run_id: str, settings: StudyConfig,
    data: TensorData, tracker: Tracker, *, dim: int, radius: float, n_points: int, seed: int,
    n_directions: int, output_dir: Path,
) -> ProbeResult:
    hp = _hparams(trial, settings)
    trial_dir = output_dir / trial_run_name(trial.number)
    trial_dir.mkdir(parents=True, exist_ok=True)
    model, source, weights_path, check = trained_model(trial, run_id, hp, settings, data,
                                                         tracker, trial_dir)
    loss_fn = training_loss_fn(data, penalty_mode=hp.penalty_mode,
                               weight_decay=hp.weight_decay)
    title = (f"{study.study_name}, trial {trial.number}\nwidth {hp.width}, lr {hp.lr:.3g}, "
             f"batch {hp.batch_size}, wd {hp.weight_decay:.3g} ({hp.penalty_mode})")
    probe: probes.Curve1D | probes.Surface2D
    if dim == 1:
        probe = probes.probe_1d(model, loss_fn, radius=radius, n_points=n_points,
                                   n_directions=n_directions, seed=seed)
        png = plots.plot_1d(probe, title)
    else:
        probe = probes.probe_2d(model, loss_fn, radius=radius, n_points=n_points, seed=seed)
        png = plots.plot_2d(probe, title)
    sharp = probes.sharpness(probe)
    flat = probes.flatness_radius(probe)

    plot_path = trial_dir / f"landscape_{dim}d.png"  # reports/<study>/landscape/trial-NNNN/
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
        "sharpness": _finite_or_none(sharp),
        "sharpness_distance": probes.SHARPNESS_DISTANCE,
        "flatness_radius": flat,
        "flatness_rise": probes.FLATNESS_RISE,
        "probe": probe.to_dict(),
    }
    json_path = trial_dir / "landscape.json"
    json_path.write_text(json.dumps(document, indent=1, allow_nan=False) + "\n")

    tracker.log_artifacts(run_id, plot_path, "landscape")
    tracker.log_artifacts(run_id, json_path, "landscape")
    tracker.log_metrics(run_id, {METRIC_SHARPNESS: sharp, METRIC_FLATNESS: flat})
    store_probe_results(study, trial,
                        {ATTR_SHARPNESS: _finite_or_none(sharp), ATTR_FLATNESS: flat})
    return ProbeResult(
        trial_number=trial.number, run_id=run_id, dim=dim, sharpness=sharp,
        flatness_radius=flat, center_loss=probe.center_loss, width=hp.width, lr=hp.lr,
        batch_size=hp.batch_size, weight_decay=hp.weight_decay, penalty_mode=hp.penalty_mode,
        n_params=count_parameters(model), weights_source=source, plot_path=plot_path,
        json_path=json_path, weights_path=weights_path,
    )


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
