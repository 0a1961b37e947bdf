"""Simulated studies whose true size effects are known, shaped like measured ones.

The shapes come from real trials (digits, the ``cnn``, Adam; ``../shared/PHENOMENON.md`` and a
300-trial sweep of widths 2-64, lr 1e-5-1e-2, weight decays 1e-5-3e-2), not from the analysis's
own model:

- parameter counts and ``||w0||^2`` are those of the real architecture at each width:
  ``||w0||^2`` of PyTorch's default initialization has mean ``sum(numel / fan_in) / 3`` and the
  variance of a sum of squared uniforms, so small models carry a few percent of seed noise;
- the data loss at initialization is ``ln 10``-like, falls 0.015 per decade of parameters with a
  little curvature, and varies by 0.02 nats between seeds (heavy-tailed, t with 6 df);
- over the first epoch it falls with lr (logistic in log10 lr) and with size, the size effect
  growing with lr from -0.05 to -0.6 per decade; the decay slows the fit a little; the noise
  peaks at lr near 1e-3 (0.18 nats) and is heavy-tailed;
- ``||w||^2`` over the first epoch stays at ``||w0||^2`` at small lr and grows at large lr
  (shrunk by the decay), with multiplicative noise;
- small models' weights grow a little more over the first epoch at large lr, so ``||w||^2`` is
  not exactly linear in width there (the analysis assumes it is);
- the data-loss noise correlates with the ``||w||^2`` noise, by a correlation drawn per study
  from -0.6 to +0.3 (measured on 8 real 12-trial studies: -0.48 to +0.41, mean -0.17);
- the penalty is exactly ``wd * ||w||^2`` in ``l2-in-loss`` and 0 otherwise; trials that share a
  training seed (``study explain``'s pairs) share their initial weights and part of their noise.

:func:`simulate` returns a trial table the analysis reads and the :class:`Truth` to compare with.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize

from study.analysis.table import TABLE_COLUMNS

__all__ = ["REPLICATE_SCENARIO", "SCENARIOS", "Scenario", "Truth", "simulate"]

_T_DF = 6  # heavy tails of the trial noise


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A kind of study: its design (``random`` like a space-filling sampler, or ``paired``:
    ``study explain``'s width grid x replicates, each paired with a ``none`` control)."""

    name: str
    n_trials: int
    widths: tuple[int, int]
    lr: tuple[float, float]
    weight_decay: tuple[float, float]
    batch_sizes: tuple[int, ...] = (32, 64, 128)
    modes: tuple[str, ...] = ("l2-in-loss",)
    design: str = "random"
    replicates: int = 2


SCENARIOS = (
    Scenario("default study", 30, (4, 32), (1e-4, 1e-2), (1e-5, 1e-2)),
    Scenario("small lr, weight decays spread", 30, (2, 64), (1e-5, 1e-5), (1e-5, 3e-2), (64,)),
    Scenario("two modes", 40, (2, 64), (1e-4, 1e-3), (1e-5, 1e-2),
             modes=("l2-in-loss", "none")),
    Scenario("explain, strong penalty", 6, (2, 64), (1e-5, 1e-5), (1e-2, 1e-2), (64,),
             design="paired"),
    Scenario("explain, weak penalty", 6, (2, 64), (1e-5, 1e-5), (1e-5, 1e-5), (64,),
             design="paired"),
    Scenario("explain, lr 1e-3", 6, (2, 64), (1e-3, 1e-3), (1e-3, 1e-3), (64,),
             design="paired", replicates=3),
)
# Replicates of one setting (issue 21's: digits, l2-in-loss, wd 1e-2, lr 1e-5, widths 2-64, 12
# random trials): every replicate estimates the same truth between the same compared widths.
REPLICATE_SCENARIO = Scenario("replicates, wd 1e-2, lr 1e-5", 12, (2, 64), (1e-5, 1e-5),
                              (1e-2, 1e-2))


