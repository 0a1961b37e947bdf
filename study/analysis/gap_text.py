"""The words of the gap block (:mod:`study.analysis.gap`): its verdict with what to try, the one
line for the terminal and the MLflow description, and the rows of a printed table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from study._text import interval_formatter
from study.analysis.gap_closing import Closing, closing_of, closing_words, why_unclear
from study.analysis.gap_stats import GAP_FLOOR, GAP_FRACTION, Decision
from study.analysis.gap_words import LABELS, beyond
from study.analysis.gap_words import bracket as _bracket
from study.analysis.gap_words import est as _est
from study.analysis.gap_words import num as _num

__all__ = ["CARRIER_CODES", "CODES", "LABELS", "gap_table_rows", "short_line", "verdict"]

CODES = ("normalization-statistics", "dropout", "epoch-averaging", "overfitting", "none",
         "inconclusive")
CARRIER_CODES = {"mode_batchnorm": "normalization-statistics", "mode_dropout": "dropout",
                 "timing": "epoch-averaging", "generalization": "overfitting"}
_CARRIES = {"timing": "epoch averaging carries", "mode_batchnorm": "the BatchNorm statistics carry",
            "mode_dropout": "dropout carries",
            "generalization": "generalization (overfitting) carries"}
_WHY = {
    "mode_batchnorm": "the same weights on the same training data score that much worse with "
                      "BatchNorm's running statistics (eval mode) than with batch statistics",
    "mode_dropout": "training is measured with dropout on, validation with it off",
    "timing": "the training loss is the mean over an epoch in which the weights improved, "
              "validation is measured at its end",
    "generalization": "at the epoch's end, in the same mode, the model scores worse on unseen "
                      "data than on its training data",
}
TRY = {
    "normalization-statistics": [
        "a higher BatchNorm momentum in PyTorch's convention (its default is 0.1; Keras's "
        "0.99 is 0.01 there): the running statistics then follow the moving weights in fewer "
        "steps",
        "more steps per epoch (smaller batches), so the running statistics see more updates "
        "before each validation",
        "a validation that does not rely on stale running statistics: recompute the BatchNorm "
        "statistics on training data before validating (e.g. torch.optim.swa_utils.update_bn)",
    ],
    "dropout": [
        "nothing to fix: the gap is there by construction (dropout is on in training only)",
        "compare in the same mode: the generalization part is validation minus training with "
        "dropout off on both",
    ],
    "epoch-averaging": [
        "nothing to fix: compare validation with the training loss at the epoch's end (the "
        "epoch mean plus the timing part), not with the epoch's mean",
    ],
    "overfitting": ["more regularization (weight decay, dropout, data augmentation)",
                    "more training data", "early stopping on the validation loss"],
    "none": [],
}
_MORE = "more trials of this setting (intervals narrow as 1/sqrt(n))"
_FIXABLE = ("normalization-statistics", "overfitting")  # codes whose advice changes training


def verdict(early: Mapping[str, Any], decision: Decision, *, window: str, level: float,
            closing: Closing, unsplit: int = 0, grouped: bool = False) -> dict[str, Any]:
    """``{"code", "text", "try"}`` of the early window (``window``: "epoch 1", ...);
    ``grouped``: the trials are one setting's (or a block split by setting), so "group them"
    is no advice."""
    ci = f"{level:.0%} CI"
    status, seeds = decision.status, early.get("seeds")
    # Trials sharing a training seed are one sample of the intervals: say how many there are.
    n = f"{early.get('n', 0)} trials" + (f" ({seeds} training seeds)" if seeds else "")
    if status == "no-trials":
        return _out("inconclusive", f"No trial logged the gap parts at {window}.", [_MORE])
    gap = early["gap"]
    ending = _closing(closing)
    if status == "no-interval" and seeds == 1:
        return _out("inconclusive", f"The {early['n']} trials that reached {window} share one "
                    f"training seed: their gap is {_num(gap['estimate'])}, but one seed gives "
                    f"no interval.", [_MORE])
    if status == "no-interval":
        return _out("inconclusive", f"Only one trial reached {window}: its gap is "
                    f"{_num(gap['estimate'])}, but one trial gives no interval.", [_MORE])
    if status == "negligible":
        return _none(f"At {window} validation and training agree: the gap, "
                     f"{_est(gap, ci)}, lies within ±{_num(early['threshold'])} (the larger of "
                     f"{GAP_FLOOR} nats and {GAP_FRACTION:.0%} of the training loss).",
                     window, closing)
    if status == "unclear":
        limit = (f"±{_num(early['threshold'])}, the smallest gap worth explaining (the larger "
                 f"of {GAP_FLOOR} nats and {GAP_FRACTION:.0%} of the training loss)")
        # Validation not behind training by a lag worth explaining: the question's answer is
        # "it does not lag" (none), whatever more trials would tell of how far below it is.
        if gap["ci95"][1] < 0:  # the whole interval below training: no lag at all
            return _none(f"At {window} validation does not lag training: it is below "
                         f"it, the gap {_est(gap, ci)}; whether by more than {limit[1:]} "
                         f"cannot be told; {n}. {ending}", window, closing)
        if gap["ci95"][1] <= early["threshold"]:  # below training or level with it: no lag
            return _none(f"At {window} validation does not lag training: the gap, "
                         f"{_est(gap, ci)}, lies below +{_num(early['threshold'])}, the "
                         f"smallest lag worth explaining; whether validation is below training "
                         f"by more than {limit[1:]} cannot be told; {n}. {ending}", window,
                         closing)
        return _out("inconclusive", f"At {window} the gap, {_est(gap, ci)}, may still be "
                    f"negligible: its interval reaches into {limit}; {n}.", [_MORE])
    fmt = interval_formatter([gap["estimate"], *gap["ci95"]], signed=False)
    bounds = f"({ci} {fmt(gap['ci95'][0])} to {fmt(gap['ci95'][1])})"
    side = f"At {window} validation is {fmt(abs(gap['estimate']))} above training {bounds}" \
        if gap["estimate"] > 0 else \
        f"At {window} validation does not lag training: it is below it, the gap " \
        f"{fmt(gap['estimate'])} {bounds}"
    if status == "not-carried" and gap["estimate"] < 0:  # shown below training: no lag
        return _none(f"{side}; no part is shown to put it there: "
                     f"{_not_shown(early, decision, ci)}. {ending}", window, closing)
    if status == "not-carried":
        which = "but no part is shown to carry it"
        tries = [_MORE] if grouped else \
            [_MORE, "group the trials by setting: pooled settings mix their gaps"]
        return _out("inconclusive", f"{side}; {which}: {_not_shown(early, decision, ci)}. "
                    f"{ending}", tries)
    part = _est(early[decision.carrier], ci)
    if decision.carrier == "mode":
        return _out("inconclusive", f"{side}; the train/eval mode difference carries {part}, "
                    f"but {unsplit} trial{'s' * (unsplit != 1)} with both BatchNorm and "
                    f"dropout logged no split, so whether BatchNorm or dropout is unknown.",
                    ["log gap/mode_batchnorm and gap/mode_dropout"])
    code = CARRIER_CODES[decision.carrier]
    text = (f"{side}; {_CARRIES[decision.carrier]} {part}{beyond(early, decision.carrier)}: "
            f"{_WHY[decision.carrier]}. {ending}")
    return _out(code, text, _tries(code, early, ci))


def _none(text: str, window: str, closing: Closing) -> dict[str, Any]:
    """Verdict ``none`` (nothing to explain in the window), and, where a lag is shown open at
    the last epoch, that it opens after the window, with its part's advice: the verdict is
    the window's, the question is the whole lag's."""
    entry = closing.at_last or {}
    if closing.kind != "open" or "lag" not in entry:
        return _out("none", text, TRY["none"])
    carrier = entry.get("carrier")
    carried = f", carried by {LABELS[carrier]} ({_bracket(entry[carrier])})" \
        if carrier in LABELS and carrier in entry else ""
    later = (f" But a lag opens after {window}: at epoch {closing.last} it is "
             f"{_bracket(entry['lag'])}, above the threshold {_num(entry['threshold'])}"
             f"{carried}.")
    code = CARRIER_CODES.get(carrier or "")
    return _out("none", text + later, list(TRY[code]) if code in _FIXABLE else [])


def _not_shown(early: Mapping[str, Any], decision: Decision, ci: str) -> str:
    leader = LABELS[decision.leader or ""]
    if decision.rival is None:
        return f"the largest part, {leader}, {_est(early[decision.leader], ci)}, may be 0"
    return (f"{leader} leads with {_est(early[decision.leader], ci)}, but its lead over "
            f"{LABELS[decision.rival]}, {_est(decision.difference or {}, ci)}, is not shown")


def _tries(code: str, early: Mapping[str, Any], ci: str) -> list[str]:
    """What to try, with the numbers that show why where there is nothing to fix."""
    if code == "dropout":
        return [TRY["dropout"][0], f"compare in the same mode: the generalization part, "
                f"validation minus training with dropout off on both, is "
                f"{_est(early['generalization'], ci)}"]
    if code == "epoch-averaging":
        return _against_the_end(early, ci)
    return list(TRY[code])


def _against_the_end(early: Mapping[str, Any], ci: str) -> list[str]:
    """The epoch-averaging advice: compare with the training loss at the epoch's end; where
    validation is still above that by more than the threshold and a part is shown to put it
    there, that part and its own advice (nothing to fix would hide it)."""
    end = early["train_data_loss"]["estimate"] + early["timing"]["estimate"]
    val = early["val_loss"]["estimate"]
    compare = (f"compare validation with the training loss at the epoch's end (the epoch "
               f"mean plus the timing part), not with the epoch's mean: {_num(end)} here, "
               f"against a validation loss of {_num(val)}")
    parts = [k for k in ("mode_batchnorm", "mode_dropout") if k in early] or ["mode"]
    shown = [k for k in (*parts, "generalization")
             if k in early and (early[k]["ci95"][0] or 0) > early["threshold"]]
    if val - end <= early["threshold"] or not shown:
        return [f"nothing to fix: {compare}"]
    part = max(shown, key=lambda k: early[k]["estimate"])
    code = CARRIER_CODES.get(part)
    return [f"{compare}: validation is still {_num(val - end)} above it, and "
            f"{LABELS[part]} put {_est(early[part], ci)} there",
            *(TRY[code] if code in _FIXABLE else [])]


def short_line(block: Mapping[str, Any]) -> str:
    """One line for the terminal and the MLflow run description, its code first like the
    size lines', e.g. ``Gap: normalization-statistics. Validation lags training by 0.42 at
    epoch 1, carried by BatchNorm statistics (0.35 [0.30, 0.40]); closes at epoch 3.``; for a
    comparison of settings (``groups``), the verdicts of the settings (pooled over different
    settings, the trials answer none of them).
    """
    groups = block.get("groups") or {}
    if len(groups) > 1:
        return _by_setting(groups)
    code = (block.get("verdict") or {}).get("code", "inconclusive")
    early = block.get("early") or {}
    window = _window(block)
    found = closing_of(block)
    closing = closing_words(found)
    gap = early.get("gap")
    if gap is None:
        return f"Gap: {code}. No trial logged it at {window}."
    if code == "none" and gap["ci95"][0] is not None and gap["ci95"][0] < -early["threshold"]:
        return (f"Gap: none. Validation does not lag training at {window} ({_bracket(gap)}, "
                f"below +{_num(early['threshold'])}); {closing}.")
    if code == "none":
        return (f"Gap: none. Nothing worth explaining at {window} ({_bracket(gap)}, within "
                f"±{_num(early['threshold'])}){_opens_later(found, closing)}.")
    carrier = early.get("carrier")
    if code == "inconclusive" or carrier is None:
        return (f"Gap: {code}. Validation minus training loss: {_bracket(gap)} at {window}, "
                f"{_unsettled(early)}; {closing}.")
    est = gap["estimate"]
    how = f"lags training by {_num(est)}" if est > 0 else f"is below training by {_num(-est)}"
    return (f"Gap: {code}. Validation {how} at {window}, carried by {LABELS[carrier]} "
            f"({_bracket(early[carrier])}){beyond(early, carrier)}; {closing}.")


def _opens_later(found: Closing, closing: str) -> str:
    """``; a lag opens after it: lag not closed by epoch 4, carried by BatchNorm statistics
    there`` after a window with nothing to explain (``closing``: ``found`` in words); empty
    unless the lag is open at the end."""
    if found.kind != "open":
        return ""
    carrier = (found.at_last or {}).get("carrier")
    carried = f", carried by {LABELS[carrier]} there" if carrier in LABELS else ""
    said = closing if closing.startswith("a lag opens later") else \
        f"a lag opens after it: {closing}"
    return f"; {said}{carried}"


def _by_setting(groups: Mapping[str, Mapping[str, Any]]) -> str:
    """``Gap by setting: normalization-statistics in 4 of 8 (adam, bn 0.01, ...; ...), none
    in 4 of 8 (...); lag closes at epoch 3 in 2 of 8 (...), lag not closed by epoch 6 in 6
    (...).`` (at most three settings named each time)."""
    by_code: dict[str, list[str]] = {}
    for label, group in groups.items():
        code = (group.get("verdict") or {}).get("code", "inconclusive")
        by_code.setdefault(str(code), []).append(str(label))
    parts = [f"{code} in {len(labels)} of {len(groups)} ({_named(labels)})"
             for code, labels in sorted(by_code.items(), key=lambda kv: -len(kv[1]))]
    # The closings in the words of the table and the figure's titles, settings that share
    # them together.
    closings: dict[str, list[str]] = {}
    for label, group in groups.items():
        closings.setdefault(closing_words(closing_of(group)), []).append(str(label))
    said = [f"{words} in {len(labels)}{f' of {len(groups)}' * (i == 0)} ({_named(labels)})"
            for i, (words, labels) in enumerate(closings.items())]
    return f"Gap by setting: {', '.join(parts)}; {', '.join(said)}.{_largest(groups)}"


def _largest(groups: Mapping[str, Mapping[str, Any]]) -> str:
    """`` Largest: BatchNorm statistics +1.86 [+1.34, +2.37] at epoch 1 (adam, bn 0.01,
    dropout 0); try a higher BatchNorm momentum ... (each setting's advice: its section of the
    report).``,
    from the setting whose carrier part is largest; empty when no setting has a carrier."""
    carried = [(label, g) for label, g in groups.items()
               if (g.get("early") or {}).get("carrier") in CARRIER_CODES]
    if not carried:
        return ""
    label, group = max(carried, key=lambda lg: abs(_carried(lg[1]["early"])["estimate"]))
    early, code = group["early"], (group.get("verdict") or {}).get("code")
    advice = f"; try {TRY[code][0]} (each setting's advice: its section of the report)" \
        if code in _FIXABLE else ""
    return (f" Largest: {LABELS[early['carrier']]} {_bracket(_carried(early))} at "
            f"{_window(group)} ({label}){advice}.")


def _carried(early: Mapping[str, Any]) -> Mapping[str, Any]:
    """The early window's carrier part (its estimate and interval)."""
    return early[early["carrier"]]


