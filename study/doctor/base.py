"""What every check of the doctor shares: its inputs, its result and a short training.

A check is a function ``check(inputs, found) -> CheckResult``: ``inputs`` is the user's data,
model and hyperparameters exactly as a study would train them, ``found`` the results of the
checks run before it (the learning-rate range test's suggestion, the label suspects).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from study.training.data import TensorData
from study.training.specs import HParams
from study.training.trainer import Trainer

__all__ = ["STATUSES", "CheckResult", "DoctorInputs", "short_epochs", "training_lr", "worst"]

STATUSES = ("pass", "warn", "fail")
# The short trainings' epochs were sized on digits: 1437 training samples in batches of 64, 23
# steps an epoch. A smaller split trains for as many steps, not epochs: 90 samples made 2
# batches an epoch, and 6 epochs (12 steps) left 3 easy classes at chance (val loss 1.04
# against ln 3 = 1.10), which the labels check read as labels carrying no signal.
SIZED_STEPS_PER_EPOCH = 23


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One check's outcome.

    Attributes:
        name: The check's name (``labels``, ``lr``, ...).
        status: ``pass``, ``warn`` or ``fail``.
        evidence: One line of numbers that decided the status.
        advice: One line: what to do (on ``pass``, what the check does not rule out).
        budget: What the check may spend, e.g. ``"300 steps"`` or ``"3 folds x 4 epochs"``.
        seconds: What it spent.
        details: JSON-able extras: the numbers behind the evidence, ``suspects`` (sample names,
            most suspicious first), per-layer tables.
        figure: JSON-able data of the check's figure (its axes, lines and labels), or ``None``.
        carry: Written nowhere: what later checks reuse (arrays such as out-of-fold
            probabilities).
        listing: Every sample the check flags, one row each, most suspicious first (written
            as ``<name>_suspects.csv``: ``suspects`` holds only the first of them).
        note: A pass whose ``advice`` is something to do, not a limit (a stored order grouped
            by class that the study reshuffles): shown as a note, in the terminal too.
    """

    name: str
    status: str
    evidence: str
    advice: str
    budget: str
    seconds: float = 0.0
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    figure: Mapping[str, Any] | None = None
    carry: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    listing: Sequence[Mapping[str, Any]] = dataclasses.field(default=(), repr=False)
    note: bool = False

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")


def worst(results: Sequence[CheckResult]) -> str:
    """``fail`` if any check failed, else ``warn`` if any warned, else ``pass``."""
    return max((r.status for r in results), key=STATUSES.index, default="pass")


@dataclasses.dataclass(frozen=True, eq=False)
class DoctorInputs:
    """The user's data, model and hyperparameters, as a study would train them.

    Attributes:
        data: The train/validation split on the training device, standardized with the
            training split's statistics (:func:`study.training.load_dataset`).
        hparams: The configured width, lr, batch size, weight decay, penalty mode, optimizer...
        model: A built-in model name or a factory spec.
        init: ``torch``, ``glorot`` or ``he``.
        depth: Blocks per stage of the ResNets (``None`` otherwise).
        seed: Seeds every model and every draw of the checks.
        train_names: How the user names each training sample: its row in their file, or the
            image's path; same order as ``data.x_train`` (default: ``data.origin``'s names,
            else the positions). ``given_split`` and ``non_finite_*`` default to
            ``data.origin``'s too.
        val_names: The same for the validation split.
        given_split: The split is the user's own (``npz`` with ``x_train, ...``, or an image
            folder with ``train/`` and ``val/``), not one made by the study.
        non_finite_train: Positions in ``data.x_train`` of samples that held NaN or inf
            (set to 0 so the other checks can run; a study refuses such data).
        non_finite_val: The same for the validation split.
    """

    data: TensorData
    hparams: HParams
    model: str = "cnn"
    init: str = "torch"
    depth: int | None = None
    seed: int = 0
    train_names: Sequence[str] = ()
    val_names: Sequence[str] = ()
    given_split: bool = False
    non_finite_train: tuple[int, ...] = ()
    non_finite_val: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        # What is not given comes from the loader's record of the data, else the positions.
        origin = self.data.origin
        if not self.train_names:
            names = origin.train_names if origin else map(str, range(self.data.n_train))
            object.__setattr__(self, "train_names", tuple(names))
        if not self.val_names:
            names = origin.val_names if origin else map(str, range(self.data.n_val))
            object.__setattr__(self, "val_names", tuple(names))
        if origin is not None:
            object.__setattr__(self, "given_split", self.given_split or origin.given_split)
            for name in ("non_finite_train", "non_finite_val"):
                if not getattr(self, name):
                    object.__setattr__(self, name, getattr(origin, name))

    def trainer(self, *, epochs: int, data: TensorData | None = None,
                hparams: HParams | None = None, seed: int | None = None,
                **overrides: Any) -> Trainer:
        """A :class:`Trainer` of this model (or another data, hyperparameters or seed) with the
        gap measurement off (the checks do not read it)."""
        return Trainer(hparams or self.hparams, data or self.data, model_name=self.model,
                       init=self.init, depth=self.depth, epochs=epochs,
                       seed=self.seed if seed is None else seed, measure_gap=False,
                       **overrides)

    def with_labels(self, y_train: torch.Tensor | np.ndarray, *,
                    x_train: torch.Tensor | None = None) -> TensorData:
        """The same data with other training labels (and optionally inputs), e.g. shuffled."""
        d = self.data
        y = torch.as_tensor(y_train, dtype=torch.int64, device=d.y_train.device)
        return dataclasses.replace(d, y_train=y,
                                   x_train=d.x_train if x_train is None else x_train)


def training_lr(inputs: DoctorInputs, found: Mapping[str, CheckResult]) -> float:
    """The learning rate of the checks' short trainings: the range test's suggestion when it
    ran, else the configured one. A configured lr far too high is the ``lr`` check's finding;
    the other checks must not fail because of it."""
    result = found.get("lr")
    suggested = result.details.get("suggested_lr") if result is not None else None
    return float(suggested) if suggested else float(inputs.hparams.lr)


def short_epochs(epochs: int, inputs: DoctorInputs) -> int:
    """``epochs`` of a short training sized on digits, stretched for a training split with
    fewer batches an epoch so that it takes as many steps (never fewer epochs)."""
    per_epoch = max(math.ceil(inputs.data.n_train / max(inputs.hparams.batch_size, 1)), 1)
    return max(epochs, math.ceil(epochs * SIZED_STEPS_PER_EPOCH / per_epoch))