@functools.cache
def _architecture(width: int) -> tuple[int, float, float]:
    """``(n_params, E||w0||^2, Var||w0||^2)`` of the ``cnn`` on 8x8 digits at ``width``."""
    from study.training import KERNEL_MODULES, build_model, count_parameters

    model = build_model("cnn", width=width, in_channels=1, n_classes=10, input_size=(8, 8))
    mean = var = 0.0
    for module in model.modules():
        if isinstance(module, KERNEL_MODULES):
            numel = module.weight.numel()
            bound2 = 1.0 / (numel / module.weight.shape[0])  # U(-b, b), b^2 = 1 / fan_in
            mean += numel * bound2 / 3
            var += numel * bound2**2 * (1 / 5 - 1 / 9)
    return count_parameters(model), mean, var


def _g(llr: float) -> float:
    """How fast bigger models lower the data loss over the first epoch, by log10 lr."""
    return 0.015 + 0.75 / (1 + math.exp(-(llr + 3.0) * 1.5))


def _fall(llr: float) -> float:
    """How far the data loss falls over the first epoch at the median size, by log10 lr."""
    return 1.0 / (1 + math.exp(-(llr + 2.7) * 1.6))


def _growth(llr: float) -> float:
    """How much ||w||^2 moves over the first epoch, by log10 lr (0 below 1e-3)."""
    return 1.0 / (1 + math.exp(-(llr + 2.6) * 3.0))


def _drift(width: int) -> float:
    """How much ||w||^2 grows (log) over the first epoch at large lr: more in small models."""
    return 0.35 + 0.05 * (4 - math.log10(_architecture(width)[0]))


def _decay(mode: str, weight_decay: float) -> float:
    """The L2 coefficient acting on the gradient (l2-in-loss's wd equals coupled's 2 wd)."""
    return {"l2-in-loss": weight_decay, "coupled": weight_decay / 2,
            "decoupled": weight_decay / 4}.get(mode, 0.0)


@dataclasses.dataclass(frozen=True)
class Truth:
    """The noise-free functions behind a simulated study."""

    def data_loss(self, question: str, width: int, lr: float, batch_size: int,
                  weight_decay: float, mode: str) -> float:
        x = math.log10(_architecture(width)[0]) - 4
        lbs = math.log10(batch_size / 64)
        base = 2.41 - 0.0147 * x - 0.0078 * lbs + 0.004 * x**2
        if question == "init":
            return base
        llr, g = math.log10(lr), _g(math.log10(lr))
        decay = _decay(mode, weight_decay)
        return (base - _fall(llr) - g * x + 0.02 * g * x**2 + 0.25 * g * lbs
                + 2 * decay * g * (1 + 0.5 * x))

    def weight_sq_norm(self, question: str, width: int, lr: float, weight_decay: float,
                       mode: str) -> float:
        """The expected ||w||^2 (at init, or averaged over the first epoch)."""
        mean = _architecture(width)[1]
        if question == "init":
            return mean
        m = _growth(math.log10(lr))
        sd = 0.002 + 0.3 * m
        return mean * math.exp(_drift(width) * m - 15 * _decay(mode, weight_decay) * m
                               + sd**2 / 2)

    def effects(self, question: str, *, widths: tuple[int, int], lr: float, batch_size: int,
                weight_decay: float, mode: str) -> dict[str, float]:
        """True size effects per decade between the two widths (smallest, largest model)."""
        span = math.log10(_architecture(widths[1])[0] / _architecture(widths[0])[0])
        data = [self.data_loss(question, w, lr, batch_size, weight_decay, mode) for w in widths]
        penalty = [weight_decay * self.weight_sq_norm(question, w, lr, weight_decay, mode)
                   if mode == "l2-in-loss" else 0.0 for w in widths]
        d, p = (data[1] - data[0]) / span, (penalty[1] - penalty[0]) / span
        return {"total": d + p, "data": d, "penalty": p}

    def threshold(self, question: str, *, widths: tuple[int, int], lr: float,
                  batch_size: int) -> float | None:
        """The weight decay where the total's effect turns positive in l2-in-loss, if any in
        1e-7..10."""
        def total(log_wd: float) -> float:
            return self.effects(question, widths=widths, lr=lr, batch_size=batch_size,
                                weight_decay=10**log_wd, mode="l2-in-loss")["total"]

        if total(-7) > 0 or total(1) <= 0:
            return None
        return float(10 ** optimize.brentq(total, -7, 1, xtol=1e-9))


