"""Do the labels carry the signal, and which training labels look wrong?

Two measurements on the training split, both with short trainings of the user's model at the
checks' learning rate (:func:`~study.doctor.base.training_lr`) or a tenth of it, whichever
gives the real labels the lower validation loss:

* **Signal.** One training on the real labels and one on a seeded permutation of them, both
  scored on the validation split. Real labels must beat shuffled ones by a clear margin in
  accuracy (three binomial standard errors) and in loss; when they do not, the inputs and the
  labels are not aligned (a shuffled ``y``, a wrong column, images sorted apart from their
  labels) or the task has no learnable signal at all.
* **Suspects.** Out-of-fold predicted probabilities (stratified k-fold over the training split)
  go through confident learning (Northcutt et al. 2021, cleanlab's ``find_label_issues``): a
  sample whose probability of its own label lies below what that class usually gets, while
  another class clears its own threshold, is a suspect. Their share estimates the fraction of
  mislabeled training samples; they are listed most suspicious first (lowest self-confidence).
  Each fold's probabilities are averaged over its last epochs, which steadies them at a high
  learning rate. Skipped when the signal is missing (every label would be a suspect).

Limits: a short training is not a converged one. A model that has not learned the task yet
blames its own mistakes on the labels, so the estimate is an upper bound that grows as the model
weakens (the evidence states the out-of-fold accuracy it rests on). Confident learning sees
labels that contradict the inputs; a systematic mislabeling (every 1 called 7) that the model
learns as the task, and noise in the validation labels, stay invisible here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from study.doctor.base import CheckResult, DoctorInputs, short_epochs, training_lr
from study.errors import NonFiniteLossError
from study.training.reports import EpochReport
from study.training.specs import HParams

__all__ = ["FAIL_FRACTION", "FOLDS", "WARN_FRACTION", "check_labels"]

# Short trainings: 6 epochs tell real from shuffled labels (validation accuracy 92-99% against
# ~10% on digits); the folds train 12 and average the held-out probabilities of the last 6
# (a snapshot ensemble). At the range test's ~1e-2 the last epoch alone swings enough that the
# top suspects of 10% flipped labels were half clean samples; averaged, 97-100% are flipped.
# A smaller training split trains as many steps, not epochs (base.short_epochs).
SIGNAL_EPOCHS = 6
FOLD_EPOCHS = 12
AVERAGED = 6
# The checks of the model itself, and of the validation split the labels are scored on: when
# one fails, a short training's verdict on the labels is that failure seen again (a validation
# split scaled apart from training is learned worse than shuffled labels' chance), so it
# cannot fail the labels.
UPSTREAM = ("preprocessing", "init", "overfit-one-batch")
# 3 folds: each model sees 2/3 of the training split, at 60% of 5 folds' cost.
FOLDS = 3
# The rates tried on the real labels, as factors of training_lr (the lowest validation loss
# wins): the range test's steepest descent sits about a decade above a safe constant rate,
# and for small_net (no BatchNorm; suggestion 0.03-0.31 on digits) it trained no better than
# chance at lr 0.19 with 10% flipped labels, which read as "labels carry no signal".
LR_FACTORS = (1.0, 0.1)
# Real labels must beat shuffled ones by 3 standard errors of the accuracy difference.
Z_SIGNAL = 3.0
# Suspects / training samples, digits seeds 0-2, the built-in cnn at lr 1e-3 and at the range
# test's rate: clean 0.0-0.1%, 10% flipped 8.6-9.7%, 20% flipped 18.0-20.4% (precision of the
# top half 0.98-1.00). small_net at a rate that trains it (0.02-0.03): clean 0.8-2.3%.
# 4% leaves clean data a margin; 12% sits between 10% and 20% flipped.
WARN_FRACTION = 0.04
FAIL_FRACTION = 0.12
# Above this out-of-fold error outside the suspects the model has not learned the task well
# enough to tell its mistakes from wrong labels, and a high share only warns. The built-in cnn
# with 20% flipped labels: 4-10%; small_net at lr 1e-3 (far too low) on clean digits: 29-34%,
# where it flags 21% of the samples.
RESIDUAL_MAX = 0.2
# Wrong training labels leave validation (labelled apart) nearly as learnable as before: with
# 20% flipped the cnn still errs on 4% of validation against 18-20% suspects. A model that errs
# on validation more than half as often as it flags training labels may be flagging its own
# mistakes (small_net at width 8 on clean digits: 40% against 12%), so a high share only warns.
WEAK_SHARE = 0.5
# The list of names in details; the count and fraction cover all of them, and the result's
# listing (labels_suspects.csv) every one.
MAX_LISTED = 100
_EVAL_CHUNK = 1024


def check_labels(inputs: DoctorInputs, found: Mapping[str, CheckResult]) -> CheckResult:
    """Compare real with shuffled labels, then list the likely mislabeled training samples.

    Fails when real labels are not clearly learned better than shuffled ones, or when the
    suspects exceed :data:`FAIL_FRACTION` of the training split (unless the model's own errors
    outside the suspects exceed :data:`RESIDUAL_MAX`, its validation error exceeds
    :data:`WEAK_SHARE` of the suspects' share, or a check of the model itself
    (:data:`UPSTREAM`) failed: then it warns); warns above :data:`WARN_FRACTION`; passes
    otherwise.
    """
    base_lr = training_lr(inputs, found)
    signal_epochs, fold_epochs = short_epochs(SIGNAL_EPOCHS, inputs), short_epochs(FOLD_EPOCHS,
                                                                                  inputs)
    budget = (f"{len(LR_FACTORS) + 1} x {signal_epochs} epochs + {FOLDS} folds x "
              f"{fold_epochs} epochs")
    real, lr = _best_real(inputs, base_lr, epochs=signal_epochs)
    if real is None:
        return CheckResult(
            "labels", "warn", evidence=f"every short training diverged (lr {base_lr:.2g} and "
                                       f"below): the labels could not be judged",
            advice="fix the learning rate (see the lr check) and rerun", budget=budget,
            details={"lr": base_lr})
    hp = dataclasses.replace(inputs.hparams, lr=lr)
    try:
        signal = _signal(inputs, hp, real, epochs=signal_epochs)
        # Accuracy decides: a validation split scaled apart from training inflates the loss of
        # a model that still classifies it far above chance.
        learned = signal["signal_z"] >= Z_SIGNAL
        curves = signal.pop("curves")
        suspects = _suspects(inputs, hp) if learned else _no_suspects(inputs)
    except NonFiniteLossError as exc:
        return CheckResult(
            "labels", "warn", evidence=f"a short training at lr {lr:.2g} diverged ({exc})",
            advice="the labels could not be judged; fix the learning rate (see the lr check) "
                   "and rerun", budget=budget, details={"lr": lr})
    figure = {"kind": "labels", "self_confidence": suspects.pop("self_confidence_hist"),
              "bins": suspects.pop("bins")}
    carry = {"suspect_positions": suspects.pop("positions"),
             "oof_probs": suspects.pop("oof_probs")}
    listing = suspects.pop("table", [])
    details = {"lr": lr, "base_lr": base_lr, "signal_epochs": signal_epochs,
               "fold_epochs": fold_epochs, "learned": learned,
               **signal, **suspects}
    status, evidence, advice = _after_upstream(_verdict(details), found)
    if not learned:  # no suspects searched: the figure shows why
        budget = f"{len(LR_FACTORS) + 1} x {signal_epochs} epochs"
        figure = {"kind": "labels-signal", **curves}
    return CheckResult("labels", status, evidence, advice, f"{budget} at lr {lr:.2g}",
                       details=details, figure=figure, carry=carry, listing=listing)


def _best_real(inputs: DoctorInputs, base_lr: float, *,
               epochs: int) -> tuple[list[EpochReport] | None, float]:
    """Train on the real labels at each candidate rate; the history and rate of the lowest
    validation loss (``None`` when every one diverged)."""
    best: tuple[float, list[EpochReport] | None, float] = (math.inf, None, base_lr)
    for factor in LR_FACTORS:
        lr = base_lr * factor
        try:
            history = inputs.trainer(epochs=epochs,
                                     hparams=dataclasses.replace(inputs.hparams, lr=lr)).fit()
        except NonFiniteLossError:
            continue
        loss = min(r.val_loss for r in history)
        if loss < best[0]:
            best = (loss, history, lr)
    return best[1], best[2]


def _signal(inputs: DoctorInputs, hp: HParams, real: list[EpochReport], *,
            epochs: int) -> dict[str, Any]:
    """Validation accuracy and loss after training on the real and on shuffled labels."""
    y = inputs.data.y_train
    g = torch.Generator().manual_seed(inputs.seed)
    perm = torch.randperm(len(y), generator=g).to(y.device)
    shuffled = inputs.trainer(epochs=epochs, hparams=hp,
                              data=inputs.with_labels(y[perm])).fit()
    # The best epoch of each: a training that learned, then diverged at a high lr, still
    # shows the signal; both get the same selection, which lifts shuffled labels by little.
    a = max(r.val_accuracy for r in real)
    b = max(r.val_accuracy for r in shuffled)
    n = inputs.data.n_val
    # The SE of a difference of two accuracies on n samples; 0.5/sqrt(n) at least, so a
    # perfect (or zero) accuracy does not shrink it to 0.
    se = max(math.sqrt((a * (1 - a) + b * (1 - b)) / n), 0.5 / math.sqrt(n))
    return {"real_val_accuracy": a, "shuffled_val_accuracy": b,
            "real_val_loss": min(r.val_loss for r in real),
            "shuffled_val_loss": min(r.val_loss for r in shuffled), "accuracy_se": se,
            "signal_z": (a - b) / se,
            "curves": {"real": [r.val_accuracy for r in real],
                       "shuffled": [r.val_accuracy for r in shuffled]}}


def _suspects(inputs: DoctorInputs, hp: HParams) -> dict[str, Any]:
    """Out-of-fold probabilities and the samples confident learning flags."""
    from cleanlab.filter import find_label_issues
    from sklearn.model_selection import StratifiedKFold

    y = inputs.data.y_train.cpu().numpy()
    n, k = len(y), inputs.data.n_classes
    counts = np.bincount(y, minlength=k)
    folds = int(min(FOLDS, counts[counts > 0].min()))
    probs = np.full((n, k), 1.0 / k)
    positions = np.zeros(0, dtype=np.int64)
    if folds >= 2:
        splitter = StratifiedKFold(folds, shuffle=True, random_state=inputs.seed)
        for i, (fit, held) in enumerate(splitter.split(np.zeros(n), y)):
            probs[held] = _fold_probs(inputs, hp, fit, held, seed=inputs.seed + 1 + i)
        present = counts > 0  # cleanlab needs every column it is given to hold a label
        remap = np.cumsum(present) - 1
        sub = probs[:, present] / probs[:, present].sum(axis=1, keepdims=True)
        positions = np.asarray(find_label_issues(
            remap[y], sub, return_indices_ranked_by="self_confidence", n_jobs=1),
            dtype=np.int64)
    self_conf = probs[np.arange(n), y]
    hist, bins = np.histogram(self_conf, bins=20, range=(0.0, 1.0))
    table = [{"rank": rank, "sample": str(inputs.train_names[i]), "label": int(y[i]),
              "predicted": int(probs[i].argmax()), "self_confidence": float(self_conf[i])}
             for rank, i in enumerate(positions, 1)]
    listed = table[:MAX_LISTED]  # details keep the first, the table (labels_suspects.csv) all
    return {"table": table, "folds": folds, "n_suspects": len(positions),
            "suspect_fraction": float(len(positions) / max(n, 1)),
            "oof_accuracy": float(np.mean(probs.argmax(axis=1) == y)),
            "residual_error": _residual_error(probs, y, positions),
            "suspects": [row["sample"] for row in listed],
            "suspect_labels": [row["label"] for row in listed],
            "suspect_predicted": [row["predicted"] for row in listed],
            "self_confidence_hist": hist.tolist(), "bins": [float(b) for b in bins],
            "positions": positions, "oof_probs": probs if folds >= 2 else None}


def _no_suspects(inputs: DoctorInputs) -> dict[str, Any]:
    """The suspects' fields when they were not searched."""
    return {"folds": 0, "n_suspects": 0, "suspect_fraction": 0.0, "oof_accuracy": None,
            "residual_error": None, "suspects": [], "suspect_labels": [],
            "suspect_predicted": [], "self_confidence_hist": [], "bins": [],
            "positions": np.zeros(0, dtype=np.int64), "oof_probs": None}


