"""What the training loop reports: the figures of each epoch and those of the initial weights.

Plain dataclasses without torch, so the diagnosis of a curve, the CLI and the tests read them
without loading the training stack (:mod:`study.training.trainer` re-exports them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

__all__ = ["GAP_FIELDS", "EpochReport", "InitReport", "early_losses"]


GAP_FIELDS = ("gap_timing", "gap_mode", "gap_generalization", "gap_mode_batchnorm",
              "gap_mode_dropout")
"""The :class:`EpochReport` fields of the gap's parts, in the order of the report."""


@dataclasses.dataclass(frozen=True)
class EpochReport:
    """Figures of one epoch; ``loss == data_loss + penalty`` (what the optimizer minimized).

    The ``gap_*`` fields split ``val_loss - data_loss`` (:mod:`study.training.gap`):
    ``gap_timing + gap_mode + gap_generalization == val_loss - data_loss``, and, for models with
    both BatchNorm and dropout, ``gap_mode_batchnorm + gap_mode_dropout == gap_mode``. They are
    ``None`` when not measured (``Trainer(measure_gap=False)``, or the part does not apply).
    """

    epoch: int
    loss: float
    data_loss: float
    penalty: float
    weight_sq_norm: float
    val_loss: float
    val_accuracy: float
    samples_per_s: float
    seconds: float
    gap_timing: float | None = None
    gap_mode: float | None = None
    gap_generalization: float | None = None
    gap_mode_batchnorm: float | None = None
    gap_mode_dropout: float | None = None

    def metrics(self) -> dict[str, float]:
        """The per-epoch metrics under their MLflow names (SPEC section 5); the gap parts as
        ``gap/<part>`` where measured."""
        gaps = {f"gap/{name.removeprefix('gap_')}": getattr(self, name) for name in GAP_FIELDS}
        return {
            "train/loss": self.loss,
            "train/data_loss": self.data_loss,
            "train/penalty": self.penalty,
            "train/weight_sq_norm": self.weight_sq_norm,
            "val/loss": self.val_loss,
            "val/accuracy": self.val_accuracy,
            "train/samples_per_s": self.samples_per_s,
            **{k: v for k, v in gaps.items() if v is not None},
        }


@dataclasses.dataclass(frozen=True)
class InitReport:
    """The loss of the initial weights, before the first update: ``loss == data_loss + penalty``.

    ``data_loss`` is the mean cross-entropy the training loop would see (train-mode BatchNorm on
    batches of the trial's size) over ``n_samples`` training samples; ``penalty`` is exactly
    ``weight_decay * weight_sq_norm`` in ``l2-in-loss`` mode and 0 otherwise.
    """

    loss: float
    data_loss: float
    penalty: float
    weight_sq_norm: float
    n_samples: int

    def metrics(self) -> dict[str, float]:
        """The metrics under their MLflow names (SPEC section 9)."""
        return {"init/loss": self.loss, "init/data_loss": self.data_loss,
                "init/penalty": self.penalty, "init/weight_sq_norm": self.weight_sq_norm}


def early_losses(history: Sequence[EpochReport], early_epochs: int) -> dict[str, float] | None:
    """Mean total, data and penalty training loss over the first ``early_epochs`` epochs.

    Returns ``None`` when fewer epochs were trained (a trial pruned before the early window).
    """
    if len(history) < early_epochs:
        return None
    window = history[:early_epochs]
    return {
        "loss": sum(r.loss for r in window) / early_epochs,
        "data_loss": sum(r.data_loss for r in window) / early_epochs,
        "penalty": sum(r.penalty for r in window) / early_epochs,
    }
