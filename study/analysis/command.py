"""``study analyze``: analyze a study read from either store, write ``analysis.json`` and log it
to the study's parent run."""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from study._text import as_sentence, flag_text
from study.analysis.analyze import analyze, write_analysis
from study.analysis.gap_text import short_line
from study.analysis.sources import StudyData, early_epochs, load_study_data
from study.config import StudyConfig
from study.errors import TrackingError
from study.redact import redact
from study.runtime.lifecycle import missing_local_store
from study.runtime.parent import entry_run_id
from study.tracking import Tracker, tag_session

__all__ = ["Logged", "analyze_study", "analyzed_study", "answer_text", "configured_widths",
           "describe_parent", "log_to_parent", "open_tracker"]


@dataclasses.dataclass(frozen=True)
class Logged:
    """Where files went in MLflow: the run (``None`` when not logged) and, for the user, the
    words ``str()`` gives (``logged to run X, artifacts analysis/`` or why not)."""

    run_id: str | None
    text: str

    def __str__(self) -> str:
        return self.text


def log_to_parent(tracker: Tracker | None, data: StudyData, local: Path,
                  artifact_path: str) -> Logged:
    """Log ``local`` (a file or folder) to the study's parent run under ``artifact_path``;
    returns where, for the user. Under ``mlflow run`` the entry point's run is tagged as a
    session of the study.

    Raises:
        TrackingError: The artifact store refused the files.
    """
    if tracker is None:
        return Logged(None, "not logged (no tracking store)")
    run_id = data.parent_run_id
    if not run_id or tracker.get_run(run_id) is None:
        return Logged(None, f"not logged: the parent run {run_id} is not in "
                            f"{redact(tracker.tracking_uri)}")
    tracker.log_artifacts(run_id, local, artifact_path)
    entry = entry_run_id()
    if entry and entry != run_id:
        tag_session(tracker, entry, study_name=data.study_name, parent_run_id=run_id)
    return Logged(run_id, f"logged to run {run_id}, artifacts {artifact_path}/")


def open_tracker(config: StudyConfig) -> tuple[Tracker | None, str | None]:
    """The study's tracking store, or ``None`` with a warning when it cannot be opened or is a
    SQLite file that does not exist (opening it would create an empty one): results are then
    written locally only. The warning is the caller's to print once the study is found (a
    missing study is one line, not a warning and an error)."""
    import mlflow

    uri = config.tracking_uri or mlflow.get_tracking_uri()  # unset: MLflow's own (env, default)
    if uri.startswith("sqlite:") and missing_local_store(uri):
        return None, (f"warning: no MLflow database at {redact(uri)} (no such file); results "
                      f"are written locally only.")
    try:
        return Tracker(config.tracking_uri), None
    except TrackingError as exc:
        return None, f"warning: {exc}; results are written locally only."


def analyzed_study(config: StudyConfig, *, compare_widths: tuple[int, int] | None = None
                   ) -> tuple[Tracker | None, StudyData, dict]:
    """The tracking store, the study's trials and their analysis document, read between
    ``compare_widths`` (default: the study's searched width range)."""
    tracker, warning = open_tracker(config)
    data = load_study_data(config, tracker)
    if warning:
        print(warning, file=sys.stderr)
    widths, source = (compare_widths, "given") if compare_widths else \
        (configured_widths(data.settings), "configured")
    document = analyze(data.table, study_name=data.study_name,
                       early_epochs=early_epochs(data), sampler=data.settings.get("sampler"),
                       compare_widths=widths, compare_source=source)
    document["design"]["explain"] = _is_explain(data)
    return tracker, data, document


def _is_explain(data: StudyData) -> bool | None:
    """Whether the study is a ``study explain`` design (its trials carry their cell); ``None``
    when read from MLflow, which keeps no such mark."""
    from study.runtime.explain import CELL_ATTR

    if data.trials is None:
        return None
    return any(CELL_ATTR in t.user_attrs for t in data.trials)