def simulate(scenario: Scenario, seed: int) -> pd.DataFrame:
    """One simulated study: a trial table with every column the analysis reads."""
    rng = np.random.default_rng(seed)
    truth = Truth()
    rows = []
    rho = float(rng.uniform(-0.6, 0.3))
    for design in _designs(scenario, rng):
        rows += _trials(truth, design, rng, rho)
    table = pd.DataFrame(rows)
    for column in TABLE_COLUMNS:
        if column not in table:
            table[column] = None
    table["number"] = np.arange(len(table))
    return table


def _designs(scenario: Scenario, rng: np.random.Generator) -> list[dict[str, Any]]:
    """One entry per training seed: the hyperparameters and the modes trained with it."""
    def log_uniform(bounds: tuple[float, float], size: int | None = None) -> Any:
        return 10 ** rng.uniform(math.log10(bounds[0]), math.log10(bounds[1]), size)

    if scenario.design == "paired":
        grid = np.unique(np.round(np.geomspace(*scenario.widths, scenario.n_trials)).astype(int))
        return [{"width": int(w), "lr": scenario.lr[0], "batch_size": scenario.batch_sizes[0],
                 "weight_decay": scenario.weight_decay[0], "modes": ("l2-in-loss", "none"),
                 "seed": int(rng.integers(2**31))}
                for w in grid for _ in range(scenario.replicates)]
    widths = np.round(log_uniform((scenario.widths[0] - 0.5, scenario.widths[1] + 0.5),
                                  scenario.n_trials)).astype(int)
    return [{"width": int(np.clip(w, *scenario.widths)), "lr": float(log_uniform(scenario.lr)),
             "batch_size": int(rng.choice(scenario.batch_sizes)),
             "weight_decay": float(log_uniform(scenario.weight_decay)),
             "modes": (str(rng.choice(scenario.modes)),), "seed": int(rng.integers(2**31))}
            for w in widths]


def _noise(rng: np.random.Generator, sd: float) -> float:
    return sd * float(rng.standard_t(_T_DF)) / math.sqrt(_T_DF / (_T_DF - 2))


def _trials(truth: Truth, d: dict[str, Any], rng: np.random.Generator,
            rho: float) -> list[dict[str, Any]]:
    """The trials of one training seed: the same initial weights, partly shared noise; the
    data noise correlates with the weight-norm noise by ``rho``."""
    width, lr, bs, wd = d["width"], d["lr"], d["batch_size"], d["weight_decay"]
    n_params, w_mean, w_var = _architecture(width)
    small = 1 + 0.5 * math.exp(-(math.log10(n_params) - 2.5))  # small models are noisier
    z_w = float(rng.standard_normal())
    w0 = max(w_mean + math.sqrt(w_var) * z_w, 1e-6)
    mixed = rho * z_w + math.sqrt(1 - rho**2) * _noise(rng, 1.0)
    init_data = truth.data_loss("init", width, lr, bs, wd, "none") + 0.0225 * small * mixed
    llr = math.log10(lr)
    sd = (0.04 + 0.14 * math.exp(-((llr + 3.3) / 0.7) ** 2)) * small
    shared = _noise(rng, sd)
    out = []
    for mode in d["modes"]:
        m = _growth(llr)
        w_sd = 0.002 + 0.3 * m
        z_e = float(rng.standard_normal())
        w_early = w0 * math.exp(_drift(width) * m - 15 * _decay(mode, wd) * m + w_sd * z_e)
        own = rho * z_e + math.sqrt(1 - rho**2) * _noise(rng, 1.0)
        early_data = (truth.data_loss("early", width, lr, bs, wd, mode)
                      + math.sqrt(0.7) * shared + math.sqrt(0.3) * sd * own)
        penalized = mode == "l2-in-loss"
        init_pen, early_pen = (wd * w0, wd * w_early) if penalized else (0.0, 0.0)
        out.append({
            "state": "COMPLETE", "width": width, "lr": lr, "batch_size": bs,
            "weight_decay": wd, "penalty_mode": mode, "n_params": n_params,
            "train_seed": d["seed"], "init_loss": init_data + init_pen,
            "init_data_loss": init_data, "init_penalty": init_pen, "init_weight_sq_norm": w0,
            "early_loss": early_data + early_pen, "early_data_loss": early_data,
            "early_penalty": early_pen,
        })
    return out
