"""A probed trial's final weights: its run's ``weights/final.pt``, loaded without unpickling
code, or the trial trained again when the run has none."""

from __future__ import annotations

import math
import pickle
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from optuna.trial import FrozenTrial
from torch import nn

from study.config import StudyConfig
from study.errors import TrackingError
from study.keys import CURVE_ATTR, TRAIN_SEED_ATTR, WEIGHTS_ARTIFACT
from study.redact import one_line
from study.tracking import Tracker
from study.training import (
    HParams,
    PenaltyMode,
    TensorData,
    Trainer,
    build_model,
    curve_rows,
    penalized_parameters,
    penalty_term,
)

__all__ = ["EVAL_BATCH", "HESSIAN_SAMPLES", "load_state_dict", "trained_model", "training_loss_fn",
           "training_loss_tensor_fn"]

EVAL_BATCH = 1024


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
                       n_classes=data.n_classes, input_size=data.input_size, init=settings.init,
                       depth=settings.depth, dropout=hp.dropout, bn_momentum=hp.bn_momentum)


def _artifact_exists(tracker: Tracker, run_id: str, path: str) -> bool:
    folder = path.rsplit("/", 1)[0]
    try:
        return any(f.path == path for f in tracker.client.list_artifacts(run_id, folder))
    except Exception as exc:  # artifact stores raise their own types
        raise TrackingError(f"could not list artifacts of run {run_id}: {one_line(exc)}") \
            from None


def trained_model(
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
                      depth=settings.depth, epochs=settings.epochs,
                      seed=int(trial.user_attrs.get(TRAIN_SEED_ATTR, settings.seed)))
    history = trainer.fit()
    model = trainer.model.to(memory_format=torch.contiguous_format)
    local = trial_dir / WEIGHTS_ARTIFACT
    local.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, local)
    tracker.log_artifacts(run_id, local, "weights")
    check = {"retrained_final_train_loss": history[-1].loss}
    curve = curve_rows(trial.user_attrs.get(CURVE_ATTR))
    if curve and curve[-1][0] is not None:
        recorded = float(curve[-1][0])
        check["trial_final_train_loss"] = recorded
        if not math.isclose(recorded, history[-1].loss, rel_tol=1e-3, abs_tol=1e-6):
            print(f"warning: trial {trial.number} re-trained to a final training loss of "
                  f"{history[-1].loss:.6g}, not the recorded {recorded:.6g} (non-deterministic "
                  f"device?); probing the re-trained weights.", file=sys.stderr)
    return model, "retrained", local, check


def _objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, mode: PenaltyMode,
               weight_decay: float) -> torch.Tensor:
    """Mean cross-entropy of ``model`` on ``x, y`` (float64 sums over large batches) + the L2
    penalty in ``l2-in-loss`` mode, as a tensor (differentiable unless under no_grad)."""
    n = len(y)
    total = sum(F.cross_entropy(model(x[lo:lo + EVAL_BATCH]).float(), y[lo:lo + EVAL_BATCH],
                                reduction="sum").double() for lo in range(0, n, EVAL_BATCH))
    penalty = penalty_term(penalized_parameters(model), mode=mode, weight_decay=weight_decay)
    return total / n if penalty is None else total / n + penalty.double()


def training_loss_fn(data: TensorData, *, penalty_mode: str, weight_decay: float):
    """What a trial optimized: mean cross-entropy over the training split + the L2 penalty
    (``l2-in-loss`` only), evaluated in large batches on whatever mode the model is in."""
    mode = PenaltyMode(penalty_mode)

    def loss(model: nn.Module) -> float:
        with torch.no_grad():
            return float(_objective(model, data.x_train, data.y_train, mode=mode,
                                    weight_decay=weight_decay))

    return loss


HESSIAN_SAMPLES = 2048
"""Training samples the Hessian figures use (all of them on digits): each Hessian-vector
product backpropagates twice through them, a hundred times per power iteration."""


def training_loss_tensor_fn(data: TensorData, *, penalty_mode: str, weight_decay: float,
                            max_samples: int = HESSIAN_SAMPLES):
    """:func:`training_loss_fn` as a differentiable tensor, on the first ``max_samples``
    training samples (for Hessian-vector products)."""
    mode = PenaltyMode(penalty_mode)
    n = min(data.n_train, max_samples)

    def loss(model: nn.Module) -> torch.Tensor:
        return _objective(model, data.x_train[:n], data.y_train[:n], mode=mode,
                          weight_decay=weight_decay)

    return loss
