"""Simulated studies whose gap parts are known: per trial a training run at the level of its
batches, measured the way the trainer measures it, with the truth worked out from the
generative model rather than from :func:`~study.analysis.gap.gap_block`.

The generative model, per trial (its own draws of every rate and amplitude):

- the excess training loss decays exponentially per step, ``l(t) = f + (l0 - f) exp(-r t)``,
  with a per-trial rate ``r`` (log-normal); each batch's loss is ``l(t)`` plus sampling noise of
  ``batch_size`` examples, and ``data_loss`` D is the mean of an epoch's batch losses, taken
  before each step's update, so the weights improve over the epoch it averages;
- dropout (train mode only) raises the loss by ``delta(t) = c * 0.4 * p / (1 - p) * (l(t) +
  0.2)``, ``p / (1 - p)`` being the variance of dropout's mask multiplier;
- BatchNorm's running statistics start at (0, 1) and move by ``momentum`` per step, so the
  weight still on the initial values after t steps is ``(1 - momentum)^t``; they also trail the
  drifting batch statistics by about ``0.05 r (l(t) - f) / momentum``, and their exponential
  average keeps a variance of ``momentum / ((2 - momentum) batch_size)``; eval mode adds
  ``A * (error^2 + that variance)`` nats (log-normal ``A``), squared because a normalization
  off by a small error costs second order;
- the generalization part grows from 0 as the square of the fraction of training done, to a
  per-trial ``G`` at the last epoch;
- T, E (and M, eval-mode BatchNorm with dropout still on, for the split) are measured on a
  fixed training subset, V on the validation set; each measurement has a per-trial error of
  the examples' spread over sqrt(examples), and the subset and the validation set, the same
  for every trial of a study, each shift their losses by a relative offset drawn once per data
  split (``split_seed``);
- a ``prune`` share of trials stops after a random epoch, whatever its losses.

The truth of an epoch is the expectation over trials, given the study's data split (its two
offsets): closed forms for each trial's noise-free values, averaged over 400,000 draws of the
trials' rates and amplitudes (Monte Carlo error 1/sqrt(400,000), 0.16%, of the trials' spread).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import numpy as np

from study.analysis.gap import GapTrial
from study.analysis.gap_stats import threshold
from study.analysis.gap_text import CARRIER_CODES

__all__ = ["GAP_SCENARIOS", "GapScenario", "GapTruth", "simulate_gap", "true_parts"]

# Per-example spread of cross-entropy, relative to its mean, split between what is shared
# by every model (the examples' difficulty) and what is each trial's own.
_SHARED_SPREAD = 0.7
_OWN_SPREAD = 0.7
_TRUTH_DRAWS = 400_000  # Monte Carlo error: 0.16% of the trials' spread of any part
_TRUTH_CHUNK = 50_000
_DROPOUT_SCALE = 0.4  # assumed: dropout 0.5 raises the train-mode loss by about 40%
_DROPOUT_BASE = 0.2  # dropout still costs something at a loss near 0
_BN_LAG = 0.05  # how far the running statistics trail the drifting batch statistics
_SUBSET_CAP = 4096  # study.training.gap.GAP_SAMPLES (not imported: it would load torch)


@dataclasses.dataclass(frozen=True)
class GapScenario:
    """A kind of study: data, batch size, the model's layers, how fast it learns.

    Defaults: digits (1,797 examples, a fifth held out), batch 32 (45 steps per epoch),
    cross-entropy from ln 10 toward 0.1. ``bn_momentum`` is PyTorch's convention (Keras's 0.99
    is 0.01 here); ``None``: no BatchNorm.
    """

    name: str
    true_code: str
    bn_momentum: float | None = None
    dropout: float = 0.0
    n_trials: int = 16
    epochs: int = 8
    n_train: int = 1437
    n_val: int = 360
    batch_size: int = 32
    loss_start: float = 2.3
    loss_floor: float = 0.1
    rate: float = 0.03
    bn_error: float = 2.0
    overfit: float = 0.05
    prune: float = 0.25

    @property
    def steps(self) -> int:
        """Steps per epoch."""
        return math.ceil(self.n_train / self.batch_size)

    @property
    def subset(self) -> int:
        """The training subset T and E are measured on: as many examples as the validation
        split, at most 4,096 (``study.training.gap``'s rule)."""
        return min(self.n_val, _SUBSET_CAP, self.n_train)


# What each truth looks like at epoch 1 (digits-sized unless said): Keras's momentum leaves
# 0.99^45 = 64% of the initial statistics after one epoch, so eval mode is ~1 nat worse and the
# lag closes around epoch 5-6; PyTorch's leaves 0.9^45 < 1%, and the large negative timing of
# a fast first epoch is left; dropout 0.5 on a slow learner; overfitting that grows to 0.8
# nats by epoch 8 on 300 examples (early, timing still dominates); a model near its floor on a
# large dataset, whose gap stays within the threshold.
GAP_SCENARIOS = (
    GapScenario("keras batchnorm", "normalization-statistics", bn_momentum=0.01),
    GapScenario("pytorch batchnorm", "epoch-averaging", bn_momentum=0.1),
    GapScenario("keras batchnorm and dropout", "normalization-statistics", bn_momentum=0.01,
                dropout=0.2, rate=0.02, bn_error=3.0),
    GapScenario("dropout", "dropout", dropout=0.5, rate=0.005),
    GapScenario("overfitting late", "epoch-averaging", n_train=300, n_val=200, rate=0.05,
                overfit=0.8),
    GapScenario("no gap", "none", n_train=20_000, n_val=5_000, batch_size=128,
                loss_start=0.5, loss_floor=0.45, rate=0.002, overfit=0.003),
)


@dataclasses.dataclass(frozen=True)
class GapTruth:
    """The expected parts of one simulated study, per epoch (index 0 is epoch 1).

    Attributes:
        epochs: ``{name: array}`` for ``train_data_loss``, ``val_loss``, ``gap``, ``timing``,
            ``mode``, ``mode_batchnorm``, ``mode_dropout``, ``generalization``, ``lag``.
        parts: The parts a carrier is chosen from.
    """

    epochs: dict[str, np.ndarray]
    parts: tuple[str, ...]

    def carrier(self, epoch: int) -> str | None:
        """The part with the largest contribution in the gap's direction, where the gap
        exceeds the threshold (what the carrier rule would find with unlimited trials)."""
        i = epoch - 1
        gap = self.epochs["gap"][i]
        if abs(gap) <= threshold(self.epochs["train_data_loss"][i]):
            return None
        return max(self.parts, key=lambda p: math.copysign(1, gap) * self.epochs[p][i])

    def code(self, epoch: int = 1) -> str:
        """The verdict code the truth gives at ``epoch``."""
        return CARRIER_CODES.get(self.carrier(epoch) or "", "none")

    def closes_at(self) -> int | None:
        """The first epoch from which the lag stays at or below the threshold."""
        within = np.asarray(self.epochs["lag"]) <= np.array(
            [threshold(d) for d in self.epochs["train_data_loss"]])
        for i in range(len(within)):
            if within[i:].all():
                return i + 1
        return None


def simulate_gap(scenario: GapScenario, seed: int, *, split_seed: int | None = None
                 ) -> tuple[list[GapTrial], GapTruth]:
    """One simulated study: its trials, and the truth given its data split.

    Args:
        scenario: The kind of study.
        seed: Seeds the trials.
        split_seed: Seeds the data split's offsets (default ``seed``); replicate studies of one
            setting on one dataset share it.
    """
    offsets = _offsets(scenario, seed if split_seed is None else split_seed)
    rng = np.random.default_rng(seed)
    trials = [_trial(scenario, _draw(scenario, rng, 1), offsets, rng)
              for _ in range(scenario.n_trials)]
    return trials, true_parts(scenario, offsets)


def true_parts(scenario: GapScenario, offsets: tuple[float, float] = (0.0, 0.0)) -> GapTruth:
    """The expected parts per epoch given the split's relative offsets (subset, validation)."""
    base = _expected(scenario)
    s, v = 1 + offsets[0], 1 + offsets[1]
    out = {"train_data_loss": base["lbar"] + base["dbar"],
           "timing": s * (base["l"] + base["d"]) - (base["lbar"] + base["dbar"]),
           "mode_batchnorm": s * base["bn"], "mode_dropout": -s * base["d"],
           "generalization": v * (base["l"] + base["bn"] + base["g"]) - s * (base["l"]
                                                                               + base["bn"])}
    out["mode"] = out["mode_batchnorm"] + out["mode_dropout"]
    out["val_loss"] = v * (base["l"] + base["bn"] + base["g"])
    out["gap"] = out["val_loss"] - out["train_data_loss"]
    out["lag"] = out["timing"] + out["mode"]
    present = [k for k, on in (("mode_batchnorm", scenario.bn_momentum is not None),
                               ("mode_dropout", scenario.dropout > 0)) if on] or ["mode"]
    return GapTruth(out, ("timing", *present, "generalization"))


@functools.cache
def _expected(scenario: GapScenario) -> dict[str, np.ndarray]:
    """Each noise-free per-trial value, averaged over many draws of the trials' parameters
    (in chunks, to keep the memory small)."""
    rng = np.random.default_rng(2024)
    epochs = np.arange(1, scenario.epochs + 1)
    total: dict[str, np.ndarray] = {}
    for _ in range(_TRUTH_DRAWS // _TRUTH_CHUNK):
        values = _noise_free(scenario, _draw(scenario, rng, _TRUTH_CHUNK), epochs)
        for key, value in values.items():
            total[key] = total.get(key, 0.0) + value.sum(axis=0)
    return {k: v / _TRUTH_DRAWS for k, v in total.items()}


def _draw(scenario: GapScenario, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Per-trial rates and amplitudes (columns of length ``n``)."""
    z = rng.standard_normal((6, n))
    return {"r": scenario.rate * np.exp(0.25 * z[0]),
            "l0": scenario.loss_start + 0.05 * z[1],
            "f": scenario.loss_floor * np.exp(0.2 * z[2]),
            "a": scenario.bn_error * np.exp(0.3 * z[3]),
            "c": np.exp(0.2 * z[4]),
            "g": scenario.overfit * np.exp(0.4 * z[5])}


def _loss(theta: dict[str, np.ndarray], t: np.ndarray) -> np.ndarray:
    """``l(t)`` for every trial (rows) at every step in ``t`` (columns)."""
    r, f = theta["r"][:, None], theta["f"][:, None]
    return f + (theta["l0"][:, None] - f) * np.exp(-r * t[None, :])


def _dropout(scenario: GapScenario, theta: dict[str, np.ndarray], loss: np.ndarray
             ) -> np.ndarray:
    p = scenario.dropout
    return theta["c"][:, None] * _DROPOUT_SCALE * p / (1 - p) * (loss + _DROPOUT_BASE)


def _batchnorm(scenario: GapScenario, theta: dict[str, np.ndarray], t: np.ndarray,
               loss: np.ndarray) -> np.ndarray:
    m = scenario.bn_momentum
    if m is None:
        return np.zeros_like(loss)
    error = (1 - m) ** t[None, :] + _BN_LAG * theta["r"][:, None] * (
        loss - theta["f"][:, None]) / m
    jitter = m / ((2 - m) * scenario.batch_size)
    return theta["a"][:, None] * (error**2 + jitter)


def _noise_free(scenario: GapScenario, theta: dict[str, np.ndarray], epochs: np.ndarray
                ) -> dict[str, np.ndarray]:
    """Per trial and epoch: l and delta at the epoch's end, their means over its steps, the
    BatchNorm and generalization parts (closed forms of the step sums)."""
    steps = scenario.steps
    end = epochs * steps
    loss = _loss(theta, end.astype(float))
    r, f = theta["r"][:, None], theta["f"][:, None]
    start = (theta["l0"][:, None] - f) * np.exp(-r * (end - steps)[None, :])
    lbar = f + start * (1 - np.exp(-r * steps)) / (steps * (1 - np.exp(-r)))
    done = (end / (scenario.epochs * steps))[None, :]
    return {"l": loss, "d": _dropout(scenario, theta, loss), "lbar": lbar,
            "dbar": _dropout(scenario, theta, lbar),
            "bn": _batchnorm(scenario, theta, end.astype(float), loss),
            "g": theta["g"][:, None] * done**2}


def _offsets(scenario: GapScenario, split_seed: int) -> tuple[float, float]:
    """The relative shifts of the training subset's and the validation set's losses."""
    z = np.random.default_rng([split_seed, 7]).standard_normal(2)
    # The subset is drawn from the training split, whose mean D is about: finite population.
    unseen = 1 - scenario.subset / scenario.n_train
    return (float(z[0]) * _SHARED_SPREAD * math.sqrt(unseen / scenario.subset),
            float(z[1]) * _SHARED_SPREAD / math.sqrt(scenario.n_val))


def _trial(scenario: GapScenario, theta: dict[str, np.ndarray], offsets: tuple[float, float],
           rng: np.random.Generator) -> GapTrial:
    """One trial's records, its parts measured as the trainer does."""
    k, steps, bs = scenario.epochs, scenario.steps, scenario.batch_size
    t = np.arange(k * steps, dtype=float)
    batch = _loss(theta, t) + _dropout(scenario, theta, _loss(theta, t))
    batch = batch + _OWN_SPREAD * batch / math.sqrt(bs) * rng.standard_normal(batch.shape)
    data = batch.reshape(k, steps).mean(axis=1)
    v = _noise_free(scenario, theta, np.arange(1, k + 1))
    loss, d, bn, g = (v[key][0] for key in ("l", "d", "bn", "g"))
    s, val = 1 + offsets[0], 1 + offsets[1]
    own = _OWN_SPREAD / math.sqrt(scenario.subset)
    z = rng.standard_normal((5, k))
    shared = own * loss * z[0]  # this trial's errors on the subset, in both modes
    T = s * (loss + d) + shared + own * d * z[1]
    M = s * (loss + bn + d) + shared + own * d * z[2] + own * bn * z[3]
    E = s * (loss + bn) + shared + own * bn * z[3]
    V = val * (loss + bn + g) * (1 + _OWN_SPREAD / math.sqrt(scenario.n_val) * z[4])
    last = k if rng.random() >= scenario.prune else int(rng.integers(1, k))
    both = scenario.bn_momentum is not None and scenario.dropout > 0
    curve = [_record(i + 1, data[i], T[i], M[i], E[i], V[i], both) for i in range(last)]
    return GapTrial(curve, has_batchnorm=scenario.bn_momentum is not None,
                    has_dropout=scenario.dropout > 0)


def _record(epoch: int, D: float, T: float, M: float, E: float, V: float,
            split: bool) -> dict[str, Any]:
    """The curve record the trainer logs (SPEC section 10)."""
    record = {"epoch": epoch, "loss": float(D), "data_loss": float(D), "penalty": 0.0,
              "val_loss": float(V), "val_accuracy": None, "gap_timing": float(T - D),
              "gap_mode": float(E - T), "gap_generalization": float(V - E)}
    if split:
        record.update(gap_mode_batchnorm=float(M - T), gap_mode_dropout=float(E - M))
    return record
