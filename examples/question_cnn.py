"""The network of the question, as a model factory: Conv-BN-Conv-BN-MaxPool x4, then a dense
classifier (Keras ``Flatten`` + ``Dense``), on e.g. 50x55 RGB images with 30 classes.

``width`` is the number of filters of the first block; the blocks have ``w, 2w, 4w, 8w``.
Run it with ``--model examples/question_cnn.py:build`` (relative to the folder you run from,
or an absolute path), or put ``examples/`` on ``PYTHONPATH`` and use ``question_cnn:build``.
"""

from __future__ import annotations

import math

from torch import nn


def _block(cin: int, cout: int, *, pool: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel_size=3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
        nn.Conv2d(cout, cout, kernel_size=3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
    ]
    return [*layers, nn.MaxPool2d(2)] if pool else layers


def build(width: int, *, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Conv-BN-Conv-BN-MaxPool x4 with ``width, 2 width, 4 width, 8 width`` filters.

    Args:
        width: Filters of the first block.
        input_shape: ``(C, H, W)`` of one image.
        n_classes: Number of classes.
    """
    channels, height, wide = input_shape
    layers: list[nn.Module] = []
    cin = channels
    for i in range(4):
        cout = width * 2**i
        pool = min(height, wide) >= 2  # small images stop pooling instead of failing
        layers += _block(cin, cout, pool=pool)
        if pool:
            height, wide = height // 2, wide // 2
        cin = cout
    features = cin * math.prod((height, wide))
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(features, n_classes))
