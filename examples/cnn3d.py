"""A 3D CNN factory for volumes (``--dataset volumes3d`` or an ``npz`` of ``(N, C, D, H, W)``):
Conv3d-BN-ReLU blocks with ``w, w, 2w, 2w, 4w, 4w`` filters, max-pooling after every second
block, global average pooling and a linear classifier.

``--model examples/cnn3d.py:build``; ``width`` is the number of filters of the first block.
"""

from __future__ import annotations

from torch import nn

MULTIPLIERS = (1, 1, 2, 2, 4, 4)


def build(width: int, *, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """The 3D CNN for inputs of shape ``input_shape = (C, D, H, W)``."""
    if len(input_shape) != 4:
        raise ValueError(f"a 3D CNN needs (C, D, H, W) inputs, but got {input_shape}")
    cin, size = input_shape[0], min(input_shape[1:])
    layers: list[nn.Module] = []
    for i, mult in enumerate(MULTIPLIERS):
        cout = width * mult
        layers += [nn.Conv3d(cin, cout, kernel_size=3, padding=1, bias=False),
                   nn.BatchNorm3d(cout), nn.ReLU()]
        if i % 2 == 1 and size >= 4:
            layers.append(nn.MaxPool3d(2))
            size //= 2
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(cin, n_classes))
