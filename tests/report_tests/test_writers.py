"""The report writers: files, self-containment, escaping, JSON safety, degenerate inputs."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from study.report import (
    curves_figure,
    importance_figure,
    size_effect_figure,
    threshold_figure,
    write_report,
)
from study.report._format import TRIAL_COLUMNS
from tests.report_tests.factory import (
    make_analysis,
    make_analysis_v1,
    make_importance,
    make_meta,
    make_table,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXPECTED_FILES = {"report.html", "report.md", "report.json", "trials.csv",
                  "figures/size_effect.png", "figures/threshold.png", "figures/curves.png",
                  "figures/importance.png"}


class _Collector(HTMLParser):
    """Every tag with its attributes, and the document's text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html_text: str) -> _Collector:
    parser = _Collector()
    parser.feed(html_text)
    parser.close()
    return parser


def _strict_json(text: str) -> Any:
    def reject(name: str) -> Any:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=reject)


def _check_complete(paths: dict[str, Path], out: Path) -> str:
    """Assertions every report must pass; returns the HTML."""
    assert set(paths) == EXPECTED_FILES
    for name, path in paths.items():
        assert path == out / name
        assert path.is_file() and path.stat().st_size > 0, name
    for name in EXPECTED_FILES:
        if name.endswith(".png"):
            data = paths[name].read_bytes()
            assert data.startswith(PNG_SIGNATURE)
            assert len(data) < 200_000, f"{name} is {len(data)} bytes"
    html_text = paths["report.html"].read_text(encoding="utf-8")
    assert html_text.lower().startswith("<!doctype html>")
    parsed = _parse(html_text)
    images = [attrs for tag, attrs in parsed.tags if tag == "img"]
    assert len(images) == 4
    for attrs in images:
        src = attrs.get("src") or ""
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1], validate=True).startswith(PNG_SIGNATURE)
        assert attrs.get("alt")
    # self-contained: nothing fetched, no script
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html_text, re.I)
    assert not any(tag in ("script", "link", "iframe", "object") for tag, _ in parsed.tags)
    assert _strict_json(paths["report.json"].read_text(encoding="utf-8"))["schema"] == \
        "study.report/1"
    markdown = paths["report.md"].read_text(encoding="utf-8")
    for ref in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown):
        assert not ref.startswith(("/", "http")), ref
        assert (out / ref).is_file(), ref
    return html_text


def test_writes_every_file(written: tuple[dict[str, Any], dict[str, Path], Path]) -> None:
    inputs, paths, out = written
    html_text = _check_complete(paths, out)
    parsed = _parse(html_text)
    tags = [tag for tag, _ in parsed.tags]
    assert tags.count("title") == 1
    assert any(tag == "meta" and (attrs.get("charset") or "").lower() == "utf-8"
               for tag, attrs in parsed.tags)
    text = " ".join(parsed.text)
    # the verdict (badge + text), both questions part by part, every model, importance
    analysis = inputs["analysis"]
    verdict = analysis["verdict"]
    assert verdict["detail"] in text
    for line in verdict["lines"].values():  # each question's code and sentence, one badge each
        label, rest = line.split(": ", 1)
        code, _, sentence = rest.partition(". ")
        assert f"{label}: {code}" in text and sentence in text
    assert text.index(verdict["lines"]["init"].split(". ", 1)[1]) < text.index(verdict["detail"])
    for question in ("At initialization (before the first update)",
                     "Over the first epoch (the loss Keras reports)"):
        for model in ("data loss", "squared weight norm", "total loss on the data"):
            assert f"{question}: {model}" in text
    assert "log10_n_params" in text and "Threshold weight decay" in text
    # The parts' table writes the numbers as the answer's line does (one decimals rule).
    from study._text import interval_formatter

    parts = [analysis["decomposition"][f"width_effect_{k}"] for k in ("total", "data", "penalty")]
    fmt = interval_formatter([v for p in parts for v in (p["estimate"], *p["ci95"])],
                             significant=3)
    total = parts[0]
    assert f"{fmt(total['estimate'])} [{fmt(total['ci95'][0])}, {fmt(total['ci95'][1])}]" \
        in " ".join(text.split())
    assert "fanova" in text and "ped-anova" in text and "constant column" in text
    assert "non-finite loss (nan) at epoch 2" in text  # failed trials with their diagnosis
    assert "***" in text and "alice" in text  # storage shown, redacted
    assert "SPEC" not in html_text  # no reference to documents outside the repository
    markdown = paths["report.md"].read_text(encoding="utf-8")
    for figure in ("size_effect", "threshold", "curves", "importance"):
        assert f"figures/{figure}.png" in markdown
    assert "| **`log10_n_params`** |" in markdown
    # Found by a first user: report.md opened on the settings table, as JSON lists.
    assert markdown.index("## Verdict") < markdown.index("**Configuration**")
    assert "| `batch_sizes` | 32, 64, 128 |" in markdown and '\\["' not in markdown


