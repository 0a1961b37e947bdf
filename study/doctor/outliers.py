"""Samples that do not belong: non-finite values, inputs far outside the data, extreme losses.

Three measurements:

* **Non-finite values.** Samples that held NaN or inf (the loader set them to 0 and listed
  them); any fails, since a study refuses such data.
* **Input outliers.** Each sample's mean, std and largest absolute value, as robust z-scores
  over its own split (median and MAD): a corrupted image (noise, a constant, a wrong scale)
  lies tens of MADs away, while the most unusual clean digit lies within
  :data:`INPUT_Z` of it.
* **Extreme losses.** After a short training on the training split, each training sample's
  loss in eval mode. Extreme means both far above the others (a robust z-score of the
  log-loss above :data:`LOSS_Z`) and wrong (the loss above ``ln K``: the model gives the
  sample's label less than chance). Samples the ``labels`` check questions (its suspects, or
  samples its held-out models assign to another class) are explained by their label and
  reported apart, so mislabeled samples alone do not make this check warn.

Limits: a corrupted sample that looks statistically ordinary (a swapped but plausible image)
and that the model fits anyway is not found; a short training's losses also single out hard,
rare samples, which is why only confidently wrong ones count.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from study.doctor.base import CheckResult, DoctorInputs, short_epochs, training_lr
from study.doctor.labels import LR_FACTORS
from study.errors import NonFiniteLossError

__all__ = ["EPOCHS", "INPUT_Z", "LOSS_Z", "MAX_UNEXPLAINED_FRACTION", "MIN_UNEXPLAINED",
           "check_outliers", "input_scores"]

# 6 epochs: the built-in cnn fits clean digits to ~97% validation accuracy at lr 1e-3; at the
# range test's ~1e-2 it already fits most training samples (median loss < 0.01). A smaller
# training split trains as many steps (base.short_epochs).
EPOCHS = 6
# Input outliers: on clean digits (seeds 0-2) the largest robust z of a sample's mean, std or
# max |x| is 3.3 in training and 2.5-2.9 in validation; a sample of noise x20 scores 590-730,
# a constant 50 480-500.
INPUT_Z = 10.0
# The MAD is floored at a tenth of a training SD: digits' max |x| is the same for most samples
# (MAD 0), which would make any other value "infinitely" unusual.
MAD_FLOOR = 0.1
# Extreme loss: a robust z of the log-loss above 3 and a loss above ln K (the model gives the
# label less than chance). Clean digits: 0-3 such samples of 1437 at lr 1e-3, none at 1e-2;
# 5 planted wrong labels: losses 2.1-5.2 (z 3.5-5.9) at lr 1e-3 against at most 2.4 for the rest.
LOSS_Z = 3.0
LOSS_FLOOR_NATS = 1.0
# Unexplained extreme-loss samples allowed before warning: 0.5% of training (clean digits shows
# at most 2-3 of 1437, 0.2%) and at least 3 (a few hard samples are normal in any dataset).
MAX_UNEXPLAINED_FRACTION = 0.005
MIN_UNEXPLAINED = 3
MAX_LISTED = 100
_EVAL_CHUNK = 1024


def input_scores(x: torch.Tensor) -> np.ndarray:
    """Each sample's largest robust z-score among its mean, std and max |x| over the split.

    Args:
        x: Inputs ``(N, C, ...)``.

    Returns:
        ``(N,)`` float64 scores (0 for a split of one sample).
    """
    if x.shape[0] < 2:
        return np.zeros(x.shape[0])
    a = x.detach().reshape(x.shape[0], -1)  # reduced on its device: no float64 copy
    feats = torch.stack([a.mean(dim=1), a.std(dim=1, correction=0), a.abs().amax(dim=1)],
                        dim=1).double().cpu().numpy()
    med = np.median(feats, axis=0)
    mad = 1.4826 * np.median(np.abs(feats - med), axis=0)
    return (np.abs(feats - med) / np.maximum(mad, MAD_FLOOR)).max(axis=1)


def _losses(inputs: DoctorInputs, found: Mapping[str, CheckResult], *,
            epochs: int) -> tuple[np.ndarray, float, int]:
    """Each training sample's loss (eval mode) after a short training on the training split,
    the rate it trained at and the number of trainings.

    The rate is the labels check's when it ran (it kept the better of two), else the better of
    :data:`~study.doctor.labels.LR_FACTORS` times ``training_lr`` by final validation loss:
    at small_net's suggested 0.31 on digits a short training leaves 8% of the samples above
    ln K, which are the model's failures, not outliers."""
    labels = found.get("labels")
    chosen = labels.details.get("lr") if labels is not None else None
    base = training_lr(inputs, found)
    rates = [float(chosen)] if chosen else [base * f for f in LR_FACTORS]
    best: tuple[float, Any, float] = (math.inf, None, rates[0])
    for lr in rates:
        trainer = inputs.trainer(epochs=epochs, hparams=dataclasses.replace(inputs.hparams, lr=lr))
        try:
            loss = trainer.fit()[-1].val_loss
        except NonFiniteLossError:
            continue
        if loss < best[0]:
            best = (loss, trainer.model, lr)
    if best[1] is None:
        raise NonFiniteLossError(f"every short training diverged (lr {rates[0]:.2g} and below)")
    model = best[1].eval()
    x, y = inputs.data.x_train, inputs.data.y_train
    out = []
    with torch.inference_mode():
        for lo in range(0, len(y), _EVAL_CHUNK):
            logits = model(x[lo:lo + _EVAL_CHUNK]).float()
            out.append(F.cross_entropy(logits, y[lo:lo + _EVAL_CHUNK], reduction="none").cpu())
    return torch.cat(out).double().numpy(), best[2], len(rates)