def _residual_error(probs: np.ndarray, y: np.ndarray, positions: np.ndarray) -> float:
    """The out-of-fold error rate outside the suspects: the model's own mistakes."""
    rest = np.ones(len(y), dtype=bool)
    rest[positions] = False
    return float(np.mean(probs[rest].argmax(axis=1) != y[rest])) if rest.any() else 0.0


def _fold_probs(inputs: DoctorInputs, hp: HParams, fit: np.ndarray, held: np.ndarray, *,
                seed: int) -> np.ndarray:
    """Train on the ``fit`` rows; return the ``held`` rows' softmax probabilities averaged over
    the last :data:`AVERAGED` epochs (a snapshot ensemble: steadier than the last epoch's)."""
    d = inputs.data
    fit_t = torch.as_tensor(fit, device=d.x_train.device)
    held_t = torch.as_tensor(held, device=d.x_train.device)
    data = dataclasses.replace(d, x_train=d.x_train[fit_t], y_train=d.y_train[fit_t],
                               x_val=d.x_train[held_t], y_val=d.y_train[held_t])
    total = np.zeros((data.n_val, d.n_classes))
    epochs, averaged = short_epochs(FOLD_EPOCHS, inputs), short_epochs(AVERAGED, inputs)
    trainer = inputs.trainer(epochs=epochs, data=data, hparams=hp, seed=seed)

    def snapshot(report: EpochReport) -> None:
        if report.epoch > epochs - averaged:
            total[:] += _probs(trainer.model, data.x_val)

    trainer.callbacks.append(snapshot)
    trainer.fit()
    return total / averaged