def test_data_text_is_escaped(tmp_path: Path) -> None:
    evil = "<script>alert(1)</script>"
    table = make_table(30)
    table["penalty_mode"] = table["penalty_mode"].astype(object)
    table.loc[3, "penalty_mode"] = evil
    table.loc[10, "diagnosis"] = f"boom {evil} | pipe"
    analysis = make_analysis(study_name=evil)
    analysis["verdict"]["text"] = f"verdict {evil}"
    analysis["models"]["data"]["formula"] = f"early_loss ~ {evil}"
    importance = make_importance()
    importance.loc[0, "param"] = evil
    meta = make_meta(study_name=f"study {evil}", table=table)
    meta["storage"] = "postgresql://bob:hunter2@db/optuna"
    paths = write_report(tmp_path, analysis=analysis, table=table, importance=importance,
                         meta=meta)
    html_text = _check_complete(paths, tmp_path)
    assert "<script" not in html_text.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html_text
    markdown = paths["report.md"].read_text(encoding="utf-8")
    plain = re.sub(r"`+[^`]*`+", "", markdown)  # code spans are literal text in Markdown
    assert "<script" not in plain.lower()
    assert "&lt;script&gt;" in markdown
    # a pipe from the data cannot break a Markdown table row
    rows = [line for line in markdown.splitlines() if "boom" in line]
    assert rows and all(r"\|" in row for row in rows)
    # the password never reaches any output
    for path in paths.values():
        if path.suffix in (".html", ".md", ".json", ".csv"):
            assert "hunter2" not in path.read_text(encoding="utf-8")


def test_json_is_strict_and_complete(
        written: tuple[dict[str, Any], dict[str, Path], Path]) -> None:
    inputs, paths, _ = written
    document = _strict_json(paths["report.json"].read_text(encoding="utf-8"))
    assert set(document) == {"schema", "meta", "analysis", "importance", "trials"}
    assert document["analysis"] == json.loads(json.dumps(inputs["analysis"]))
    assert document["meta"]["study_name"] == "demo"
    assert len(document["trials"]) == len(inputs["table"])
    assert len(document["importance"]) == len(inputs["importance"])
    first = document["trials"][0]
    assert "curve" not in first
    assert set(TRIAL_COLUMNS) <= set(first)
    assert isinstance(first["number"], int) and isinstance(first["n_params"], int)
    failed = next(t for t in document["trials"] if t["state"] == "FAIL")
    assert failed["early_loss"] is None and failed["diagnosis"]
    errored = [r for r in document["importance"] if r["error"]]
    assert errored and errored[0]["importance"] is None
    assert any(r["evaluator_seed"] is None for r in document["importance"])  # <NA> -> null


def test_csv_has_one_row_per_trial(
        written: tuple[dict[str, Any], dict[str, Path], Path]) -> None:
    inputs, paths, _ = written
    with paths["trials.csv"].open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(inputs["table"])
    header = list(rows[0])
    assert header[: len(TRIAL_COLUMNS)] == list(TRIAL_COLUMNS)
    assert "curve" not in header and "diagnosis" in header
    assert [int(r["number"]) for r in rows] == sorted(inputs["table"]["number"])
    failed = next(r for r in rows if r["state"] == "FAIL")
    assert failed["early_loss"] == "" and failed["width"].isdigit()
    frame = pd.read_csv(paths["trials.csv"])
    assert frame["n_params"].dtype.kind == "i"


def test_none_model_and_empty_importance(tmp_path: Path, inputs: dict[str, Any],
                                         empty_importance: pd.DataFrame) -> None:
    analysis = inputs["analysis"]
    analysis["models"]["explain"] = None
    analysis["init"]["models"]["penalty"] = None
    analysis["decomposition"]["width_effect_data"] = None
    paths = write_report(tmp_path, analysis=analysis, table=inputs["table"],
                         importance=empty_importance, meta=inputs["meta"])
    text = " ".join(_parse(_check_complete(paths, tmp_path)).text)
    assert "Not fitted" in text
    assert "No importance available" in text
    assert _strict_json(paths["report.json"].read_text())["importance"] == []


