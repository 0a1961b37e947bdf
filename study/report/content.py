"""The report's content as renderer-neutral blocks, so the HTML and Markdown say the same thing.

Every string in a block is plain text straight from the data; the renderers escape it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from study._text import as_sentence
from study.report._format import (
    MISSING,
    TRIAL_COLUMNS,
    as_float,
    fmt_ci,
    fmt_num,
    is_missing,
    jsonable,
    text,
)
from study.report.answer_blocks import answer_blocks, figure_blocks, model_blocks
from study.report.blocks import (
    Bullets,
    Code,
    Details,
    FigureRef,
    Heading,
    Inline,
    KeyValues,
    Para,
    Table,
    Verdict,
)
from study.report.gap_blocks import gap_blocks, gap_line, gap_of, has_trials

__all__ = [
    "MAX_TABLE_ROWS",
    "Bullets",
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
TRAINING_COLUMNS = ("optimizer", "momentum", "dropout", "bn_momentum")
EVALUATOR_ORDER = ("fanova", "ped-anova", "mdi")
_TRIAL_HEADERS = {"number": "#", "batch_size": "batch", "weight_decay": "weight decay",
                  "bn_momentum": "BN momentum",
                  "penalty_mode": "penalty mode", "n_params": "params",
                  "init_loss": "init total",
                  "early_loss": "early total", "early_data_loss": "early data",
                  "early_penalty": "early penalty", "final_val_loss": "final val loss",
                  "final_val_accuracy": "final val acc", "mlflow_run_id": "MLflow run"}
_TEXT_COLUMNS = {"state", "penalty_mode", "mlflow_run_id", "diagnosis", "diagnosis_detail",
                 "failure"}


def _verdict_box(verdict: Mapping[str, Any],
                 gap: tuple[str, str, str] | None = None) -> Verdict:
    """One line per question (a ``/2`` document's ``lines``, then the gap's of a ``/3``
    document), then the detail; an older document's single paragraph as it was."""
    lines = verdict.get("lines") if isinstance(verdict.get("lines"), Mapping) else {}
    rows = []
    for question, code_key in (("init", "init_code"), ("early", "code")):
        line = text(lines.get(question))
        if line and ": " in line:
            label, rest = line.split(": ", 1)
            code, _, sentence = rest.partition(". ")
            rows.append((label, code or text(verdict.get(code_key)), sentence))
    detail = text(verdict.get("detail")) if rows else ""
    if verdict.get("size_asked") is False:
        # One model size: the gap's line is the answer; the size question, not asked, gets one
        # line (not one per question plus a detail saying it a third time).
        size = ("Model size", "not asked", as_sentence(text(verdict.get("why"))))
        return Verdict(text(verdict.get("code")) or "none", "",
                       (gap, size) if gap else (size,))
    return Verdict(text(verdict.get("code")) or "none",
                   detail or text(verdict.get("text")) or "No verdict: the analysis is missing.",
                   tuple([*rows, *([gap] if gap else [])]))


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
    blocks += [Heading(2, "Verdict", "verdict"), _verdict_box(verdict, gap_line(analysis))]
    blocks += _config_blocks(meta)
    if verdict.get("size_asked") is False:  # one model size: the gap is what it asked
        blocks += [*gap_blocks(analysis), Heading(2, "The size question", "decomposition"),
                   Para([f"Not asked: {text(verdict.get('why'))}."])]
    else:
        blocks += [*answer_blocks(analysis), *figure_blocks(), *gap_blocks(analysis)]
    blocks += _figure_blocks()
    for name, (heading, caption) in (extra_figures or {}).items():
        blocks += [Heading(2, heading, name), FigureRef(name, heading, caption)]
    if verdict.get("size_asked") is not False:  # one size: no regression answers anything
        blocks += model_blocks(analysis)
    blocks += _importance_blocks(importance)
    blocks += _trial_blocks(table)
    blocks += _failed_blocks(table)
    blocks += _diagnosed_blocks(table)
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
                                 f"{_window(window)}{_gap_window(analysis, window)}"),
    ]
    return [KeyValues(items)]


def _config_blocks(meta: Mapping[str, Any]) -> list[Any]:
    """The study's stored settings, folded (after the verdict: the answer comes first, and
    report.md cannot fold them)."""
    config = meta.get("config")
    if not isinstance(config, Mapping) or not config:
        return []
    rows = [[Code(text(k)), _compact(v)] for k, v in config.items()]
    return [Details("Configuration", [Table(["setting", "value"], rows)])]


