"""The statistics of the gap block (:mod:`study.analysis.gap`): each trial's parts per epoch, their
means across trials with t intervals, which part carries the gap, and when the lag closes.

Definitions (every interval is the mean across the trials that reached the epoch, Student t on
n - 1 degrees of freedom, trials being independent runs; trials that share a training seed (a
replicate's settings, a penalty mode and its control) start from the same weights and see the
same batches, so they are clustered: the standard error is the cluster-robust one (CR1) on
seeds - 1 degrees of freedom, which is the plain one when every seed is a trial's own):

- *Threshold* of an epoch: ``max(GAP_FLOOR, GAP_FRACTION * |mean training data loss|)``.
- A difference is *worth explaining* when its interval lies wholly beyond the threshold
  (lower bound > threshold, or upper bound < -threshold); *negligible* when its interval lies
  wholly within [-threshold, threshold]; otherwise *unclear*. Both need two trials.
- A part *carries* a gap worth explaining, of sign s, when (1) its mean, times s, is the largest
  of the parts; (2) its own interval, times s, lies above 0; and (3) for every other part, the
  interval of the per-trial difference (this part minus that one), times s, lies above 0. The
  differences are paired (the parts of one trial share its noise), and requiring all of them
  is an intersection-union test: when another part is truly at least as large, one of the
  differences must be wrongly above 0, so the claim is wrong at most 5% of the time, without a
  multiple-comparison correction. The parts compared are timing, generalization and mode, or
  mode's BatchNorm and dropout parts in its place when every trial has them.
- The *lag* is timing + mode (all of the gap but overfitting). It *closes* at the first epoch
  from which its interval lies at or below the threshold at every epoch through the last
  (validation has caught up and stays so; a lag below zero is validation ahead of the reported
  training loss, no lag); ``None`` when there is no such epoch. An epoch whose interval
  straddles the threshold, or that has none (one trial or one seed), cannot tell, so no claim
  "from epoch N on" reaches past it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from study.analysis.regression import cr1
from study.analysis.table import to_float

__all__ = ["GAP_FLOOR", "GAP_FRACTION", "PARTS", "SPLIT", "Decision", "closing_epoch",
           "closing_state", "decide", "interval", "negligible", "summarize",
           "threshold", "trial_epochs", "worth_explaining"]

PARTS = ("timing", "mode", "generalization")
SPLIT = ("mode_batchnorm", "mode_dropout")
# Record keys (SPEC section 10's per-epoch curve record) of the values read.
_KEYS = {"train_data_loss": "data_loss", "val_loss": "val_loss", "timing": "gap_timing",
         "mode": "gap_mode", "generalization": "gap_generalization"}
# Below 0.02 nats lies the seed-to-seed spread of a small CNN's data loss (PHENOMENON.md):
# nobody can act on a gap that small.
GAP_FLOOR = 0.02
# Validation within 5% of the training loss sits on top of it in a loss plot: nothing to
# explain, however many trials show it.
GAP_FRACTION = 0.05
# Logged parts are float64 differences of float32 losses: they add up to ~1e-7 relative; a
# record off by more was not decomposed exactly and is left out.
_ADD_ATOL = 1e-5
_ADD_RTOL = 1e-4


@dataclasses.dataclass(frozen=True)
class Decision:
    """The carrier rule's outcome at one epoch (or the early window).

    Attributes:
        status: ``no-trials``, ``no-interval`` (one trial), ``negligible``, ``unclear``,
            ``carried`` or ``not-carried``.
        carrier: The part that carries the gap (``mode`` when the split is missing).
        leader: The part with the largest contribution in the gap's direction.
        rival: The part whose difference from the leader is not shown (``None`` when the
            leader's own interval holds 0).
        difference: ``{"estimate", "ci95"}`` of leader minus rival.
        direction: +1 when validation is above training, -1 below, 0 otherwise.
    """

    status: str
    carrier: str | None = None
    leader: str | None = None
    rival: str | None = None
    difference: dict[str, Any] | None = None
    direction: int = 0


def threshold(train_data_loss: float) -> float:
    """The gap worth explaining at a mean training data loss: the larger of
    :data:`GAP_FLOOR` and :data:`GAP_FRACTION` of it."""
    scaled = GAP_FRACTION * abs(train_data_loss) if math.isfinite(train_data_loss) else 0.0
    return max(GAP_FLOOR, scaled)


@functools.cache
def _t_crit(df: int, level: float) -> float:
    return float(stats.t.ppf(0.5 + level / 2, df))


def interval(values: Sequence[float] | np.ndarray, *, level: float,
             groups: np.ndarray | None = None) -> dict[str, Any]:
    """``{"estimate", "ci95"}``: the mean and its t interval; ``[None, None]`` for one value
    (or one cluster). ``groups``: each value's cluster (``0 .. G - 1``), or ``None``: every
    value its own."""
    x = np.asarray(values, dtype=float)
    mean = float(np.mean(x))
    clusters = len(x) if groups is None else int(groups.max()) + 1
    if clusters < 2:
        return {"estimate": mean, "ci95": [None, None]}
    if groups is None:
        se = float(np.std(x, ddof=1)) / math.sqrt(len(x))
    else:  # the regressions' CR1 of an intercept-only fit: the above for singleton clusters
        se = math.sqrt(float(cr1(np.ones((len(x), 1)), x - mean, groups)[0, 0]))
    half = _t_crit(clusters - 1, level) * se
    return {"estimate": mean, "ci95": [mean - half, mean + half]}


def worth_explaining(value: Mapping[str, Any], limit: float) -> bool:
    """Whether the interval of ``value`` lies wholly beyond ``-limit..limit``."""
    lo, hi = value["ci95"]
    return lo is not None and (lo > limit or hi < -limit)


def negligible(value: Mapping[str, Any], limit: float) -> bool:
    """Whether the interval of ``value`` lies wholly within ``-limit..limit``."""
    lo, hi = value["ci95"]
    return lo is not None and -limit <= lo and hi <= limit


def trial_epochs(curve: Iterable[Any], *, has_batchnorm: bool, has_dropout: bool
                 ) -> tuple[dict[int, dict[str, float]], int]:
    """One trial's values per epoch, and how many records were left out as inconsistent.

    A record without finite ``data_loss``, ``val_loss`` and the three parts is skipped (an
    epoch that logged no gap); one whose parts do not add up to ``val_loss - data_loss`` is
    counted. Each row holds ``gap``, ``lag`` (timing + mode) and, where :func:`_split` can
    tell them, ``mode_batchnorm`` and ``mode_dropout``; a repeated epoch keeps its last record.
    """
    rows: dict[int, dict[str, float]] = {}
    inconsistent = 0
    for index, record in enumerate(curve or ()):
        if not isinstance(record, Mapping):
            continue
        values = {name: to_float(record.get(key)) for name, key in _KEYS.items()}
        if not all(math.isfinite(v) for v in values.values()):
            continue
        gap = values["val_loss"] - values["train_data_loss"]
        parts = sum(values[p] for p in PARTS)
        scale = max(abs(values["val_loss"]), abs(values["train_data_loss"]))
        if not math.isclose(parts, gap, rel_tol=0, abs_tol=_ADD_ATOL + _ADD_RTOL * scale):
            inconsistent += 1
            continue
        epoch = to_float(record.get("epoch"))
        key = int(epoch) if math.isfinite(epoch) else index + 1
        rows[key] = {**values, "gap": gap, "lag": values["timing"] + values["mode"],
                     **_split(record, values["mode"], has_batchnorm, has_dropout)}
    return rows, inconsistent


def _split(record: Mapping[str, Any], mode: float, has_batchnorm: bool,
           has_dropout: bool) -> dict[str, float]:
    """Mode's BatchNorm and dropout parts: logged ones where they add up to ``mode``; else the
    whole of mode for the one kind of layer the model has (0 for the other); nothing for a
    model with both that logged no split, or with neither whose mode is not 0."""
    logged = [to_float(record.get(f"gap_{k}")) for k in SPLIT]
    tolerance = _ADD_ATOL + _ADD_RTOL * abs(mode)
    if all(math.isfinite(v) for v in logged) and abs(sum(logged) - mode) <= tolerance:
        return dict(zip(SPLIT, logged, strict=True))
    if has_batchnorm and has_dropout:
        return {}
    if has_batchnorm or has_dropout:
        return {"mode_batchnorm": mode if has_batchnorm else 0.0,
                "mode_dropout": mode if has_dropout else 0.0}
    return dict.fromkeys(SPLIT, 0.0) if abs(mode) <= tolerance else {}


def summarize(rows: Sequence[Mapping[str, float]], kinds: Sequence[Mapping[str, bool]], *,
              level: float, seeds: Sequence[Any] | None = None
              ) -> tuple[dict[str, Any], Decision]:
    """The means with intervals of one epoch's (or window's) rows, and the carrier rule.

    Args:
        rows: One per trial (:func:`trial_epochs`' values).
        kinds: Per trial, ``{"batchnorm": bool, "dropout": bool}``: a split part is reported
            only where some trial has that kind of layer.
        level: The intervals' confidence level.
        seeds: Per trial, its training seed (``None``: its own): trials that share one are a
            cluster of the intervals (module docs; ``seeds`` in the entry when fewer than
            ``n``).
    """
    columns = {k: np.array([r[k] for r in rows], dtype=float)
               for k in ("train_data_loss", "val_loss", "gap", *PARTS, "lag")}
    limit = threshold(float(np.mean(columns["train_data_loss"])) if rows else math.nan)
    entry: dict[str, Any] = {"n": len(rows), "threshold": limit}
    if not rows:
        return entry, Decision("no-trials")
    parts = list(PARTS)
    if all(set(SPLIT) <= set(r) for r in rows):
        present = [k for k, kind in zip(SPLIT, ("batchnorm", "dropout"), strict=True)
                   if any(x[kind] for x in kinds)]
        for k in present:
            columns[k] = np.array([r[k] for r in rows], dtype=float)
        if present:
            parts = ["timing", *present, "generalization"]
    groups = _seed_groups(seeds, len(rows))
    if groups is not None:
        entry["seeds"] = int(groups.max()) + 1
    entry.update({k: interval(columns[k], level=level, groups=groups) for k in (
        "train_data_loss", "val_loss", "gap", "timing", "mode", *SPLIT, "generalization",
        "lag") if k in columns})
    decision = decide(columns, parts, limit=limit, level=level, groups=groups)
    entry["carrier"] = decision.carrier
    return entry, decision


def _seed_groups(seeds: Sequence[Any] | None, n: int) -> np.ndarray | None:
    """Each trial's cluster (``0 ..``, in order of first appearance; a trial without a seed is
    its own), or ``None`` when no two trials share a seed."""
    if seeds is None:
        return None
    keys = [("trial", i) if s is None else ("seed", s) for i, s in enumerate(seeds)]
    order = {k: j for j, k in enumerate(dict.fromkeys(keys))}
    return None if len(order) == n else np.array([order[k] for k in keys])


def decide(columns: Mapping[str, np.ndarray], parts: Sequence[str], *, limit: float,
           level: float, groups: np.ndarray | None = None) -> Decision:
    """The carrier rule (module docs) on per-trial columns (``groups``: their clusters)."""
    gap = interval(columns["gap"], level=level, groups=groups)
    if gap["ci95"][0] is None:
        return Decision("no-interval")
    if negligible(gap, limit):
        return Decision("negligible")
    if not worth_explaining(gap, limit):
        return Decision("unclear")
    s = 1 if gap["estimate"] > 0 else -1
    leader = max(parts, key=lambda p: s * float(np.mean(columns[p])))
    if interval(s * columns[leader], level=level, groups=groups)["ci95"][0] <= 0:
        return Decision("not-carried", leader=leader, direction=s)
    differences = {other: interval(columns[leader] - columns[other], level=level,
                                   groups=groups)
                   for other in parts if other != leader}
    if differences:
        rival = min(differences, key=lambda o: min(s * b for b in differences[o]["ci95"]))
        if min(s * b for b in differences[rival]["ci95"]) <= 0:
            return Decision("not-carried", leader=leader, rival=rival,
                            difference=differences[rival], direction=s)
    return Decision("carried", carrier=leader, leader=leader, direction=s)


def closing_epoch(epochs: Sequence[Mapping[str, Any]]) -> int | None:
    """The first epoch from which validation has caught up: the lag (timing + mode) is at most
    the threshold (its interval's upper end; a negative lag, validation below the reported
    training loss, is no lag) there and at every later epoch."""
    closes = None
    for entry in reversed([e for e in epochs if "lag" in e]):
        if not caught_up(entry["lag"], entry["threshold"]):
            break
        closes = int(entry["epoch"])
    return closes


def closing_state(epochs: Sequence[Mapping[str, Any]], closes_at: int | None) -> str:
    """``closed`` (at ``closes_at``), ``open`` (the last epoch's lag is shown above the
    threshold) or ``unclear`` (its interval straddles the threshold: more trials would tell)."""
    if closes_at is not None:
        return "closed"
    last = next((e for e in reversed(epochs) if "lag" in e), None)
    return "open" if last is not None and lags(last["lag"], last["threshold"]) else "unclear"


def caught_up(value: Mapping[str, Any], limit: float) -> bool:
    """Whether the interval of ``value`` lies wholly at or below ``limit``."""
    hi = value["ci95"][1]
    return hi is not None and hi <= limit


def lags(value: Mapping[str, Any], limit: float) -> bool:
    """Whether the interval of ``value`` lies wholly above ``limit``."""
    lo = value["ci95"][0]
    return lo is not None and lo > limit