def test_list_cells_of_trials_csv_are_json(tmp_path: Path, inputs: dict[str, Any]) -> None:
    # Found by a first user: gap_curve was Python's repr (single quotes), not JSON.
    table = inputs["table"].copy()
    curve = [{"epoch": 1, "gap_timing": 0.25, "gap_mode": None}]
    table["gap_curve"] = [curve] + [None] * (len(table) - 1)
    paths = write_report(tmp_path, analysis=inputs["analysis"], table=table,
                         importance=inputs["importance"], meta=inputs["meta"])
    rows = list(csv.DictReader(paths["trials.csv"].open(encoding="utf-8")))
    first = min(rows, key=lambda r: int(r["number"]))
    assert json.loads(first["gap_curve"]) == curve
    assert all(r["gap_curve"] == "" for r in rows if r is not first)


def test_an_evaluator_that_could_not_run_names_all_params_in_its_row(
        tmp_path: Path, inputs: dict[str, Any]) -> None:
    importance = pd.concat([inputs["importance"], pd.DataFrame([{
        "target": "objective", "evaluator": "shap", "evaluator_seed": 0, "bootstrap_seed": 0,
        "n_trials": 4, "n_bootstrap": 30, "param": None, "importance": math.nan,
        "ci_lo": math.nan, "ci_hi": math.nan, "derived": False,
        "error": "4 usable trials for objective, shap needs at least 10"}])], ignore_index=True)
    paths = write_report(tmp_path, analysis=inputs["analysis"], table=inputs["table"],
                         importance=importance, meta=inputs["meta"])
    row = next(line for line in paths["report.md"].read_text(encoding="utf-8").splitlines()
               if "shap needs at least 10" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:2] == ["objective", "shap"] and cells[6] == "all"


@pytest.mark.parametrize("case", ["only-fail", "empty-table", "no-analysis", "no-curves",
                                  "sparse"])
def test_degenerate_inputs_still_report(tmp_path: Path, case: str,
                                        caplog: pytest.LogCaptureFixture) -> None:
    table = make_table(12)
    analysis: dict[str, Any] | None = make_analysis(verdict="inconclusive")
    importance = make_importance()
    meta: dict[str, Any] | None = make_meta(table=table)
    if case == "only-fail":
        table = make_table(8, fail_every=1)
        analysis = {"schema": "study.analysis/1", "study_name": "demo", "n_trials_used": 0,
                    "early_epochs": 1, "models": {"total": None, "data": None,
                                                  "penalty": None, "explain": None},
                    "decomposition": {"width_effect_total": None, "width_effect_data": None,
                                      "width_effect_penalty": None, "penalty_share": None},
                    "verdict": {"code": "inconclusive", "text": "No usable trials."}}
        importance = pd.DataFrame()
    elif case == "empty-table":
        table = pd.DataFrame()
    elif case == "no-analysis":
        analysis = None
    elif case == "no-curves":
        table = make_table(12, curves=False).drop(columns=["curve", "diagnosis"])
    else:  # partial documents, unknown states, no parameter counts, minimal importance
        table["n_params"] = pd.array([None] * len(table), dtype="Int64")
        table["state"] = None
        analysis = {"models": {"total": {"formula": None, "coefficients": {
            "x": {"estimate": None, "ci95": None}}}, "data": "not a model"},
            "decomposition": {"width_effect_total": 0.3}, "verdict": None}
        importance = pd.DataFrame({"target": ["objective"] * 2, "evaluator": ["fanova"] * 2,
                                   "param": ["lr", "width"], "importance": [0.7, 0.3]})
        meta = None
    if case in ("only-fail", "empty-table"):
        meta = make_meta(table=table if "state" in table else None)
    with caplog.at_level("WARNING", logger="study.report"):
        paths = write_report(tmp_path, analysis=analysis, table=table, importance=importance,
                             meta=meta)
    assert not caplog.records, "a figure fell back to its placeholder"
    _check_complete(paths, tmp_path)
    document = _strict_json(paths["report.json"].read_text())
    assert len(document["trials"]) == len(table)
    with paths["trials.csv"].open(newline="") as handle:
        assert len(list(csv.DictReader(handle))) == len(table)


def test_figures_alone() -> None:
    table = make_table(40)
    for png in (size_effect_figure(make_analysis()), threshold_figure(make_analysis()),
                curves_figure(table, max_trials=5), importance_figure(make_importance()),
                importance_figure(pd.DataFrame()), size_effect_figure(None),
                threshold_figure(make_analysis_v1()), curves_figure(None)):
        assert png.startswith(PNG_SIGNATURE)
    # a NaN-only importance table (every evaluator failed) and odd curve encodings
    failed = make_importance().assign(importance=math.nan, ci_lo=math.nan, ci_hi=math.nan)
    assert importance_figure(failed).startswith(PNG_SIGNATURE)
    table["curve"] = [json.dumps(c) if c is not None and i % 2 else c
                      for i, c in enumerate(table["curve"])]
    assert curves_figure(table).startswith(PNG_SIGNATURE)


