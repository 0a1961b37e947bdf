"""Write the study report: ``report.html``, ``report.md``, ``report.json``, ``trials.csv``.

The HTML is self-contained (figures embedded); the Markdown references the same figures as PNG
files under ``figures/`` (``gap.png`` only for an analysis with a ``gap`` block); the JSON holds
every number (NaN as null); the CSV one row per trial.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from study.redact import one_line, redact
from study.report._format import INT_COLUMNS, TRIAL_COLUMNS, jsonable
from study.report.content import build_blocks
from study.report.figures import curves_figure, importance_figure, message_figure
from study.report.gap_blocks import GAP_FIGURE, gap_of, has_trials
from study.report.gap_figure import gap_figure
from study.report.html import render_html
from study.report.markdown import render_markdown
from study.report.size_figures import size_effect_figure, threshold_figure

__all__ = ["FIGURES", "REPORT_SCHEMA", "report_document", "trial_frame", "write_report"]

REPORT_SCHEMA = "study.report/1"
FIGURES = ("size_effect", "threshold", "curves", "importance")
_log = logging.getLogger(__name__)


def write_report(out_dir: Path | str, *, analysis: Mapping[str, Any] | None,
                 table: pd.DataFrame | None, importance: pd.DataFrame | None,
                 meta: Mapping[str, Any] | None,
                 extra_figures: Mapping[str, tuple[str, str, bytes]] | None = None,
                 ) -> dict[str, Path]:
    """Write every report file into ``out_dir`` (created if needed).

    Args:
        out_dir: Output directory; existing report files in it are replaced.
        analysis: The ``analysis.json`` document (SPEC section 6); may be empty or partial.
        table: The trial table, one row per trial (``curve`` optional).
        importance: The importance table (may be empty).
        meta: ``study_name``, ``storage``, ``tracking_uri``, ``parent_run_id``,
            ``generated_at``, ``config``, ``counts``; URL passwords are redacted again.
        extra_figures: More figures, ``{name: (title, caption, png)}``, shown after the
            standard ones (e.g. the loss-landscape sharpness of probed trials).

    Returns:
        ``{relative name: path}`` for ``report.html``, ``report.md``, ``report.json``,
        ``trials.csv`` and ``figures/size_effect.png``, ``figures/threshold.png``,
        ``figures/curves.png``, ``figures/importance.png``; ``figures/gap.png`` too when the
        analysis has a ``gap`` block with trials (``study.analysis/3``).
    """
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    analysis = analysis if isinstance(analysis, Mapping) else {}
    table = _trials(table)
    importance = importance if isinstance(importance, pd.DataFrame) else pd.DataFrame()
    meta = _clean_meta(meta)

    pngs = {
        "size_effect": _safe_figure("size effect", lambda: size_effect_figure(analysis)),
        "threshold": _safe_figure("threshold", lambda: threshold_figure(analysis)),
        "curves": _safe_figure("curves", lambda: curves_figure(table)),
        "importance": _safe_figure("importance", lambda: importance_figure(
            importance, objective=_objective(meta))),
    }
    gap = gap_of(analysis)
    if has_trials(gap):
        pngs[GAP_FIGURE] = _safe_figure("gap", lambda: gap_figure(gap))
    extras = dict(extra_figures or {})
    pngs.update({name: png for name, (_, _, png) in extras.items()})
    paths: dict[str, Path] = {}
    figure_names: dict[str, str] = {}
    for name, png in pngs.items():
        relative = f"figures/{name}.png"
        paths[relative] = _write(out / relative, png)
        figure_names[name] = relative

    title, blocks = build_blocks(
        analysis=analysis, table=table, importance=importance, meta=meta,
        extra_figures={name: (title, caption) for name, (title, caption, _) in extras.items()},
    )
    paths["report.html"] = _write(out / "report.html", render_html(title, blocks, pngs))
    paths["report.md"] = _write(out / "report.md",
                                render_markdown(title, blocks, figure_names))
    document = report_document(analysis=analysis, table=table, importance=importance,
                               meta=meta)
    paths["report.json"] = _write(out / "report.json",
                                  json.dumps(document, indent=1, allow_nan=False) + "\n")
    paths["trials.csv"] = _write(out / "trials.csv", _csv_cells(trial_frame(table)).to_csv(
        index=False))
    return paths


def report_document(*, analysis: Mapping[str, Any], table: pd.DataFrame,
                    importance: pd.DataFrame, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The ``report.json`` document (schema ``study.report/1``), JSON-safe."""
    trials = trial_frame(table)
    return {
        "schema": REPORT_SCHEMA,
        "meta": jsonable(meta),
        "analysis": jsonable(analysis),
        "importance": _records(importance),
        "trials": _records(trials),
    }


def trial_frame(table: pd.DataFrame | None) -> pd.DataFrame:
    """The trial table without ``curve``: standard columns first (added empty when absent),
    whole-number columns as nullable integers."""
    table = _trials(table)
    extras = [c for c in table.columns if c not in TRIAL_COLUMNS and c != "curve"]
    frame = table.reindex(columns=[*TRIAL_COLUMNS, *extras])
    for column in INT_COLUMNS:
        values = pd.to_numeric(frame[column], errors="coerce")
        finite = values.dropna()
        if bool(np.all(np.isfinite(finite)) and np.all(finite == np.round(finite))):
            frame[column] = values.round().astype("Int64")
    return frame


# -- internals --------------------------------------------------------------------------------
def _csv_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """Cells holding lists or dicts (``gap_curve``) as JSON text, not Python's repr: a CSV
    reader elsewhere parses them with ``json.loads``."""
    frame = frame.copy()
    for column in frame.select_dtypes(include="object").columns:
        frame[column] = frame[column].map(
            lambda v: json.dumps(jsonable(v), allow_nan=False) if isinstance(v, list | dict)
            else v)
    return frame


def _trials(table: Any) -> pd.DataFrame:
    if not isinstance(table, pd.DataFrame):
        return pd.DataFrame(columns=list(TRIAL_COLUMNS))
    if "number" not in table.columns and table.index.name == "number":
        table = table.reset_index()
    if "number" in table.columns and len(table):
        table = table.sort_values("number", kind="stable", na_position="last")
    return table.reset_index(drop=True)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    if frame.empty:
        return []
    columns = [str(c) for c in frame.columns]
    rows = []
    for values in frame.itertuples(index=False, name=None):
        rows.append({c: jsonable(v) for c, v in zip(columns, values, strict=True)})
    return rows


def _clean_meta(meta: Any) -> dict[str, Any]:
    """A JSON-safe copy of ``meta`` with every URL password redacted (defence in depth)."""

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return redact(value)
        if isinstance(value, Mapping):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return clean(jsonable(meta)) if isinstance(meta, Mapping) else {}


def _objective(meta: Mapping[str, Any]) -> str | None:
    """The study's objective (``val_loss``, ...) from its stored settings, if known."""
    config = meta.get("config") if isinstance(meta.get("config"), Mapping) else {}
    value = config.get("objective")
    return str(value) if value else None


def _safe_figure(name: str, draw: Callable[[], bytes]) -> bytes:
    """A figure, or a placeholder saying why it could not be drawn (the report still renders)."""
    try:
        return draw()
    except Exception as exc:  # a figure must never cost the user the whole report
        _log.warning("report figure %s failed: %s", name, one_line(exc))
        return message_figure(f"{name} figure could not be drawn: {one_line(exc)[:120]}")


def _write(path: Path, content: str | bytes) -> Path:
    """Write via a temporary file in the same directory, then rename (no half-written file)."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
