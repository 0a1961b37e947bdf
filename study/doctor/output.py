"""What the doctor writes: the terminal table, ``doctor.json`` and the HTML page.

``doctor.json`` is ``{"schema": "study.doctor/1", "status", "inputs", "checks": [{"name",
"status", "evidence", "advice", "budget", "seconds", "details", ...}]}``; a check's
``suspects`` (the labels check's likely mislabeled samples) and its figure's data sit beside
its ``details``.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from study._text import as_sentence
from study.doctor.base import CheckResult, worst
from study.doctor.figures import CAPTIONS, check_figure
from study.doctor.names import CHECKS
from study.report._format import jsonable
from study.report.blocks import (
    Bullets,
    Code,
    Details,
    FigureRef,
    Heading,
    KeyValues,
    Para,
    Table,
    Verdict,
)
from study.report.html import render_html

__all__ = ["SCHEMA", "document", "summary_text", "suspects_file", "table_text", "write_outputs"]

SCHEMA = "study.doctor/1"
# Suspects shown on the page; doctor.json keeps the check's whole list.
_PAGE_SUSPECTS = 20


def table_text(results: Sequence[CheckResult], *, width: int | None = None) -> str:
    """One row per check (name, status, evidence), and under a warning or a failure what to
    do (under a pass with a note, the note); the evidence wraps at the terminal's width."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    name_w = max([len("check"), *(len(r.name) for r in results)])
    lead = name_w + 2 + 7  # "name  status " then the evidence
    rows = [f"{'check':<{name_w}}  status evidence", f"{'-' * name_w}  ------ {'-' * 8}"]
    for r in results:
        lines = textwrap.wrap(r.evidence, max(40, width - lead)) or [""]
        rows.append(f"{r.name:<{name_w}}  {r.status:<6} {lines[0]}")
        rows += [" " * lead + line for line in lines[1:]]
        if r.status != "pass" or r.note:
            todo = textwrap.wrap(f"{'what to do' if r.status != 'pass' else 'note'}: "
                                 f"{r.advice}", max(40, width - lead))
            rows += [" " * lead + line for line in todo]
    return "\n".join(rows)