def _extreme(losses: np.ndarray, n_classes: int) -> np.ndarray:
    """Positions of the extreme losses, most extreme first."""
    if len(losses) < 2:
        return np.zeros(0, dtype=np.int64)
    log = np.log(np.maximum(losses, 1e-12))
    med = np.median(log)
    mad = max(1.4826 * float(np.median(np.abs(log - med))), 1e-6)
    floor = LOSS_FLOOR_NATS * math.log(max(n_classes, 2))
    hits = np.flatnonzero(((log - med) / mad > LOSS_Z) & (losses > floor))
    return hits[np.argsort(-losses[hits], kind="stable")]


def _explained_by_label(labels: CheckResult | None, y: np.ndarray) -> set[int]:
    """Training positions whose label the ``labels`` check questions: its suspects, and the
    samples its held-out models assign to another class (cleanlab names only the share it
    estimates as wrong: 22 of 30 planted wrong labels on digits, while 29 of them had extreme
    losses here)."""
    if labels is None:
        return set()
    explained = {int(i) for i in labels.carry.get("suspect_positions", ())}
    probs = labels.carry.get("oof_probs")
    if probs is not None and len(probs) == len(y):
        explained |= {int(i) for i in np.flatnonzero(np.argmax(probs, axis=1) != y)}
    return explained


def _names(names: Sequence[str], positions: Sequence[int] | np.ndarray) -> list[str]:
    return [str(names[int(i)]) for i in list(positions)[:MAX_LISTED]]