def _named(labels: list[str]) -> str:
    return "; ".join(labels[:3]) + (f"; +{len(labels) - 3} more" if len(labels) > 3 else "")


def gap_table_rows(block: Mapping[str, Any], *, max_epochs: int = 5) -> list[dict[str, str]]:
    """One row per group (one ``all trials`` row without groups) for a printed table: the gap
    at epochs 1..``max_epochs``, the early window's parts, the closing epoch and the verdict.
    Every row has the same keys (``—`` where a group lacks a value)."""
    groups = block.get("groups") or {"all trials": block}
    last = max((e["epoch"] for g in groups.values() for e in g.get("epochs", [])), default=0)
    epochs = range(1, min(last, max_epochs) + 1)
    # BatchNorm and dropout columns only where a group has both: otherwise mode is one of them.
    split = any({"mode_batchnorm", "mode_dropout"} <= set(g.get("early") or {})
                for g in groups.values())
    parts = ["timing", "mode", *(["mode_batchnorm", "mode_dropout"] if split else []),
             "generalization"]
    rows = []
    for label, group in groups.items():
        at = {e["epoch"]: e for e in group.get("epochs", [])}
        early = group.get("early") or {}
        row = {"setting": str(label), "trials": str(group.get("n_trials", 0))}
        # Estimates only over the epochs (the intervals are in the parts and the per-epoch
        # table): the row stays readable in a terminal.
        row.update({f"gap epoch {k}": _num(at[k]["gap"]["estimate"]) if k in at else "—"
                    for k in epochs})
        row.update({f"{_short(k)} ({_window(group)})": _bracket(early[k]) if k in early else "—"
                    for k in parts})
        row["lag"] = closing_words(closing_of(group))
        row["verdict"] = (group.get("verdict") or {}).get("code", "inconclusive")
        rows.append(row)
    return rows


