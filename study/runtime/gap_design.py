"""``study explain --question gap``: why does validation lag training, and does a setting change it?

The design crosses the values given to ``--optimizer``, ``--bn-momentum`` and ``--dropout`` (and
``--momentum``, for the SGD cells only: Adam and AdamW ignore it), everything else fixed: one
width, one learning rate, batch size, weight decay and penalty mode. Each cell runs
``replicates`` times; every cell of a replicate shares one training seed, so the settings start
from the same weights and see the same batches (dropout adds no weights), and what differs
between them is the setting's doing. Like the size design (:mod:`study.runtime.explain`), the
trials are enqueued in Optuna with their cell as a user attr, and a resumed design enqueues only
the cells it lacks.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import numpy as np

from study._choices import search_spec
from study._validation import fail
from study.config import StudyConfig
from study.errors import ConfigError
from study.keys import TRAIN_SEED_ATTR
from study.runtime.explain import CELL_ATTR, QueuedTrial

__all__ = ["MAX_GAP_TRIALS", "GapCell", "GapDesign", "check_replicates", "gap_config"]

# 48 trials hold the seed question's cross (adam and sgd, momentum 0.5 and 0.9, two BatchNorm
# momenta, two dropout rates: 12 cells) at 4 replicates, about 3 minutes of 6-epoch trials of a
# width-8 vgg on digits on 2 CPU cores (16 took 54 s); a bigger cross is a `study run` search.
MAX_GAP_TRIALS = 48


@dataclasses.dataclass(frozen=True)
class GapCell:
    """One setting of the cross; numbers are the config's canonical strings.

    Attributes:
        optimizer: adam, sgd or adamw.
        momentum: SGD's momentum; ``None`` for the other optimizers, which ignore it.
        bn_momentum: BatchNorm momentum (PyTorch's convention).
        dropout: Dropout rate.
    """

    optimizer: str
    momentum: str | None
    bn_momentum: str
    dropout: str

    @property
    def name(self) -> str:
        """The cell's id, e.g. ``sgd-m0.9-bn0.01-do0.5``."""
        momentum = f"-m{float(self.momentum):g}" if self.momentum is not None else ""
        return (f"{self.optimizer}{momentum}-bn{float(self.bn_momentum):g}"
                f"-do{float(self.dropout):g}")


@dataclasses.dataclass(frozen=True)
class GapDesign:
    """The cross of the training options, times ``replicates`` paired seeds."""

    optimizers: tuple[str, ...]
    momenta: tuple[str, ...]
    bn_momenta: tuple[str, ...]
    dropouts: tuple[str, ...]
    replicates: int
    seed: int

    @classmethod
    def from_config(cls, config: StudyConfig, *, replicates: int) -> GapDesign:
        """The design of ``config``'s values, checked.

        Raises:
            ConfigError: A range, several momenta without SGD, a bad replicate count, or more
                than :data:`MAX_GAP_TRIALS` trials.
        """
        check_replicates(replicates)
        for field in ("momentum", "bn_momentum", "dropout"):
            values = getattr(config, field)
            if search_spec(values)[0] == "range":
                fail(field, ",".join(values), "values for `study explain --question gap` (the "
                     "design crosses them; a range is for `study run`)")
        if len(config.momentum) > 1 and "sgd" not in config.optimizer:
            fail("momentum", ",".join(config.momentum), "a single value when sgd is not among "
                 f"the optimizers (optimizer={','.join(config.optimizer)!r} ignores it)")
        design = cls(tuple(config.optimizer), tuple(config.momentum), tuple(config.bn_momentum),
                     tuple(config.dropout), replicates, config.seed)
        n_cells = len(design.cells())
        if n_cells * replicates > MAX_GAP_TRIALS:
            raise ConfigError(
                f"The gap design must have at most {MAX_GAP_TRIALS} trials (settings x "
                f"replicates), but got {n_cells} settings x {replicates} replicates = "
                f"{n_cells * replicates} trials; give fewer values or replicates.")
        return design

    def cells(self) -> list[GapCell]:
        """Every setting: optimizer x (momentum, SGD only) x BatchNorm momentum x dropout."""
        out = []
        for optimizer in self.optimizers:
            momenta: tuple[str | None, ...] = self.momenta if optimizer == "sgd" else (None,)
            for momentum, bn, dropout in itertools.product(momenta, self.bn_momenta,
                                                           self.dropouts):
                out.append(GapCell(optimizer, momentum, bn, dropout))
        return out

    def seed_of(self, replicate: int) -> int:
        """The training seed every cell of ``replicate`` shares."""
        return int(np.random.SeedSequence([self.seed, 2, replicate]).generate_state(1)[0])

    def params(self, cell: GapCell) -> dict[str, Any]:
        """The Optuna params that fix ``cell``: the searched options only (a single value is
        fixed by the config, and momentum is suggested for SGD trials only)."""
        params: dict[str, Any] = {}
        if len(self.optimizers) > 1:
            params["optimizer"] = cell.optimizer
        if cell.momentum is not None and len(self.momenta) > 1:
            params["momentum"] = float(cell.momentum)
        if len(self.bn_momenta) > 1:
            params["bn_momentum"] = float(cell.bn_momentum)
        if len(self.dropouts) > 1:
            params["dropout"] = float(cell.dropout)
        return params

    def trials(self) -> list[QueuedTrial]:
        """Every trial of the design, replicate by replicate."""
        return [QueuedTrial(self.params(cell), {TRAIN_SEED_ATTR: self.seed_of(replicate),
                                                CELL_ATTR: f"{cell.name}-r{replicate}"})
                for replicate in range(self.replicates) for cell in self.cells()]


def check_replicates(replicates: Any) -> None:
    """Refuse a replicate count that is not an integer >= 1."""
    if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 1:
        raise ConfigError(f"`replicates` must be an integer >= 1, but got "
                          f"replicates={replicates!r}.")


def gap_config(base: StudyConfig, *, width: int, lr: float, batch_size: int,
               weight_decay: float, design: GapDesign) -> StudyConfig:
    """The study configuration of a design: one width, lr, batch size and weight decay, the
    crossed options as categories, no pruning (every trial runs all its epochs: the gap's
    closing is read at the last ones), a budget of exactly the design's trials."""
    return base.replace(
        width_min=width, width_max=width, lr_min=lr, lr_max=lr, batch_sizes=(batch_size,),
        weight_decay_min=weight_decay, weight_decay_max=weight_decay,
        optimizer=design.optimizers, momentum=design.momenta, bn_momentum=design.bn_momenta,
        dropout=design.dropouts, pruner="none", sampler="random",
        n_trials=len(design.trials()),
    )
