"""``study report``: the analysis, hyperparameter importance, figures and the trial table as
HTML, Markdown, JSON and CSV, logged to the study's parent run."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from study.analysis.analyze import write_analysis
from study.analysis.command import Logged, analyzed_study, describe_parent, log_to_parent
from study.analysis.importance import importance_table
from study.analysis.sources import StudyData, trials_from_table
from study.config import StudyConfig
from study.landscape import sharpness_figure
from study.redact import redact
from study.report._format import TRIAL_COLUMNS, jsonable
from study.report.writers import write_report
from study.storages import shown_storage
from study.tracking import Tracker

__all__ = ["earlier_report_note", "report_study"]


def report_study(
    config: StudyConfig, *, output_dir: Path, evaluators: Sequence[str], seed: int,
    n_bootstrap: int, compare_widths: tuple[int, int] | None = None,
) -> tuple[dict, dict[str, Path], Logged]:
    """Write ``report.html``, ``report.md``, ``report.json`` and ``trials.csv`` (plus figures
    and ``analysis.json``) and log them to the parent run under ``report/``.

    Returns:
        The analysis document, the files written, and where they were logged.
    """
    tracker, data, document = analyzed_study(config, compare_widths=compare_widths)
    trials = data.trials if data.trials is not None else trials_from_table(data.table)
    importance = importance_table(trials, evaluators=evaluators, seed=seed,
                                  n_bootstrap=n_bootstrap)
    out = Path(output_dir)
    meta = {
        "study_name": data.study_name,
        "storage": shown_storage(config.storage),
        "tracking_uri": redact(tracker.tracking_uri) if tracker else None,
        "parent_run_id": data.parent_run_id,
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": data.source,
        "config": data.settings,
        "counts": data.counts,
    }
    files = write_report(out, analysis=document, table=data.table, importance=importance,
                         meta=meta, extra_figures=_landscape_figure(data))
    write_analysis(document, out / "analysis.json")
    logged = log_to_parent(tracker, data, out, "report")
    if tracker is not None and logged.run_id:
        _tell_the_story(tracker, logged.run_id, document, data.table)
    return document, files, logged


def _tell_the_story(tracker: Tracker, run_id: str, document: dict, table: Any) -> None:
    """The parent run's description (the MLflow UI's run page) becomes the verdict and where
    the report is; the trials become a table artifact the UI shows."""
    columns = [c for c in TRIAL_COLUMNS if c in table.columns]
    tracker.log_table(run_id, table[columns], "report/trials_table.json")
    describe_parent(tracker, run_id, document.get("verdict") or {}, gap=document.get("gap"),
                    more=(
                        "Report: artifacts `report/report.html` (open it from this run's "
                        "Artifacts tab), `report/report.md`; trials: `report/trials.csv` and "
                        "the table `report/trials_table.json`."))


def _landscape_figure(data: StudyData) -> dict[str, tuple[str, str, bytes]]:
    """Sharpness against batch size and weight decay, when `study landscape` probed trials."""
    probed = data.table[data.table["landscape_sharpness"].notna()]
    if probed.empty:
        return {}
    rows = probed.rename(columns={"landscape_sharpness": "sharpness"})
    return {"landscape": (
        "Loss-landscape sharpness",
        f"Sharpness (training-loss rise at a normalized distance, mean over directions) of "
        f"the {len(rows)} probed trial(s), against batch size and weight decay; a setting "
        f"probed with several seeds shows its mean and 95% interval.",
        sharpness_figure(rows),
    )}


def earlier_report_note(folder: Path, parent_run_id: str | None,
                        analysis: dict[str, Any] | None = None) -> str | None:
    """The note after ``study analyze`` wrote ``analysis`` into ``folder`` where ``study
    report`` wrote before: that report is of an earlier analysis, or of another study of the
    same name (one in another storage, whose parent run is another: the folder is named after
    the study). ``None`` where ``folder`` holds no report, or one of this very analysis."""
    path = folder / "report.json"
    if not path.exists():
        return None
    try:
        report = json.loads(path.read_text())
        meta = report.get("meta") or {}
    except (OSError, ValueError, AttributeError):
        report, meta = {}, {}
    other = meta.get("parent_run_id")
    same_study = not (parent_run_id and other and other != parent_run_id)
    if same_study and analysis is not None and report.get("analysis") == json.loads(
            json.dumps(jsonable(analysis))):
        return None  # the report already shows this analysis
    if parent_run_id and other and other != parent_run_id:
        return (f"note: the report in {folder} is of another study named "
                f"{meta.get('study_name')!r} (parent run {other}, storage "
                f"{meta.get('storage')}); `study report` with the same flags replaces it, "
                f"--output-dir keeps both.")
    return (f"note: the report in {folder} is from an earlier analysis; `study report` with "
            f"the same flags brings it up to date.")
