"""The training loop. It knows nothing of Optuna or MLflow: it reports each epoch to callbacks.

The hot path keeps everything on the device: batches are index slices of device-resident tensors,
running sums stay tensors, and the host synchronizes once per epoch (one ``tolist()``). At the
end of each epoch the gap between the training and the validation loss is split into its parts
(:mod:`study.training.gap`), in the same synchronization.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from study.errors import ConfigError, DataError, NonFiniteLossError
from study.training._rng import NoiseStream, noise_seeds
from study.training.data import TensorData
from study.training.gap import (
    GapParts,
    GapProbe,
    gap_sample_count,
    has_batchnorm,
    has_dropout,
    preserved,
)
from study.training.models import build_model, count_parameters
from study.training.penalty import PenaltyMode, make_optimizer, penalized_parameters, penalty_term
from study.training.reports import GAP_FIELDS, EpochReport, InitReport, early_losses
from study.training.specs import HParams, check_optimizer_mode, check_training_options

__all__ = [
    "GAP_FIELDS",
    "INIT_SAMPLES",
    "EpochReport",
    "HParams",
    "InitReport",
    "Trainer",
    "early_losses",
    "epoch_orders",
    "resolve_device",
]

# Validation runs in large chunks: no gradients, so memory is small and fewer launches is faster.
_EVAL_BATCH = 1024
# The loss at initialization is read on the first samples of the (shuffled) training split: the
# same subset for every trial of a study, so its sampling noise does not differ between trials,
# and a forward pass over it costs a fraction of an epoch (about 0.2 of one on digits).
INIT_SAMPLES = 1024

EpochCallback = Callable[[EpochReport], Any]


def epoch_orders(n: int, *, seed: int, device: torch.device) -> Iterator[torch.Tensor]:
    """The order in which a :class:`Trainer` seeded with ``seed`` visits ``n`` training
    samples, one permutation per epoch (``study doctor`` reads it without training)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    while True:
        yield torch.randperm(n, generator=generator, device=device)


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
        hparams: Width, learning rate, batch size, weight decay, penalty mode and the training
            options (optimizer, momentum, dropout, BatchNorm momentum).
        data: Train and validation tensors (already on the training device).
        model_name: A built-in model or a factory spec (:func:`build_model`).
        init: ``torch``, ``glorot`` or ``he``.
        epochs: Number of epochs.
        seed: Seeds the weights, the batch order and the dropout masks.
        callbacks: Called with each :class:`EpochReport`; an exception raised by a callback
            (for instance Optuna's ``TrialPruned``) stops training and propagates.
        amp: Mixed precision on CUDA (bf16 where supported, else fp16 with loss scaling).
        depth: Blocks per stage of the ResNets.
        compile: Run the forward pass through ``torch.compile`` (the uncompiled module stays
            ``self.model``, so weights and parameter counts are unchanged).
        channels_last: Keep 2D inputs and weights channels-last on CUDA (faster cuDNN
            convolutions; off only to measure what it gains).
        measure_gap: Split each epoch's gap between training and validation loss into its
            parts (:mod:`study.training.gap`); off only to measure what it costs. Training is
            the same bit for bit either way.

    Attributes:
        has_batchnorm: The model contains a BatchNorm layer.
        has_dropout: The model contains a dropout layer with a rate above 0.
        gap_samples: The size of the training subset the gap is measured on (0 when off).
        gap_probe: The measurement run at the end of each epoch (``None`` when off); its
            :meth:`~study.training.gap.GapProbe.sums` alone is what the measurement costs.

    Raises:
        ConfigError: A hyperparameter is out of range, the optimizer cannot apply the penalty
            mode, or the model cannot be built with the options (checked before training).
        DataError: Fewer than 2 training samples.
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
        measure_gap: bool = True,
    ) -> None:
        _check_inputs(hparams, data)
        self.hparams = hparams
        self.data = data
        self.epochs = epochs
        self.seed = seed
        self.callbacks = list(callbacks)
        self.device = data.x_train.device
        self.model = build_model(
            model_name, width=hparams.width, in_channels=data.in_channels,
            n_classes=data.n_classes, input_size=data.input_size, init=init, seed=seed,
            depth=depth, dropout=hparams.dropout, bn_momentum=hparams.bn_momentum,
        ).to(self.device)
        self.n_params = count_parameters(self.model)
        self.has_batchnorm = has_batchnorm(self.model)
        self.has_dropout = has_dropout(self.model)
        self.mode = PenaltyMode(hparams.penalty_mode)
        self._kernels = penalized_parameters(self.model)
        self.optimizer = make_optimizer(
            self.model, mode=self.mode, lr=hparams.lr, weight_decay=hparams.weight_decay,
            optimizer=hparams.optimizer, momentum=hparams.momentum,
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
        self._orders = epoch_orders(data.n_train, seed=seed, device=self.device)
        # Separate streams: measuring (the gap, the start) never shifts the training masks.
        train_noise, gap_noise, self._init_noise_seed = noise_seeds(seed, 3)
        self._train_noise = NoiseStream(self.device, train_noise)
        self.gap_probe = GapProbe(
            self.model, data.x_train, data.y_train,
            n=gap_sample_count(data.n_train, data.n_val, hparams.batch_size),
            batch_size=hparams.batch_size, loss_sum=self._loss_sum,
            noise=NoiseStream(self.device, gap_noise),
        ) if measure_gap else None
        self.gap_samples = self.gap_probe.n if self.gap_probe is not None else 0
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
        statistics are restored afterwards; dropout masks come from a stream of their own, the
        same at every call. Call it before :meth:`fit` for the loss at initialization."""
        data, hp = self.data, self.hparams
        n = min(data.n_train, INIT_SAMPLES)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        seen = 0
        noise = NoiseStream(self.device, self._init_noise_seed)
        with preserved(self.model), noise.active(), torch.no_grad():
            self.model.train()
            for lo in range(0, n, hp.batch_size):
                hi = min(lo + hp.batch_size, n)
                if hi - lo < 2:  # BatchNorm cannot normalize a single sample
                    continue
                total += self._loss_sum(data.x_train[lo:hi], data.y_train[lo:hi])
                seen += hi - lo
        wsq = float(self._weight_sq_norm())
        penalty = hp.weight_decay * wsq if self.mode is PenaltyMode.L2_IN_LOSS else 0.0
        data_loss = float(total) / max(seen, 1)
        return InitReport(loss=data_loss + penalty, data_loss=data_loss, penalty=penalty,
                          weight_sq_norm=wsq, n_samples=seen)

    def _weight_sq_norm(self) -> torch.Tensor:
        with torch.no_grad():
            return torch.stack([p.detach().double().pow(2).sum() for p in self._kernels]).sum()

    def _logits(self, xb: torch.Tensor) -> torch.Tensor:
        xb = xb.contiguous(memory_format=self._memory_format)
        with torch.autocast(self.device.type, dtype=self._amp_dtype,
                            enabled=self._amp_dtype is not None):
            return self._net(xb)

    def _forward_loss(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self._logits(xb).float(), yb)

    def _loss_sum(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self._logits(xb).float(), yb, reduction="sum").double()

    def _run_epoch(self, epoch: int) -> EpochReport:
        data, hp = self.data, self.hparams
        n = data.n_train
        start = time.perf_counter()
        self.model.train()
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)  # data, penalty
        seen = 0
        order = next(self._orders)
        with self._train_noise.active():
            for lo in range(0, n, hp.batch_size):
                idx = order[lo:lo + hp.batch_size]
                if idx.numel() < 2:  # BatchNorm cannot train on a single sample
                    continue
                data_loss = self._forward_loss(data.x_train[idx], data.y_train[idx])
                penalty = penalty_term(self._kernels, mode=self.mode,
                                       weight_decay=hp.weight_decay)
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
        gap_sums = [] if self.gap_probe is None else list(self.gap_probe.sums().unbind())
        data_sum, pen_sum, wsq, val_sum, correct, *gap_values = torch.stack(
            [sums[0], sums[1], self._weight_sq_norm(), val_loss, val_correct, *gap_sums]
        ).tolist()
        data_mean, pen_mean = data_sum / max(seen, 1), pen_sum / max(seen, 1)
        val_mean = val_sum / data.n_val
        gaps = self._gap_fields(data_mean, val_mean, gap_values)
        return EpochReport(
            epoch=epoch,
            loss=data_mean + pen_mean,
            data_loss=data_mean,
            penalty=pen_mean,
            weight_sq_norm=wsq,
            val_loss=val_mean,
            val_accuracy=correct / data.n_val,
            samples_per_s=seen / train_seconds if train_seconds > 0 else float("inf"),
            seconds=time.perf_counter() - start,
            **gaps,
        )

    def _gap_fields(self, data_loss: float, val_loss: float,
                    sums: list[float]) -> dict[str, float | None]:
        """The ``gap_*`` fields of the report from the probe's summed losses (none when off)."""
        if self.gap_probe is None:
            return {}
        train_mode, eval_mode, *mixed = (s / self.gap_probe.n for s in sums)
        parts = GapParts.from_losses(data_loss=data_loss, val_loss=val_loss,
                                     train_mode=train_mode, eval_mode=eval_mode,
                                     mixed=mixed[0] if mixed else None)
        return {f"gap_{k}": v for k, v in dataclasses.asdict(parts).items()}

    @torch.inference_mode()
    def _evaluate(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.model.eval()
        data = self.data
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.float64, device=self.device)
        for lo in range(0, data.n_val, _EVAL_BATCH):
            logits = self._logits(data.x_val[lo:lo + _EVAL_BATCH])
            yb = data.y_val[lo:lo + _EVAL_BATCH]
            loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum").double()
            correct += (logits.argmax(dim=1) == yb).sum().double()
        return loss_sum, correct


def _check_inputs(hparams: HParams, data: TensorData) -> None:
    """Refuse what cannot train, before anything is built."""
    # Batches of one sample are skipped (BatchNorm), so smaller sizes or sets would train on
    # nothing and report a loss of 0.0, the best possible objective.
    if hparams.batch_size < 2:
        raise ConfigError(f"`batch_size` must be >= 2 (BatchNorm cannot train on one sample), "
                          f"but got batch_size={hparams.batch_size}.")
    if data.n_train < 2:
        raise DataError(f"`data` must hold at least 2 training samples (BatchNorm cannot "
                        f"train on one), but got n_train={data.n_train}.")
    check_training_options(optimizer=hparams.optimizer, momentum=hparams.momentum,
                           dropout=hparams.dropout, bn_momentum=hparams.bn_momentum)
    check_optimizer_mode(hparams.optimizer, hparams.penalty_mode)