def test_without_importance_the_figure_gives_the_evaluators_reasons() -> None:
    from study.report.figures import importance_gap

    reasons = {"fanova": "4 usable trials for val_loss, fanova needs at least 5",
               "ped-anova": "4 usable trials for val_loss, ped-anova needs at least 10"}
    failed = pd.DataFrame([{"target": "val_loss", "evaluator": ev, "param": None,
                            "importance": math.nan, "error": why} for ev, why in reasons.items()])
    assert importance_gap(failed) == "no importance available: " + "; ".join(reasons.values())
    assert importance_gap(pd.DataFrame()) == "no importance available"
    assert importance_gap(make_importance()) is None
    nan_only = make_importance().assign(importance=math.nan, error=None)
    assert importance_gap(nan_only) == "no importance available: every evaluator failed"


def test_overwrites_previous_report(tmp_path: Path, inputs: dict[str, Any]) -> None:
    write_report(tmp_path, **inputs)
    paths = write_report(tmp_path, **{**inputs, "table": make_table(5)})
    with paths["trials.csv"].open(newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 5
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_ten_thousand_trials(tmp_path: Path) -> None:
    table = make_table(10_000)
    inputs = {"analysis": make_analysis(), "table": table, "importance": make_importance(),
              "meta": make_meta(table=table)}
    start = time.perf_counter()
    paths = write_report(tmp_path, **inputs)
    elapsed = time.perf_counter() - start
    sizes = ", ".join(f"{name} {path.stat().st_size / 1024:.0f} KiB"
                      for name, path in sorted(paths.items()))
    print(f"\nwrite_report on 10,000 trials: {elapsed:.2f} s; {sizes}")
    html_text = _check_complete(paths, tmp_path)
    assert "First 200 of 10000 trials" in html_text
    assert html_text.count("<tr") < 1_000  # trial table capped, the rest is in the CSV
    with paths["trials.csv"].open(newline="") as handle:
        assert sum(1 for _ in csv.reader(io.StringIO(handle.read()))) == 10_001


def test_broken_figure_becomes_placeholder(tmp_path: Path, inputs: dict[str, Any],
                                           monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    import study.report.writers as writers

    def boom(*args: Any, **kwargs: Any) -> bytes:
        raise RuntimeError("postgresql://u:secret@h/db went away")

    monkeypatch.setattr(writers, "curves_figure", boom)
    with caplog.at_level("WARNING", logger="study.report"):
        paths = write_report(tmp_path, **inputs)
    _check_complete(paths, tmp_path)
    assert any("curves" in r.getMessage() for r in caplog.records)
    assert all("secret" not in r.getMessage() for r in caplog.records)


def test_each_verdict_line_gets_its_codes_colour_class_and_the_box_none():
    from study.report.blocks import Verdict
    from study.report.html import _verdict

    page = _verdict(Verdict(code="no-increase", text="detail", lines=(
        ("At initialization", "no increase", "Bigger models start lower."),
        ("Gap", "epoch-averaging", "Validation is below training."))))
    assert 'class="verdict-line verdict-no-increase"' in page
    assert 'class="verdict-line verdict-epoch-averaging"' in page
    assert '<div class="verdict" id="verdict-box">' in page


def test_a_column_of_the_weight_decay_table_reads_in_one_decimals_rule() -> None:
    """A data part that is the same at every weight decay is written the same in each row."""
    from study.report.answer_blocks import answer_blocks
    from study.report.blocks import Table

    rows = [{"weight_decay": wd, "total": {"estimate": -0.0064 + p, "ci95": [-0.03 + p, 0.02 + p]},
             "data": {"estimate": -0.0064, "ci95": [-0.0333, 0.0204]},
             "penalty": {"estimate": p, "ci95": [0.99 * p, 1.01 * p]}}
            for wd, p in ((1e-5, 0.0005), (1e-3, 0.03), (1e-2, 0.27))]
    analysis = make_analysis()
    analysis["by_weight_decay"] = rows
    tables = [b for b in answer_blocks(analysis) if isinstance(b, Table)
              and b.headers[0] == "weight decay"]
    data = [row[3] for row in tables[-1].rows]
    assert len(set(data)) == 1, data
