"""The training loop. It knows nothing of Optuna or MLflow: it reports each epoch to callbacks.

The hot path keeps everything on the device: batches are index slices of device-resident tensors,
running sums stay tensors, and the host synchronizes once per epoch (one ``tolist()``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from study.errors import ConfigError, DataError, NonFiniteLossError
from study.training.data import TensorData
from study.training.models import build_model, count_parameters
from study.training.penalty import PenaltyMode, make_optimizer, penalized_parameters, penalty_term
from study.training.specs import HParams

__all__ = [
    "EpochReport",
    "HParams",
    "InitReport",
    "Trainer",
    "early_losses",
    "resolve_device",
]

# Validation runs in large chunks: no gradients, so memory is small and fewer launches is faster.
_EVAL_BATCH = 1024
# The loss at initialization is read on the first samples of the (shuffled) training split: the
# same subset for every trial of a study, so its sampling noise does not differ between trials,
# and a forward pass over it costs a fraction of an epoch (about 0.2 of one on digits).
INIT_SAMPLES = 1024


@dataclasses.dataclass(frozen=True)
class EpochReport:
    """Figures of one epoch; ``loss == data_loss + penalty`` (what the optimizer minimized)."""

    epoch: int
    loss: float
    data_loss: float
    penalty: float
    weight_sq_norm: float
    val_loss: float
    val_accuracy: float
    samples_per_s: float
    seconds: float

    def metrics(self) -> dict[str, float]:
        """The per-epoch metrics under their MLflow names (SPEC section 5)."""
        return {
            "train/loss": self.loss,
            "train/data_loss": self.data_loss,
            "train/penalty": self.penalty,
            "train/weight_sq_norm": self.weight_sq_norm,
            "val/loss": self.val_loss,
            "val/accuracy": self.val_accuracy,
            "train/samples_per_s": self.samples_per_s,
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


EpochCallback = Callable[[EpochReport], Any]


def resolve_device(device: str) -> torch.device:
    """Turn ``auto`` into CUDA when present (else CPU) and check that an explicit device exists.

    Raises:
        ConfigError: CUDA or MPS was asked for but is not available.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"`device` must be available, but got device={device!r} "
                              f"and no CUDA device is present; use auto or cpu.")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ConfigError(f"`device` must be one of cuda:0..cuda:"
                              f"{torch.cuda.device_count() - 1}, but got device={device!r}.")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"`device` must be available, but got device={device!r} "
                          f"and MPS is not present; use auto or cpu.")
    return resolved


