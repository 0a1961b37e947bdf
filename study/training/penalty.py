"""Penalty modes: the loss term added to the reported loss, and the optimizer's weight decay.

The four modes (SPEC section 2):

- ``l2-in-loss``: objective = data loss + weight_decay * sum of squared conv/linear kernels; the
  reported training loss includes the penalty (Keras ``kernel_regularizer``). Its gradient equals
  that of ``coupled`` with *twice* the weight decay (d/dw of wd*w^2 is 2*wd*w).
- ``coupled``: ``torch.optim.Adam(weight_decay=...)``; the decay acts on gradients only.
- ``decoupled``: ``torch.optim.AdamW(weight_decay=...)``.
- ``none``: no penalty, no decay.

The optimizer (``adam`` by default, ``sgd`` or ``adamw``) gives the update rule; the mode decides
how the decay enters it:

===========  ====================  ====================  =========================
optimizer    coupled               decoupled             l2-in-loss, none
===========  ====================  ====================  =========================
adam         Adam(weight_decay)    AdamW(weight_decay)   Adam, no decay
adamw        refused               AdamW(weight_decay)   AdamW, no decay
sgd          SGD(weight_decay)     refused               SGD, no decay
===========  ====================  ====================  =========================

Only conv and linear kernels are penalized, never biases or BatchNorm parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from study._validation import check_choice
from study.training.specs import OPTIMIZERS, PenaltyMode, check_optimizer_mode

__all__ = [
    "KERNEL_MODULES",
    "PenaltyMode",
    "make_optimizer",
    "penalized_parameters",
    "penalty_term",
    "weight_sq_norm",
]

# The layers whose `weight` is a kernel: penalized, re-initialized by --init, probed.
KERNEL_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def penalized_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Return the conv and linear kernels of ``model`` (no biases, no BatchNorm)."""
    return [m.weight for m in model.modules() if isinstance(m, KERNEL_MODULES)]


def make_optimizer(
    model: nn.Module, *, mode: PenaltyMode, lr: float, weight_decay: float,
    optimizer: str = "adam", momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """Build the optimizer for ``mode``: decay on the kernel group only, never on the rest.

    Args:
        model: The network to optimize.
        mode: The penalty mode.
        lr: Learning rate.
        weight_decay: Decay coefficient; used by ``coupled`` and ``decoupled`` only (the
            ``l2-in-loss`` mode applies it through :func:`penalty_term`).
        optimizer: One of :data:`~study.training.specs.OPTIMIZERS` (see the module docstring
            for how it combines with ``mode``).
        momentum: SGD's momentum; ignored by Adam and AdamW.

    Raises:
        ConfigError: ``optimizer`` is unknown or cannot apply ``mode`` (``adamw`` with
            ``coupled``, ``sgd`` with ``decoupled``).
    """
    mode = PenaltyMode(mode)
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_optimizer_mode(optimizer, mode.value)
    kernels = penalized_parameters(model)
    kernel_ids = {id(p) for p in kernels}
    others = [p for p in model.parameters() if id(p) not in kernel_ids]
    decay = weight_decay if mode in (PenaltyMode.COUPLED, PenaltyMode.DECOUPLED) else 0.0
    groups = [
        {"params": kernels, "weight_decay": decay},
        {"params": others, "weight_decay": 0.0},
    ]
    if optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if optimizer == "adamw" or mode is PenaltyMode.DECOUPLED:
        return torch.optim.AdamW(groups, lr=lr)
    return torch.optim.Adam(groups, lr=lr)


def weight_sq_norm(params: list[nn.Parameter]) -> torch.Tensor:
    """Sum of squared entries of ``params`` as a 0-d tensor (no host synchronization)."""
    if not params:
        return torch.zeros(())
    return torch.stack([p.pow(2).sum() for p in params]).sum()


def penalty_term(
    params: list[nn.Parameter], *, mode: PenaltyMode, weight_decay: float
) -> torch.Tensor | None:
    """The term added to the loss, or ``None`` when ``mode`` adds nothing to the loss."""
    if PenaltyMode(mode) is not PenaltyMode.L2_IN_LOSS or weight_decay == 0.0:
        return None
    return weight_decay * weight_sq_norm(params)