def check_outliers(inputs: DoctorInputs, found: Mapping[str, CheckResult]) -> CheckResult:
    """Find non-finite samples, input outliers and unexplained extreme losses.

    Fails on any non-finite sample; warns on any input outlier or when unexplained extreme
    losses exceed :data:`MAX_UNEXPLAINED_FRACTION` of training (and :data:`MIN_UNEXPLAINED`);
    passes otherwise. ``details["suspects"]`` lists training samples: the non-finite ones, then
    input outliers and unexplained extreme losses, each most extreme first.
    """
    d, epochs = inputs.data, short_epochs(EPOCHS, inputs)
    z_train, z_val = input_scores(d.x_train), input_scores(d.x_val)
    far_train = np.flatnonzero(z_train > INPUT_Z)
    far_train = far_train[np.argsort(-z_train[far_train], kind="stable")]
    far_val = np.flatnonzero(z_val > INPUT_Z)
    far_val = far_val[np.argsort(-z_val[far_val], kind="stable")]
    explained = _explained_by_label(found.get("labels"), d.y_train.cpu().numpy())
    try:
        losses, lr, runs = _losses(inputs, found, epochs=epochs)
        extreme = _extreme(losses, d.n_classes)
        trained = True
    except NonFiniteLossError:
        lr, runs = training_lr(inputs, found), len(LR_FACTORS)
        losses, extreme, trained = np.zeros(d.n_train), np.zeros(0, dtype=np.int64), False
    far_set = set(far_train.tolist())
    by_label = [int(i) for i in extreme if int(i) in explained and int(i) not in far_set]
    unexplained = [int(i) for i in extreme if int(i) not in explained and int(i) not in far_set]
    details = {
        "non_finite_train": _names(inputs.train_names, inputs.non_finite_train),
        "non_finite_val": _names(inputs.val_names, inputs.non_finite_val),
        "input_outliers_train": _names(inputs.train_names, far_train),
        "input_outliers_val": _names(inputs.val_names, far_val),
        "n_input_outliers_train": len(far_train), "n_input_outliers_val": len(far_val),
        "input_z_max_train": float(z_train.max(initial=0.0)),
        "input_z_max_val": float(z_val.max(initial=0.0)),
        "extreme_loss": _names(inputs.train_names, unexplained),
        "extreme_loss_explained_by_label": _names(inputs.train_names, by_label),
        "n_extreme_loss": len(unexplained), "n_explained_by_label": len(by_label),
        "loss_floor": LOSS_FLOOR_NATS * math.log(max(d.n_classes, 2)),
        "median_loss": float(np.median(losses)) if trained else None,
        "trained": trained, "lr": lr, "epochs": epochs,
        "suspects": _names(inputs.train_names, list(dict.fromkeys(
            [*inputs.non_finite_train, *far_train.tolist(), *unexplained])))}
    status, evidence, advice = _verdict(inputs, details, n_train=d.n_train)
    budget = f"{runs} x {epochs} epochs, kept lr {lr:.2g}"
    figure = {"kind": "outliers", "loss_sorted": sorted(float(v) for v in losses)[::-1][:200],
              "loss_floor": details["loss_floor"]} if trained else None
    flagged = [(inputs.train_names, "train", "non-finite", inputs.non_finite_train),
               (inputs.val_names, "val", "non-finite", inputs.non_finite_val),
               (inputs.train_names, "train", "input outlier", far_train),
               (inputs.val_names, "val", "input outlier", far_val),
               (inputs.train_names, "train", "extreme loss", unexplained),
               (inputs.train_names, "train", "extreme loss, suspect label", by_label)]
    listing = _listing(flagged, z={"train": z_train, "val": z_val},
                       losses=losses if trained else None)
    return CheckResult("outliers", status, evidence, advice, budget, details=details,
                       figure=figure, carry={"losses": losses, "input_z": z_train},
                       listing=listing)


def _listing(flagged: Sequence[tuple[Sequence[str], str, str, Sequence[int] | np.ndarray]], *,
             z: Mapping[str, np.ndarray], losses: np.ndarray | None) -> list[dict[str, Any]]:
    """Every flagged sample, one row each in the order of ``flagged`` (outliers_suspects.csv):
    its split, why, its input's robust z and, for training samples after a short training, its
    loss. A sample flagged twice is listed once, under its first reason."""
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, int]] = set()  # a zeroed non-finite row may also score as an outlier
    for names, split, reason, positions in flagged:
        for i in (int(p) for p in positions):
            if (split, i) in seen:
                continue
            seen.add((split, i))
            loss = float(losses[i]) if losses is not None and split == "train" else None
            score = float(z[split][i])
            rows.append({"rank": len(rows) + 1, "sample": str(names[i]), "split": split,
                         "reason": reason, "input_z": score if math.isfinite(score) else None,
                         "loss": loss})
    return rows


def _verdict(inputs: DoctorInputs, d: Mapping[str, Any], *,
             n_train: int) -> tuple[str, str, str]:
    """Status, evidence and advice of the outliers check."""
    n_nf = len(inputs.non_finite_train) + len(inputs.non_finite_val)
    n_far = d["n_input_outliers_train"] + d["n_input_outliers_val"]
    evidence = (f"{_count(n_nf, 'sample')} with NaN/inf; {_count(n_far, 'input')} beyond "
                f"{INPUT_Z:g} robust z "
                f"(max {d['input_z_max_train']:.1f} train, {d['input_z_max_val']:.1f} val); "
                f"{d['n_extreme_loss']} unexplained loss{'es' * (d['n_extreme_loss'] != 1)} > "
                f"{d['loss_floor']:.1f} nats "
                f"(+{d['n_explained_by_label']} explained by their labels)")
    if not d["trained"]:
        evidence += f"; the short training at lr {d['lr']:.2g} diverged, losses not measured"
    if n_nf:
        return ("fail", evidence, "remove or repair the samples holding NaN/inf (listed in "
                "outliers_suspects.csv); a study refuses them")
    if n_far or d["n_extreme_loss"] > max(MAX_UNEXPLAINED_FRACTION * n_train, MIN_UNEXPLAINED):
        return ("warn", evidence, "look at the listed samples (outliers_suspects.csv, most "
                "extreme first): corrupted or mis-scaled inputs should be repaired or dropped")
    return ("pass", evidence, "does not rule out corrupted samples that look ordinary and "
            "that the model fits anyway")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"
