"""The names of the training inputs, the hyperparameters' record and the syntax checks of the
specs, without torch.

Config validation and the CLI's flags need the lists of datasets, models, inits, penalty modes
and optimizers and the ranges of the training options; keeping them here lets ``study --help``,
``study status`` and a bad flag answer without loading torch (:mod:`study.training.data`,
:mod:`~study.training.models`, :mod:`~study.training.penalty` and
:mod:`~study.training.trainer` re-export them).
"""

from __future__ import annotations

import dataclasses
import enum
import numbers

from study._validation import fail
from study.training._imports import is_callable_spec

__all__ = [
    "DATASETS",
    "DEFAULT_DEPTH",
    "INITS",
    "MODELS",
    "OPTIMIZERS",
    "RESNETS",
    "HParams",
    "PenaltyMode",
    "check_dataset_spec",
    "check_image_size",
    "check_int",
    "check_model_spec",
    "check_optimizer_mode",
    "check_training_options",
]

DATASETS = ("digits", "volumes3d", "npz:PATH", "imagefolder:PATH", "pkg.module:callable")
_ALLOWED = ("one of digits, volumes3d, npz:PATH, imagefolder:PATH or a loader "
            "pkg.module:callable / path/to/file.py:callable")

RESNETS = ("resnet", "resnet-noskip")
MODELS = ("cnn", "vgg", *RESNETS)
INITS = ("torch", "glorot", "he")
OPTIMIZERS = ("adam", "sgd", "adamw")
# Two blocks per stage: a 14-layer network, deep enough for skips to matter, fast on a CPU.
DEFAULT_DEPTH = 2


class PenaltyMode(str, enum.Enum):
    """How weight decay enters training (:mod:`study.training.penalty`)."""

    L2_IN_LOSS = "l2-in-loss"
    COUPLED = "coupled"
    DECOUPLED = "decoupled"
    NONE = "none"

    def __str__(self) -> str:
        return self.value


# The optimizers that cannot apply a penalty mode: AdamW's decay is always decoupled, and
# PyTorch's SGD has only the coupled (gradient) form.
_REFUSED_MODES = {"adamw": PenaltyMode.COUPLED.value, "sgd": PenaltyMode.DECOUPLED.value}


@dataclasses.dataclass(frozen=True)
class HParams:
    """One trial's searched (or fixed) hyperparameters.

    The training options after ``penalty_mode`` have defaults that train exactly as before
    they existed (Adam, no dropout, PyTorch's BatchNorm momentum); see
    :func:`check_training_options` for their ranges.

    Attributes:
        optimizer: One of :data:`OPTIMIZERS`; the penalty mode decides how weight decay enters
            it (:func:`study.training.penalty.make_optimizer`).
        momentum: SGD's momentum; Adam and AdamW ignore it.
        dropout: Rate of a Dropout layer right before the final linear layer of the built-in
            models (0: no Dropout layer at all); a factory receives it as ``dropout=``.
        bn_momentum: Momentum of every BatchNorm layer of the built-in models, in PyTorch's
            convention (the weight of the new batch; Keras' 0.99 is PyTorch's 0.01).
    """

    width: int
    lr: float
    batch_size: int
    weight_decay: float
    penalty_mode: str = PenaltyMode.L2_IN_LOSS.value
    optimizer: str = "adam"
    momentum: float = 0.9
    dropout: float = 0.0
    bn_momentum: float = 0.1


def check_training_options(
    *, optimizer: object = "adam", momentum: object = 0.9, dropout: object = 0.0,
    bn_momentum: object = 0.1,
) -> None:
    """Check the ranges of the training options of :class:`HParams` (each defaults to its
    field's default, so a caller may check only some).

    Raises:
        ConfigError: ``optimizer`` is not one of :data:`OPTIMIZERS`, ``momentum`` or
            ``dropout`` is outside [0, 1), or ``bn_momentum`` is outside (0, 1].
    """
    if optimizer not in OPTIMIZERS:
        fail("optimizer", optimizer, f"one of {', '.join(OPTIMIZERS)}")
    for field, value in (("momentum", momentum), ("dropout", dropout)):
        if not _is_real(value) or not 0 <= value < 1:
            fail(field, value, "in [0, 1)")
    if not _is_real(bn_momentum) or not 0 < bn_momentum <= 1:
        fail("bn_momentum", bn_momentum, "in (0, 1]")


