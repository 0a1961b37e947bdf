"""Penalty modes: the loss term added to the reported loss, and the optimizer's weight decay.

The four modes (SPEC section 2):

- ``l2-in-loss``: objective = data loss + weight_decay * sum of squared conv/linear kernels; the
  reported training loss includes the penalty (Keras ``kernel_regularizer``). Its gradient equals
  that of ``coupled`` with *twice* the weight decay (d/dw of wd*w^2 is 2*wd*w).
- ``coupled``: ``torch.optim.Adam(weight_decay=...)``; the decay acts on gradients only.
- ``decoupled``: ``torch.optim.AdamW(weight_decay=...)``.
- ``none``: no penalty, no decay.

Only conv and linear kernels are penalized, never biases or BatchNorm parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from study.training.specs import PenaltyMode

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
    model: nn.Module, *, mode: PenaltyMode, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """Build the optimizer for ``mode``: decay on the kernel group only, never on the rest.

    Args:
        model: The network to optimize.
        mode: The penalty mode.
        lr: Learning rate.
        weight_decay: Decay coefficient; used by ``coupled`` and ``decoupled`` only (the
            ``l2-in-loss`` mode applies it through :func:`penalty_term`).
    """
    mode = PenaltyMode(mode)
    kernels = penalized_parameters(model)
    kernel_ids = {id(p) for p in kernels}
    others = [p for p in model.parameters() if id(p) not in kernel_ids]
    decay = weight_decay if mode in (PenaltyMode.COUPLED, PenaltyMode.DECOUPLED) else 0.0
    groups = [
        {"params": kernels, "weight_decay": decay},
        {"params": others, "weight_decay": 0.0},
    ]
    if mode is PenaltyMode.DECOUPLED:
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
