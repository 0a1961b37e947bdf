"""The learning-rate range test (Smith 2017, "Cyclical learning rates"; fastai's ``lr_find``).

A fresh model of the user's configuration (the same optimizer, penalty mode and batch size)
trains on shuffled training batches while the learning rate grows exponentially from
1e-6 to ``max(10, 10 * lr)``, one step per rate: :data:`STEPS` steps over the 7 decades up
to 10 (fewer, down to 100, for batches above 256 samples), and as many per decade beyond, so
that the configured rate moves neither point. The optimizer
minimizes its usual objective (the data loss plus the ``l2-in-loss`` penalty); the curve
records the *data loss* (the cross-entropy of each batch before its step), which the penalty's
growth does not blur when the weights blow up.

The curve is smoothed with a bias-corrected exponential moving average (fastai's recorder)
whose memory is a twentieth of the sweep.
``suggested_lr`` is its steepest descent (most negative slope per decade of lr), searched
before its minimum; ``onset_lr`` is the first rate where the smoothed loss exceeds twice its
running minimum (the loss turned back up: divergence begins). The sweep stops once the
smoothed loss exceeds four times its minimum (fastai's stop) or a loss is not finite.

Limits: the sweep trains as it goes, so the loss at a rate reflects the steps taken before it;
the suggestion is a rate where a *short* training gains most, not the best rate for a long
one (it sits a decade or so above a safe constant rate), and the smoothing delays both points
by a twentieth of the swept range (a third of a decade by default). BatchNorm makes most
weights scale-invariant, which delays the divergence of such models past the rates that
already train badly. The cost grows with the batch size (about 10 s at the full digits split).

The module also holds :class:`ShortTraining`, the step-by-step training that the overfit and
batch-size checks share with the range test.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from study.doctor.base import CheckResult, DoctorInputs
from study.training import NoiseStream
from study.training.penalty import penalized_parameters, penalty_term

__all__ = ["STEPS", "ShortTraining", "check_lr", "smooth", "sweep_rates", "sweep_steps"]

# 200 steps: about 1.3 s for the built-in cnn on digits at batch 64 on one CPU thread (28 steps
# per decade over the default 7 decades, fine enough to place a rate within a third of one).
STEPS = 200
# Large batches shorten the sweep to at most 200 x 256 samples, down to fastai's 100 steps: at
# the full digits split (1437) 200 steps take 23 s on one CPU thread, 100 about 10 s.
MIN_STEPS = 100
SAMPLE_BUDGET = STEPS * 256
LR_LOW = 1e-6
LR_HIGH = 10.0
# The smoothing remembers a twentieth of the sweep (10 steps of 200: beta 0.9). fastai's 0.98
# over 100 steps lags by ~50 steps, two decades here; a 10-step memory lags by a third of a
# decade and still keeps the steepest point within a decade across seeds on digits. The first
# steps of a bias-corrected average rest on a handful of batches: no slope or onset there.
MEMORY_FRACTION = 1 / 20
# fastai's stop: the loss is four times its minimum.
STOP_FACTOR = 4.0
# Divergence begins where the smoothed loss doubles its running minimum. On digits the built-in
# cnn (Adam) crosses it at lr 0.26-1.2 over seeds 0-2, where 4 epochs already end at a data
# loss of 0.36 (lr 0.3) to 1.1 (lr 1.0) against 0.04 at lr 1e-2.
ONSET_FACTOR = 2.0
# "Far below" the steepest descent: three decades. On digits small_net's steepest descent lies
# at 0.02-0.19 (seeds 0-2), up to 190 times Adam's default 1e-3, which trains it, if slowly;
# the built-in cnn's lies at 0.007-0.015, so lr 1e-6 is 7000x below it.
SLOW_FACTOR = 1000.0
# The loss must fall by a tenth of its start somewhere in the sweep for a slope to mean much.
MIN_DROP = 0.1


class ShortTraining:
    """A fresh model of the user's configuration, trained one step at a time.

    The same optimizer, penalty mode and weight decay as a study; plain float32 (no autocast),
    seeded by ``inputs.seed``: the weights, the batch order and the dropout masks (a stream of
    its own, so the caller's random state is left alone).

    Args:
        inputs: The doctor's inputs.
        lr: The learning rate of every step (:meth:`set_lr` changes it).
    """

    def __init__(self, inputs: DoctorInputs, *, lr: float) -> None:
        hparams = dataclasses.replace(inputs.hparams, lr=lr)
        self.trainer = inputs.trainer(epochs=1, hparams=hparams)
        self.model = self.trainer.model
        self.data = inputs.data
        self.device = inputs.data.x_train.device
        self._kernels = penalized_parameters(self.model)
        self._weight_decay = hparams.weight_decay
        self.noise = NoiseStream(self.device, inputs.seed)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(inputs.seed)

    def set_lr(self, lr: float) -> None:
        """Set the learning rate of every parameter group."""
        for group in self.trainer.optimizer.param_groups:
            group["lr"] = lr

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimizer step (train mode) on the loss it minimizes: the data loss plus the
        ``l2-in-loss`` penalty. Returns the batch's data loss before the step (0-d, detached)."""
        self.model.train()
        with self.noise.active():
            data_loss = F.cross_entropy(self.model(x).float(), y)
        penalty = penalty_term(self._kernels, mode=self.trainer.mode,
                               weight_decay=self._weight_decay)
        total = data_loss if penalty is None else data_loss + penalty
        self.trainer.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.trainer.optimizer.step()
        return data_loss.detach()

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Indices of training batches of ``batch_size`` (at most the split), endlessly: each
        pass a new shuffle, the last incomplete batch of a pass dropped."""
        n = self.data.n_train
        size = max(2, min(batch_size, n))  # BatchNorm cannot train on one sample
        while True:
            order = torch.randperm(n, generator=self.generator, device=self.device)
            for lo in range(0, n - size + 1, size):
                yield order[lo:lo + size]


def sweep_steps(batch_size: int) -> int:
    """The steps of the sweep at ``batch_size`` (:data:`STEPS`, fewer for large batches)."""
    return max(MIN_STEPS, min(STEPS, SAMPLE_BUDGET // max(batch_size, 1)))


def sweep_rates(configured: float, batch_size: int) -> np.ndarray:
    """The default sweep's rates (:data:`LR_LOW` to :data:`LR_HIGH` in
    :func:`sweep_steps` steps), continued at the same spacing up to ``10 * configured`` for a
    configured rate above a tenth of :data:`LR_HIGH`. The steps up to :data:`LR_HIGH` are the
    same whatever the configured rate, so its onset and steepest descent do not move with it;
    a rate below the sweep is judged against them without training there."""
    base = sweep_steps(batch_size)
    per_decade = (base - 1) / math.log10(LR_HIGH / LR_LOW)
    extra = max(0, math.ceil(per_decade * math.log10(10 * configured / LR_HIGH)))
    return LR_LOW * 10 ** (np.arange(base + extra) / per_decade)


def memory(steps: int) -> int:
    """The smoothing's memory in steps (also the steps skipped before any slope is read)."""
    return max(2, round(steps * MEMORY_FRACTION))


