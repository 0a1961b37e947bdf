"""The doctor's table, ``doctor.json``, HTML page and figures, from check results (no training:
the checks themselves are tested in their own modules)."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from study.doctor.base import CheckResult, worst
from study.doctor.figures import build_figure
from study.doctor.output import SCHEMA, document, summary_text, table_text, write_outputs
from study.doctor.runner import CHECKS, run_checks
from study.report.figures import to_png

LR_FIGURE = {"kind": "lr", "lr": [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0],
             "loss": [2.3, 2.2, 1.5, 0.9, 1.4, 9.0], "raw_loss": [2.3, 2.25, 1.4, 1.0, 1.5, 12],
             "suggested_lr": 1e-3, "onset_lr": 0.1, "configured_lr": 1.0}


def _results() -> list[CheckResult]:
    return [
        CheckResult("labels", "warn", "4.1% of training labels look wrong (59 suspects)",
                    "inspect the suspects", "3 folds x 4 epochs",
                    details={"suspects": [f"X[{i}]" for i in range(59)], "fraction": 0.041}),
        CheckResult("lr", "fail", "configured lr 1 is above the divergence onset 0.1",
                    "lower the learning rate to about 0.001", "200 steps", seconds=2.5,
                    details={"suggested_lr": 1e-3, "onset_lr": 0.1, "ratio": float("nan")},
                    figure=LR_FIGURE),
        CheckResult("shuffling", "pass", "batches mix 9.6 classes of 10, as a random order",
                    "a training loop of your own must shuffle too", "no training"),
    ]


def test_worst_status_orders_fail_over_warn_over_pass():
    assert worst(_results()) == "fail"
    assert worst(_results()[::2]) == "warn"
    assert worst(_results()[2:]) == "pass"
    assert worst([]) == "pass"


def test_a_status_outside_the_three_is_refused():
    with pytest.raises(ValueError, match=r"status must be one of"):
        CheckResult("lr", "ok", "", "", "")


def test_table_has_one_row_per_check_and_advice_only_under_problems():
    text = table_text(_results(), width=100)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["check", "status", "evidence"]
    assert [line.split()[0] for line in lines[2:] if not line.startswith(" ")] == [
        "labels", "lr", "shuffling"]
    assert "what to do: lower the learning rate to about 0.001" in text
    assert "a training loop of your own" not in text  # a pass shows no advice
    assert max(len(line) for line in lines) <= 100


def test_a_pass_with_a_note_shows_it_in_the_table_the_page_and_the_json(tmp_path):
    """Found by a first user: a stored order sorted by class passed, and its advice (a loop of
    your own must shuffle) was missing from the terminal and labelled "Limits:" on the page."""
    plain = _results()[2]
    noted = dataclasses.replace(plain, note=True)
    assert "note: a training loop of your own must shuffle too" in table_text([noted], width=100)
    assert "a training loop of your own" not in table_text([plain], width=100)
    files = write_outputs([noted], inputs={}, folder=tmp_path)
    page = files["html"].read_text()
    assert "Note: " in page and "Limits: " not in page
    assert json.loads(files["json"].read_text())["checks"][0]["note"] is True
    assert "note" not in document([plain], inputs={})["checks"][0]


def test_document_follows_the_schema_and_hoists_suspects():
    doc = document(_results(), inputs={"dataset": "digits"})
    assert doc["schema"] == SCHEMA and doc["status"] == "fail"
    labels = doc["checks"][0]
    assert {"name", "status", "evidence", "advice", "budget", "seconds"} <= set(labels)
    assert labels["suspects"][:2] == ["X[0]", "X[1]"]
    assert "suspects" not in labels["details"]
    assert doc["checks"][1]["figure"]["kind"] == "lr"


def test_written_json_has_null_for_nan_and_the_page_names_every_check(tmp_path):
    files = write_outputs(_results(), inputs={"dataset": "digits"}, folder=tmp_path / "out")
    doc = json.loads(files["json"].read_text())
    assert doc["checks"][1]["details"]["ratio"] is None
    page = files["html"].read_text()
    for name in ("labels", "lr", "shuffling"):
        assert f'id="check-{name}"' in page
    assert 'id="figure-lr"' in page and "data:image/png;base64," in page
    assert "<footer>Written by study doctor: " in page
    assert files["figure:lr"].read_bytes()[:4] == b"\x89PNG"
    assert "X[19]" in page and "X[20]" not in page  # the page shows 20 suspects, JSON all
    assert len(doc["checks"][0]["suspects"]) == 59
    assert "59 listed; the first 20 here, all in doctor.json" in page
    assert not list(tmp_path.rglob("*.csv"))  # no listing, no file


def test_every_suspect_is_written_where_the_page_and_the_json_say(tmp_path):
    rows = [{"rank": i + 1, "sample": f"X[{i}]", "label": 1, "predicted": 2,
             "self_confidence": 0.01} for i in range(262)]
    labels = dataclasses.replace(
        _results()[0], details={"suspects": [r["sample"] for r in rows[:100]]}, listing=rows)
    files = write_outputs([labels], inputs={}, folder=tmp_path)
    written = pd.read_csv(files["suspects:labels"])
    assert files["suspects:labels"].name == "labels_suspects.csv"
    assert written["sample"].tolist() == [r["sample"] for r in rows]
    assert list(written.columns) == ["rank", "sample", "label", "predicted", "self_confidence"]
    doc = json.loads(files["json"].read_text())
    assert doc["checks"][0]["suspects_file"] == "labels_suspects.csv"
    assert len(doc["checks"][0]["suspects"]) == 100
    assert ("262 found; the first 20 here, the first 100 in doctor.json, all in "
            "labels_suspects.csv") in files["html"].read_text()


def test_the_first_screen_gives_each_problem_its_line_and_the_passes_one(tmp_path):
    import re

    files = write_outputs(_results(), inputs={}, folder=tmp_path)
    page = files["html"].read_text()
    lines = re.findall(r'data-question="([^"]+)"><span class="badge">[^<]*</span> ([^<]*)</p>',
                       page)
    assert lines == [("labels", "4.1% of training labels look wrong (59 suspects)"),
                     ("lr", "configured lr 1 is above the divergence onset 0.1"),
                     ("the other checks", "shuffling")]


def test_lr_figure_draws_the_curve_and_marks_the_three_rates():
    fig = build_figure(_results()[1])
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == "learning rate" and ax.get_ylabel() == "training loss"
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[:2] == ["loss per step", "smoothed loss"]
    assert {"suggested 0.001", "divergence onset 0.1", "configured 1"} <= set(labels)
    smoothed = ax.get_lines()[1]
    assert list(smoothed.get_ydata()) == LR_FIGURE["loss"]
    assert ax.get_ylim()[1] < 9.0  # divergence clipped: the valley stays readable


def test_init_figure_names_each_layer_with_its_type_and_labels_its_axes():
    result = CheckResult("init", "fail", "", "", "", figure={
        "kind": "init", "layers": ["features.0", "head.1"], "layer_types": ["Conv2d", "Linear"],
        "activation_rms": [1.0, 30.0], "grad_norm": [0.5, 2.0], "loss": 29.5,
        "reference_loss": 2.30})
    fig = build_figure(result)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["features.0 Conv2d",
                                                                     "head.1 Linear"]
    (points,) = fig.axes[1].get_lines()
    assert list(points.get_xdata()) == [0.5, 2.0]
    assert [ax.get_xscale() for ax in fig.axes] == ["log", "log"]
    assert fig.axes[0].get_xlabel() == "RMS of the layer's output (log)"
    assert fig.axes[1].get_xlabel() == "norm of the weights' gradient (log)"
    assert fig.axes[0].get_ylabel() == "layer (forward order)"
    assert "29.5" in fig._suptitle.get_text()
    # Found by a first user: minor-tick labels ran into each other over a narrow range.
    narrow = build_figure(CheckResult("init", "pass", "", "", "", figure={
        "kind": "init", "layers": ["0", "3", "9"], "activation_rms": [0.45, 0.41, 0.19],
        "grad_norm": [0.155, 0.27, 0.21], "loss": 1.12, "reference_loss": 1.1}))
    to_png(narrow)  # drawn: tick labels are made
    for ax in narrow.axes:
        labels = [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()]
        assert labels == []


def test_a_figure_without_data_is_not_drawn():
    empty = CheckResult("lr", "pass", "", "", "", figure={"kind": "lr", "lr": [], "loss": []})
    assert build_figure(empty) is None
    assert build_figure(_results()[0]) is None


def test_a_check_that_raises_is_reported_failed_and_the_others_run(clean_inputs):
    broken = type(clean_inputs)(clean_inputs.data, clean_inputs.hparams,
                                model="tests/doctor_tests/models.py:no_such_factory")
    results = run_checks(broken, checks=("init", "shuffling"))
    by_name = {r.name: r for r in results}
    assert by_name["init"].status == "fail"
    assert "could not run" in by_name["init"].evidence
    assert by_name["shuffling"].status == "pass"
    assert [r.name for r in results] == [c for c in CHECKS if c in by_name]


def test_an_unknown_check_is_refused(clean_inputs):
    with pytest.raises(Exception, match=r"`checks` must be among labels, .* but got nope"):
        run_checks(clean_inputs, checks=("nope",))


def test_batch_size_figure_marks_the_configured_size_against_the_estimates():
    result = CheckResult("batch-size", "warn", "", "", "", figure={
        "kind": "batch-size", "labels": ["init", "after 22 steps"], "b_simple": [59.0, 89.0],
        "configured_batch_size": 1437, "n_train": 1437})
    ax = build_figure(result).axes[0]
    assert ax.get_xscale() == "log"
    assert [p.get_width() for p in ax.patches if p.get_height() < 1] == [59.0, 89.0]
    assert "configured batch size 1437" in [line.get_label() for line in ax.get_lines()]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["init", "after 22 steps"]


def test_a_batch_size_figure_without_estimates_is_not_drawn():
    result = CheckResult("batch-size", "pass", "", "", "", figure={
        "kind": "batch-size", "labels": ["init", "after 0 steps"], "b_simple": [None, None],
        "configured_batch_size": 64, "n_train": 100})
    assert build_figure(result) is None


@pytest.mark.parametrize(("statuses", "said"), [
    (("fail", "warn", "pass"), "1 of 3 checks failed (a); 1 warned (b)"),
    (("fail", "fail", "pass"), "2 of 3 checks failed (a, b)"),
    (("pass", "warn", "warn"), "no check failed; 2 of 3 checks warned (b, c)"),
    (("pass", "pass", "pass"), "all 3 checks passed"),
    (("pass",), "the check passed"),
])
def test_the_summary_names_the_failed_and_warned_checks(statuses, said):
    results = [CheckResult(name, status, "evidence", "advice", "budget")
               for name, status in zip("abc"[:len(statuses)], statuses, strict=True)]
    assert summary_text(results) == said
