"""The models of a study: a plain 4-block CNN, the Keras-style VGG, the pre-activation ResNet with
and without skips (:mod:`study.training.resnet`), or the user's own factory.

A factory is named ``pkg.module:callable`` or ``path/to/file.py:callable`` and called as
``callable(width, *, input_shape=(C, H, W) or (C, D, H, W), n_classes=K)``, plus ``dropout=`` and
``bn_momentum=`` where its signature accepts them (or has ``**kwargs``); it returns a
``torch.nn.Module`` mapping a float32 batch to ``(N, K)`` logits. Whatever its layers, the
penalty, ``--init`` and the landscape probe treat the ``weight`` of every convolution and linear
layer as its kernels (:data:`~study.training.penalty.KERNEL_MODULES`).

The built-in families work on 2D images ``(N, C, H, W)`` and 3D volumes ``(N, C, D, H, W)``;
the number of spatial dimensions is ``len(input_size)``. Pooling is skipped once the feature map
is too small, so 8x8 digits and 16^3 volumes both fit. All end in global average pooling and a
linear classifier, so the parameter count depends on ``width`` but not on ``input_size``. A
``dropout`` above 0 inserts a Dropout layer right before that classifier (no parameters, no
random draws at build time); at 0 there is none, so the models are those of earlier versions.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from study._validation import check_choice, fail
from study.errors import ConfigError
from study.redact import one_line
from study.training._imports import load_callable, where_raised
from study.training._layers import classifier
from study.training.penalty import KERNEL_MODULES
from study.training.resnet import resnet
from study.training.specs import (
    DEFAULT_DEPTH,
    INITS,
    MODELS,
    RESNETS,
    check_int,
    check_model_spec,
    check_training_options,
)

__all__ = [
    "CNN_WIDTH_MULTIPLIERS",
    "DEFAULT_DEPTH",
    "INITS",
    "MODELS",
    "RESNETS",
    "build_model",
    "check_model_spec",
    "count_parameters",
]

CNN_WIDTH_MULTIPLIERS = (1, 1, 2, 2)
"""Channel multipliers of the ``cnn`` blocks; one entry per Conv-BN-LeakyReLU block."""

_VGG_STAGE_MULTIPLIERS = (1, 2, 4, 8)
_LEAKY_SLOPE = 0.01

_LAYERS: dict[int, tuple[type[nn.Module], ...]] = {
    2: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d),
    3: (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d, nn.AdaptiveAvgPool3d),
}


def build_model(
    name: str,
    *,
    width: int,
    in_channels: int,
    n_classes: int,
    input_size: tuple[int, ...],
    init: str = "torch",
    seed: int | None = None,
    depth: int | None = None,
    dropout: float = 0.0,
    bn_momentum: float = 0.1,
) -> nn.Module:
    """Build a freshly initialized classifier.

    Args:
        name: One of :data:`MODELS` or a factory spec (see the module docstring).
        width: Base channel count ``w``; ``cnn`` uses ``w, w, 2w, 2w``, ``vgg`` ``w, 2w, 4w, 8w``,
            the ResNets ``w, 2w, 4w``; a factory gets it as its first argument.
        in_channels: Channels of the input.
        n_classes: Number of classes (at least 2); the model returns that many logits.
        input_size: Spatial size of one input, ``(H, W)`` or ``(D, H, W)``.
        init: One of :data:`INITS`: PyTorch defaults, Glorot uniform (Keras) or He normal.
        seed: When given, the weights depend only on it and the global RNG state is left
            untouched; when ``None``, the global RNG is used as usual.
        depth: Blocks per stage of the ResNets (default :data:`DEFAULT_DEPTH`); only for them.
        dropout: Dropout rate before the final linear layer, in [0, 1); a factory gets it as
            ``dropout=`` when its signature accepts it.
        bn_momentum: Momentum of every BatchNorm layer (PyTorch's convention), in (0, 1]; a
            factory gets it as ``bn_momentum=`` when its signature accepts it.

    Returns:
        A module mapping float32 ``(N, in_channels, *input_size)`` to logits ``(N, n_classes)``
        (a factory's output is checked once per study by :func:`study.training.check_model`).

    Raises:
        ConfigError: If any argument is invalid, or a factory fails to load, raises or returns
            something other than a module, or cannot accept a non-default ``dropout`` or
            ``bn_momentum``.
    """
    check_model_spec(name, depth=depth)
    check_choice("init", init, INITS)
    check_int("width", width, 1)
    check_int("in_channels", in_channels, 1)
    check_int("n_classes", n_classes, 2)
    check_training_options(dropout=dropout, bn_momentum=bn_momentum)
    size = _check_input_size(input_size)
    layers = _LAYERS[len(size)]
    options = {"dropout": dropout, "bn_momentum": bn_momentum}
    with _seeded(seed):
        if name == "cnn":
            model = _cnn(width, in_channels, n_classes, min(size), layers, **options)
        elif name == "vgg":
            model = _vgg(width, in_channels, n_classes, min(size), layers, **options)
        elif name in RESNETS:
            model = resnet(width, in_channels=in_channels, n_classes=n_classes, size=min(size),
                           dims=len(size), depth=depth or DEFAULT_DEPTH,
                           skip=name == "resnet", **options)
        else:
            model = _from_factory(name, width, (in_channels, *size), n_classes, options)
        _initialize(model, init)
    return model


# The values a factory that does not take the option is assumed to build with.
_FACTORY_DEFAULTS = {"dropout": 0.0, "bn_momentum": 0.1}


def factory_defaults(spec: str) -> dict[str, Any]:
    """The defaults ``spec``'s factory declares for the options it is passed (``dropout``,
    ``bn_momentum``): a flag's value replaces them, which the caller says where they differ."""
    try:
        parameters = inspect.signature(load_callable(spec, field="model")).parameters
    except (TypeError, ValueError):
        return {}
    return {name: p.default for name, p in parameters.items()
            if name in _FACTORY_DEFAULTS and p.default is not inspect.Parameter.empty}


def _factory_options(spec: str, factory: Callable[..., Any],
                    options: dict[str, float]) -> dict[str, float]:
    """The keyword arguments of ``options`` that ``factory``'s signature accepts.

    Raises:
        ConfigError: An option the factory does not accept has a non-default value.
    """
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a callable without a signature (C code) takes no extras
        parameters = []
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = {p.name for p in parameters if p.kind in keyword}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    accepted = {}
    for field, value in options.items():
        if takes_any or field in names:
            accepted[field] = value
        elif value != _FACTORY_DEFAULTS[field]:
            raise ConfigError(f"`{field}` needs a model factory that accepts a `{field}` "
                              f"argument; {spec} does not, but got {field}={value!r}.")
    return accepted


def _from_factory(spec: str, width: int, input_shape: tuple[int, ...], n_classes: int,
                  options: dict[str, float]) -> nn.Module:
    factory = load_callable(spec, field="model")
    extra = _factory_options(spec, factory, options)
    try:
        model = factory(width, input_shape=input_shape, n_classes=n_classes, **extra)
    except Exception as exc:  # user code may raise anything
        raise ConfigError(f"`model` {spec!r} raised at width={width}{where_raised(exc)}: "
                          f"{type(exc).__name__}: {one_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"`model` {spec!r} must return a torch.nn.Module, but returned a "
                          f"{type(model).__name__} at width={width}.")
    return model


def count_parameters(model: nn.Module) -> int:
    """Return the number of trainable parameter entries of ``model`` (buffers excluded).

    Args:
        model: Any module.

    Returns:
        The sum of ``numel()`` over the parameters that require gradients.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _check_input_size(input_size: Sequence[int]) -> tuple[int, ...]:
    size = tuple(input_size) if isinstance(input_size, Sequence) else ()
    if len(size) not in _LAYERS:
        fail("input_size", input_size, "2 (H, W) or 3 (D, H, W) spatial sizes")
    for s in size:
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            fail("input_size", input_size, "positive integers")
    return size


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    if seed is None:
        yield
        return
    # devices=[]: models are built on the CPU, so no CUDA RNG state needs to be saved.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _conv_bn(conv, bn, cin: int, cout: int, act: nn.Module, *,
             bn_momentum: float) -> list[nn.Module]:
    return [conv(cin, cout, kernel_size=3, padding=1, bias=False),
            bn(cout, momentum=bn_momentum), act]


def _head(gap, cin: int, n_classes: int, *, dropout: float) -> list[nn.Module]:
    return [gap(1), nn.Flatten(), *classifier(cin, n_classes, dropout=dropout)]


def _cnn(width: int, cin: int, n_classes: int, size: int, layers, *, dropout: float,
         bn_momentum: float) -> nn.Sequential:
    conv, bn, pool, gap = layers
    modules: list[nn.Module] = []
    last = len(CNN_WIDTH_MULTIPLIERS) - 1
    for i, mult in enumerate(CNN_WIDTH_MULTIPLIERS):
        cout = mult * width
        modules += _conv_bn(conv, bn, cin, cout, nn.LeakyReLU(_LEAKY_SLOPE),
                            bn_momentum=bn_momentum)
        cin = cout
        # Pooling below 4 would leave a 1-voxel map for the remaining blocks to convolve.
        if i % 2 == 1 and i != last and size >= 4:
            modules.append(pool(2))
            size //= 2
    return nn.Sequential(*modules, *_head(gap, cin, n_classes, dropout=dropout))


def _vgg(width: int, cin: int, n_classes: int, size: int, layers, *, dropout: float,
         bn_momentum: float) -> nn.Sequential:
    conv, bn, pool, gap = layers
    modules: list[nn.Module] = []
    for mult in _VGG_STAGE_MULTIPLIERS:
        cout = mult * width
        modules += _conv_bn(conv, bn, cin, cout, nn.ReLU(), bn_momentum=bn_momentum)
        modules += _conv_bn(conv, bn, cout, cout, nn.ReLU(), bn_momentum=bn_momentum)
        cin = cout
        # Keras would fail on a 1x1 map; 8x8 digits skip the 4th pool instead.
        if size >= 2:
            modules.append(pool(2))
            size //= 2
    return nn.Sequential(*modules, *_head(gap, cin, n_classes, dropout=dropout))


def _initialize(model: nn.Module, init: str) -> None:
    if init == "torch":
        return
    for m in model.modules():
        if not isinstance(m, KERNEL_MODULES):
            continue
        if init == "glorot":
            nn.init.xavier_uniform_(m.weight)
        else:
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
