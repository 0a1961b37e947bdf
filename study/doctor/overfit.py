"""Overfit one batch: can the model, the loss and the pipeline memorize a few samples?

A fresh model of the user's configuration (optimizer, penalty mode, weight decay) trains on
one fixed batch of ``min(batch_size, 32)`` training samples (the first of a seeded shuffle) for
at most :data:`STEPS` steps, at :func:`~study.doctor.base.training_lr` (the range test's
suggestion when it ran: a configured lr far too high is the ``lr`` check's finding, not this
one's). It stops once the batch's data loss falls below :data:`TARGET`.

The loss that decides is measured after each step with **dropout off and BatchNorm on the
batch's statistics** (train mode, as the optimizer sees the batch; running statistics
restored): a deterministic function of each sample of that fixed batch, which is what
memorizing means. Full eval mode would also swap in BatchNorm's running statistics, which lag
the moving weights (at a momentum of 0.01 the built-in cnn still reads 0.5-1.1 after 300
steps while it has memorized the batch); dropout's noise would keep the train-mode loss away
from zero. The train-mode curve (the loss the optimizer saw) is kept beside it.

Limits: memorizing 32 samples says nothing of generalization or of the full dataset's
difficulty; a pass does not rule out wrong labels (the model memorizes those too), a data
leak, or a lr that is wrong for the full training.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch.nn.modules.dropout import _DropoutNd

from study.doctor.base import CheckResult, DoctorInputs, training_lr
from study.doctor.lr_range import ShortTraining
from study.training.gap import preserved

__all__ = ["check_overfit_one_batch"]

# The batch: small enough that any working model memorizes it in a few dozen steps.
BATCH = 32
# On digits (seeds 0-1) the built-in cnn gets there in 23-43 steps and small_net in 55-69 at
# the range test's suggestion; at Adam's 1e-3 (the configured lr, when the range test did not
# run) the cnn needs about 200 and small_net about 430. A failure spends all 600: ~3 s (cnn).
STEPS = 600
# "Near zero": a mean probability of about 0.95 on the right labels.
TARGET = 0.05


def check_overfit_one_batch(inputs: DoctorInputs,
                            found: Mapping[str, CheckResult]) -> CheckResult:
    """Train on one small batch until its data loss (dropout off) is below :data:`TARGET`.

    Args:
        inputs: The data, model and hyperparameters.
        found: The results so far; the ``lr`` check's suggestion sets the learning rate.

    Returns:
        ``pass`` when the loss gets there (in how many steps), ``fail`` when it does not
        within :data:`STEPS` steps or stops being finite.
    """
    data = inputs.data
    lr = training_lr(inputs, found)
    run = ShortTraining(inputs, lr=lr)
    size = max(2, min(inputs.hparams.batch_size, BATCH, data.n_train))
    idx = torch.randperm(data.n_train, generator=run.generator, device=run.device)[:size]
    losses, train_losses = _memorize(run, data.x_train[idx], data.y_train[idx])
    final, steps = losses[-1], len(losses) - 1
    reached = steps if final < TARGET else None
    shown = [(i, v) for i, v in enumerate(losses) if math.isfinite(v)]  # JSON has no NaN
    details = {"lr": lr, "batch_size": size, "steps": steps, "reached_at": reached,
               "target": TARGET, "final_loss": final if math.isfinite(final) else None,
               "start_loss": losses[0] if math.isfinite(losses[0]) else None,
               "reference_loss": math.log(data.n_classes),
               "measured_in": "train mode, dropout off"}
    figure = {"kind": "overfit", "step": [i for i, _ in shown], "loss": [v for _, v in shown],
              "train_loss": [v for v in train_losses if math.isfinite(v)], "target": TARGET}
    result = functools.partial(CheckResult, "overfit-one-batch", budget=f"{STEPS} steps",
                               details=details, figure=figure)
    if reached is not None:
        return result("pass", f"data loss on {size} samples {final:.3g} < {TARGET:g} after "
                              f"{reached} steps at lr {lr:.2g} (start {losses[0]:.3g})",
                      "memorizing one batch does not rule out wrong labels, a leak or poor "
                      "generalization")
    how = f"{final:.3g} after {steps} steps" if math.isfinite(final) else (
        f"not finite at step {steps}")
    return result("fail", f"data loss on {size} samples {how} at lr {lr:.2g} (target < "
                          f"{TARGET:g}, start {losses[0]:.3g})",
                  "the model, the loss or the pipeline is broken: check that the output "
                  "depends on the input, the labels match the samples and the loss reaches "
                  "every parameter")


def _memorize(run: ShortTraining, x: torch.Tensor,
              y: torch.Tensor) -> tuple[list[float], list[float]]:
    """Train on ``(x, y)`` until the loss is below :data:`TARGET`, not finite, or
    :data:`STEPS` steps are spent. Returns the measured loss before the first step and after
    each one, and the train-mode loss each step saw."""
    losses = [_memorized_loss(run, x, y)]
    train_losses: list[float] = []
    for _ in range(STEPS):
        if losses[-1] < TARGET or not math.isfinite(losses[-1]):
            break
        train_losses.append(float(run.step(x, y)))
        losses.append(_memorized_loss(run, x, y))
    return losses, train_losses


@torch.no_grad()
def _memorized_loss(run: ShortTraining, x: torch.Tensor, y: torch.Tensor) -> float:
    """The batch's data loss with dropout off and BatchNorm on the batch's statistics; the
    running statistics and the modes are restored."""
    with preserved(run.model):
        run.model.train()
        for module in run.model.modules():
            if isinstance(module, _DropoutNd):
                module.eval()
        return float(F.cross_entropy(run.model(x).float(), y))
