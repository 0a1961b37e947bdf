"""The report's third question, "Why does validation lag training?", from the ``gap`` block of a
``study.analysis/3`` document (:mod:`study.analysis.gap`): its line in the verdict box and its
section (verdict, what to try, the figure, the per-epoch table, the closing epoch, notes and,
when the trials were grouped by setting, one row per setting).

An older document (``/2``, ``/1``) has no ``gap`` block: then there is no line and no section.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from typing import Any

from study.analysis.gap_closing import closing_of, closing_words, why_unclear
from study.analysis.gap_text import LABELS, gap_table_rows, short_line
from study.report._format import MISSING, as_float, effect, fmt_num, text
from study.report.blocks import Bullets, Details, FigureRef, Heading, Para, Table

__all__ = ["GAP_FIGURE", "MAX_PANELS", "gap_blocks", "gap_line", "gap_of", "has_trials"]

GAP_FIGURE = "gap"  # figures/gap.png
# More panels than this no longer fit a report's width at a readable size.
MAX_PANELS = 6
QUESTION = "Why does validation lag training?"
_PART_HEADERS = {"gap": "gap", "timing": "timing", "mode": "mode",
                 "mode_batchnorm": "mode: BatchNorm", "mode_dropout": "mode: dropout",
                 "generalization": "generalization"}
_SPLIT = ("mode_batchnorm", "mode_dropout")
# A malformed block costs its line or table, never the whole report.
_BROKEN = (KeyError, TypeError, ValueError, AttributeError, IndexError)
_log = logging.getLogger(__name__)


def gap_of(analysis: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The document's ``gap`` block, or ``None`` (an older document, or none written)."""
    block = analysis.get("gap")
    return block if isinstance(block, Mapping) else None


def has_trials(block: Mapping[str, Any] | None) -> bool:
    """Whether any trial logged the gap's parts (the block then has epochs to show)."""
    return bool(block) and as_float(block.get("n_trials")) > 0 and bool(block.get("epochs"))


