"""``study landscape``: probe the loss landscape of chosen trials and log it to their runs.

For each trial the final weights come from the trial run's artifact ``weights/final.pt`` (a
``state_dict`` loaded with ``torch.load(weights_only=True)``); when the run has none, the trial
is re-trained with its own hyperparameters, epochs, seed and init, and the weights are logged
then. The loss probed is what the trial optimized: mean cross-entropy on the training split
(eval mode, so BatchNorm uses its running statistics) plus the L2 penalty in ``l2-in-loss``
mode. See :mod:`study.landscape` for the directions and for the definitions of sharpness and
flatness radius.

Per trial the run gets ``landscape/landscape_1d.png`` (or ``_2d``), ``landscape/landscape.json``
and the metrics ``landscape/sharpness`` and ``landscape/flatness_radius`` (one batched write);
the Optuna trial gets the user attrs ``landscape_sharpness`` and ``landscape_flatness_radius``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import torch
import torch.nn.functional as F
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from study import landscape
from study.config import StudyConfig, config_from_stored
from study.data import TensorData, load_dataset
from study.errors import ConfigError, TrackingError
from study.landscape_results import ATTR_FLATNESS, ATTR_SHARPNESS, set_finished_trial_user_attrs
from study.models import build_model, count_parameters
from study.objective import WEIGHTS_ARTIFACT  # where every trial logs its final state_dict
from study.penalty import PenaltyMode, penalized_parameters, penalty_term
from study.redact import one_line
from study.search import CONFIG_ATTR, open_study
from study.tracking import Tracker, trial_run_name
from study.train import HParams, Trainer, resolve_device

__all__ = [
    "JSON_SCHEMA",
    "METRIC_FLATNESS",
    "METRIC_SHARPNESS",
    "WEIGHTS_ARTIFACT",
    "ProbeResult",
    "load_state_dict",
    "parse_trials",
    "probe_trials",
    "training_loss_fn",
]

METRIC_SHARPNESS = "landscape/sharpness"
METRIC_FLATNESS = "landscape/flatness_radius"
JSON_SCHEMA = "study.landscape/1"
EVAL_BATCH = 1024
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
    landscape.check_probe_args(radius, n_points)
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
    stored = trial.user_attrs.get("hparams")
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


# -- weights -------------------------------------------------------------------------------------
def load_state_dict(path: Path, *, device: torch.device | str, what: str) -> dict[str, Any]:
    """Load a ``state_dict`` with ``torch.load(..., weights_only=True)``: never unpickles code.

    Args:
        path: The ``.pt`` file.
        device: ``map_location``.
        what: Names the file in errors (e.g. "weights/final.pt of trial 3 (run abc)").

    Raises:
        TrackingError: The file is not a plain mapping of names to tensors.
    """
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError,
            AttributeError, TypeError) as exc:
        raise TrackingError(
            f"{what} must be a state_dict of tensors that torch.load(weights_only=True) "
            f"accepts; it was refused: {_load_reason(exc)}"
        ) from None
    if not isinstance(state, Mapping) or not state:
        raise TrackingError(f"{what} must be a state_dict (a mapping of names to tensors), "
                            f"but got a {type(state).__name__}.")
    bad = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TrackingError(f"{what} must map parameter names to tensors, but got non-tensor "
                            f"values for {', '.join(bad[:5])}.")
    return {_strip_prefix(str(k)): v for k, v in state.items()}


def _load_reason(exc: BaseException) -> str:
    """The informative part of torch's multi-paragraph weights-only error."""
    text = str(exc) or type(exc).__name__
    match = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n\n|$)", text, re.S)
    reason = match.group(1) if match else text.strip().splitlines()[0]
    return one_line(reason)[:300]


def _strip_prefix(key: str) -> str:
    # torch.compile and DataParallel wrap the module; the saved names then carry a prefix.
    for prefix in ("_orig_mod.", "module."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def _fresh_model(settings: StudyConfig, hp: HParams, data: TensorData) -> nn.Module:
    return build_model(settings.model, width=hp.width, in_channels=data.in_channels,
                       n_classes=data.n_classes, input_size=data.input_size, init=settings.init)


def _artifact_exists(tracker: Tracker, run_id: str, path: str) -> bool:
    folder = path.rsplit("/", 1)[0]
    try:
        return any(f.path == path for f in tracker.client.list_artifacts(run_id, folder))
    except Exception as exc:  # artifact stores raise their own types
        raise TrackingError(f"could not list artifacts of run {run_id}: {one_line(exc)}") \
            from None


def _log_artifact(tracker: Tracker, run_id: str, local: Path, artifact_path: str) -> None:
    try:
        tracker.client.log_artifact(run_id, str(local), artifact_path=artifact_path)
    except Exception as exc:  # artifact stores raise their own types (OSError, boto, ...)
        raise TrackingError(f"could not log {local} to run {run_id}: {one_line(exc)}") \
            from None


def _trained_model(
    trial: FrozenTrial, run_id: str, hp: HParams, settings: StudyConfig, data: TensorData,
    tracker: Tracker, trial_dir: Path,
) -> tuple[nn.Module, str, Path, dict[str, Any]]:
    """The trial's final model: from its artifact, else re-trained and logged."""
    device = data.x_train.device
    what = f"{WEIGHTS_ARTIFACT} of trial {trial.number} (run {run_id})"
    if _artifact_exists(tracker, run_id, WEIGHTS_ARTIFACT):
        try:
            folder = trial_dir / "weights"
            folder.mkdir(exist_ok=True)
            local = Path(tracker.client.download_artifacts(run_id, WEIGHTS_ARTIFACT,
                                                           str(folder)))
        except Exception as exc:
            raise TrackingError(f"could not download {what}: {one_line(exc)}") from None
        state = load_state_dict(local, device=device, what=what)
        model = _fresh_model(settings, hp, data).to(device)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise TrackingError(
                f"{what} must fit a {settings.model} of width {hp.width}, but it does not: "
                f"{one_line(str(exc).splitlines()[0])}"
            ) from None
        return model, "artifact", local, {}
    # No weights were logged (runs from before weights were saved): train the trial again.
    trainer = Trainer(hp, data, model_name=settings.model, init=settings.init,
                      epochs=settings.epochs, seed=settings.seed)
    history = trainer.fit()
    model = trainer.model.to(memory_format=torch.contiguous_format)
    local = trial_dir / WEIGHTS_ARTIFACT
    local.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, local)
    _log_artifact(tracker, run_id, local, "weights")
    check = {"retrained_final_train_loss": history[-1].loss}
    curve = trial.user_attrs.get("curve")
    if isinstance(curve, list) and curve and isinstance(curve[-1], list | tuple):
        recorded = float(curve[-1][0])
        check["trial_final_train_loss"] = recorded
        if not math.isclose(recorded, history[-1].loss, rel_tol=1e-3, abs_tol=1e-6):
            print(f"warning: trial {trial.number} re-trained to a final training loss of "
                  f"{history[-1].loss:.6g}, not the recorded {recorded:.6g} (non-deterministic "
                  f"device?); probing the re-trained weights.", file=sys.stderr)
    return model, "retrained", local, check


