"""The one check a user's model factory passes before a study trains it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from study.errors import ConfigError
from study.redact import one_line
from study.training._imports import is_callable_spec, source_sha256, where_raised
from study.training.data import TensorData
from study.training.models import MODELS, build_model, count_parameters
from study.training.penalty import penalized_parameters

__all__ = ["ModelCheck", "check_model", "is_factory", "model_sha256"]

# Two samples: the smallest batch BatchNorm accepts, and enough to tell N from n_classes.
_CHECK_BATCH = 2


@dataclasses.dataclass(frozen=True)
class ModelCheck:
    """What the check saw: parameters per width and the factory's source hash."""

    spec: str
    n_params: dict[int, int]
    sha256: str | None


def is_factory(spec: str) -> bool:
    """Whether ``spec`` names a user's factory rather than a built-in model."""
    return spec not in MODELS and is_callable_spec(spec)


def model_sha256(spec: str) -> str | None:
    """SHA-256 of the factory's source file; ``None`` for built-in models."""
    return source_sha256(spec) if is_factory(spec) else None


def check_model(
    spec: str, *, widths: Sequence[int], data: TensorData, depth: int | None = None,
    dropout: float = 0.0, bn_momentum: float = 0.1,
) -> ModelCheck:
    """Build the model at each width and run a forward pass on two training samples.

    Checks that it builds, that it has conv or linear kernels to penalize, that it maps
    ``(2, *input)`` to ``(2, n_classes)`` finite logits, and that the largest width has more
    parameters than the smallest. Built on the CPU, nothing is kept. A factory that cannot
    accept a non-default ``dropout`` or ``bn_momentum`` fails here, before any training.

    Args:
        spec: A built-in model name or a factory spec.
        widths: The widths to build (the study's ``width_min`` and ``width_max``).
        data: The study's data (input shape, number of classes, the sample batch).
        depth: Blocks per stage of the ResNets.
        dropout: The study's dropout rate (passed as ``dropout=`` where the factory takes it).
        bn_momentum: The study's BatchNorm momentum (likewise ``bn_momentum=``).

    Returns:
        Parameter counts per width and the factory's source hash.

    Raises:
        ConfigError: One line naming ``spec`` and what went wrong.
    """
    batch = data.x_train[:_CHECK_BATCH].detach().cpu()
    counts: dict[int, int] = {}
    for width in sorted(set(widths)):
        model = build_model(spec, width=width, in_channels=data.in_channels,
                            n_classes=data.n_classes, input_size=data.input_size, seed=0,
                            depth=depth, dropout=dropout, bn_momentum=bn_momentum)
        if not penalized_parameters(model):
            raise ConfigError(f"`model` {spec!r} must contain convolution or linear layers (their "
                              f"weights are the penalized kernels), but has none at "
                              f"width={width}.")
        _check_forward(spec, model, batch, n_classes=data.n_classes, width=width)
        counts[width] = count_parameters(model)
    _check_growth(spec, counts)
    return ModelCheck(spec=spec, n_params=counts, sha256=model_sha256(spec))


def _check_forward(spec: str, model: torch.nn.Module, batch: torch.Tensor, *, n_classes: int,
                   width: int) -> None:
    shape = tuple(batch.shape)
    expected = (shape[0], n_classes)
    try:
        model.eval()  # running statistics: no batch-size constraint, nothing updated
        with torch.no_grad():
            out = model(batch)
    except Exception as exc:  # user code may raise anything
        raise ConfigError(f"`model` {spec!r} failed on a batch of shape {shape} at "
                          f"width={width}{where_raised(exc)}: {type(exc).__name__}: "
                          f"{one_line(exc)}") from None
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if got != expected:
        raise ConfigError(f"`model` {spec!r} must map a batch of shape {shape} to logits of "
                          f"shape {expected}, but returned {got} at width={width}.")
    if not out.is_floating_point():
        raise ConfigError(f"`model` {spec!r} must return floating-point logits, but returned "
                          f"{out.dtype} at width={width}.")
    if not torch.isfinite(out).all():
        raise ConfigError(f"`model` {spec!r} must return finite logits, but returned NaN/inf "
                          f"at width={width}.")


def _check_growth(spec: str, counts: dict[int, int]) -> None:
    if len(counts) < 2:
        return
    (w_lo, n_lo), (w_hi, n_hi) = min(counts.items()), max(counts.items())
    if n_hi <= n_lo:
        raise ConfigError(
            f"`model` {spec!r} must have more parameters at a larger width, but has {n_lo:,} at "
            f"width={w_lo} and {n_hi:,} at width={w_hi} (does it use its `width` argument?)."
        )
