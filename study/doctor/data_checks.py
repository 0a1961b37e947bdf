"""Checks of the data alone, without training: preprocessing, duplicates and shuffling.

* ``preprocessing`` compares the training and validation inputs channel by channel: the pixel
  statistics (mean, std, min, max), and robustly, the distribution of each sample's own mean
  and std as standardized mean differences (Cohen's d with its standard error). A split scaled
  or normalized differently shows as a std ratio far from 1 or a large d. Limits: only first
  and second moments per channel are compared; a shift in content (other classes, other
  scanners) with the same moments passes.
* ``duplicates`` hashes each sample's bytes: identical samples in both splits (validation then
  measures memorization) and identical training samples with different labels (conflicts).
  Limits: exact copies only; a resized, re-encoded or slightly cropped copy is not found.
* ``shuffling`` reproduces the order in which the study's trainer visits the training split
  (each epoch's ``torch.randperm`` from the seeded generator) and measures how classes mix
  within its batches against random orders; it also reports whether the stored order is
  grouped by class, which matters to a training loop of the user's own, not to the study's,
  which reshuffles every epoch. Limits: label order only; an order correlated with something
  else (acquisition date, source) is not seen.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from study.doctor.base import CheckResult, DoctorInputs
from study.training.trainer import epoch_orders

__all__ = ["check_duplicates", "check_preprocessing", "check_shuffling", "order_mixing"]

# preprocessing. On clean digits (random stratified splits, seeds 0-4) the validation std is
# 0.99-1.01x training's, the means differ by <= 0.012 training SDs and Cohen's d of the
# per-sample means and stds stays within 0.15 (standard error 0.06).
# Fail: a std 1.5x off (either way) or means half a training SD apart change what the model
# sees; so does d > 2 (the splits' per-sample statistics barely overlap; validation x1.2 gives
# 3.0, +0.2 SD gives 2.2). Each needs its d at Z_MIN standard errors, so a tiny validation
# split cannot fail by chance.
STD_RATIO_FAIL = 1.5
SHIFT_FAIL = 0.5
D_FAIL = 2.0
# Warn: a difference no random split shows: d > 0.35 (clean digits <= 0.15; x1.05 gives 0.76,
# +0.05 SD 0.54), a std 1.2x off or means 0.2 SD apart.
STD_RATIO_WARN = 1.2
SHIFT_WARN = 0.2
D_WARN = 0.35
Z_MIN = 4.0
# Per-sample points of each split in the preprocessing figure (and doctor.json).
_FIGURE_POINTS = 1000
# duplicates: conflicting labels on more than 1% of the training samples, or copies of training
# samples making up more than 5% of the validation split, bias what is learned or measured.
CONFLICT_FAIL = 0.01
LEAK_FAIL = 0.05
MAX_LISTED = 100
# shuffling: distinct classes per batch against a random order's. Random orders of digits give
# a ratio of 0.99-1.01; a stored order grouped by class gives 0.1-0.2 at batch size 64.
MIX_FAIL = 0.7
MIX_WARN = 0.9
_RANDOM_DRAWS = 20
_HASH_CHUNK = 4096


def _channel_stats(x: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-channel pixel statistics and per-sample channel means and stds (float64, cpu).

    Reduced per sample on the data's device: no float64 copy of the whole split."""
    a = x.detach().reshape(x.shape[0], x.shape[1], -1)
    mean = a.mean(dim=2).double().cpu().numpy()
    sq = a.square().mean(dim=2).double().cpu().numpy()
    var = np.maximum(sq - mean**2, 0.0)
    pixel_mean = mean.mean(axis=0)  # every sample has as many pixels
    pixel_var = np.maximum(sq.mean(axis=0) - pixel_mean**2, 0.0)
    return {"mean": pixel_mean, "std": np.sqrt(pixel_var),
            "min": a.amin(dim=(0, 2)).double().cpu().numpy(),
            "max": a.amax(dim=(0, 2)).double().cpu().numpy(),
            "sample_mean": mean, "sample_std": np.sqrt(var)}