def smooth(values: np.ndarray, *, beta: float) -> np.ndarray:
    """Bias-corrected exponential moving average (fastai's ``SmoothenValue``)."""
    out = np.empty(len(values))
    average = 0.0
    for i, value in enumerate(values):
        average = beta * average + (1 - beta) * float(value)
        out[i] = average / (1 - beta ** (i + 1))
    return out


def _sweep(inputs: DoctorInputs, lrs: np.ndarray, *,
           beta: float) -> tuple[list[float], float | None]:
    """Train through ``lrs``; the data losses until the smoothed loss passes
    :data:`STOP_FACTOR` times its minimum, and the lr where a loss was not finite (or None)."""
    run = ShortTraining(inputs, lr=float(lrs[0]))
    batches = run.batches(inputs.hparams.batch_size)
    losses: list[float] = []
    average, lowest = 0.0, math.inf
    for i, lr in enumerate(lrs):
        run.set_lr(float(lr))
        idx = next(batches)
        loss = float(run.step(inputs.data.x_train[idx], inputs.data.y_train[idx]))
        if not math.isfinite(loss):
            return losses, float(lr)
        losses.append(loss)
        average = beta * average + (1 - beta) * loss
        smoothed = average / (1 - beta ** (i + 1))
        lowest = min(lowest, smoothed)
        if i >= memory(len(lrs)) and smoothed > STOP_FACTOR * lowest:
            break
    return losses, None