def gap_line(analysis: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """``(label, code, sentence)`` of the verdict box from the gap's one-line summary
    (:func:`~study.analysis.gap_text.short_line`); ``None`` without trials."""
    block = gap_of(analysis)
    if not has_trials(block):
        return None
    try:
        line = short_line(block)
    except _BROKEN as exc:
        _log.warning("report: the gap block has no one-line summary: %s", exc)
        return None
    code = text((block.get("verdict") or {}).get("code")) or "inconclusive"
    label, _, rest = line.partition(": ")
    if not rest:
        return "Gap", code, line
    groups = block.get("groups") if isinstance(block.get("groups"), Mapping) else {}
    if len(groups) > 1:
        return label, *_settings_badge(groups, rest)
    # The badge shows the code: drop short_line's own leading "code. ".
    rest = rest.removeprefix(f"{code}. ").rstrip(".")
    return label, code, _sentence(rest) + "."


def gap_blocks(analysis: Mapping[str, Any]) -> list[Any]:
    """The section of the third question; empty when the document has no ``gap`` block.

    Trials grouped by setting are answered setting by setting (pooled, the settings mix
    their gaps), then pooled."""
    block = gap_of(analysis)
    if block is None:
        return []
    out: list[Any] = [Heading(2, text(block.get("question")) or QUESTION, "gap")]
    if not has_trials(block):
        return [*out, _verdict_para(block), *_notes(block)]
    figure = FigureRef(GAP_FIGURE, "Parts of the validation gap per epoch", _caption(block))
    groups = block.get("groups") if isinstance(block.get("groups"), Mapping) else {}
    if not groups:
        return [*out, *_answer(block, figure), *_notes(block)]
    # The settings' own verdicts lead: pooled, settings chosen to differ mix their gaps.
    # Pooled, no verdict or closing: it read "has not closed" beside settings that closed.
    return [*out, Para([short_line(block)]), figure, *_group_blocks(block, groups),
            Heading(3, "All settings pooled, per epoch", "gap-epochs"),
            Para([f"Pooled over {len(groups)} settings chosen to differ, these means answer "
                  "none of them (each setting's verdict and closing epoch are above). "
                  f"{_table_intro(block)}"]), _epoch_table(block), *_notes(block)]


# -- internals --------------------------------------------------------------------------------
def _settings_badge(groups: Mapping[str, Any], rest: str) -> tuple[str, str]:
    """``(badge, sentence)`` of the line of settings: the settings' one code where they all
    have it (``In all 2 settings (...)`` follows, not the code again), else ``mixed`` and the
    codes by setting; never the pooled trials' code, which answers none of them."""
    codes = {text((g.get("verdict") or {}).get("code")) or "inconclusive"
             for g in groups.values() if isinstance(g, Mapping)}
    if len(codes) != 1:
        return "mixed", _sentence(rest).rstrip(".") + "."
    (code,) = codes
    rest = re.sub(rf"^{re.escape(code)} in (\d+) of \1 ", r"in all \1 settings ", rest)
    return code, _sentence(rest).rstrip(".") + "."


def _caption(block: Mapping[str, Any]) -> str:
    level = _level(block)
    groups = block.get("groups") if isinstance(block.get("groups"), Mapping) else {}
    drawn = [k for k, g in groups.items() if isinstance(g, Mapping) and g.get("epochs")]
    panels = ("" if not drawn else "One panel per setting. " if len(drawn) <= MAX_PANELS else
              f"One panel for each of the first {MAX_PANELS} of the {len(drawn)} settings "
              f"({'; '.join(map(str, drawn[:MAX_PANELS]))}); the table below has all of "
              "them. ")
    return (f"{panels}Per epoch, validation loss minus the training data loss, split into "
            "its parts as stacked bars: timing (the epoch's mean training loss against the "
            "loss at its end), mode (eval against train mode: BatchNorm's running statistics, "
            "dropout) and generalization (validation against training data, both in eval "
            f"mode). The diamond is the gap with its {level} interval, the lines the two "
            "losses (left out, their level in the panel's title, where they would flatten a "
            "small gap); the dotted line marks the epoch where a lag (timing + mode) that "
            "opened closes.")


def _table_intro(block: Mapping[str, Any]) -> str:
    return (f"The mean over the trials that reached each epoch (n; trials that share a training "
            f"seed are one sample of the interval: how many seeds beside n) with its "
            f"{_level(block)} interval, in nats; gap = timing + mode + generalization (mode = "
            "BatchNorm + dropout where the models have both). The carrier is the part "
            "shown to carry a gap worth explaining (— where the gap is negligible or no part "
            "is shown to carry it).")


def _count(entry: Mapping[str, Any]) -> str:
    """``4``, or ``4 (2 seeds)`` where trials share training seeds."""
    seeds = entry.get("seeds")
    return fmt_num(entry.get("n")) + (f" ({fmt_num(seeds)} seeds)" if seeds else "")


def _epoch_table(block: Mapping[str, Any]) -> Table:
    """One row per epoch (and the verdict's window first, when it spans several epochs)."""
    epochs = [e for e in block.get("epochs") or [] if isinstance(e, Mapping)]
    kinds = [k for k in _SPLIT if any(k in e for e in epochs)]
    # Mode split only where the models have both layers (then in mode's place, as in the
    # figure): otherwise mode is the one layer they have.
    split = kinds if len(kinds) == len(_SPLIT) else []
    parts = ["gap", "timing", *(split or ["mode"]), "generalization"]
    rows = [[fmt_num(e.get("epoch")), _count(e), *(_cell(e.get(p)) for p in parts),
             _carrier(e.get("carrier"))] for e in epochs]
    early = block.get("early") if isinstance(block.get("early"), Mapping) else {}
    window = early.get("epochs") or []
    highlight: frozenset[int] = frozenset()
    if len(window) > 1:
        label = f"{fmt_num(window[0])}–{fmt_num(window[-1])} (mean)"
        rows.insert(0, [label, _count(early), *(_cell(early.get(p)) for p in parts),
                        _carrier(early.get("carrier"))])
        highlight = frozenset({0})
    names = {**_PART_HEADERS, "mode": _mode_header(kinds)}
    headers = ["epoch", "n", *(names[p] for p in parts), "carrier"]
    return Table(headers, rows, numeric=frozenset(range(len(parts) + 2)), highlight=highlight)


def _closing_text(block: Mapping[str, Any]) -> str:
    """When the lag closes (:func:`~study.analysis.gap_stats.closing_epoch`), in words that
    begin with the table's and the figure's (:func:`~study.analysis.gap_closing.closing_words`).
    """
    threshold = block.get("threshold") if isinstance(block.get("threshold"), Mapping) else {}
    floor, fraction = as_float(threshold.get("floor")), as_float(threshold.get("fraction"))
    limit = (f"{fmt_num(floor)} nats or {fraction:.0%} of the training loss, whichever is "
             "larger" if math.isfinite(floor) and math.isfinite(fraction) else "the threshold")
    rule = f"at most {limit} there and at every later epoch"
    lag = "the lag (timing + mode: all of the gap but overfitting)"
    closing = closing_of(block)
    words = _sentence(closing_words(closing))
    if closing.kind == "no-gap":
        return (f"{words}: through epoch {closing.last} the gap (validation minus training) is "
                f"at most {limit}, so no lag opens to close.")
    if closing.kind in ("no-lag", "no-lag-from"):
        before = (" Before it the intervals straddle the threshold."
                  if closing.kind == "no-lag-from" else "")
        return (f"{words}: {lag} is shown at no epoch, and from epoch {closing.epoch or 1} "
                f"through {closing.last} it is at most {limit}.{before}")
    if closing.kind == "closed":
        return f"{words}: there {lag} is {rule} (through epoch {closing.last})."
    if closing.kind == "unclear":
        what = "validation lags training there" if closing.below else f"{lag} has closed"
        return (f"{words}, the last any trial reached: whether {what} cannot be told "
                f"({why_unclear(closing)}; {lag} closes where it is {rule}); more trials "
                "would tell.")
    return (f"{words}, the last any trial reached: there {lag} is shown above the threshold "
            f"(it closes where it is {rule}).")


def _notes(block: Mapping[str, Any]) -> list[Any]:
    notes = [text(n) for n in block.get("notes") or [] if text(n)]
    if text(block.get("scope")) and has_trials(block):
        notes.append(text(block.get("scope")))
    return [Para([_sentence(n).rstrip(".") + "."], "note") for n in notes]


def _answer(block: Mapping[str, Any], figure: FigureRef | None = None) -> list[Any]:
    """One set of trials' verdict, what to try, the figure, its epochs and closing epoch."""
    verdict = block.get("verdict") if isinstance(block.get("verdict"), Mapping) else {}
    out: list[Any] = [_verdict_para(block)]
    tries = [[_sentence(text(t))] for t in verdict.get("try") or [] if text(t)]
    if tries:
        out += [Para(["What to try:"]), Bullets(tries)]
    if figure is not None:
        out += [figure, Heading(3, "Per epoch", "gap-epochs"), Para([_table_intro(block)])]
    if has_trials(block):
        out += [_epoch_table(block), Para([_closing_text(block)])]
    return out


def _verdict_para(block: Mapping[str, Any], lead: str = "Verdict") -> Para:
    verdict = block.get("verdict") if isinstance(block.get("verdict"), Mapping) else {}
    code = text(verdict.get("code")) or "inconclusive"
    return Para([f"{lead}: {code}. {text(verdict.get('text'))}".strip()])


def _group_blocks(block: Mapping[str, Any], groups: Mapping[str, Any]) -> list[Any]:
    """The table of the settings (:func:`~study.analysis.gap_text.gap_table_rows`), then
    each setting's own answer, folded."""
    out: list[Any] = [Heading(3, "Per setting", "gap-settings")]
    try:
        rows = gap_table_rows(block)
    except _BROKEN as exc:
        _log.warning("report: the gap block's settings cannot be tabled: %s", exc)
        rows = []
    if rows:
        # What a reader looks for first leads: the verdict before the numbers behind it.
        first = [h for h in ("setting", "trials", "verdict", "lag") if h in rows[0]]
        headers = [*first, *(h for h in rows[0] if h not in first)]
        out += [Para([f"Each setting's trials on their own: the verdict, the gap at the first "
                      f"epochs and the verdict window's parts, with {_level(block)} "
                      "intervals."]),
                Table(headers, [[text(row.get(h)) or MISSING for h in headers] for row in rows],
                      numeric=frozenset(i for i, h in enumerate(headers)
                                        if h not in ("setting", "verdict", "lag")))]
    out.append(Para([f"Each setting's own verdict, what to try and epochs follow. "
                     f"{_table_intro(block)}"]))
    for label, group in groups.items():
        if isinstance(group, Mapping):
            code = text((group.get("verdict") or {}).get("code")) or "inconclusive"
            summary = f"{text(label)}: {code} ({fmt_num(group.get('n_trials'))} trials)"
            out.append(Details(summary, _answer(group), "part"))
    return out


def _cell(value: Any) -> str:
    """``+0.423 [+0.265, +0.581]``: signed, since parts below 0 pull validation down; fixed
    decimals, so a column reads down (nothing below a thousandth of a nat matters here)."""
    found = effect(value)
    if found is None:
        return MISSING
    estimate, lo, hi = found
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{estimate:+.3f} [no interval]"
    return f"{estimate:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _mode_header(kinds: list[str]) -> str:
    """``mode (BatchNorm)`` where every model with a mode part has only that layer."""
    return f"mode ({_PART_HEADERS[kinds[0]].removeprefix('mode: ')})" if len(kinds) == 1 \
        else "mode"


def _carrier(value: Any) -> str:
    return LABELS.get(text(value), text(value)) or MISSING


def _sentence(line: str) -> str:
    return line[:1].upper() + line[1:]


def _level(block: Mapping[str, Any]) -> str:
    level = as_float(block.get("level"))
    return f"{level:.0%}" if 0 < level < 1 else "95%"