def document(results: Sequence[CheckResult], *, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON document of a checklist run."""
    return {"schema": SCHEMA, "status": worst(results), "inputs": dict(inputs),
            "checks": [_check_entry(r) for r in results]}


def _check_entry(result: CheckResult) -> dict[str, Any]:
    details = dict(result.details)
    entry: dict[str, Any] = {"name": result.name, "status": result.status,
                             "evidence": result.evidence, "advice": result.advice,
                             "budget": result.budget, "seconds": result.seconds,
                             **({"note": True} if result.note else {})}
    if "suspects" in details:
        entry["suspects"] = details.pop("suspects")
    if result.listing:
        entry["suspects_file"] = suspects_file(result.name)
    entry["details"] = details
    if result.figure is not None:
        entry["figure"] = dict(result.figure)
    return entry


def write_outputs(results: Sequence[CheckResult], *, inputs: Mapping[str, Any],
                  folder: Path) -> dict[str, Path]:
    """Write ``doctor.json``, ``doctor.html``, ``figures/<check>.png`` and
    ``<check>_suspects.csv`` (every sample a check flags) into ``folder``.

    Returns:
        The files written, by kind (``json``, ``html``, ``figure:<check>`` and
        ``suspects:<check>``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    written = {"json": folder / "doctor.json", "html": folder / "doctor.html"}
    doc = document(results, inputs=inputs)
    written["json"].write_text(json.dumps(jsonable(doc), indent=2, allow_nan=False) + "\n",
                               encoding="utf-8")
    for r in results:
        if r.listing:
            path = folder / suspects_file(r.name)
            pd.DataFrame(list(r.listing)).to_csv(path, index=False)
            written[f"suspects:{r.name}"] = path
    figures = {r.name: png for r in results if (png := check_figure(r)) is not None}
    (folder / "figures").mkdir(exist_ok=True)
    for name, png in figures.items():
        path = folder / "figures" / f"{name}.png"
        path.write_bytes(png)
        written[f"figure:{name}"] = path
    page = render_html(f"study doctor: {doc['status']}", _blocks(results, inputs), figures,
                       author="study doctor")
    written["html"].write_text(page, encoding="utf-8")
    _remove_stale(folder, set(written.values()))
    return written


def _remove_stale(folder: Path, written: set[Path]) -> None:
    """Remove the doctor's own files an earlier run left in ``folder`` (a suspects list or a
    figure this run did not write): beside this run's ``doctor.json`` they would describe
    another run. Nothing else in the folder is touched."""
    for name in CHECKS:
        for stale in (folder / suspects_file(name), folder / "figures" / f"{name}.png"):
            if stale not in written:
                stale.unlink(missing_ok=True)


def summary_text(results: Sequence[CheckResult]) -> str:
    """The verdict in words, first on the terminal and in the page: ``1 of 9 checks failed
    (lr); 1 warned (batch-size)``, ``no check failed; 2 of 9 warned (...)``, ``all 9 checks
    passed``."""
    n = len(results)
    of = f"of {n} check{'s' * (n != 1)}"
    failed = [r.name for r in results if r.status == "fail"]
    warned = [r.name for r in results if r.status == "warn"]
    if not failed and not warned:
        return f"all {n} checks passed" if n > 1 else "the check passed"
    warn = f"{len(warned)} {'' if failed else of + ' '}warned ({', '.join(warned)})"
    if not failed:
        return f"no check failed; {warn}"
    return f"{len(failed)} {of} failed ({', '.join(failed)})" + (f"; {warn}" if warned else "")


def _blocks(results: Sequence[CheckResult], inputs: Mapping[str, Any]) -> list[Any]:
    status = worst(results)
    summary = as_sentence(summary_text(results)).rstrip(".")
    passed = [r.name for r in results if r.status == "pass"]
    # The first screen: each problem with its evidence; the passes in one line.
    lines = [(r.name, r.status, r.evidence) for r in results if r.status != "pass"]
    if passed:
        lines.append(("the other checks" if lines else "every check", "pass",
                      ", ".join(passed)))
    blocks: list[Any] = [
        Heading(1, f"Why is my training loss rising? Doctor: {status}"),
        Verdict(code=status, text=f"{summary}. Each check below says what it measured, "
                                  "its budget, and what it does not rule out.",
                lines=tuple(lines)),
        Details("Inputs", [KeyValues([(k, Code(str(v))) for k, v in inputs.items()])]),
        Heading(2, "Checks", anchor="checks"),
        Table(["check", "status", "evidence", "what to do (on a pass: not ruled out)", "seconds"],
              [[r.name, r.status, r.evidence, r.advice, f"{r.seconds:.1f}"] for r in results],
              numeric=frozenset({4}), wrap=frozenset({2, 3}),
              highlight=frozenset(i for i, r in enumerate(results) if r.status != "pass")),
    ]
    for r in results:
        blocks += _check_section(r)
    return blocks


def suspects_file(check: str) -> str:
    """The file that lists every sample ``check`` flags."""
    return f"{check}_suspects.csv"


def _where(result: CheckResult, shown: Sequence[Any]) -> str:
    """``262 found; the first 20 here, the first 100 in doctor.json, all in
    labels_suspects.csv``; without a listing (a check that keeps its list in doctor.json only)
    ``59 listed; the first 20 here, all in doctor.json``."""
    listed = list(result.details.get("suspects") or [])
    if not result.listing:
        more = f"; the first {len(shown)} here, all in doctor.json" \
            if len(shown) < len(listed) else ""
        return f"{len(listed)} listed{more}"
    found = len(result.listing)
    if len(shown) == found:
        return f"{found} found"
    places = [f"the first {len(shown)} here"]
    if len(listed) < found:
        places.append(f"the first {len(listed)} in doctor.json")
    return f"{found} found; {', '.join([*places, f'all in {suspects_file(result.name)}'])}"


def _check_section(result: CheckResult) -> list[Any]:
    blocks: list[Any] = [
        Heading(2, f"{result.name}: {result.status}", anchor=f"check-{result.name}"),
        Para([result.evidence]),
        # A pass's advice says what it does not rule out: "Limits", not "Not ruled out: does
        # not rule out".
        Para(["What to do: " if result.status != "pass" else "Note: " if result.note
              else "Limits: ", result.advice]),
        Para([f"Budget: {result.budget}; took {result.seconds:.1f} s."], css="note"),
    ]
    if result.figure is not None:
        blocks.append(FigureRef(result.name, alt=f"{result.name} check",
                                caption=CAPTIONS.get(str(result.figure.get("kind")),
                                                     result.name)))
    suspects = result.details.get("suspects")
    if suspects:
        shown = list(suspects)[:_PAGE_SUSPECTS]
        kind = "Suspects" if result.name == "labels" else "Samples"
        blocks.append(Para([f"{kind}, most suspicious first ({_where(result, shown)}):"]))
        blocks.append(Bullets([[Code(str(s))] for s in shown]))
    return blocks