def _points(lrs: np.ndarray, smoothed: np.ndarray, *,
            skip: int) -> tuple[float | None, float | None]:
    """The steepest descent before the minimum (None when the loss never fell by
    :data:`MIN_DROP`) and the first rate where the loss doubles its running minimum, both
    after the first ``skip`` steps."""
    running_min = np.minimum.accumulate(smoothed)
    above = np.nonzero(smoothed[skip:] > ONSET_FACTOR * running_min[skip:])[0]
    onset = float(lrs[skip + above[0]]) if above.size else None
    lowest = int(np.argmin(smoothed))
    if lowest <= skip or smoothed[lowest] > (1 - MIN_DROP) * smoothed[skip]:
        return None, onset
    slope = np.gradient(smoothed, np.log10(lrs[:len(smoothed)]))
    steepest = skip + int(np.argmin(slope[skip:lowest + 1]))
    return float(lrs[steepest]), onset


def check_lr(inputs: DoctorInputs, found: Mapping[str, CheckResult]) -> CheckResult:
    """Run the range test and place the configured learning rate on it.

    Args:
        inputs: The data, model and hyperparameters.
        found: The results so far (unused: the range test needs no other).

    Returns:
        ``fail`` when the configured rate lies past the divergence onset, ``warn`` when it lies
        more than :data:`SLOW_FACTOR` times below the steepest descent or when the loss never
        fell (the rate cannot be judged), ``pass`` otherwise. ``details`` holds
        ``suggested_lr`` (read by :func:`~study.doctor.base.training_lr`), ``onset_lr`` and
        ``configured_lr``.
    """
    configured = float(inputs.hparams.lr)
    lrs = sweep_rates(configured, inputs.hparams.batch_size)
    low, high, steps = lrs[0], lrs[-1], len(lrs)
    skip = memory(sweep_steps(inputs.hparams.batch_size))
    beta = 1 - 1 / skip
    losses, non_finite_lr = _sweep(inputs, lrs, beta=beta)
    smoothed = smooth(np.asarray(losses), beta=beta)
    suggested, onset = _points(lrs, smoothed, skip=skip) if len(losses) > skip else (None, None)
    if onset is None and non_finite_lr is not None:
        onset = non_finite_lr
    details = {"suggested_lr": suggested, "onset_lr": onset, "configured_lr": configured,
               "steps": len(losses), "max_steps": steps, "beta": beta,
               "lr_low": float(low), "lr_high": float(high),
               "min_smoothed_loss": float(smoothed.min()) if losses else None,
               "non_finite_lr": non_finite_lr, "loss": "data loss (cross-entropy)"}
    figure = {"kind": "lr", "lr": [float(v) for v in lrs[:len(losses)]],
              "loss": [float(v) for v in smoothed], "raw_loss": losses,
              "suggested_lr": suggested, "onset_lr": onset, "configured_lr": configured}
    status, evidence, advice = _verdict(details)
    return CheckResult("lr", status, evidence, advice, f"{steps} steps", details=details,
                       figure=figure)


def _verdict(details: Mapping[str, Any]) -> tuple[str, str, str]:
    """Status, evidence and advice of the lr check."""
    configured, suggested = details["configured_lr"], details["suggested_lr"]
    onset, high = details["onset_lr"], details["lr_high"]
    if not details["steps"]:
        return ("warn", f"configured lr {configured:.2g}; the data loss is not finite at the "
                        "first step, before any update",
                "the lr cannot be judged: the model's output is not finite at initialization")
    why = ("loss not finite" if onset == details["non_finite_lr"]
           else f"smoothed loss > {ONSET_FACTOR:g}x its minimum")
    where = (f"divergence from {onset:.2g} ({why})" if onset is not None
             else f"no divergence up to {high:.2g}")
    steep = f"steepest descent at {suggested:.2g}" if suggested is not None else "no descent"
    evidence = f"configured lr {configured:.2g}; {steep}; {where}"
    if onset is not None and configured > onset:
        return ("fail", evidence, f"lower the lr below {onset:.2g}: at {configured:.2g} the loss "
                                  f"diverges; start near {suggested or onset / 10:.2g}")
    if suggested is None:
        return ("warn", evidence + f"; the loss never fell by {MIN_DROP:.0%}",
                "the lr cannot be judged: check that the model can learn (overfit-one-batch)")
    if configured < suggested / SLOW_FACTOR:
        return ("warn", evidence, f"raise the lr toward {suggested / 10:.2g}-{suggested:.2g}: "
                                  f"{suggested / configured:.0f}x below, training will be slow")
    return ("pass", evidence, "the sweep trains as it goes: it does not find the best lr of a "
                              "long training, nor rule out a schedule or batch-size problem")
