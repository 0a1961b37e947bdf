"""User model factories for the doctor's tests (named as ``tests/doctor_tests/models.py:NAME``)."""

from __future__ import annotations

import torch
from torch import nn

from study.training.models import build_model


def scaled_cnn(width: int, *, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """The built-in ``cnn`` with every initial weight scaled up tenfold (the planted init fault)."""
    model = build_model("cnn", width=width, in_channels=input_shape[0], n_classes=n_classes,
                        input_size=input_shape[1:])
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(10.0)
    return model


def small_net(width: int, *, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """A user's own small CNN without BatchNorm (a healthy model that is not built in)."""
    c = input_shape[0]
    return nn.Sequential(
        nn.Conv2d(c, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, n_classes),
    )


class _Blind(nn.Module):
    """Logits computed from a constant: the same prediction for every sample."""

    def __init__(self, width: int, n_classes: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(1, width)
        self.head = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ones = x.new_ones(x.shape[0], 1)
        return self.head(torch.relu(self.hidden(ones)))


def blind_net(width: int, *, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """A model whose output ignores its input (a broken pipeline: nothing can be memorized)."""
    return _Blind(width, n_classes)