def _probs(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """Softmax probabilities of ``x`` in eval mode (the model is put back in train mode)."""
    model.eval()
    out = []
    with torch.inference_mode():
        for lo in range(0, len(x), _EVAL_CHUNK):
            logits = model(x[lo:lo + _EVAL_CHUNK]).float()
            out.append(torch.softmax(logits, dim=1).cpu().numpy())
    model.train()
    return np.concatenate(out).astype(np.float64)


def _after_upstream(verdict: tuple[str, str, str],
                    found: Mapping[str, CheckResult]) -> tuple[str, str, str]:
    """A failure becomes a warning while a check of the model itself (:data:`UPSTREAM`) fails:
    a model that cannot train blames its own mistakes on the labels, so the model's fault is
    the finding and the labels' verdict waits for its fix."""
    status, evidence, _ = verdict
    upstream = [n for n in UPSTREAM if n in found and found[n].status == "fail"]
    if status != "fail" or not upstream:
        return verdict
    named = " and ".join(upstream)
    return ("warn", f"not conclusive while {named} fails: {evidence}",
            f"fix what {named} found first, then run the doctor again")


def _verdict(d: Mapping[str, Any]) -> tuple[str, str, str]:
    """Status, evidence and advice from the signal and suspect figures."""
    signal = (f"val accuracy {d['real_val_accuracy']:.1%} on real labels vs "
              f"{d['shuffled_val_accuracy']:.1%} shuffled (z={d['signal_z']:.1f}), loss "
              f"{d['real_val_loss']:.2f} vs {d['shuffled_val_loss']:.2f}")
    if not d["learned"]:
        return ("fail", f"{signal}; suspects not searched", "the model learns real labels no "
                "better than shuffled ones: check that x and y are aligned (same order, right "
                "label column)")
    if d["folds"] < 2:
        return ("warn", f"{signal}; a class has {d['folds']} training samples", "no "
                "out-of-fold probabilities with a class this small: suspects not searched")
    evidence = (f"{signal}; {d['n_suspects']} suspects ({d['suspect_fraction']:.1%} of "
                f"training) at {d['oof_accuracy']:.1%} out-of-fold accuracy")
    val_error = 1 - d["real_val_accuracy"]
    weak = (d["residual_error"] > RESIDUAL_MAX
            or val_error > WEAK_SHARE * d["suspect_fraction"])
    if d["suspect_fraction"] > FAIL_FRACTION and weak:
        return ("warn", f"{evidence}, {d['residual_error']:.1%} errors outside them, "
                        f"{val_error:.1%} on validation",
                "the short-trained model errs often itself, so the suspects mix its own "
                "mistakes with wrong labels: review the top ones, then rerun once it trains")
    if d["suspect_fraction"] > FAIL_FRACTION:
        return ("fail", evidence, "many labels contradict the inputs: review the suspects "
                "(labels_suspects.csv, most suspicious first) and relabel or drop the wrong "
                "ones")
    if d["suspect_fraction"] > WARN_FRACTION:
        return ("warn", evidence, "review the suspects (labels_suspects.csv, most "
                "suspicious first); a few % mislabeled slows training and caps accuracy")
    return ("pass", evidence, "does not rule out systematic mislabeling the model learns as "
            "the task, nor noise in the validation labels")