def _unsettled(early: Mapping[str, Any]) -> str:
    """Why an inconclusive early window is so, in a few words."""
    lo, hi = early["gap"]["ci95"]
    if lo is None:
        return "one training seed, no interval" if early.get("seeds") else \
            "one trial, no interval"
    if early.get("carrier") == "mode":
        return "carried by the train/eval mode difference, BatchNorm or dropout unknown"
    if not (lo > early["threshold"] or hi < -early["threshold"]):
        # (an interval at or below +threshold is verdict none: validation does not lag)
        return (f"its interval reaches into ±{_num(early['threshold'])}, the smallest gap "
                f"worth explaining")
    return "no part shown to carry it"


def window_name(epochs: Sequence[int]) -> str:
    """``epoch 1`` or ``epochs 1-3``."""
    return f"epoch {epochs[0]}" if len(epochs) == 1 else f"epochs {epochs[0]}-{epochs[-1]}"


def _window(block: Mapping[str, Any]) -> str:
    return window_name(list(range(1, int(block.get("early_epochs") or 1) + 1)))


def _closing(closing: Closing) -> str:
    """The verdict's closing sentence (:func:`closing_words`, and why where it cannot tell)."""
    kind, last = closing.kind, closing.last
    if kind == "no-epochs":
        return ""
    if kind == "no-gap":
        return f"Validation is behind training at no epoch through {last}."
    if kind == "no-lag":
        return f"No lag through epoch {last}: no epoch shows one."
    if kind == "no-lag-from":
        return (f"No lag from epoch {closing.epoch} (through epoch {last}; before it the "
                f"intervals cannot tell).")
    if kind == "closed":
        said = "A lag opens later and closes" if closing.below else "The lag closes"
        return f"{said} at epoch {closing.epoch} (at most the threshold through epoch {last})."
    if kind == "unclear":
        what = f"validation lags training at epoch {last}" if closing.below else \
            f"the lag has closed by epoch {last}"
        return (f"Lag unclear at epoch {last}: whether {what} cannot be told "
                f"({why_unclear(closing)}; more trials would tell).")
    said = "A lag opens later and has" if closing.below else "The lag has"
    return f"{said} not closed by epoch {last}."


def _short(part: str) -> str:
    return {"mode_batchnorm": "BatchNorm", "mode_dropout": "dropout"}.get(part, part)


def _out(code: str, text: str, tries: list[str]) -> dict[str, Any]:
    return {"code": code, "text": text.strip(), "try": list(tries)}
