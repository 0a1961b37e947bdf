"""Pre-activation residual networks, with and without their skip connections.

``resnet`` is the CIFAR-style network of He et al. (2016, "Identity mappings in deep residual
networks"): a 3x3 stem convolution to ``w`` channels, three stages of ``depth`` basic blocks with
``w``, ``2w`` and ``4w`` channels, then BatchNorm-ReLU, global average pooling and a linear
classifier. A block computes ``x + conv(relu(bn(conv(relu(bn(x))))))``; the first block of
stages 2 and 3 doubles the channels and halves the map (stride 2, skipped once the map is below
4), and its skip is a 1x1 projection of the pre-activated input. ``resnet-noskip`` is the same
network with every skip (and projection) removed, the comparison of Li et al. (2018, "Visualizing
the loss landscape of neural nets").

Convolutions have no bias (BatchNorm follows). With ``K = 3**d`` (9 in 2D, 27 in 3D), ``C`` input
channels, ``n`` classes, ``D = depth`` and ``s = 1`` with skips, ``0`` without, the number of
trainable parameters is::

    P(w) = (K (42 D - 10) + 10 s) w**2 + (C K + 28 D + 2 + 4 n) w + n

independent of the input size (see README, "Models").
"""

from __future__ import annotations

import torch
from torch import nn

from study.training._layers import classifier

__all__ = ["RESNET_STAGE_MULTIPLIERS", "resnet"]

RESNET_STAGE_MULTIPLIERS = (1, 2, 4)
"""Channel multipliers of the three stages (CIFAR ResNet: 16, 32, 64 for ``width=16``)."""

# A stride-2 block below this size would leave a 1-voxel map for the rest of the network.
_MIN_DOWNSAMPLE_SIZE = 4

_LAYERS: dict[int, tuple[type[nn.Module], type[nn.Module], type[nn.Module]]] = {
    2: (nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d),
    3: (nn.Conv3d, nn.BatchNorm3d, nn.AdaptiveAvgPool3d),
}


class _Block(nn.Module):
    """A basic pre-activation block; ``skip=False`` drops the identity (or projection)."""

    def __init__(self, cin: int, cout: int, *, stride: int, dims: int, skip: bool,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        conv, bn, _ = _LAYERS[dims]
        self.bn1 = bn(cin, momentum=bn_momentum)
        self.conv1 = conv(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = bn(cout, momentum=bn_momentum)
        self.conv2 = conv(cout, cout, kernel_size=3, padding=1, bias=False)
        self.skip = skip
        self.project = (
            conv(cin, cout, kernel_size=1, stride=stride, bias=False)
            if skip and (cin != cout or stride != 1) else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        out = self.conv2(torch.relu(self.bn2(self.conv1(pre))))
        if not self.skip:
            return out
        # He et al. 2016: a projection takes the pre-activated input, an identity the raw one.
        return out + (self.project(pre) if self.project is not None else x)


class _ResNet(nn.Module):
    def __init__(self, stem: nn.Module, blocks: list[nn.Module], head: list[nn.Module]) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def resnet(
    width: int, *, in_channels: int, n_classes: int, size: int, dims: int, depth: int,
    skip: bool, dropout: float = 0.0, bn_momentum: float = 0.1,
) -> nn.Module:
    """Build the residual network (``skip=True``) or its plain twin (``skip=False``).

    Args:
        width: Channels of the stem and the first stage.
        in_channels: Channels of the input.
        n_classes: Logits returned.
        size: Smallest spatial size of the input (decides where to downsample).
        dims: 2 for images, 3 for volumes.
        depth: Basic blocks per stage.
        skip: Whether blocks add their input back.
        dropout: Rate of a Dropout layer before the classifier (0: none).
        bn_momentum: Momentum of every BatchNorm layer (PyTorch's convention).

    Returns:
        The network, with PyTorch's default initialization.
    """
    conv, bn, gap = _LAYERS[dims]
    blocks: list[nn.Module] = []
    cin = width
    for stage, mult in enumerate(RESNET_STAGE_MULTIPLIERS):
        cout = mult * width
        for i in range(depth):
            stride = 2 if stage > 0 and i == 0 and size >= _MIN_DOWNSAMPLE_SIZE else 1
            size = (size + 1) // 2 if stride == 2 else size
            blocks.append(_Block(cin, cout, stride=stride, dims=dims, skip=skip,
                                 bn_momentum=bn_momentum))
            cin = cout
    stem = conv(in_channels, width, kernel_size=3, padding=1, bias=False)
    head = [bn(cin, momentum=bn_momentum), nn.ReLU(), gap(1), nn.Flatten(),
            *classifier(cin, n_classes, dropout=dropout)]
    return _ResNet(stem, blocks, head)