def _ratio(val_std: float, train_std: float) -> float:
    """Validation std over training std; 1 when both are 0 (a constant channel)."""
    if train_std > 1e-12:
        return val_std / train_std
    return 1.0 if val_std <= 1e-12 else math.inf


def _cohens_d(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Cohen's d of ``b`` against ``a`` (pooled SD) and its large-sample standard error."""
    n1, n2 = len(a), len(b)
    pooled = math.sqrt(((n1 - 1) * a.var(ddof=1) + (n2 - 1) * b.var(ddof=1)) / max(n1 + n2 - 2, 1))
    d = 0.0 if pooled < 1e-12 else float((b.mean() - a.mean()) / pooled)
    if pooled < 1e-12 and abs(b.mean() - a.mean()) > 1e-12:
        d = math.copysign(math.inf, b.mean() - a.mean())
    se = math.sqrt(1 / n1 + 1 / n2 + (d * d if math.isfinite(d) else 0) / (2 * (n1 + n2)))
    return d, se


def check_preprocessing(inputs: DoctorInputs, found: Mapping[str, CheckResult]) -> CheckResult:
    """Compare the training and validation inputs' statistics channel by channel.

    Fails on a std ratio beyond :data:`STD_RATIO_FAIL` (either way), a mean shift beyond
    :data:`SHIFT_FAIL` training SDs or a Cohen's d of the per-sample means or stds beyond
    :data:`D_FAIL`; warns beyond the ``*_WARN`` levels. Each needs the per-sample difference
    behind it at :data:`Z_MIN` standard errors.
    """
    tr, va = _channel_stats(inputs.data.x_train), _channel_stats(inputs.data.x_val)
    rows = []
    for c in range(len(tr["mean"])):
        sd = max(float(tr["std"][c]), 1e-12)
        d_mean, se_mean = _cohens_d(tr["sample_mean"][:, c], va["sample_mean"][:, c])
        d_std, se_std = _cohens_d(tr["sample_std"][:, c], va["sample_std"][:, c])
        rows.append({
            "channel": c, "train_mean": float(tr["mean"][c]), "val_mean": float(va["mean"][c]),
            "train_std": float(tr["std"][c]), "val_std": float(va["std"][c]),
            "train_min": float(tr["min"][c]), "train_max": float(tr["max"][c]),
            "val_min": float(va["min"][c]), "val_max": float(va["max"][c]),
            "std_ratio": _ratio(float(va["std"][c]), float(tr["std"][c])),
            "mean_shift_sd": (float(va["mean"][c]) - float(tr["mean"][c])) / sd,
            "d_sample_mean": d_mean, "se_sample_mean": se_mean,
            "d_sample_std": d_std, "se_sample_std": se_std})
    for row in rows:
        row["level"] = _preprocessing_level(row)
    worst_row = max(rows, key=lambda r: (("pass", "warn", "fail").index(r["level"]),
                                         abs(math.log(max(r["std_ratio"], 1e-12)))))
    status = worst_row["level"]
    evidence = (f"validation std {worst_row['std_ratio']:.2f}x training's (channel "
                f"{worst_row['channel']}); means differ by {abs(worst_row['mean_shift_sd']):.2f}"
                f" training SDs; per-sample mean d={worst_row['d_sample_mean']:.2f}, "
                f"std d={worst_row['d_sample_std']:.2f} (SE {worst_row['se_sample_mean']:.2f})")
    ratio = worst_row["std_ratio"]
    if status == "pass" and (max(ratio, 1 / max(ratio, 1e-12)) > STD_RATIO_WARN
                             or abs(worst_row["mean_shift_sd"]) > SHIFT_WARN):
        evidence += "; the per-sample statistics agree: a few extreme samples move the pixels'"
    advice = {
        "fail": "the splits are not preprocessed alike: apply the same scaling and "
                "normalization (the training split's statistics) to both",
        "warn": "the splits differ more than a random split would: check that both come from "
                "the same source and pipeline",
        "pass": "compares means and stds only; a shift in content with the same statistics "
                "is not seen"}[status]
    c = int(worst_row["channel"])
    figure = {"kind": "preprocessing", "channel": c, "n_train": inputs.data.n_train,
              "n_val": inputs.data.n_val,
              **{f"{split}_{stat}": _thinned(stats[f"sample_{stat}"][:, c])
                 for split, stats in (("train", tr), ("val", va)) for stat in ("mean", "std")}}
    return CheckResult("preprocessing", status, evidence, advice, "no training",
                       details={"channels": rows, "n_train": inputs.data.n_train,
                                "n_val": inputs.data.n_val}, figure=figure)


def _thinned(values: np.ndarray) -> list[float]:
    """At most :data:`_FIGURE_POINTS` of ``values``, evenly spaced: enough to see two clouds
    apart, small enough for doctor.json."""
    keep = np.unique(np.linspace(0, len(values) - 1, min(len(values), _FIGURE_POINTS))
                     .round().astype(int)) if len(values) else np.array([], dtype=int)
    return [float(v) for v in values[keep]]


def _preprocessing_level(row: Mapping[str, float]) -> str:
    """``fail``, ``warn`` or ``pass`` for one channel's row of statistics."""
    ratio = row["std_ratio"]
    spread = max(ratio, 1 / ratio) if ratio > 0 else math.inf
    d_mean, d_std = abs(row["d_sample_mean"]), abs(row["d_sample_std"])
    # Significant: the per-sample statistic that moved lies Z_MIN standard errors from 0.
    sig_mean = d_mean > Z_MIN * row["se_sample_mean"]
    sig_std = d_std > Z_MIN * row["se_sample_std"]
    shift = abs(row["mean_shift_sd"])
    if ((spread > STD_RATIO_FAIL and sig_std) or (shift > SHIFT_FAIL and sig_mean)
            or (d_mean > D_FAIL and sig_mean) or (d_std > D_FAIL and sig_std)):
        return "fail"
    if ((spread > STD_RATIO_WARN and sig_std) or (shift > SHIFT_WARN and sig_mean)
            or (d_mean > D_WARN and sig_mean) or (d_std > D_WARN and sig_std)):
        return "warn"
    return "pass"


def _row_hashes(x: torch.Tensor) -> list[bytes]:
    """A 128-bit hash of each sample's float32 bytes, copied to the cpu in chunks."""
    flat = x.detach().reshape(x.shape[0], -1)
    hashes = []
    for lo in range(0, len(flat), _HASH_CHUNK):
        a = np.ascontiguousarray(flat[lo:lo + _HASH_CHUNK].to("cpu", torch.float32).numpy())
        hashes += [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in a]
    return hashes


def check_duplicates(inputs: DoctorInputs, found: Mapping[str, CheckResult]) -> CheckResult:
    """Find exact copies across the splits and conflicting copies inside training.

    Fails when conflicting training samples exceed :data:`CONFLICT_FAIL` of training or copies
    of training samples exceed :data:`LEAK_FAIL` of validation; warns on any; passes on none.
    """
    d = inputs.data
    y = d.y_train.cpu().numpy()
    # Rows that held NaN or inf are zeros now: the outliers check lists them, not as copies.
    skip_t, skip_v = set(inputs.non_finite_train), set(inputs.non_finite_val)
    groups: dict[bytes, list[int]] = defaultdict(list)
    for i, h in enumerate(_row_hashes(d.x_train)):
        if i not in skip_t:
            groups[h].append(i)
    twins = [(j, groups[h]) for j, h in enumerate(_row_hashes(d.x_val))
             if h in groups and j not in skip_v]
    repeated = [g for g in groups.values() if len(g) > 1]
    conflicts = [g for g in repeated if len({int(y[i]) for i in g}) > 1]
    n_conflict = sum(len(g) for g in conflicts)
    leak, conflict = len(twins) / max(d.n_val, 1), n_conflict / max(d.n_train, 1)
    names_t, names_v = inputs.train_names, inputs.val_names
    details = {
        "n_val_in_train": len(twins), "val_in_train_fraction": leak,
        "val_twins": [{"val": str(names_v[j]), "train": [str(names_t[i]) for i in g]}
                      for j, g in twins[:MAX_LISTED]],
        "n_train_duplicate_groups": len(repeated),
        "n_train_duplicates": sum(len(g) - 1 for g in repeated),
        "n_conflicting_samples": n_conflict, "conflicting_fraction": conflict,
        "conflicts": [[{"name": str(names_t[i]), "label": int(y[i])} for i in g]
                      for g in conflicts[:MAX_LISTED]],
        "suspects": [str(names_v[j]) for j, _ in twins[:MAX_LISTED]]}
    evidence = (f"{len(twins)} validation samples ({leak:.1%}) also in training; "
                f"{n_conflict} training samples ({conflict:.1%}) in {len(conflicts)} identical "
                f"groups with different labels; {details['n_train_duplicates']} extra copies "
                f"inside training")
    if conflict > CONFLICT_FAIL or leak > LEAK_FAIL:
        status = "fail"
    else:
        status = "warn" if twins or conflicts else "pass"
    todo = [*([_leak_advice(inputs.given_split)] if twins else []),
            *(["resolve the conflicting labels of identical training samples"]
              if conflicts else [])]
    advice = ("; ".join(todo) + " (every one in duplicates_suspects.csv)" if todo else
              "exact copies only: resized, re-encoded or cropped copies are not found")
    return CheckResult("duplicates", status, evidence, advice, "no training", details=details,
                       listing=_duplicate_rows(twins, conflicts, (y, d.y_val.cpu().numpy()),
                                               (names_t, names_v)))


def _leak_advice(given_split: bool) -> str:
    """What to do about validation samples found in training: the user's own split is theirs
    to fix; a split the study made from ``X`` puts a row repeated in ``X`` on both sides by
    chance, so only deduplicating ``X`` helps (the study would split it the same way again)."""
    if given_split:
        return ("remove the validation samples found in training (validation then measures "
                "memorization)")
    return ("deduplicate X, keeping one copy of each repeated sample: the split is the study's, "
            "made from X, so copies in X fall on both sides (validation then measures "
            "memorization)")


def _duplicate_rows(twins: list[tuple[int, list[int]]], conflicts: list[list[int]],
                    labels: tuple[np.ndarray, np.ndarray],
                    names: tuple[Sequence[str], Sequence[str]]) -> list[dict[str, Any]]:
    """Every flagged sample (duplicates_suspects.csv): the validation samples found in training
    with their training copies, then each group of identical training samples with different
    labels, one row per sample."""
    (y_t, y_v), (names_t, names_v) = labels, names
    rows: list[dict[str, Any]] = [
        {"kind": "validation sample in training", "split": "val", "sample": str(names_v[j]),
         "label": int(y_v[j]), "group": None,
         "copies_in_train": "; ".join(str(names_t[i]) for i in g)}
        for j, g in twins]
    rows += [{"kind": "conflicting labels", "split": "train", "sample": str(names_t[i]),
              "label": int(y_t[i]), "group": k, "copies_in_train": None}
             for k, g in enumerate(conflicts, 1) for i in g]
    return [{"rank": rank, **row} for rank, row in enumerate(rows, 1)]


def _longest_run(labels: np.ndarray) -> int:
    if len(labels) == 0:
        return 0
    change = np.flatnonzero(np.diff(labels) != 0)
    bounds = np.concatenate(([-1], change, [len(labels) - 1]))
    return int(np.diff(bounds).max())


def _distinct_per_batch(labels: np.ndarray, batch_size: int) -> float:
    """Mean number of distinct classes over the full batches (the one batch when none is)."""
    n_full = len(labels) // batch_size
    if n_full == 0:
        return float(len(np.unique(labels)))
    batches = np.sort(labels[:n_full * batch_size].reshape(n_full, batch_size), axis=1)
    return float(np.mean(1 + (np.diff(batches, axis=1) != 0).sum(axis=1)))


def order_mixing(labels: Sequence[int] | np.ndarray, batch_size: int, *,
                 seed: int = 0) -> dict[str, Any]:
    """How well an order of labels mixes the classes within batches, against random orders.

    Args:
        labels: The class of each sample, in the order training visits them.
        batch_size: The batch size that cuts the order into batches.
        seed: Seeds the random orders it is compared with.

    Returns:
        ``distinct_per_batch`` (mean over full batches) and its random-order mean
        ``random_distinct``, their ``ratio``, the ``longest_run`` of one class (and the random
        orders' mean), ``sorted`` (the order is monotone in the label) and ``status``:
        ``fail`` below :data:`MIX_FAIL` of random's mixing, ``warn`` below :data:`MIX_WARN`.
    """
    y = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    shuffled = [rng.permutation(y) for _ in range(_RANDOM_DRAWS)]
    observed = _distinct_per_batch(y, batch_size)
    random = float(np.mean([_distinct_per_batch(s, batch_size) for s in shuffled]))
    ratio = observed / random if random > 0 else 1.0
    diffs = np.diff(y)
    status = "fail" if ratio < MIX_FAIL else "warn" if ratio < MIX_WARN else "pass"
    return {"distinct_per_batch": observed, "random_distinct": random, "ratio": ratio,
            "longest_run": _longest_run(y),
            "random_longest_run": float(np.mean([_longest_run(s) for s in shuffled])),
            "sorted": bool(len(y) > 1 and len(np.unique(y)) > 1
                           and (np.all(diffs >= 0) or np.all(diffs <= 0))),
            "status": status}


def trainer_order(inputs: DoctorInputs, *, epoch: int = 1) -> np.ndarray:
    """The positions the study's trainer visits in ``epoch``."""
    orders = epoch_orders(inputs.data.n_train, seed=inputs.seed,
                          device=inputs.data.x_train.device)
    for _ in range(epoch):
        order = next(orders)
    return order.cpu().numpy()


def _stored_labels(inputs: DoctorInputs) -> np.ndarray:
    """The training labels in the order of the user's file: a made split's rows put back in
    it (the split itself is shuffled by the seed, which would hide a file sorted by class)."""
    y = inputs.data.y_train.cpu().numpy()
    origin = inputs.data.origin
    rows = origin.train_rows if origin is not None else ()
    return y[np.argsort(np.asarray(rows), kind="stable")] if len(rows) == len(y) else y


def check_shuffling(inputs: DoctorInputs, found: Mapping[str, CheckResult]) -> CheckResult:
    """Measure how the trainer's first two epochs mix classes per batch; note the stored order.

    The status is the worse of the two epochs' :func:`order_mixing` statuses; a stored order
    grouped by class is reported, not judged (the study reshuffles every epoch).
    """
    y = inputs.data.y_train.cpu().numpy()
    b = int(inputs.hparams.batch_size)
    epochs = [order_mixing(y[trainer_order(inputs, epoch=e)], b, seed=inputs.seed)
              for e in (1, 2)]
    stored = order_mixing(_stored_labels(inputs), b, seed=inputs.seed)
    loader = min(epochs, key=lambda m: m["ratio"])
    status = max((m["status"] for m in epochs), key=("pass", "warn", "fail").index)
    grouped = stored["sorted"] or stored["status"] == "fail"
    kind = "sorted by class" if stored["sorted"] else "grouped by class" if grouped else "mixed"
    evidence = (f"training order: {loader['distinct_per_batch']:.1f} classes per batch of {b} "
                f"vs {loader['random_distinct']:.1f} in random orders, longest run "
                f"{loader['longest_run']}; stored order {kind} "
                f"({stored['distinct_per_batch']:.1f} classes per batch, longest run "
                f"{stored['longest_run']})")
    if status != "pass":
        advice = "the training order does not mix the classes: shuffle every epoch"
    elif grouped:
        advice = ("the study reshuffles every epoch, but a training loop of your own must "
                  "shuffle: the stored order is grouped by class")
    else:
        advice = "label order only: an order correlated with something else is not seen"
    details = {"batch_size": b, "epochs": epochs, "stored": stored, "stored_grouped": grouped}
    return CheckResult("shuffling", status, evidence, advice, "2 epochs' orders, no training",
                       details=details, note=status == "pass" and grouped)
