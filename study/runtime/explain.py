"""``study explain``: a controlled experiment that answers the question for one setting.

Everything but the size is fixed (lr, batch size, weight decay, penalty mode); the widths lie on
a log grid, each trained with ``replicates`` seeds, and each trial is paired with a control:
the same width and seed under penalty mode ``none``. Paired trials start from the same weights
and see the same batches, so their difference is the penalty's doing; the analysis clusters
them by seed. The trials are enqueued in Optuna and run by the ordinary session (one nested
MLflow run each, like any study's), so nothing here trains or logs by itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from study.config import StudyConfig
from study.errors import ConfigError
from study.keys import TRAIN_SEED_ATTR
from study.training import PenaltyMode

__all__ = ["CELL_ATTR", "CONTROL_MODE", "ExplainDesign", "QueuedTrial", "explain_config",
           "width_grid"]

CELL_ATTR = "explain_cell"
CONTROL_MODE = PenaltyMode.NONE.value


@dataclasses.dataclass(frozen=True)
class QueuedTrial:
    """A trial to enqueue: its searched params and its user attrs (training seed, cell)."""

    params: dict[str, Any]
    user_attrs: dict[str, Any]

    @property
    def cell(self) -> str:
        return str(self.user_attrs[CELL_ATTR])


@dataclasses.dataclass(frozen=True)
class ExplainDesign:
    """Widths x replicates, each under ``mode`` and (unless ``mode`` is ``none``) its control."""

    widths: tuple[int, ...]
    replicates: int
    mode: str
    seed: int

    @property
    def modes(self) -> tuple[str, ...]:
        return (self.mode,) if self.mode == CONTROL_MODE else (self.mode, CONTROL_MODE)

    def trials(self) -> list[QueuedTrial]:
        """Every trial of the design, each pair sharing one training seed."""
        out = []
        for replicate in range(self.replicates):
            for width in self.widths:
                seed = int(np.random.SeedSequence([self.seed, 1, replicate, width])
                           .generate_state(1)[0])
                for mode in self.modes:
                    params = {"width": width, **({"penalty_mode": mode}
                                                 if len(self.modes) > 1 else {})}
                    out.append(QueuedTrial(params, {
                        TRAIN_SEED_ATTR: seed, CELL_ATTR: f"w{width}-r{replicate}-{mode}"}))
        return out


def width_grid(width_min: int, width_max: int, n_widths: int) -> tuple[int, ...]:
    """``n_widths`` widths evenly spaced on a log scale (rounded, distinct).

    Raises:
        ConfigError: Fewer than 3 widths, or a range that holds fewer distinct integers.
    """
    if isinstance(n_widths, bool) or not isinstance(n_widths, int) or n_widths < 3:
        raise ConfigError(f"`n_widths` must be an integer >= 3 (a size effect needs a range), "
                          f"but got n_widths={n_widths!r}.")
    if width_max < width_min or width_max - width_min + 1 < n_widths:
        raise ConfigError(f"`n_widths` must fit between width_min={width_min} and "
                          f"width_max={width_max} ({max(width_max - width_min + 1, 0)} distinct "
                          f"widths), but got n_widths={n_widths}.")
    grid = np.geomspace(width_min, width_max, n_widths)
    widths = sorted({round(float(w)) for w in grid})
    while len(widths) < n_widths:  # rounding merged neighbours at the small end: spread them
        widths = sorted(set(widths) | {next(w for w in range(width_min, width_max + 1)
                                            if w not in widths)})
    return tuple(widths)


def explain_config(base: StudyConfig, *, lr: float, batch_size: int, weight_decay: float,
                   design: ExplainDesign) -> StudyConfig:
    """The study configuration of a design: every dimension fixed but width (and the mode
    against its control), no pruning (every trial must finish its early window), a budget of
    exactly the design's trials."""
    return base.replace(
        lr_min=lr, lr_max=lr, batch_sizes=(batch_size,), weight_decay_min=weight_decay,
        weight_decay_max=weight_decay, penalty_mode=design.modes,
        width_min=min(design.widths), width_max=max(design.widths), pruner="none",
        sampler="random", n_trials=len(design.trials()),
    )


def missing(trials: Sequence[QueuedTrial], existing: Sequence[Mapping[str, Any]]
            ) -> list[QueuedTrial]:
    """The trials whose cell no existing trial (user attrs ``existing``) holds yet."""
    have = {attrs.get(CELL_ATTR) for attrs in existing}
    return [t for t in trials if t.cell not in have]
