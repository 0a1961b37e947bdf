"""The report's sections on the answer: for each question (the loss at initialization, the early
window) the size effect split into its parts, by weight decay and by penalty mode, the
threshold, and the regressions behind them. Reads ``study.analysis/2`` and ``/1`` documents
(a ``/1`` document has no ``init`` block and no threshold; those sections say so)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from study._text import interval_formatter
from study.analysis.answer import weight_decay_text, where_text
from study.report._format import MISSING, effect, fmt_ci, fmt_num, fmt_p, text
from study.report.blocks import Code, FigureRef, Heading, Para, Table

__all__ = ["answer_blocks", "figure_blocks", "model_blocks"]

_PARTS = (("total", "total (what is reported)"), ("data", "data loss"),
          ("penalty", "L2 penalty"))
_MODEL_TITLES = {
    "total": "total loss on the data part's design (descriptive; the answer is data + penalty)",
    "data": "data loss",
    "penalty": "squared weight norm ||w||² against width (the L2 penalty is weight decay x "
               "it)",
    "explain": "early total loss explained by size and penalty (pooled across modes)",
}
SIZE_TERMS = ("log10_n_params", "z", "width")


def questions(analysis: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any]]]:
    """``(key, title, block)`` of each question the document answers."""
    epochs = analysis.get("early_epochs")
    early = "Over the first epoch" if epochs in (1, None) else f"Over the first {epochs} epochs"
    out = []
    if isinstance(analysis.get("init"), Mapping):
        out.append(("init", "At initialization (before the first update)", analysis["init"]))
    out.append(("early", f"{early} (the loss Keras reports)", analysis))
    return out


def figure_blocks() -> list[Any]:
    return [
        Heading(2, "Loss against parameter count", "size-effect"),
        FigureRef("size_effect", "Total, data and penalty loss against parameter count",
                  "Top row: the loss of the initial weights; bottom row: the mean loss over the "
                  "early window. Each curve is the fitted loss of one group of trials (a "
                  "penalty mode at a level of weight decay, the curve at the level's median), "
                  "at the reference learning rate and batch size; the group's trials are drawn "
                  "in its colour, adjusted to that setting."),
        Heading(2, "Size effect against weight decay", "threshold"),
        FigureRef("threshold", "Size effect of each part against weight decay",
                  "The change of the loss per decade of parameters (smallest to largest model) "
                  "in l2-in-loss, against weight decay: the penalty part grows in proportion "
                  "to the weight decay, the data part does not. The green line marks where the "
                  "total turns positive, with its 95% interval; grey marks the weight decays "
                  "the study ran."),
    ]


def answer_blocks(analysis: Mapping[str, Any]) -> list[Any]:
    """The size effect of each question, part by part."""
    blocks: list[Any] = [Heading(2, "The answer, part by part", "decomposition"),
                         Para(["Change of the loss per decade (10x) of parameters, between the "
                               "two compared models (by default the study's --width-min and "
                               "--width-max; --compare-widths A,B for others), at "
                               "the reference settings; total = data + penalty."])]
    for key, title, block in questions(analysis):
        blocks.append(Heading(3, title, f"answer-{key}"))
        blocks += _question(block)
    if "init" not in analysis:
        blocks.append(Para(["This analysis (schema study.analysis/1) has no loss at "
                            "initialization and no threshold; run `study analyze` again."],
                           "note"))
    return blocks


def model_blocks(analysis: Mapping[str, Any]) -> list[Any]:
    """The regressions behind the answer, per question."""
    blocks: list[Any] = [Heading(2, "Regression models", "regressions")]
    for key, title, block in questions(analysis):
        models = block.get("models") if isinstance(block.get("models"), Mapping) else {}
        names = [n for n in ("data", "penalty", "total") if n in models]
        if key == "early" and "explain" in models:
            names.append("explain")
        for name in names:
            blocks.append(Heading(3, f"{title}: {_MODEL_TITLES.get(name, name)}",
                                  f"model-{key}-{name}"))
            blocks += _model(models.get(name))
    return blocks


# -- internals --------------------------------------------------------------------------------
def _question(block: Mapping[str, Any]) -> list[Any]:
    decomposition = block.get("decomposition")
    if not isinstance(decomposition, Mapping):
        verdict = block.get("verdict") if isinstance(block.get("verdict"), Mapping) else {}
        return [Para([f"No size effect: {text(verdict.get('why')) or 'too few trials'}."],
                     "note")]
    out: list[Any] = [Para([_reference_text(block)])]
    values = [effect(decomposition.get(f"width_effect_{part}")) for part, _ in _PARTS]
    cells = _cells(values)  # the numbers of the verdict's line, as that line writes them
    rows = [[label, *pair] for (_, label), pair in zip(_PARTS, cells, strict=True)]
    out.append(Table(["part", "per decade", "95% CI"], rows, numeric=frozenset({1})))
    by_decay = [r for r in block.get("by_weight_decay") or [] if isinstance(r, Mapping)]
    if len(by_decay) > 1:
        out.append(Para(["In l2-in-loss, by weight decay:"]))
        out.append(Table(["weight decay", "total", "95% CI", "data", "95% CI", "penalty",
                          "95% CI"], [[fmt_num(r.get("weight_decay"), 3), *cells]
                                      for r, cells in zip(by_decay, _part_rows(by_decay),
                                                          strict=True)],
                         numeric=frozenset({0, 1, 3, 5})))
    by_mode = block.get("by_mode") if isinstance(block.get("by_mode"), Mapping) else {}
    if len(by_mode) > 1:
        out.append(Para(["By penalty mode, at the reference weight decay:"]))
        out.append(Table(["penalty mode", "total", "95% CI", "data", "95% CI", "penalty",
                          "95% CI"], [[text(m), *cells] for m, cells in
                                      zip(by_mode, _part_rows(list(by_mode.values())),
                                          strict=True)],
                         numeric=frozenset({1, 3, 5})))
    share = decomposition.get("penalty_share")
    if isinstance(share, Mapping) and share.get("estimate") is not None:
        out.append(Para([f"The L2 penalty's share of the rise: "
                         f"{100 * share['estimate']:.0f}%, 95% CI "
                         f"{_percent(share.get('ci95'))}."]))
    out.append(Para([_threshold_text(block.get("threshold"))]))
    verdict = block.get("verdict") if isinstance(block.get("verdict"), Mapping) else {}
    if verdict:
        out.append(Para([f"Verdict: {text(verdict.get('code'))}; {text(verdict.get('why'))}."]))
    return out


def _reference_text(block: Mapping[str, Any]) -> str:
    return f"Reference: {where_text(block)}."

def _part_rows(entries: list[Mapping[str, Any]]) -> list[list[str]]:
    """The total, data and penalty cells of each entry (a weight decay's or a mode's): three
    significant digits, signed, so that a part that is the same in every row reads the same
    and a small total keeps its digits."""
    def cell(v: float) -> str:
        return f"{v:+.3g}" if math.isfinite(v) else MISSING

    out = []
    for entry in entries:
        row = []
        for part in ("total", "data", "penalty"):
            value = effect(entry.get(part))
            row += [cell(value[0]), f"[{cell(value[1])}, {cell(value[2])}]"] if value else \
                [MISSING, MISSING]
        out.append(row)
    return out


def _cells(values: list[tuple[float, float, float] | None]) -> list[tuple[str, str]]:
    """``(estimate, "[lo, hi]")`` of each part, signed, in the decimals that the answer's
    sentences give the same numbers (:func:`study._text.interval_formatter`)."""
    fmt = interval_formatter([v for value in values if value for v in value], significant=3)

    def one(v: float) -> str:
        return fmt(v) if math.isfinite(v) else MISSING

    return [(one(value[0]), f"[{one(value[1])}, {one(value[2])}]"
             if math.isfinite(value[1]) or math.isfinite(value[2]) else MISSING)
            if value else (MISSING, MISSING) for value in values]


def _threshold_text(found: Any) -> str:
    if not isinstance(found, Mapping):
        return "Threshold weight decay: not estimated."
    status, estimate = found.get("status"), found.get("estimate")
    lo, hi = found.get("ci95") or (None, None)
    basis = text(found.get("basis"))
    wd = weight_decay_text  # as the verdict writes weight decays: 1.0e-04, not 0.0001
    if estimate is not None:
        bounds = (f"{wd(lo)} to {wd(hi)}" if lo and hi else f"up to {wd(hi)}" if hi else
                  f"from {wd(lo)} up" if lo else "unbounded")
        where = "inside" if status == "inside" else "outside"
        return (f"Threshold weight decay (the total turns positive above it): "
                f"{wd(estimate)}, 95% CI {bounds}; {where} the studied range. "
                f"Basis: {basis}.")
    extra = ""
    if found.get("extrapolated"):
        extra = (f" Extrapolated (data part and ||w||² as at the edge): "
                 f"about {wd(found['extrapolated'])}.")
    return f"Threshold weight decay: none found ({text(found.get('reason'))}).{extra}"


def _model(model: Any) -> list[Any]:
    if not isinstance(model, Mapping):
        return [Para(["Not fitted (too few usable trials or no variation)."], "note")]
    out: list[Any] = [Para(["Formula: ", Code(text(model.get("formula")) or MISSING),
                            f"; n = {fmt_num(model.get('n'))}; "
                            f"R² = {fmt_num(model.get('r2'), 3)}; "
                            f"covariance {text(model.get('cov_type')) or MISSING}"])]
    if model.get("note"):
        out.append(Para([text(model.get("note"))], "note"))
    coefficients = model.get("coefficients")
    coefficients = coefficients if isinstance(coefficients, Mapping) else {}
    if not coefficients:
        return [*out, Para(["No coefficients."], "note")]
    rows, highlight = [], set()
    for i, (term, c) in enumerate(coefficients.items()):
        c = c if isinstance(c, Mapping) else {"estimate": c}
        rows.append([Code(text(term)), fmt_num(c.get("estimate")), fmt_ci(c.get("ci95")),
                     fmt_p(c.get("p_value"))])
        if term in SIZE_TERMS:
            highlight.add(i)
    out.append(Table(["coefficient", "estimate", "95% CI", "p-value"], rows,
                     numeric=frozenset({1, 3}), highlight=frozenset(highlight)))
    return out


def _percent(ci: Any) -> str:
    lo, hi = ci if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)
    if lo is None or hi is None:
        return "unbounded"
    return f"{100 * lo:.0f}% to {100 * hi:.0f}%"

