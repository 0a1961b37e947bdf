"""The report's content as renderer-neutral blocks, so the HTML and Markdown say the same thing.

Every string in a block is plain text straight from the data; the renderers escape it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from study.report._format import (
    MISSING,
    TRIAL_COLUMNS,
    as_float,
    effect,
    fmt_ci,
    fmt_num,
    fmt_p,
    is_missing,
    jsonable,
    text,
)

__all__ = [
    "MAX_TABLE_ROWS",
    "Code",
    "Details",
    "FigureRef",
    "Heading",
    "KeyValues",
    "Para",
    "Table",
    "Verdict",
    "build_blocks",
]

MAX_TABLE_ROWS = 200
MODEL_ORDER = ("total", "data", "penalty", "explain")
EVALUATOR_ORDER = ("fanova", "ped-anova", "mdi")
MODEL_TITLES = {
    "total": "early total loss (what was optimized)",
    "data": "early data loss",
    "penalty": "early L2 penalty",
    "explain": "early total loss explained by size and penalty (pooled; see SPEC 6)",
}
SIZE_TERM = "log10_n_params"
_KNOWN_ANALYSIS_KEYS = {"schema", "study_name", "n_trials_used", "early_epochs", "models",
                        "decomposition", "verdict"}
_TRIAL_HEADERS = {"number": "#", "batch_size": "batch", "weight_decay": "weight decay",
                  "penalty_mode": "penalty mode", "n_params": "params",
                  "early_loss": "early total", "early_data_loss": "early data",
                  "early_penalty": "early penalty", "final_val_loss": "final val loss",
                  "final_val_accuracy": "final val acc", "mlflow_run_id": "MLflow run"}
_TEXT_COLUMNS = {"state", "penalty_mode", "mlflow_run_id", "diagnosis", "failure"}


@dataclass(frozen=True)
class Code:
    """Inline code (formulas, coefficient and parameter names)."""

    text: str


Inline = str | Code


@dataclass
class Heading:
    level: int
    text: str
    anchor: str | None = None


@dataclass
class Para:
    parts: list[Inline]
    css: str | None = None  # "note" for small print


@dataclass
class Verdict:
    code: str
    text: str


@dataclass
class KeyValues:
    items: list[tuple[str, Inline]]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Inline]]
    numeric: frozenset[int] = frozenset()
    highlight: frozenset[int] = frozenset()
    wrap: frozenset[int] = frozenset()  # long free-text columns (others do not wrap)


@dataclass
class FigureRef:
    name: str  # key of the figure (file figures/<name>.png)
    alt: str
    caption: str


@dataclass
class Details:
    summary: str
    blocks: list[Any] = field(default_factory=list)


def build_blocks(*, analysis: Mapping[str, Any], table: pd.DataFrame, importance: pd.DataFrame,
                 meta: Mapping[str, Any],
                 extra_figures: Mapping[str, tuple[str, str]] | None = None,
                 ) -> tuple[str, list[Any]]:
    """``(title, blocks)`` of the whole report; ``extra_figures`` maps name -> (title,
    caption) of figures shown after the standard ones."""
    study_name = text(meta.get("study_name")) or text(analysis.get("study_name")) or "study"
    title = f"Study report: {study_name}"
    blocks: list[Any] = [Heading(1, title)]
    blocks += _meta_blocks(meta, analysis, table)
    verdict = analysis.get("verdict") if isinstance(analysis.get("verdict"), Mapping) else {}
    blocks += [Heading(2, "Verdict", "verdict"),
               Verdict(text(verdict.get("code")) or "none",
                       text(verdict.get("text")) or "No verdict: the analysis is missing.")]
    blocks += _figure_blocks(analysis)
    for name, (heading, caption) in (extra_figures or {}).items():
        blocks += [Heading(2, heading, name), FigureRef(name, heading, caption)]
    blocks += _decomposition_blocks(analysis)
    blocks += _model_blocks(analysis)
    blocks += _importance_blocks(importance)
    blocks += _trial_blocks(table)
    blocks += _failed_blocks(table)
    return title, blocks


# -- sections ---------------------------------------------------------------------------------
def _meta_blocks(meta: Mapping[str, Any], analysis: Mapping[str, Any],
                 table: pd.DataFrame) -> list[Any]:
    counts = meta.get("counts") if isinstance(meta.get("counts"), Mapping) else {}
    if not counts and "state" in table.columns:
        counts = table["state"].map(text).value_counts().to_dict()
    total = sum(int(as_float(v)) for v in counts.values() if not is_missing(as_float(v)))
    count_text = ", ".join(f"{fmt_num(v)} {text(k).lower()}" for k, v in counts.items())
    used = analysis.get("n_trials_used")
    window = analysis.get("early_epochs")
    items: list[tuple[str, Inline]] = [
        ("Study", text(meta.get("study_name")) or MISSING),
        ("Optuna storage", Code(text(meta.get("storage")) or MISSING)),
        ("MLflow tracking URI", Code(text(meta.get("tracking_uri")) or MISSING)),
        ("Parent run", Code(text(meta.get("parent_run_id")) or MISSING)),
        ("Generated", text(meta.get("generated_at")) or MISSING),
        ("Trials", f"{total} ({count_text})" if counts else fmt_num(len(table))),
        ("Used by the analysis", f"{fmt_num(used)} trials; early window = "
                                 f"{_window(window)}"),
    ]
    blocks: list[Any] = [KeyValues(items)]
    config = meta.get("config")
    if isinstance(config, Mapping) and config:
        rows = [[Code(text(k)), _compact(v)] for k, v in config.items()]
        blocks.append(Details("Configuration", [Table(["setting", "value"], rows)]))
    return blocks


def _figure_blocks(analysis: Mapping[str, Any]) -> list[Any]:
    return [
        Heading(2, "Early loss against parameter count", "early-loss"),
        FigureRef("early_loss", "Early total, data and penalty loss against parameter count",
                  "Each point is a trial. Lines: the size effect of the decomposition (change "
                  "per decade of parameters at the median learning rate and batch size), drawn "
                  "through the median trial; shaded: its 95% confidence interval."),
        Heading(2, "Training curves", "curves"),
        FigureRef("curves", "Training loss curves coloured by parameter count",
                  "Training loss per epoch: total (what was optimized) solid, data loss "
                  "dashed; the gap between them is the L2 penalty in the loss."),
        Heading(2, "Hyperparameter importance", "importance"),
        FigureRef("importance", "Hyperparameter importance per evaluator",
                  "Importance per evaluator (seeds named in the legend), with bootstrap 95% "
                  "intervals; the table below lists every number."),
    ]


def _decomposition_blocks(analysis: Mapping[str, Any]) -> list[Any]:
    blocks: list[Any] = [Heading(2, "Size-effect decomposition", "decomposition")]
    decomposition = analysis.get("decomposition")
    if not isinstance(decomposition, Mapping):
        return [*blocks, Para(["No decomposition: the analysis could not fit it."], "note")]
    rows, estimates = [], {}
    for key, label in (("total", "total (optimized)"), ("data", "data loss"),
                       ("penalty", "L2 penalty")):
        value = effect(decomposition.get(f"width_effect_{key}"))
        estimates[key] = value[0] if value else None
        rows.append([label, fmt_num(value[0]) if value else MISSING,
                     fmt_ci(value[1:]) if value else MISSING])
    blocks += [Para(["Change of the early training loss per decade (10x) of parameters, at the "
                     "study's median learning rate and batch size."]),
               Table(["component", "size effect per decade", "95% CI"], rows,
                     numeric=frozenset({1}))]
    share = decomposition.get("penalty_share")
    share_effect = effect(share)
    blocks.append(Para([
        "Penalty share of the total size effect: ",
        (f"{share_effect[0]:.1%}" if share_effect else
         "not defined (the total size effect is not positive)"),
    ]))
    if all(estimates[k] is not None for k in ("total", "data", "penalty")):
        blocks.append(Para([f"Check: data + penalty = "
                            f"{fmt_num(estimates['data'] + estimates['penalty'])}; total = "
                            f"{fmt_num(estimates['total'])}."], "note"))
    extra = [(text(k), _compact(v)) for k, v in decomposition.items()
             if not str(k).startswith("width_effect_") and k != "penalty_share"]
    extra += [(text(k), _compact(v)) for k, v in analysis.items()
              if k not in _KNOWN_ANALYSIS_KEYS]
    if extra:
        blocks.append(Details("Analysis details", [KeyValues(list(extra))]))
    return blocks


def _model_blocks(analysis: Mapping[str, Any]) -> list[Any]:
    blocks: list[Any] = [Heading(2, "Regression models", "regressions")]
    models = analysis.get("models")
    models = models if isinstance(models, Mapping) else {}
    names = [n for n in MODEL_ORDER if n in models] + [n for n in models if n not in MODEL_ORDER]
    for name in names or list(MODEL_ORDER):
        model = models.get(name)
        title = MODEL_TITLES.get(name, str(name))
        blocks.append(Heading(3, f"Model {name}: {title}", f"model-{_slug(name)}"))
        if not isinstance(model, Mapping):
            blocks.append(Para(["Not fitted (too few usable trials or no variation)."], "note"))
            continue
        blocks.append(Para(["Formula: ", Code(text(model.get("formula")) or MISSING),
                            f"; n = {fmt_num(model.get('n'))}; "
                            f"R² = {fmt_num(model.get('r2'), 3)}"]))
        if model.get("note"):
            blocks.append(Para([text(model.get("note"))], "note"))
        coefficients = model.get("coefficients")
        coefficients = coefficients if isinstance(coefficients, Mapping) else {}
        if not coefficients:
            blocks.append(Para(["No coefficients."], "note"))
            continue
        rows, highlight = [], set()
        for i, (term, c) in enumerate(coefficients.items()):
            c = c if isinstance(c, Mapping) else {"estimate": c}
            rows.append([Code(text(term)), fmt_num(c.get("estimate")), fmt_ci(c.get("ci95")),
                         fmt_p(c.get("p_value"))])
            if term == SIZE_TERM:
                highlight.add(i)
        blocks.append(Table(["coefficient", "estimate", "95% CI", "p-value"], rows,
                            numeric=frozenset({1, 3}), highlight=frozenset(highlight)))
    return blocks


def _importance_blocks(importance: pd.DataFrame) -> list[Any]:
    if importance.empty or "param" not in importance.columns:
        return [Heading(2, "Importance table", "importance-table"),
                Para(["No importance available."], "note")]
    frame = importance.copy()
    for column in ("target", "evaluator"):
        if column not in frame.columns:
            frame[column] = None
    frame["_order"] = -pd.to_numeric(frame.get("importance"), errors="coerce").fillna(-1)
    frame["_target"] = frame["target"].map(lambda v: _rank(v, ("objective", "early_loss")))
    frame["_evaluator"] = frame["evaluator"].map(lambda v: _rank(v, EVALUATOR_ORDER))
    frame = frame.sort_values(["_target", "_evaluator", "_order"], kind="stable")
    summary: list[tuple[str, Inline]] = []
    for (target, ev), rows in frame.groupby(["target", "evaluator"], sort=False, dropna=False):
        seed = _seeds(rows, "evaluator_seed")
        summary.append((f"{text(target)} / {text(ev)}",
                        f"{'seed ' + seed if seed != 'none' else 'no seed (deterministic)'}; "
                        f"{_seeds(rows, 'n_bootstrap')} bootstrap resamples (seed "
                        f"{_seeds(rows, 'bootstrap_seed')}); n = {_seeds(rows, 'n_trials')} "
                        "trials"))
    rows = []
    for rec in frame.to_dict("records"):
        note = text(rec.get("error"))
        if not is_missing(rec.get("derived")) and bool(rec.get("derived")):
            note = "derived from width" + (f"; {note}" if note else "")
        rows.append([text(rec.get("target")), text(rec.get("evaluator")),
                     fmt_num(rec.get("evaluator_seed")), fmt_num(rec.get("bootstrap_seed")),
                     fmt_num(rec.get("n_trials")), fmt_num(rec.get("n_bootstrap")),
                     Code(text(rec.get("param"))), fmt_num(rec.get("importance"), 3),
                     fmt_ci([rec.get("ci_lo"), rec.get("ci_hi")]), note])
    headers = ["target", "evaluator", "evaluator seed", "bootstrap seed", "n trials",
               "n bootstrap", "param", "importance", "95% CI", "note"]
    return [Heading(2, "Importance table", "importance-table"),
            Para(["Evaluators (target / evaluator):"]), KeyValues(summary),
            Table(headers, rows, numeric=frozenset({2, 3, 4, 5, 7}), wrap=frozenset({9}))]


def _trial_blocks(table: pd.DataFrame) -> list[Any]:
    blocks: list[Any] = [Heading(2, "Trials", "trials")]
    if table.empty:
        return [*blocks, Para(["No trials."], "note")]
    order = [c for c in TRIAL_COLUMNS if c != "mlflow_run_id"]
    columns = [c for c in (*order, "diagnosis", "mlflow_run_id") if c in table.columns]
    shown = table.head(MAX_TABLE_ROWS)
    if len(table) > MAX_TABLE_ROWS:
        blocks.append(Para([f"First {MAX_TABLE_ROWS} of {len(table)} trials; every trial is "
                            "in trials.csv and report.json."], "note"))
    blocks.append(_frame_table(shown, columns))
    return blocks


def _failed_blocks(table: pd.DataFrame) -> list[Any]:
    blocks: list[Any] = [Heading(2, "Failed trials", "failed")]
    if table.empty or "state" not in table.columns:
        return [*blocks, Para(["No failed trials."], "note")]
    failed = table["state"].map(text).str.upper() == "FAIL"
    if "diagnosis" in table.columns:
        failed |= table["diagnosis"].map(text) != ""
    rows = table[failed]
    if rows.empty:
        return [*blocks, Para(["No failed trials."], "note")]
    columns = [c for c in ("number", "state", "width", "lr", "batch_size", "weight_decay",
                           "penalty_mode", "failure", "diagnosis", "mlflow_run_id")
               if c in table.columns]
    if len(rows) > MAX_TABLE_ROWS:
        blocks.append(Para([f"First {MAX_TABLE_ROWS} of {len(rows)} failed or diagnosed "
                            "trials."], "note"))
    blocks.append(Para([f"{len(rows)} trial(s) failed or carry a diagnosis."]))
    blocks.append(_frame_table(rows.head(MAX_TABLE_ROWS), columns))
    return blocks


# -- helpers ----------------------------------------------------------------------------------
def _frame_table(frame: pd.DataFrame, columns: Sequence[str]) -> Table:
    headers = [_TRIAL_HEADERS.get(c, c.replace("_", " ")) for c in columns]
    rows = []
    for rec in frame[list(columns)].to_dict("records"):
        row: list[Inline] = []
        for c in columns:
            value = rec[c]
            if c in _TEXT_COLUMNS:
                row.append(text(value) or MISSING)
            elif c == "n_params" and not is_missing(as_float(value)):
                row.append(f"{int(as_float(value)):,}")
            else:
                row.append(fmt_num(value))
        rows.append(row)
    numeric = frozenset(i for i, c in enumerate(columns) if c not in _TEXT_COLUMNS)
    wrap = frozenset(i for i, c in enumerate(columns) if c in ("diagnosis", "failure"))
    return Table(headers, rows, numeric=numeric, wrap=wrap)


def _seeds(rows: pd.DataFrame, column: str) -> str:
    if column not in rows.columns:
        return MISSING
    found = sorted({fmt_num(v) for v in rows[column] if not is_missing(v)})
    return ", ".join(found) if found else "none"


def _compact(value: Any, limit: int = 300) -> str:
    """A value as short text: numbers formatted, containers as compact JSON."""
    if isinstance(value, (Mapping, list, tuple)):
        if isinstance(value, Mapping) and all(not isinstance(v, (Mapping, list, tuple))
                                              for v in value.values()):
            out = ", ".join(f"{k} = {fmt_num(v)}" for k, v in value.items())
        else:
            out = json.dumps(jsonable(value), separators=(", ", ": "))
    else:
        out = fmt_num(value)
    return out if len(out) <= limit else out[: limit - 1] + "…"


def _window(epochs: Any) -> str:
    number = as_float(epochs)
    if is_missing(number):
        return MISSING
    return "first epoch" if number == 1 else f"first {fmt_num(number)} epochs"


def _rank(value: Any, order: Sequence[str]) -> int:
    name = text(value)
    return order.index(name) if name in order else len(order)


def _slug(name: Any) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in str(name).lower()) or "model"
