"""The ``analysis.json`` document (schema ``study.analysis/3``, SPEC sections 6, 9 and 10).

Top level, as in ``study.analysis/1``: the early window (``models``, ``decomposition``,
``verdict``), plus its ``by_weight_decay``, ``by_mode``, ``threshold`` and ``reference``. Under
``init``: the same block for the loss at initialization. ``verdict.text`` answers both. Under
``gap`` (new in ``/3``): why validation lags training (:mod:`study.analysis.gap`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from study._text import as_sentence
from study.analysis.answer import (
    ADAPTIVE_SAMPLERS,
    NOT_ASKED,
    design_note,
    headline,
    paragraph,
)
from study.analysis.curves import effect_curve, size_curves
from study.analysis.estimate import CI_LEVEL
from study.analysis.gap_source import study_gap_block
from study.analysis.regression import CONST, fit, varies
from study.analysis.sizeeffect import (
    L2,
    QUESTIONS,
    RESPONSES,
    SIZE,
    SizeModel,
    fit_part,
    fit_size_model,
    reference_mode,
)
from study.analysis.table import numeric, usable_trials
from study.analysis.threshold import threshold
from study.analysis.verdict import (
    MIN_TRIALS,
    MORE_TRIALS_CAP,
    NO_INCREASE_FRACTION,
    decide,
    no_increase_tolerance,
    penalty_share,
)

__all__ = ["QUESTION_KEYS", "SCHEMA", "SCHEMAS", "analyze", "question_block", "write_analysis"]

# /3 adds the `gap` block (why validation lags training); every key of /2 stays.
SCHEMA = "study.analysis/3"
SCHEMAS = ("study.analysis/1", "study.analysis/2", SCHEMA)  # what `study report` reads
QUESTION_KEYS = ("question", "n_trials_used", "reference", "models", "decomposition",
                 "by_weight_decay", "by_mode", "threshold", "verdict", "curves", "effect_curve")


def analyze(table: pd.DataFrame, *, study_name: str, early_epochs: int,
            sampler: str | None = None, compare_widths: tuple[int, int] | None = None,
            compare_source: str = "configured") -> dict[str, Any]:
    """Answer the size questions for a trial table and draw the verdict; answer why validation
    lags training (``gap``: ``None`` when no trial measured it).

    Args:
        table: The trial table (:func:`~study.analysis.table.trial_table` or
            :func:`~study.analysis.table.trial_table_from_mlflow`); unusable rows are skipped.
        study_name: The study's name, recorded in the document.
        early_epochs: Epochs averaged into the early losses.
        sampler: The study's sampler; an adaptive one (TPE, GP) is named in the verdict.
        compare_widths: The two widths every size effect is read between (the searched
            width range, or the user's ``--compare-widths``); ``None``: the smallest and
            largest width among the trials (what a bare table allows).
        compare_source: ``configured`` or ``given``: where ``compare_widths`` came from.

    Returns:
        The ``analysis.json`` document, JSON-ready (``None`` for anything undefined).
    """
    blocks = {q: question_block(table, q, compare_widths=compare_widths, source=compare_source)
              for q in QUESTIONS}
    design = {"sampler": sampler, "adaptive": str(sampler) in ADAPTIVE_SAMPLERS,
              "note": design_note(sampler)}
    early = blocks["early"]
    medians = {k: early["reference"].get(k) for k in ("lr", "batch_size", "weight_decay")}
    medians["n_params"] = _geometric_mid(early["reference"].get("n_params"))
    medians["early_loss"] = early.pop("typical_loss")
    blocks["init"].pop("typical_loss")
    document = {
        "schema": SCHEMA,
        "study_name": study_name,
        "n_trials_used": early["n_trials_used"],
        "early_epochs": int(early_epochs),
        "models": {**early["models"], "explain": _explain_model(table)},
        "decomposition": early["decomposition"],
        "verdict": _verdict(blocks, early_epochs=early_epochs, design=design),
        **{k: early[k] for k in ("by_weight_decay", "by_mode", "threshold", "reference",
                                 "curves", "effect_curve")},
        "init": blocks["init"],
        # The gap's verdict keeps its own window, epoch 1 (study.analysis.gap), not
        # --early-epochs; the report's "early window" line names both where they differ.
        "gap": study_gap_block(table),
        "design": design,
        "n_trials_total": len(table),
        "n_trials_by_state": {str(k): int(v) for k, v in
                              table["state"].value_counts(sort=False).items()},
        "medians": medians,
        "thresholds": {"ci_level": CI_LEVEL, "min_trials": MIN_TRIALS,
                       "no_increase_fraction": NO_INCREASE_FRACTION,
                       "no_increase_tolerance": early["tolerance"],
                       "more_trials_cap": MORE_TRIALS_CAP},
    }
    for block in blocks.values():
        block.pop("tolerance")
    return _jsonable(document)


def question_block(table: pd.DataFrame, question: str, *,
                   compare_widths: tuple[int, int] | None = None,
                   source: str = "configured") -> dict[str, Any]:
    """Everything ``analysis.json`` says about one question (``init`` or ``early``)."""
    usable = usable_trials(table, question)
    n = len(usable)
    model = fit_size_model(usable, question, compare_widths=compare_widths,
                           source=source) if n else None
    typical = _median(numeric(usable[RESPONSES[question]["total"]])) if n else None
    tolerance = no_increase_tolerance(typical)
    block: dict[str, Any] = {"question": question, "n_trials_used": n,
                             "typical_loss": typical, "tolerance": tolerance}
    if model is None:
        why = "the trials span no range of parameter counts" if n else "no usable trials"
        verdict = decide(None, n=n, tolerance=tolerance)
        if n >= MIN_TRIALS:
            verdict["why"] = why
        if n and usable["n_params"].nunique() == 1:  # more trials of one size cannot tell
            verdict = {"code": NOT_ASKED, "one_size": True,
                       "why": _one_size(usable.get("width", pd.Series(["?"])).iloc[0],
                                        usable["n_params"].iloc[0])}
        return {**block, "reference": {}, "models": {}, "decomposition": None,
                "by_weight_decay": [], "by_mode": {}, "threshold": None, "verdict": verdict,
                "curves": None, "effect_curve": None}
    mode = reference_mode(usable["penalty_mode"])
    studied = _studied(usable)
    wd = _reference_decay(usable, mode)
    effects = model.effects(wd, mode) if wd is not None else None
    parts = None if effects is None else {"total": effects.total, "data": effects.data,
                                          "penalty": effects.penalty}
    found = threshold(model, studied=studied, varied=bool(studied) and studied[0] < studied[1])
    span = model.reference.span
    return {
        **block,
        "reference": {"penalty_mode": mode, "weight_decay": wd,
                      "lr": model.reference.median("lr"),
                      "batch_size": model.reference.median("batch_size"),
                      "n_params": list(span.n_params), "widths": list(span.widths),
                      "span": span.to_dict()},
        "models": _models(usable, model, mode, question),
        "decomposition": _decomposition(effects, parts),
        "by_weight_decay": _by_weight_decay(model, studied) if studied else [],
        "by_mode": {m: e.to_dict() for m in model.modes
                    if wd is not None and (e := model.effects(wd, m)) is not None},
        "threshold": found,
        "verdict": _decided(parts, n=n, tolerance=tolerance,
                            why_not=model.why_not(mode) if mode is not None else None),
        "curves": size_curves(model, usable),
        "effect_curve": effect_curve(model, _effect_span(found)) if studied else None,
    }


def _decided(parts: dict[str, Any] | None, *, n: int, tolerance: float,
             why_not: str | None) -> dict[str, Any]:
    """:func:`decide`, saying which fit failed where no size effect could be estimated."""
    verdict = decide(parts, n=n, tolerance=tolerance)
    if parts is None and n >= MIN_TRIALS and why_not:
        verdict["why"] = why_not
    return verdict


def _one_size(width: Any, n_params: Any) -> str:
    """Why a study of one model size has no size effect, and what asks it (a gap experiment
    trains one width, --width-max, whatever its --width-min: that flag does not help there)."""
    return (f"every trial has one size (width {width}, {int(n_params):,} parameters): a size "
            f"effect needs several widths; ask it with study explain --question size, or study "
            f"run with --width-min below --width-max")


def _verdict(blocks: Mapping[str, Any], *, early_epochs: int,
             design: Mapping[str, Any]) -> dict[str, Any]:
    """The verdict block: the early code (``code``, as in ``/1``) and the initialization code,
    one line per question (``lines``; ``headline`` joins them, or, not asked, is the one line
    ``Model size: not asked. ...``), the detail paragraph, and
    ``text`` = headline, a blank line, detail."""
    lines = {q: headline(blocks[q], early_epochs=early_epochs) for q in QUESTIONS}
    top = "\n".join(lines[q] for q in QUESTIONS)
    detail = paragraph(blocks, early_epochs=early_epochs, design=design)
    asked = not all(blocks[q]["verdict"].get("one_size") for q in QUESTIONS)
    if not asked:  # the one line printed in place of both (a size effect needs several)
        top = f"Model size: not asked. {as_sentence(blocks['early']['verdict']['why'])}"
    early = blocks["early"]["verdict"]
    # The early window's count of trials that would decide it (the README's
    # verdict.trials_needed; the initialization's stays in init.verdict).
    needed = {"trials_needed": early["trials_needed"]} if "trials_needed" in early else {}
    return {"code": early["code"], "why": early["why"],
            "init_code": blocks["init"]["verdict"]["code"], "lines": lines, "headline": top,
            "detail": detail, "text": f"{top}\n\n{detail}", "size_asked": asked, **needed}


def write_analysis(document: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``document`` as JSON (indent 2), creating parent folders; returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(_jsonable(document), indent=2, allow_nan=False) + "\n",
                      encoding="utf-8")
    return target


# -- internals --------------------------------------------------------------------------------
def _studied(usable: pd.DataFrame) -> tuple[float, float] | None:
    """The lowest and highest weight decay of the ``l2-in-loss`` trials."""
    decay = numeric(usable.loc[usable["penalty_mode"].astype(str) == L2, "weight_decay"])
    decay = decay[decay > 0]
    return (float(decay.min()), float(decay.max())) if decay.size else None


def _reference_decay(usable: pd.DataFrame, mode: str | None) -> float | None:
    """The median weight decay (geometric) of the reference mode's trials."""
    decay = numeric(usable.loc[usable["penalty_mode"].astype(str) == str(mode), "weight_decay"])
    positive = decay[decay > 0]
    if positive.size:
        return float(10 ** np.median(np.log10(positive)))
    return 0.0 if decay.size and mode != L2 else None


def _effect_span(found: Mapping[str, Any]) -> tuple[float, float]:
    """The weight decays the effect-against-weight-decay figure spans: the searched range
    when it is the studied one; else the studied range widened to show the threshold."""
    lo, hi = found["searched_range"]
    studied = found["studied_range"]
    if (lo, hi) == tuple(studied):
        return lo, hi
    marks = [v for v in (*studied, found["estimate"], *found["ci95"]) if v]
    return max(lo, min(marks) / 10), min(hi, max(marks) * 10)


def _decomposition(effects: Any, parts: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if effects is None:
        return None
    return {"width_effect_total": effects.total.to_dict(),
            "width_effect_data": effects.data.to_dict(),
            "width_effect_penalty": effects.penalty.to_dict(),
            "penalty_share": penalty_share(parts)}


def _named_decays(studied: tuple[float, float]) -> list[float]:
    """The studied ends, their geometric middle and every power of ten between them."""
    lo, hi = studied
    decades = [10.0**k for k in range(math.ceil(math.log10(lo) - 1e-9),
                                      math.floor(math.log10(hi) + 1e-9) + 1)]
    named = {lo, hi, math.sqrt(lo * hi), *decades}
    return sorted(named)


def _by_weight_decay(model: SizeModel, studied: tuple[float, float]) -> list[dict[str, Any]]:
    rows = []
    for wd in _named_decays(studied):
        effects = model.effects(wd, L2)
        if effects is not None:
            rows.append({"weight_decay": wd, **effects.to_dict()})
    return rows


def _models(usable: pd.DataFrame, model: SizeModel, mode: str,
            question: str) -> dict[str, Any]:
    """The fitted regressions behind the answer (the descriptive ``total`` is the same design
    fitted to the total loss: its size term is not the answer, data + penalty is)."""
    rows = usable[usable["penalty_mode"].astype(str) == mode]
    total = fit_part(rows, question, "data", RESPONSES[question]["total"], model.reference)
    out = {"total": total.to_dict(), "data": model.data[mode].to_dict()}
    out["penalty"] = model.penalty.to_dict() if model.penalty is not None else None
    return out


def _explain_model(table: pd.DataFrame) -> dict[str, Any] | None:
    """The pooled ``early_loss ~ log10_n_params + early_penalty + controls`` (kept for
    reference; misspecified where the size effect depends on lr)."""
    usable = usable_trials(table, "early")
    if len(usable) == 0:
        return None
    columns = {CONST: np.ones(len(usable)),
               SIZE: np.log10(numeric(usable["n_params"])),
               "early_penalty": numeric(usable["early_penalty"])}
    for name in ("lr", "batch_size", "weight_decay"):
        values = numeric(usable[name])
        if np.all(values > 0):
            columns[f"log10_{name}"] = np.log10(values)
    modes = usable["penalty_mode"].astype(str).to_numpy()
    for m in sorted(set(modes))[1:]:
        columns[f"mode[{m}]"] = (modes == m).astype(float)
    kept = {k: v for k, v in columns.items() if k == CONST or varies(v)}
    X = pd.DataFrame(kept, index=usable.index)
    rhs = " + ".join(c for c in X.columns if c != CONST) or "1"
    return fit(usable["early_loss"], X, name="explain", formula=f"early_loss ~ {rhs}",
               dropped=[k for k in columns if k not in kept]).to_dict()


def _median(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else None


def _geometric_mid(bounds: Any) -> float | None:
    if not bounds or None in bounds:
        return None
    return float(math.sqrt(bounds[0] * bounds[1]))


def _jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars unwrapped, tuples as lists, NaN and inf as ``None``."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)
