"""The initialization: the loss before the first step and each layer's scale.

A model that knows nothing predicts close to uniform probabilities, so its cross-entropy at
initialization is close to ``ln K`` for ``K`` classes. The check reads the data loss the
training loop would see at the start (:meth:`~study.training.Trainer.initial_losses`) and
compares it with ``ln K``. The label entropy ``H`` of the training labels (the best a constant
prediction can do, ``ln K`` for balanced classes) is reported beside it: ``ln K`` stays the
reference, because a standard initialization starts at ``ln K`` whatever the class frequencies,
and ``loss / H`` would condemn it on strongly unbalanced data.

On one batch of the configured size (train mode, as training sees it; BatchNorm's running
statistics restored), each conv and linear layer (named as in ``model.named_modules()``) is
probed for the RMS of its input and output and the norm of its kernel's gradient after one
backward of the data loss. A layer is flagged when its gain (output RMS / input RMS) lies
beyond x10 or below /10, when its output RMS relative to the network's input lies beyond x10
or below /100 (the scale drifting through the depth), or when its gradient norm lies 100
times above or below the median layer's.

Limits: one batch at one moment; a healthy start does not rule out a learning rate that later
blows the scales up, and layers other than conv and linear (attention, custom ones) are only
seen through the layers around them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from study.doctor.base import CheckResult, DoctorInputs
from study.report._format import jsonable
from study.training import NoiseStream
from study.training.gap import preserved
from study.training.penalty import KERNEL_MODULES
from study.training.trainer import INIT_SAMPLES

__all__ = ["check_init", "label_entropy"]

# Loss at init / ln K. On digits healthy starts measure 1.00-1.19 (cnn, vgg, resnet,
# resnet-noskip under the torch, he and glorot inits; small_net 1.00); the planted x10 weights
# measure 12.8. Beyond 3 the logits start saturated; beyond 1.5 they start larger than needed.
FAIL_RATIO = 3.0
WARN_RATIO = 1.5
# A layer's gain (output RMS / input RMS): healthy layers measure 0.19-1.5 on digits
# (the x10 weights: 4.9-5.5, which the cumulative scale below catches).
GAIN_LIMIT = 10.0
# Output RMS relative to the network input's: healthy 0.12-1.5 on digits, the x10 weights
# 5.5-65 (they explode through the depth while each layer multiplies by ~5).
SCALE_HIGH = 10.0
SCALE_LOW = 0.01
# Gradient norm / the median layer's: healthy layers measure 0.24-2.0 on digits.
GRAD_LIMIT = 100.0
# How many flagged layers the evidence names (the rest are counted).
NAMED = 3


def label_entropy(labels: torch.Tensor, n_classes: int) -> float:
    """The entropy (nats) of the label frequencies: the loss of the best constant prediction."""
    counts = torch.bincount(labels.flatten().long().cpu(), minlength=n_classes).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


def _probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
           noise: NoiseStream) -> dict[str, list]:
    """RMS of each kernel layer's input and output and its kernel's gradient norm, on one batch
    in train mode; the model's buffers, modes and gradients are left as they were."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, KERNEL_MODULES)]
    rms: dict[str, tuple[float, float]] = {}

    def hook(name: str):
        def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if name not in rms:  # a layer called twice keeps its first call
                rms[name] = (_rms(args[0]), _rms(output))
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in layers]
    saved = [p.grad for p in model.parameters()]
    try:
        with preserved(model), noise.active():
            model.train()
            for p in model.parameters():
                p.grad = None
            F.cross_entropy(model(x).float(), y).backward()
            grads = [_norm(m.weight.grad) for _, m in layers]
    finally:
        for handle in handles:
            handle.remove()
        for p, grad in zip(model.parameters(), saved, strict=True):
            p.grad = grad
    names = [name for name, _ in layers if name in rms]
    kinds = dict(layers)
    return {"layers": names, "layer_types": [type(kinds[n]).__name__ for n in names],
            "input_rms": [rms[n][0] for n in names],
            "activation_rms": [rms[n][1] for n in names],
            "grad_norm": [g for (name, _), g in zip(layers, grads, strict=True) if name in rms]}


def _rms(t: torch.Tensor) -> float:
    return float(t.detach().double().pow(2).mean().sqrt())


def _norm(grad: torch.Tensor | None) -> float:
    return float(grad.detach().double().norm()) if grad is not None else 0.0