def check_optimizer_mode(optimizer: str, penalty_mode: str) -> None:
    """Refuse a penalty mode the optimizer cannot apply (``adamw`` + ``coupled``, ``sgd`` +
    ``decoupled``).

    Raises:
        ConfigError: Names both values.
    """
    refused = _REFUSED_MODES.get(optimizer)
    if refused is not None and str(penalty_mode) == refused:
        allowed = [m.value for m in PenaltyMode if m.value != refused]
        fail("penalty_mode", str(penalty_mode),
             f"one of {', '.join(allowed)} with optimizer={optimizer!r}")


def _is_real(value: object) -> bool:
    # bool is an int subclass; True must not silently mean dropout=1.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_dataset_spec(spec: str) -> None:
    """Validate the syntax of a dataset spec without loading anything.

    Args:
        spec: ``digits``, ``volumes3d``, ``npz:PATH`` or ``imagefolder:PATH`` with a non-empty
            ``PATH``, or a loader ``module:callable`` / ``file.py:callable``.

    Raises:
        ConfigError: The spec has none of these forms.
    """
    if not isinstance(spec, str):
        fail("dataset", spec, _ALLOWED)
    if spec in ("digits", "volumes3d"):
        return
    for prefix in ("npz:", "imagefolder:"):
        if spec.startswith(prefix):
            if not spec[len(prefix):].strip():
                fail("dataset", spec, f"{prefix}PATH with a non-empty PATH")
            return
    if not is_callable_spec(spec):
        fail("dataset", spec, _ALLOWED)


def check_image_size(dataset: str, image_size: str | None) -> tuple[int, int] | None:
    """Parse ``image_size`` (``"32"`` or ``"HxW"``); it applies to ``imagefolder:`` only.

    Raises:
        ConfigError: It does not parse, or it is set for another kind of dataset.
    """
    if image_size is None:
        return None
    # Imported here: the image reader loads numpy, which a config without images never needs.
    from study.training.images import parse_image_size

    size = parse_image_size(image_size)
    if size is None:
        fail("image_size", image_size, "one positive number or HxW, e.g. 32 or 50x55")
    if not dataset.startswith("imagefolder:"):
        fail("image_size", image_size, f"unset for dataset={dataset!r} (it resizes the images of "
                                       "imagefolder:PATH)")
    return size


def check_model_spec(name: object, *, depth: object = None) -> None:
    """Validate a model name or factory spec (syntax only, nothing is imported) and its depth.

    Raises:
        ConfigError: ``name`` is neither a built-in model nor ``module:callable`` /
            ``file.py:callable``, or ``depth`` is set for a model without stages.
    """
    if not isinstance(name, str) or (name not in MODELS and not is_callable_spec(name)):
        fail("model", name, f"one of {', '.join(MODELS)}, or a factory pkg.module:callable or "
                            "path/to/file.py:callable")
    if depth is None:
        return
    if name not in RESNETS:
        fail("depth", depth, f"unset for model={name!r} (it sets the blocks per stage of "
                             f"{' and '.join(RESNETS)})")
    check_int("depth", depth, 1)


def check_int(field: str, value: object, minimum: int) -> None:
    """Refuse anything but an integer >= ``minimum`` (a bool is no integer here).

    Raises:
        ConfigError: Names the field and the value.
    """
    # bool is an int subclass; True must not silently mean width=1.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        fail(field, value, f"an integer >= {minimum}")
