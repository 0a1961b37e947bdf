"""Why validation lags training: the gap between an epoch's training data loss and its validation
loss, split into parts measured at the end of every epoch.

Per epoch, ``D`` is the reported training data loss (the mean over the epoch's batches, taken
while the weights moved) and ``V`` the validation loss after the epoch (eval mode, no penalty).
On a fixed subset ``S`` of the training split, with the weights at the end of the epoch:

- ``T``: train mode, on batches of the trial's size (BatchNorm normalizes with batch statistics
  as in training; dropout is on); in chunks like ``E``'s where the model has no BatchNorm, so
  that a model with neither BatchNorm nor dropout reads the same sums in both modes (its mode
  part is 0, not rounding noise);
- ``E``: eval mode (BatchNorm's running statistics; dropout off);
- ``M``, for models with both BatchNorm and dropout: BatchNorm in eval mode, dropout on.

===================  ===========  =========================================================
Part                 Formula      What it measures
===================  ===========  =========================================================
timing               ``T - D``    the end-of-epoch weights against those along the epoch
mode                 ``E - T``    eval against train mode (running statistics, no dropout)
generalization       ``V - E``    unseen against seen samples, same weights and mode
mode_batchnorm       ``M - T``    the BatchNorm part of ``mode``
mode_dropout         ``E - M``    the dropout part of ``mode``
===================  ===========  =========================================================

so ``timing + mode + generalization == V - D`` and ``mode_batchnorm + mode_dropout == mode``
(float64 arithmetic on the float losses).

``S`` is the first ``min(n_val, GAP_SAMPLES)`` samples of the training split (the split is
shuffled with the study's seed, so they are a random sample, and the same for every epoch and
every trial of a study): as many as the validation split, so ``E`` and ``V`` carry sampling
noise of the same size, capped so that the measurement stays a fraction of an epoch. One
sample less when the last batch of ``T`` would hold a single sample (BatchNorm cannot
normalize it), so that ``T``, ``E`` and ``M`` read the same samples.

The measurement changes nothing: buffers (BatchNorm's running statistics and counters) and
every module's mode are restored, and dropout masks come from a stream of their own
(:class:`~study.training._rng.NoiseStream`), so training with and without it gives the same
weights bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from study.training._rng import NoiseStream

__all__ = ["GAP_SAMPLES", "GapParts", "GapProbe", "gap_sample_count", "has_batchnorm",
           "has_dropout", "preserved"]

GAP_SAMPLES = 4096
# Modes without batch statistics do not depend on the batch size: large chunks, fewer launches.
_CHUNK = 1024

LossSum = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` contains a BatchNorm layer (any dimension)."""
    return any(isinstance(m, _BatchNorm) for m in model.modules())


def has_dropout(model: nn.Module) -> bool:
    """Whether ``model`` contains a dropout layer with a rate above 0."""
    return any(isinstance(m, _DropoutNd) and m.p > 0 for m in model.modules())


def gap_sample_count(n_train: int, n_val: int, batch_size: int) -> int:
    """The size of ``S`` (see the module docstring); at least 2 when ``n_train >= 2``."""
    n = min(n_train, GAP_SAMPLES, max(n_val, 2))
    return n - 1 if n % batch_size == 1 else n


@dataclasses.dataclass(frozen=True)
class GapParts:
    """The parts of ``val_loss - data_loss`` of one epoch (see the module docstring)."""

    timing: float
    mode: float
    generalization: float
    mode_batchnorm: float | None = None
    mode_dropout: float | None = None

    @classmethod
    def from_losses(cls, *, data_loss: float, val_loss: float, train_mode: float,
                    eval_mode: float, mixed: float | None = None) -> GapParts:
        """Split the gap from ``D``, ``V``, ``T``, ``E`` and (optionally) ``M``."""
        d, v, t, e = (float(x) for x in (data_loss, val_loss, train_mode, eval_mode))
        split = (None, None) if mixed is None else (float(mixed) - t, e - float(mixed))
        return cls(timing=t - d, mode=e - t, generalization=v - e, mode_batchnorm=split[0],
                   mode_dropout=split[1])


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Restore every buffer of ``model`` (BatchNorm's running statistics and counters) and
    every module's train/eval mode on exit."""
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        for module, training in modes:
            module.training = training


class GapProbe:
    """Measure ``T``, ``E`` and ``M`` on the first ``n`` training samples, on the device.

    Args:
        model: The module whose modes are switched (the uncompiled one).
        x: The training inputs (the first ``n`` are read).
        y: The training labels.
        n: The size of ``S`` (:func:`gap_sample_count`).
        batch_size: The trial's batch size (``T`` only, and only with BatchNorm).
        loss_sum: Summed cross-entropy of a batch as a 0-d float64 tensor, through the trainer's
            forward path (compiled or not, autocast, memory format).
        noise: The dropout masks' stream.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, n: int,
                 batch_size: int, loss_sum: LossSum, noise: NoiseStream) -> None:
        self.model, self.n = model, n
        self._x, self._y = x, y
        self._batch_size = batch_size
        self._loss_sum = loss_sum
        self._noise = noise
        self._dropouts = [m for m in model.modules() if isinstance(m, _DropoutNd)]
        self._batchnorm = has_batchnorm(model)  # the only layer whose output needs the batch
        self.splits_mode = self._batchnorm and has_dropout(model)

    def sums(self) -> torch.Tensor:
        """Summed losses ``[T, E]`` (``[T, E, M]`` when :attr:`splits_mode`), float64 on the
        device, without a host synchronization; divide by :attr:`n` for the means."""
        with preserved(self.model), self._noise.active(), torch.no_grad():
            # Train mode last: its batches update the running statistics the others read.
            self.model.eval()
            eval_mode = self._over(_CHUNK)
            mixed = []
            if self.splits_mode:
                for dropout in self._dropouts:
                    dropout.train()
                mixed.append(self._over(_CHUNK))
            self.model.train()
            train_mode = self._over(self._batch_size if self._batchnorm else _CHUNK)
        return torch.stack([train_mode, eval_mode, *mixed])

    def _over(self, batch: int) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float64, device=self._x.device)
        for lo in range(0, self.n, batch):
            hi = min(lo + batch, self.n)
            total += self._loss_sum(self._x[lo:hi], self._y[lo:hi])
        return total
