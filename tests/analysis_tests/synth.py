"""Synthetic trial tables with known early-loss effects (no training, no stores).

The truth, per trial (``lp = log10(n_params)``, ``llr = log10(lr)``)::

    early_data_loss = 1 + data_size * lp + size_x_lr * lp * (llr - LR_REF)
                      + data_lr * (llr - LR_REF) + data_bs * (log10(batch) - BS_REF) + noise
    early_penalty   = penalty_size * lp + noise          (clipped at 0 when penalty_floor)
    early_loss      = early_data_loss + early_penalty    (exactly)

so the size effect on the data loss at lr is ``data_size + size_x_lr * (llr - LR_REF)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from study.analysis.table import TABLE_COLUMNS

LR_REF = -3.0
BS_REF = float(np.log10(64))


def data_effect_at(llr: float, *, data_size: float, size_x_lr: float) -> float:
    """The true size effect on the data loss per decade at ``log10(lr) = llr``."""
    return data_size + size_x_lr * (llr - LR_REF)


def synthetic_table(
    n: int, *, seed: int = 0, data_size: float = 0.0, size_x_lr: float = 0.0,
    data_lr: float = -0.2, data_bs: float = 0.05, penalty_size: float = 0.0,
    noise: float = 0.02, penalty_noise: float = 0.005, log10_lr: Sequence[float] | None = None,
    log10_n_params: Sequence[float] | None = None, lr_range: tuple[float, float] = (-4, -2),
    size_range: tuple[float, float] = (3.5, 5.5), batch_sizes: Sequence[int] = (32, 64, 128),
    weight_decay_range: tuple[float, float] = (-5, -2), modes: Sequence[str] = ("l2-in-loss",),
    mode_shift: dict[str, float] | None = None,
) -> pd.DataFrame:
    """A trial table of ``n`` COMPLETE trials with the effects above."""
    rng = np.random.default_rng(seed)
    llr = np.asarray(log10_lr, dtype=float) if log10_lr is not None \
        else rng.uniform(*lr_range, n)
    lp_raw = np.asarray(log10_n_params, dtype=float) if log10_n_params is not None \
        else rng.uniform(*size_range, n)
    n_params = np.round(10.0 ** lp_raw).astype(int)
    lp = np.log10(n_params)
    batch = rng.choice(np.asarray(batch_sizes), n)
    decay = 10.0 ** rng.uniform(*weight_decay_range, n)
    mode = rng.choice(np.asarray(modes), n)
    shift = np.array([(mode_shift or {}).get(m, 0.0) for m in mode])
    data = (1.0 + data_size * lp + size_x_lr * lp * (llr - LR_REF) + data_lr * (llr - LR_REF)
            + data_bs * (np.log10(batch) - BS_REF) + shift + rng.normal(0, noise, n))
    penalty = penalty_size * lp + rng.normal(0, penalty_noise, n)
    return pd.DataFrame({
        "number": np.arange(n), "state": "COMPLETE",
        "width": np.round(np.sqrt(n_params / 50)).astype(int), "lr": 10.0 ** llr,
        "batch_size": batch, "weight_decay": decay, "penalty_mode": mode, "n_params": n_params,
        "early_loss": data + penalty, "early_data_loss": data, "early_penalty": penalty,
        "final_val_loss": data * 0.5, "final_val_accuracy": 0.9, "value": data * 0.5,
        "mlflow_run_id": [f"run{i}" for i in range(n)], "curve": None,
    }, columns=list(TABLE_COLUMNS))
