"""The classifier layer every built-in model ends with (shared by :mod:`~study.training.models`
and :mod:`~study.training.resnet`)."""

from __future__ import annotations

from torch import nn

__all__ = ["classifier"]


def classifier(cin: int, n_classes: int, *, dropout: float) -> list[nn.Module]:
    """The final linear layer, after a Dropout layer when ``dropout > 0``.

    At 0 there is no Dropout module at all, so the module list, the parameter count and the
    seeded initialization are those of a model built without the option.
    """
    return [*([nn.Dropout(dropout)] if dropout > 0 else []), nn.Linear(cin, n_classes)]