def deciding_trials(document: Mapping[str, Any]) -> int | None:
    """The usable trials that would decide the size question an interval cannot decide yet
    (the smaller of the early window's, the document's own verdict, and the initialization's,
    in ``init``), where more than the study has; else ``None``."""
    verdicts = (document.get("verdict") or {}, (document.get("init") or {}).get("verdict") or {})
    needed = [int(n) for verdict in verdicts if (n := verdict.get("trials_needed"))]
    if not needed or min(needed) <= int(document.get("n_trials_used") or 0):
        return None
    return min(needed)


def more_trials_line(document: Mapping[str, Any], *, study_name: str) -> str | None:
    """For a searched study (``study run``) whose size question an interval cannot decide yet,
    the command that runs the trials its verdict says would decide it; ``None`` otherwise (a
    ``study explain`` design gives its own, in replicates)."""
    needed = deciding_trials(document)
    if (document.get("design") or {}).get("explain") is not False or needed is None:
        return None
    states = document.get("n_trials_by_state") or {}
    finished = int(states.get("COMPLETE", 0)) + int(states.get("PRUNED", 0))
    budget = finished + needed - int(document.get("n_trials_used") or 0)
    under_mlflow = bool(os.environ.get("MLFLOW_RUN_ID"))
    command = " ".join(["mlflow run . -e study" if under_mlflow else "study run",
                        flag_text("study_name", shlex.quote(study_name)),
                        flag_text("n_trials", budget)])
    return (f"more trials: {command} (with the same store flags) runs {budget - finished} more "
            f"(about {needed} usable trials would decide, if the estimate holds).")


def configured_widths(settings: Mapping[str, Any]) -> tuple[int, int] | None:
    """The searched width range of a study's stored settings (``None`` when unknown)."""
    try:
        low, high = int(float(settings["width_min"])), int(float(settings["width_max"]))
    except (KeyError, TypeError, ValueError):
        return None
    return (low, high) if 0 < low < high else None


def analyze_study(config: StudyConfig, *, output_dir: Path,
                  compare_widths: tuple[int, int] | None = None) -> tuple[dict, Path, Logged]:
    """Analyze the study, write ``analysis.json`` and log it to the parent run, whose
    description (``mlflow.note.content``) becomes the verdict and tag ``study.verdict`` its code.

    Returns:
        The analysis document, the file written, and where it was logged.
    """
    tracker, data, document = analyzed_study(config, compare_widths=compare_widths)
    path = write_analysis(document, Path(output_dir) / "analysis.json")
    logged = log_to_parent(tracker, data, path, "analysis")
    if tracker is not None and logged.run_id:
        describe_parent(tracker, logged.run_id, document["verdict"],
                        gap=document.get("gap"))
    return document, path, logged


def answer_text(verdict: Mapping[str, Any], gap: Mapping[str, Any] | None) -> str:
    """The answer in words: the two size questions' lines, the gap's line third (``gap``: the
    document's block, if any), a blank line, the detail paragraph. A study of one model size:
    the gap's line, then one line saying why the size question is not asked."""
    if not gap or "headline" not in verdict:
        return str(verdict.get("text", ""))
    if verdict.get("size_asked") is False:
        return f"{short_line(gap)}\nModel size: not asked. {as_sentence(verdict.get('why', ''))}"
    return f"{verdict['headline']}\n{short_line(gap)}\n\n{verdict.get('detail', '')}".rstrip()


def describe_parent(tracker: Tracker, run_id: str, verdict: dict, *, more: str = "",
                    gap: Mapping[str, Any] | None = None) -> None:
    """The parent run's description in the MLflow UI (``mlflow.note.content``) becomes the
    answer (:func:`answer_text`: the verdict with the gap's line third), then ``more``; tags
    ``study.verdict.init`` and ``study.verdict.early`` the two codes, ``study.verdict`` the
    early one, ``study.verdict.gap`` the gap's."""
    lines = [answer_text(verdict, gap), *([more] if more else [])]
    code = str(verdict.get("code", ""))
    tags = {"mlflow.note.content": "\n\n".join(lines), "study.verdict": code,
            "study.verdict.early": code, "study.verdict.init": str(verdict.get("init_code", ""))}
    if gap:
        tags["study.verdict.gap"] = str(gap["verdict"]["code"])
    tracker.set_tags(run_id, tags)