def _figure_blocks() -> list[Any]:
    return [
        Heading(2, "Training curves", "curves"),
        FigureRef("curves", "Training loss curves coloured by parameter count",
                  "Training loss per epoch, from epoch 0 (the loss at initialization): "
                  "total (what was optimized) solid, data loss dashed; the gap between them "
                  "is the L2 penalty in the loss."),
        Heading(2, "Hyperparameter importance", "importance"),
        FigureRef("importance", "Hyperparameter importance per evaluator",
                  "Importance per evaluator (seeds named in the legend), with bootstrap 95% "
                  "intervals; the table below lists every number. Where the intervals "
                  "overlap, no ranking can be read. optuna-dashboard ranks with Optuna's "
                  "default evaluator on one run without intervals, so its order can differ "
                  "from these."),
    ]


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
                     # An evaluator that could not run has one row, for no single param.
                     "all" if is_missing(rec.get("param")) else Code(text(rec.get("param"))),
                     fmt_num(rec.get("importance"), 3),
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
    columns = [c for c in TRIAL_COLUMNS if c in table.columns]
    # The training options a study varied (a gap experiment's settings) go beside penalty_mode.
    varied = [c for c in TRAINING_COLUMNS if c in table.columns
              and table[c].map(text).nunique(dropna=True) > 1]
    at = columns.index("penalty_mode") + 1 if "penalty_mode" in columns else len(columns)
    columns[at:at] = varied
    shown = table.head(MAX_TABLE_ROWS)
    note = "Every column of every trial (its MLflow run, objective value, seeds) is in " \
           "trials.csv and report.json."
    if len(table) > MAX_TABLE_ROWS:
        note = f"First {MAX_TABLE_ROWS} of {len(table)} trials. " + note
    blocks.append(Para([note], "note"))
    blocks.append(_frame_table(shown, columns))
    return blocks


def _failed_blocks(table: pd.DataFrame) -> list[Any]:
    blocks: list[Any] = [Heading(2, "Failed trials", "failed")]
    failed = (table["state"].map(text).str.upper() == "FAIL") if "state" in table.columns \
        else pd.Series(False, index=table.index)
    rows = table[failed]
    if rows.empty:
        return [*blocks, Para(["No failed trials."], "note")]
    columns = [c for c in ("number", "width", "lr", "batch_size", "weight_decay",
                           "penalty_mode", "failure", "diagnosis") if c in table.columns]
    blocks.append(Para([f"{len(rows)} trial(s) failed; the study went on without them."]))
    blocks.append(_frame_table(rows.head(MAX_TABLE_ROWS), columns))
    return blocks


def _diagnosed_blocks(table: pd.DataFrame) -> list[Any]:
    blocks: list[Any] = [Heading(2, "Diagnosed trials", "diagnosed")]
    if "diagnosis" not in table.columns:
        return [*blocks, Para(["No trial carries a diagnosis."], "note")]
    state = table["state"].map(text).str.upper() if "state" in table.columns else ""
    rows = table[(table["diagnosis"].map(text) != "") & (state != "FAIL")]
    if rows.empty:
        return [*blocks, Para(["No finished trial carries a diagnosis."], "note")]
    columns = [c for c in ("number", "state", "width", "lr", "batch_size", "weight_decay",
                           "penalty_mode", "diagnosis", "diagnosis_detail") if c in table.columns]
    blocks.append(Para([f"{len(rows)} finished trial(s) carry a diagnosis (codes in the "
                        "README's Diagnostics section)."]))
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
    wrap = frozenset(i for i, c in enumerate(columns)
                     if c in ("diagnosis", "failure", "diagnosis_detail"))
    return Table(headers, rows, numeric=numeric, wrap=wrap)


def _seeds(rows: pd.DataFrame, column: str) -> str:
    if column not in rows.columns:
        return MISSING
    found = sorted({fmt_num(v) for v in rows[column] if not is_missing(v)})
    return ", ".join(found) if found else "none"


def _compact(value: Any, limit: int = 300) -> str:
    """A value as short text: numbers formatted, a list of values comma-separated, other
    containers as compact JSON."""
    if isinstance(value, (list, tuple)) and all(not isinstance(v, (Mapping, list, tuple))
                                                 for v in value):
        out = ", ".join(fmt_num(v) for v in value)  # as the flag takes it: adam,sgd
    elif isinstance(value, (Mapping, list, tuple)):
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


def _gap_window(analysis: Mapping[str, Any], window: Any) -> str:
    """`` (the size questions; the gap's verdict: epoch 1)`` where the gap's verdict averaged
    over another window than ``--early-epochs`` (it keeps its own, epoch 1: the epoch users
    ask about), so the line claims no window the gap did not use."""
    gap = gap_of(analysis)
    own = as_float((gap or {}).get("early_epochs"))
    if not has_trials(gap) or is_missing(own) or own == as_float(window):
        return ""
    epochs = "epoch 1" if own == 1 else f"epochs 1-{fmt_num(own)}"
    return f" (the size questions; the gap's verdict: {epochs})"


def _rank(value: Any, order: Sequence[str]) -> int:
    name = text(value)
    return order.index(name) if name in order else len(order)