def _amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """bf16 where the GPU supports it (no loss scaling needed), else fp16, never on the CPU."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class Trainer:
    """Train one model on device-resident data and report each epoch to callbacks.

    Args:
        hparams: Width, learning rate, batch size, weight decay and penalty mode.
        data: Train and validation tensors (already on the training device).
        model_name: A built-in model or a factory spec (:func:`build_model`).
        init: ``torch``, ``glorot`` or ``he``.
        epochs: Number of epochs.
        seed: Seeds the weights and the batch order.
        callbacks: Called with each :class:`EpochReport`; an exception raised by a callback
            (for instance Optuna's ``TrialPruned``) stops training and propagates.
        amp: Mixed precision on CUDA (bf16 where supported, else fp16 with loss scaling).
        depth: Blocks per stage of the ResNets.
        compile: Run the forward pass through ``torch.compile`` (the uncompiled module stays
            ``self.model``, so weights and parameter counts are unchanged).
        channels_last: Keep 2D inputs and weights channels-last on CUDA (faster cuDNN
            convolutions; off only to measure what it gains).
    """

    def __init__(
        self,
        hparams: HParams,
        data: TensorData,
        *,
        model_name: str = "cnn",
        init: str = "torch",
        depth: int | None = None,
        epochs: int,
        seed: int = 0,
        callbacks: Sequence[EpochCallback] = (),
        amp: bool = True,
        compile: bool = False,
        channels_last: bool = True,
    ) -> None:
        # Batches of one sample are skipped (BatchNorm), so smaller sizes or sets would train on
        # nothing and report a loss of 0.0, the best possible objective.
        if hparams.batch_size < 2:
            raise ConfigError(f"`batch_size` must be >= 2 (BatchNorm cannot train on one sample), "
                              f"but got batch_size={hparams.batch_size}.")
        if data.n_train < 2:
            raise DataError(f"`data` must hold at least 2 training samples (BatchNorm cannot "
                            f"train on one), but got n_train={data.n_train}.")
        self.hparams = hparams
        self.data = data
        self.epochs = epochs
        self.seed = seed
        self.callbacks = list(callbacks)
        self.device = data.x_train.device
        self.model = build_model(
            model_name, width=hparams.width, in_channels=data.in_channels,
            n_classes=data.n_classes, input_size=data.input_size, init=init, seed=seed,
            depth=depth,
        ).to(self.device)
        self.n_params = count_parameters(self.model)
        self.mode = PenaltyMode(hparams.penalty_mode)
        self._kernels = penalized_parameters(self.model)
        self.optimizer = make_optimizer(
            self.model, mode=self.mode, lr=hparams.lr, weight_decay=hparams.weight_decay
        )
        self._amp_dtype = _amp_dtype(self.device, amp)
        self._scaler = torch.amp.GradScaler(
            "cuda", enabled=self._amp_dtype is torch.float16
        )
        # channels_last speeds up cuDNN 2D convolutions; it changes nothing on the CPU path.
        self._memory_format = (
            torch.channels_last
            if channels_last and self.device.type == "cuda" and data.spatial_dims == 2
            else torch.preserve_format
        )
        if self._memory_format is torch.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._net = torch.compile(self.model) if compile else self.model
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(seed)
        self.history: list[EpochReport] = []

    def fit(self) -> list[EpochReport]:
        """Train for ``epochs`` epochs and return the reports.

        Raises:
            NonFiniteLossError: The training loss became NaN or infinite; ``.report`` holds the
                figures of that epoch.
        """
        for epoch in range(1, self.epochs + 1):
            report = self._run_epoch(epoch)
            if not math.isfinite(report.loss):
                error = NonFiniteLossError(
                    f"training loss became {report.loss} at epoch {epoch} "
                    f"(lr={self.hparams.lr:g}, batch_size={self.hparams.batch_size})"
                )
                error.report = report  # type: ignore[attr-defined]
                raise error
            self.history.append(report)
            for callback in self.callbacks:
                callback(report)
        return self.history

    def initial_losses(self) -> InitReport:
        """The loss of the current weights as the training loop would report it, measured
        without changing the model: BatchNorm runs in train mode (batch statistics) on batches
        of ``batch_size`` from the first :data:`INIT_SAMPLES` training samples, and its running
        statistics are restored afterwards. Call it before :meth:`fit` for the loss at
        initialization."""
        data, hp = self.data, self.hparams
        n = min(data.n_train, INIT_SAMPLES)
        buffers = [(b, b.detach().clone()) for b in self.model.buffers()]
        was_training = self.model.training
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        seen = 0
        try:
            self.model.train()
            with torch.no_grad():
                for lo in range(0, n, hp.batch_size):
                    hi = min(lo + hp.batch_size, n)
                    if hi - lo < 2:  # BatchNorm cannot normalize a single sample
                        continue
                    xb = data.x_train[lo:hi].contiguous(memory_format=self._memory_format)
                    total += self._forward_loss(xb, data.y_train[lo:hi]).double() * (hi - lo)
                    seen += hi - lo
        finally:
            with torch.no_grad():
                for buffer, saved in buffers:
                    buffer.copy_(saved)
            self.model.train(was_training)
        wsq = float(self._weight_sq_norm())
        penalty = hp.weight_decay * wsq if self.mode is PenaltyMode.L2_IN_LOSS else 0.0
        data_loss = float(total) / max(seen, 1)
        return InitReport(loss=data_loss + penalty, data_loss=data_loss, penalty=penalty,
                          weight_sq_norm=wsq, n_samples=seen)

    def _weight_sq_norm(self) -> torch.Tensor:
        with torch.no_grad():
            return torch.stack([p.detach().double().pow(2).sum() for p in self._kernels]).sum()

    def _forward_loss(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self._amp_dtype,
                            enabled=self._amp_dtype is not None):
            logits = self._net(xb)
        return F.cross_entropy(logits.float(), yb)

    def _run_epoch(self, epoch: int) -> EpochReport:
        data, hp = self.data, self.hparams
        n = data.n_train
        start = time.perf_counter()
        self.model.train()
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)  # data, penalty
        seen = 0
        order = torch.randperm(n, generator=self._generator, device=self.device)
        for lo in range(0, n, hp.batch_size):
            idx = order[lo:lo + hp.batch_size]
            if idx.numel() < 2:  # BatchNorm cannot train on a single sample
                continue
            xb = data.x_train[idx].contiguous(memory_format=self._memory_format)
            data_loss = self._forward_loss(xb, data.y_train[idx])
            penalty = penalty_term(self._kernels, mode=self.mode, weight_decay=hp.weight_decay)
            total = data_loss if penalty is None else data_loss + penalty
            self.optimizer.zero_grad(set_to_none=True)
            self._scaler.scale(total).backward()
            self._scaler.step(self.optimizer)
            self._scaler.update()
            k = idx.numel()
            sums[0] += data_loss.detach().double() * k
            if penalty is not None:
                sums[1] += penalty.detach().double() * k
            seen += k
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        train_seconds = time.perf_counter() - start
        val_loss, val_correct = self._evaluate()
        wsq = self._weight_sq_norm()
        data_sum, pen_sum, wsq_v, val_sum, correct = torch.stack(
            [sums[0], sums[1], wsq, val_loss, val_correct]
        ).tolist()
        data_mean, pen_mean = data_sum / max(seen, 1), pen_sum / max(seen, 1)
        return EpochReport(
            epoch=epoch,
            loss=data_mean + pen_mean,
            data_loss=data_mean,
            penalty=pen_mean,
            weight_sq_norm=wsq_v,
            val_loss=val_sum / data.n_val,
            val_accuracy=correct / data.n_val,
            samples_per_s=seen / train_seconds if train_seconds > 0 else float("inf"),
            seconds=time.perf_counter() - start,
        )

    @torch.inference_mode()
    def _evaluate(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.model.eval()
        data = self.data
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.float64, device=self.device)
        for lo in range(0, data.n_val, _EVAL_BATCH):
            xb = data.x_val[lo:lo + _EVAL_BATCH].contiguous(memory_format=self._memory_format)
            yb = data.y_val[lo:lo + _EVAL_BATCH]
            with torch.autocast(self.device.type, dtype=self._amp_dtype,
                                enabled=self._amp_dtype is not None):
                logits = self._net(xb)
            loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum").double()
            correct += (logits.argmax(dim=1) == yb).sum().double()
        return loss_sum, correct


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