# -- the loss ------------------------------------------------------------------------------------
def training_loss_fn(data: TensorData, *, penalty_mode: str, weight_decay: float):
    """What a trial optimized: mean cross-entropy over the training split + the L2 penalty
    (``l2-in-loss`` only), evaluated in large batches on whatever mode the model is in."""
    mode = PenaltyMode(penalty_mode)
    x, y, n = data.x_train, data.y_train, data.n_train

    def loss(model: nn.Module) -> float:
        with torch.no_grad():
            total = torch.zeros((), dtype=torch.float64, device=x.device)
            for lo in range(0, n, EVAL_BATCH):
                logits = model(x[lo:lo + EVAL_BATCH])
                total += F.cross_entropy(logits.float(), y[lo:lo + EVAL_BATCH],
                                         reduction="sum").double()
            value = total / n
            penalty = penalty_term(penalized_parameters(model), mode=mode,
                                   weight_decay=weight_decay)
            if penalty is not None:
                value = value + penalty.double()
            return float(value)

    return loss


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
        run_id = trial.user_attrs.get("mlflow_run_id")
        if not run_id or tracker.get_run(run_id) is None:
            raise TrackingError(
                f"trial {trial.number} of study {study.study_name!r} has no MLflow run "
                f"{run_id or '(none recorded)'} in this tracking store; pass the study's "
                "--tracking-uri."
            )
        runs[trial.number] = run_id
    device = resolve_device(config.device)
    data = load_dataset(settings.dataset, seed=settings.seed, device=device)
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
    model, source, weights_path, check = _trained_model(trial, run_id, hp, settings, data,
                                                         tracker, trial_dir)
    loss_fn = training_loss_fn(data, penalty_mode=hp.penalty_mode,
                               weight_decay=hp.weight_decay)
    title = (f"{study.study_name}, trial {trial.number}\nwidth {hp.width}, lr {hp.lr:.3g}, "
             f"batch {hp.batch_size}, wd {hp.weight_decay:.3g} ({hp.penalty_mode})")
    probe: landscape.Curve1D | landscape.Surface2D
    if dim == 1:
        probe = landscape.probe_1d(model, loss_fn, radius=radius, n_points=n_points,
                                   n_directions=n_directions, seed=seed)
        png = landscape.plot_1d(probe, title)
    else:
        probe = landscape.probe_2d(model, loss_fn, radius=radius, n_points=n_points, seed=seed)
        png = landscape.plot_2d(probe, title)
    sharp = landscape.sharpness(probe)
    flat = landscape.flatness_radius(probe)

    landscape_dir = trial_dir / "landscape"
    landscape_dir.mkdir(exist_ok=True)
    plot_path = landscape_dir / f"landscape_{dim}d.png"
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
        "train_seed": settings.seed,
        "n_params": count_parameters(model),
        "weights_source": source,
        **check,
        "loss": "mean training cross-entropy (eval mode) + L2 penalty when l2-in-loss",
        "sharpness": _finite_or_none(sharp),
        "sharpness_distance": landscape.SHARPNESS_DISTANCE,
        "flatness_radius": flat,
        "flatness_rise": landscape.FLATNESS_RISE,
        "probe": probe.to_dict(),
    }
    json_path = landscape_dir / "landscape.json"
    json_path.write_text(json.dumps(document, indent=1, allow_nan=False) + "\n")

    _log_artifact(tracker, run_id, plot_path, "landscape")
    _log_artifact(tracker, run_id, json_path, "landscape")
    tracker.log_metrics(run_id, {METRIC_SHARPNESS: sharp, METRIC_FLATNESS: flat})
    set_finished_trial_user_attrs(
        study, trial, {ATTR_SHARPNESS: _finite_or_none(sharp), ATTR_FLATNESS: flat}
    )
    return ProbeResult(
        trial_number=trial.number, run_id=run_id, dim=dim, sharpness=sharp,
        flatness_radius=flat, center_loss=probe.center_loss, width=hp.width, lr=hp.lr,
        batch_size=hp.batch_size, weight_decay=hp.weight_decay, penalty_mode=hp.penalty_mode,
        n_params=count_parameters(model), weights_source=source, plot_path=plot_path,
        json_path=json_path, weights_path=weights_path,
    )


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