def _flags(table: Mapping[str, list], input_rms: float) -> dict[str, str]:
    """Why each flagged layer is flagged (its name -> a few words)."""
    grads = [g for g in table["grad_norm"] if math.isfinite(g)]
    median = sorted(grads)[len(grads) // 2] if grads else 0.0
    flags = {}
    for name, rin, rout, grad in zip(table["layers"], table["input_rms"],
                                     table["activation_rms"], table["grad_norm"], strict=True):
        scale = rout / input_rms if input_rms > 0 else math.nan
        gain = rout / rin if rin > 0 else math.nan
        relative = grad / median if median > 0 else math.nan
        if not all(math.isfinite(v) for v in (rin, rout, grad)):
            flags[name] = "not finite"
        elif scale > SCALE_HIGH or gain > GAIN_LIMIT:
            flags[name] = f"explodes (x{scale:.3g} the input's RMS, gain {gain:.3g})"
        elif scale < SCALE_LOW or gain < 1 / GAIN_LIMIT:
            flags[name] = f"vanishes (x{scale:.3g} the input's RMS, gain {gain:.3g})"
        elif relative > GRAD_LIMIT or relative < 1 / GRAD_LIMIT:
            flags[name] = f"gradient x{relative:.3g} the median layer's"
    return flags


def check_init(inputs: DoctorInputs, found: Mapping[str, CheckResult]) -> CheckResult:
    """Compare the loss at initialization with ``ln K`` and probe each layer's scale.

    Args:
        inputs: The data, model and hyperparameters.
        found: The results so far (unused: the check needs no other).

    Returns:
        ``fail`` when the loss exceeds :data:`FAIL_RATIO` times ``ln K`` (or is not finite) or
        a layer is flagged, ``warn`` beyond :data:`WARN_RATIO` times, ``pass`` otherwise.
    """
    data = inputs.data
    trainer = inputs.trainer(epochs=1)
    loss = trainer.initial_losses().data_loss
    reference = math.log(data.n_classes)
    generator = torch.Generator(device=data.x_train.device)
    generator.manual_seed(inputs.seed)
    size = max(2, min(inputs.hparams.batch_size, data.n_train))  # BatchNorm needs 2 samples
    idx = torch.randperm(data.n_train, generator=generator, device=data.x_train.device)[:size]
    x, y = data.x_train[idx], data.y_train[idx]
    table = _probe(trainer.model, x, y, NoiseStream(x.device, inputs.seed))
    flags = _flags(table, _rms(x))
    ratio = loss / reference
    table = {key: jsonable(values) if key != "layers" else values for key, values in table.items()}
    details = {"loss": jsonable(loss), "reference_loss": reference,
               "label_entropy": label_entropy(data.y_train, data.n_classes),
               "ratio": jsonable(ratio), "data_rms": jsonable(_rms(x)), "batch_size": size,
               **table, "flagged": flags}
    figure = {"kind": "init", "layers": table["layers"], "layer_types": table["layer_types"],
              "activation_rms": table["activation_rms"], "input_rms": table["input_rms"],
              "grad_norm": table["grad_norm"], "reference_loss": reference,
              "loss": jsonable(loss)}
    status, advice = _verdict(ratio, flags)
    return CheckResult("init", status, _evidence(details), advice,
                       f"{min(INIT_SAMPLES, data.n_train)} samples forward + 1 batch "
                       f"backward", details=details,
                       figure=figure)


def _evidence(details: Mapping) -> str:
    loss, ratio = details["loss"], details["ratio"]
    reference, entropy = details["reference_loss"], details["label_entropy"]
    if loss is None or ratio is None:
        evidence = f"data loss at init not finite (ln K = {reference:.3g})"
    else:
        evidence = f"data loss at init {loss:.3g} = {ratio:.2f}x ln K ({reference:.3g})"
    if entropy < reference - 1e-3:
        evidence += f", label entropy {entropy:.3g}"
    flags, layers = details["flagged"], details["layers"]
    if not flags:
        return evidence + f"; {len(layers)} layers in range"
    named = "; ".join(f"{n or '<model>'} {why}" for n, why in list(flags.items())[:NAMED])
    more = f" (+{len(flags) - NAMED} more)" if len(flags) > NAMED else ""
    return evidence + f"; {len(flags)} of {len(layers)} layers flagged: {named}{more}"


def _verdict(ratio: float, flags: Mapping[str, str]) -> tuple[str, str]:
    if not math.isfinite(ratio) or ratio > FAIL_RATIO or flags:
        return "fail", ("fix the initialization: standard inits (torch, he, glorot) with "
                        "BatchNorm or a scaled residual start near ln K with every layer in range")
    if ratio > WARN_RATIO:
        return "warn", ("the logits start larger than needed: scale the last layer's init down "
                        "(or zero it) so the loss starts near ln K")
    return "pass", ("a healthy start does not rule out a learning rate that blows the scales up "
                    "later, nor layers other than conv and linear")
