"""Overfit one batch: can the model, the loss and the pipeline memorize a few samples?

A fresh model of the user's configuration (optimizer, penalty mode, weight decay) trains on
one fixed batch of ``min(batch_size, 32)`` training samples (the first of a seeded shuffle) for
at most :data:`STEPS` steps, at :func:`~study.doctor.base.training_lr` (the range test's
suggestion when it ran: a configured lr far too high is the ``lr`` check's finding, not this
one's). It stops once the batch's data loss falls below :data:`TARGET`. A loss that has not
got there but still falls steadily over the last :data:`TAIL` steps only warns: the model
memorizes, too slowly at this lr (fully shuffled labels at Adam's 1e-3, where the range test
finds no descent to suggest a rate); a flat or oscillating one fails.

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
from typing import Any

import numpy as np
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
# A budget spent without reaching the target is read on its last quarter. A model that
# memorizes slowly falls steadily there: small_net (width 8, Adam 1e-3) fell 33-67% over the
# last 150 steps with no step up (clean digits, clean and fully shuffled 4-class shapes), and
# a user's net on shuffled labels went from 1.47 to 0.064. A broken one does not: the blind
# net sits at its batch's label entropy (0.0% fall), small_net at lr 10 dies at the same
# plateau, and at lr 1 it falls 37% but by oscillating (net fall 0.13 of its total movement).
TAIL = STEPS // 4
MIN_TAIL_DROP = 0.1
MIN_STEADINESS = 0.5
_BROKEN = ("the model, the loss or the pipeline is broken: check that the output depends on "
           "the input, the labels match the samples and the loss reaches every parameter")


def check_overfit_one_batch(inputs: DoctorInputs,
                            found: Mapping[str, CheckResult]) -> CheckResult:
    """Train on one small batch until its data loss (dropout off) is below :data:`TARGET`.

    Args:
        inputs: The data, model and hyperparameters.
        found: The results so far; the ``lr`` check's suggestion sets the learning rate.

    Returns:
        ``pass`` when the loss gets there (in how many steps), ``fail`` when it does not
        within :data:`STEPS` steps and is not still falling steadily (:func:`_still_falling`),
        or stops being finite; ``warn`` when it is still falling steadily at the end (the
        model memorizes, slowly: a lr too low, not a broken model).
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
               "measured_in": "train mode, dropout off", **_tail(losses)}
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
    evidence = f"data loss on {size} samples {how} at lr {lr:.2g} (target < {TARGET:g}, " \
               f"start {losses[0]:.3g})"
    if details["tail_drop"] is None:
        return result("fail", evidence, _BROKEN)
    trend = f"last {TAIL} steps {0 - details['tail_drop']:+.1%}"
    if not _still_falling(details):
        return result("fail", f"{evidence}; {trend}, not falling steadily", _BROKEN)
    more = details["more_steps"]
    return result("warn", f"{evidence}; still falling steadily ({trend}, about {more} more "
                          f"steps at that rate)",
                  f"the model memorizes the batch, slowly: lr {lr:.2g} is likely too low for it "
                  f"(a higher one gets there sooner); nothing here shows the model, the loss or "
                  f"the pipeline broken")


def _tail(losses: list[float]) -> dict[str, Any]:
    """The last :data:`TAIL` steps of a budget spent without reaching the target: the fraction
    the loss fell (``tail_drop``), how steadily (``tail_steadiness``: the net fall over the sum
    of every step's change, 1 when it never rose) and the steps the same rate per step would
    still need (``more_steps``); ``None`` each when the budget was not spent (target reached,
    or a loss not finite)."""
    if len(losses) <= STEPS or not all(math.isfinite(v) for v in losses[-TAIL - 1:]):
        return {"tail_drop": None, "tail_steadiness": None, "more_steps": None}
    tail = np.asarray(losses[-TAIL - 1:])
    moved = float(np.abs(np.diff(tail)).sum())
    falling = 0.0 < tail[-1] < tail[0]
    more = (math.ceil(TAIL * math.log(tail[-1] / TARGET) / math.log(tail[0] / tail[-1]))
            if falling else None)
    return {"tail_drop": float(1 - tail[-1] / tail[0]),
            "tail_steadiness": float((tail[0] - tail[-1]) / moved) if moved else 0.0,
            "more_steps": more}


def _still_falling(details: Mapping[str, Any]) -> bool:
    """The loss fell by :data:`MIN_TAIL_DROP` over the last :data:`TAIL` steps, steadily
    (:data:`MIN_STEADINESS`): a model that memorizes slowly, not a stuck or unstable one."""
    return (details["tail_drop"] >= MIN_TAIL_DROP
            and details["tail_steadiness"] >= MIN_STEADINESS)


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
