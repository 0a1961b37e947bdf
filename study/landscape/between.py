"""``study landscape --between A,B``: the loss and accuracy along the straight line between two
trials' final weights (Goodfellow et al., 2015; Li et al., 2018, Figs. 2-3).

``theta(t) = (1 - t) theta_A + t theta_B`` for ``t`` in ``[-0.5, 1.5]``; BatchNorm's running
variance is interpolated geometrically (``exp((1 - t) log v_A + t log v_B)``), so it stays
positive beyond the endpoints, and integer buffers (batch counters) are A's. Both splits are
evaluated in eval mode with the data loss (cross-entropy, no penalty: the two trials may
penalize differently). ``barrier`` is the largest rise of the training loss over the straight
line between the two endpoints' losses, for ``t`` in ``[0, 1]``: near zero when the two
minima are linearly connected.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from study.config import StudyConfig
from study.errors import ConfigError
from study.landscape._weights import EVAL_BATCH, trained_model
from study.landscape.options import parse_between
from study.tracking import Tracker, trial_run_name
from study.training import TensorData

__all__ = ["Interpolation", "build_plot_between", "interpolate", "interpolated_state",
           "log_between", "parse_between"]

T_MIN, T_MAX = -0.5, 1.5
_VAR_FLOOR = 1e-12  # a running variance of exactly 0 (a dead channel) has no logarithm


def interpolated_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
                       t: float) -> dict[str, torch.Tensor]:
    """The state dict at ``t`` between ``a`` (t = 0) and ``b`` (t = 1)."""
    out = {}
    for key, va in a.items():
        vb = b[key]
        if not torch.is_floating_point(va):
            out[key] = va.clone()
        elif key.endswith("running_var"):
            log_a, log_b = va.clamp_min(_VAR_FLOOR).log(), vb.clamp_min(_VAR_FLOOR).log()
            out[key] = torch.exp((1 - t) * log_a + t * log_b)
        else:
            out[key] = (1 - t) * va + t * vb
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class Interpolation:
    """Losses and accuracies at each ``t``."""

    ts: np.ndarray
    train_loss: np.ndarray
    val_loss: np.ndarray
    train_accuracy: np.ndarray
    val_accuracy: np.ndarray

    @property
    def barrier(self) -> float:
        """Largest rise of the training loss above the chord between t = 0 and t = 1."""
        inside = (self.ts >= 0) & (self.ts <= 1)
        ts, loss = self.ts[inside], self.train_loss[inside]
        at0, at1 = float(np.interp(0.0, self.ts, self.train_loss)), \
            float(np.interp(1.0, self.ts, self.train_loss))
        return float(np.max(loss - ((1 - ts) * at0 + ts * at1)))

    def to_dict(self) -> dict[str, Any]:
        return {"t": self.ts.tolist(), "train_loss": self.train_loss.tolist(),
                "val_loss": self.val_loss.tolist(),
                "train_accuracy": self.train_accuracy.tolist(),
                "val_accuracy": self.val_accuracy.tolist(), "barrier": self.barrier}


def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    total = correct = 0.0
    with torch.no_grad():
        for lo in range(0, len(y), EVAL_BATCH):
            logits = model(x[lo:lo + EVAL_BATCH]).float()
            total += float(F.cross_entropy(logits, y[lo:lo + EVAL_BATCH], reduction="sum"))
            correct += float((logits.argmax(1) == y[lo:lo + EVAL_BATCH]).sum())
    return total / len(y), correct / len(y)


def interpolate(model: nn.Module, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
                data: TensorData, *, n_points: int = 41) -> Interpolation:
    """Evaluate ``model`` (its architecture; its weights are replaced) along the line."""
    ts = np.unique(np.concatenate([np.linspace(T_MIN, T_MAX, n_points), [0.0, 1.0]]))
    rows = []
    model.eval()
    for t in ts:
        model.load_state_dict(interpolated_state(a, b, float(t)))
        rows.append((*_evaluate(model, data.x_train, data.y_train),
                     *_evaluate(model, data.x_val, data.y_val)))
    values = np.array(rows, dtype=np.float64)
    return Interpolation(ts=ts, train_loss=values[:, 0], train_accuracy=values[:, 1],
                         val_loss=values[:, 2], val_accuracy=values[:, 3])


def build_plot_between(line: Interpolation, title: str, *, labels: tuple[str, str]) -> Figure:
    """Loss (left) and accuracy (right) against ``t``, train and validation."""
    fig = Figure(figsize=(10.0, 4.0))
    axes = fig.subplots(1, 2)
    for ax, (name, train, val) in zip(axes, (
            ("loss (cross-entropy)", line.train_loss, line.val_loss),
            ("accuracy", line.train_accuracy, line.val_accuracy)), strict=True):
        ax.plot(line.ts, train, color="tab:blue", label="train")
        ax.plot(line.ts, val, color="tab:orange", linestyle="--", label="validation")
        for t, label in zip((0.0, 1.0), labels, strict=True):
            ax.axvline(t, color="0.5", linewidth=0.8)
            ax.annotate(label, (t, 1.0), xycoords=("data", "axes fraction"),
                        xytext=(3, -12), textcoords="offset points", fontsize=8)
        ax.set_xlabel("t: (1 - t) A + t B")
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{title}\nbarrier (train loss above the A-B chord) = {line.barrier:.3g}",
                 fontsize=10)
    fig.tight_layout()
    return fig


def _states(trials: list[Any], runs: list[str], hps: list[Any], settings: StudyConfig,
            data: TensorData, tracker: Tracker, folder: Path) -> tuple[nn.Module, list[dict]]:
    models = []
    for trial, run_id, hp in zip(trials, runs, hps, strict=True):
        trial_dir = folder / trial_run_name(trial.number)
        trial_dir.mkdir(parents=True, exist_ok=True)
        models.append(trained_model(trial, run_id, hp, settings, data, tracker, trial_dir)[0])
    states = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in models]
    shapes = [{k: tuple(v.shape) for k, v in s.items()} for s in states]
    if shapes[0] != shapes[1]:
        raise ConfigError(
            f"`between` must name two trials of the same architecture, but got "
            f"between={trials[0].number},{trials[1].number}: widths {hps[0].width} and "
            f"{hps[1].width} give different weight shapes.")
    return models[0], states


def log_between(trials: list[Any], runs: list[str], hps: list[Any], settings: StudyConfig,
                data: TensorData, tracker: Tracker, *, output_dir: Path, title: str,
                n_points: int = 41) -> tuple[Interpolation, Path]:
    """Interpolate between the two trials, write the figure and JSON to ``output_dir`` and log
    them (and ``landscape/barrier_to_trial_NNNN``) to both trials' runs."""
    folder = output_dir / f"between-{trials[0].number:04d}-{trials[1].number:04d}"
    folder.mkdir(parents=True, exist_ok=True)
    model, states = _states(trials, runs, hps, settings, data, tracker, folder)
    line = interpolate(model, states[0], states[1], data, n_points=n_points)
    labels = (f"A: trial {trials[0].number}", f"B: trial {trials[1].number}")
    png = folder / "interpolation.png"
    figure = build_plot_between(line, title, labels=labels)
    figure.savefig(png, format="png", dpi=100)
    (folder / "interpolation.json").write_text(json.dumps(
        {"schema": "study.interpolation/1", "trials": [t.number for t in trials],
         "runs": runs, **line.to_dict()}, indent=1) + "\n")
    for run_id, other in zip(runs, reversed(trials), strict=True):
        artifact = f"landscape/{folder.name}"
        tracker.log_artifacts(run_id, png, artifact)
        tracker.log_artifacts(run_id, folder / "interpolation.json", artifact)
        tracker.log_metrics(run_id, {f"landscape/barrier_to_trial_{other.number:04d}":
                                     line.barrier})
    return line, png
