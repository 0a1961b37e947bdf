"""The report's third question, "Why does validation lag training?" (study.report.gap_blocks),
read as blocks and table cells; the written files where only files can tell."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from study._text import as_sentence
from study.analysis.gap import gap_block
from study.analysis.gap_text import LABELS, gap_table_rows, short_line
from study.report.blocks import Bullets, Details, FigureRef, Heading, Para, Table, Verdict
from study.report.content import build_blocks
from study.report.gap_blocks import MAX_PANELS, gap_blocks
from tests.report_tests.factory import (
    make_analysis,
    make_analysis_v1,
    make_gap_block,
    make_importance,
    make_meta,
    make_table,
)

QUESTION = "Why does validation lag training?"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GROUPS = ("keras batchnorm", "pytorch batchnorm", "keras batchnorm and dropout")


@pytest.fixture(scope="module")
def v2() -> dict[str, Any]:
    """A ``study.analysis/2`` document (no gap block); copy before changing it."""
    return make_analysis()


@pytest.fixture(scope="module")
def keras() -> dict[str, Any]:
    return make_gap_block("keras batchnorm")


@pytest.fixture(scope="module")
def grouped() -> dict[str, Any]:
    return make_gap_block(groups=GROUPS, seed=2)


def _v3(v2: dict[str, Any], gap: Any) -> dict[str, Any]:
    return {**copy.deepcopy(v2), "schema": "study.analysis/3", "gap": gap}


def _blocks(analysis: dict[str, Any]) -> list[Any]:
    return build_blocks(analysis=analysis, table=pd.DataFrame(), importance=pd.DataFrame(),
                        meta={})[1]


def _verdict(blocks: list[Any]) -> Verdict:
    return next(b for b in blocks if isinstance(b, Verdict))


def _section(blocks: list[Any]) -> list[Any]:
    """The blocks from the gap heading to the next section."""
    start = next(i for i, b in enumerate(blocks) if isinstance(b, Heading) and b.anchor == "gap")
    end = next((i for i, b in enumerate(blocks[start + 1:], start + 1)
                if isinstance(b, Heading) and b.level == 2), len(blocks))
    return blocks[start:end]


def _paras(blocks: list[Any]) -> list[str]:
    return ["".join(str(p) for p in b.parts) for b in blocks if isinstance(b, Para)]


def _tables(blocks: list[Any]) -> list[Table]:
    return [b for b in blocks if isinstance(b, Table)]


def _cell(value: dict[str, Any]) -> str:
    lo, hi = value["ci95"]
    return f"{value['estimate']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


# -- the line in the verdict box --------------------------------------------------------------
def test_the_gap_line_follows_the_two_size_lines(v2, keras):
    before = _verdict(_blocks(v2)).lines
    lines = _verdict(_blocks(_v3(v2, keras))).lines
    assert len(before) == 2 and lines[:2] == before
    label, code, sentence = lines[2]
    assert (label, code) == ("Gap", keras["verdict"]["code"])
    # short_line's own words and numbers, its code in the badge only
    assert short_line(keras).startswith(f"Gap: {code}. ")
    assert sentence == short_line(keras).removeprefix(f"Gap: {code}. ")
    assert f"{keras['early']['gap']['estimate']:.2f}" in sentence


def test_the_line_of_settings_that_agree_shows_their_code_once(v2):
    """Found by a user: '**Gap by setting: `normalization-statistics`** Normalization-statistics
    in 2 of 2' said the code twice."""
    agree = make_gap_block(groups=("keras batchnorm", "keras batchnorm and dropout"), seed=2)
    assert {g["verdict"]["code"] for g in agree["groups"].values()} == \
        {"normalization-statistics"}
    label, code, sentence = _verdict(_blocks(_v3(v2, agree))).lines[2]
    assert (label, code) == ("Gap by setting", "normalization-statistics")
    assert sentence.startswith("In all 2 settings (adam, keras batchnorm; adam, keras "
                               "batchnorm and dropout); ")
    assert "normalization-statistics" not in sentence.lower()


def test_the_badge_of_settings_that_differ_is_mixed_never_the_pooled_code(v2, grouped):
    """A first run showed the pooled trials' `none` beside 'Inconclusive in 4 of 4': pooled,
    the settings' trials answer none of them."""
    codes = {g["verdict"]["code"] for g in grouped["groups"].values()}
    assert len(codes) > 1 and grouped["verdict"]["code"] not in codes
    label, code, sentence = _verdict(_blocks(_v3(v2, grouped))).lines[2]
    assert (label, code) == ("Gap by setting", "mixed")
    assert sentence == as_sentence(short_line(grouped).removeprefix("Gap by setting: "))


def test_one_model_size_puts_the_gap_first_in_the_box_and_the_page(v2, keras):
    """A gap experiment trains one width: its size lines say "not asked", the gap answers."""
    one_size = _v3(v2, keras)
    one_size["verdict"]["size_asked"] = False
    blocks = _blocks(one_size)
    box = _verdict(blocks)
    why = one_size["verdict"]["why"]
    # One line for the size question (not one per question, nor a detail saying it again).
    assert box.lines[0][0] == "Gap"
    assert box.lines[1:] == (("Model size", "not asked", as_sentence(why)),)
    assert box.text == ""
    anchors = [b.anchor for b in blocks if isinstance(b, Heading) and b.level == 2]
    asked = [b.anchor for b in _blocks(_v3(v2, keras)) if isinstance(b, Heading) and b.level == 2]
    assert anchors.index("gap") < anchors.index("decomposition") < anchors.index("curves")
    # The size sections are one line, not empty figures and tables of a question not asked.
    assert "size-effect" not in anchors and "threshold" not in anchors
    assert "regressions" not in anchors and "regressions" in asked
    assert f"Not asked: {one_size['verdict']['why']}." in _paras(blocks)
    assert asked.index("decomposition") < asked.index("gap")


def test_a_box_without_detail_renders_no_empty_detail():
    from study.report.html import render_html
    from study.report.markdown import render_markdown

    box = Verdict("none", "", (("Gap", "none", "validation does not lag training."),))
    page = render_html("t", [box], {})
    assert 'id="verdict-text"' not in page and "validation does not lag training." in page
    markdown = render_markdown("t", [box], {})
    assert "validation does not lag training." in markdown and "\n> " not in markdown


def test_no_gap_line_when_no_trial_logged_the_parts(v2):
    assert len(_verdict(_blocks(_v3(v2, gap_block([])))).lines) == 2


def _used_line(analysis: dict[str, Any]) -> str:
    from study.report.blocks import KeyValues

    items = next(b for b in _blocks(analysis) if isinstance(b, KeyValues)).items
    return str(dict(items)["Used by the analysis"])


def test_the_early_window_line_says_the_gap_kept_its_own_window(v2, keras):
    """Found by a user: report.md said "early window = first 10 epochs" (--early-epochs 10)
    while the gap's verdict was of epoch 1 (``gap.early_epochs`` 1)."""
    document = {**_v3(v2, keras), "early_epochs": 10}
    assert keras["early_epochs"] == 1
    assert _used_line(document).endswith(
        "early window = first 10 epochs (the size questions; the gap's verdict: epoch 1)")
    assert _used_line(_v3(v2, keras)).endswith("early window = first epoch")


# -- a document without the gap renders as before ---------------------------------------------
def test_a_v2_document_has_no_gap_section(v2):
    blocks = _blocks(v2)
    assert not [b for b in blocks if isinstance(b, Heading) and b.anchor
                and b.anchor.startswith("gap")]
    assert not [b for b in blocks if isinstance(b, FigureRef) and b.name == "gap"]


def test_a_v2_document_renders_the_same_blocks_as_without_the_gap_code(v2, monkeypatch):
    import study.report.content as content

    expected = _blocks(v2)
    monkeypatch.setattr(content, "gap_blocks", lambda analysis: [])
    monkeypatch.setattr(content, "gap_line", lambda analysis: None)
    assert _blocks(v2) == expected


def test_a_v1_document_still_renders_without_the_gap():
    blocks = _blocks(make_analysis_v1())
    assert not _verdict(blocks).lines
    assert QUESTION not in [b.text for b in blocks if isinstance(b, Heading)]


# -- the section --------------------------------------------------------------------------------
def test_the_section_gives_the_verdict_text(v2, keras):
    section = _section(_blocks(_v3(v2, keras)))
    assert section[0].text == QUESTION
    assert f"Verdict: {keras['verdict']['code']}. {keras['verdict']['text']}" in _paras(section)


def test_the_section_lists_what_to_try(keras):
    (bullets,) = [b for b in gap_blocks({"gap": keras}) if isinstance(b, Bullets)]
    assert [item[0].lower() for item in bullets.items] == [
        t.lower() for t in keras["verdict"]["try"]]


def test_the_section_shows_the_gap_figure(keras):
    (figure,) = [b for b in gap_blocks({"gap": keras}) if isinstance(b, FigureRef)]
    assert figure.name == "gap" and "95%" in figure.caption


def test_the_epoch_table_holds_each_epochs_parts_and_carrier(keras):
    (table,) = _tables(gap_blocks({"gap": keras}))
    # a BatchNorm-only study: mode is BatchNorm's, one column named so
    assert table.headers == ["epoch", "n", "gap", "timing", "mode (BatchNorm)",
                             "generalization", "carrier"]
    assert len(table.rows) == len(keras["epochs"])
    for row, entry in zip(table.rows, keras["epochs"], strict=True):
        assert row[:2] == [str(entry["epoch"]), str(entry["n"])]
        assert row[2:6] == [_cell(entry[k]) for k in ("gap", "timing", "mode",
                                                       "generalization")]
        assert row[6] == (LABELS[entry["carrier"]] if entry["carrier"] else "—")


def test_a_model_with_both_layers_splits_mode_into_batchnorm_and_dropout():
    block = make_gap_block("keras batchnorm and dropout")
    (table,) = _tables(gap_blocks({"gap": block}))
    assert table.headers[2:6] == ["gap", "timing", "mode: BatchNorm", "mode: dropout"]
    first = block["epochs"][0]
    assert table.rows[0][4:6] == [_cell(first["mode_batchnorm"]), _cell(first["mode_dropout"])]


def test_a_window_of_several_epochs_leads_the_table(keras):
    block = make_gap_block(early_epochs=2)
    (table,) = _tables(gap_blocks({"gap": block}))
    assert table.rows[0][:3] == ["1–2 (mean)", str(block["early"]["n"]),
                                 _cell(block["early"]["gap"])]
    assert table.highlight == frozenset({0})
    assert len(table.rows) == len(block["epochs"]) + 1


def test_the_closing_epoch_is_stated(keras):
    closes = keras["closes_at_epoch"]
    assert closes is not None
    assert any(f"closes at epoch {closes}:" in p for p in _paras(gap_blocks({"gap": keras})))


def test_a_lag_that_never_closes_says_so(keras):
    block = {**keras, "closes_at_epoch": None}
    last = keras["epochs"][-1]["epoch"]
    assert any(p.startswith(f"Lag not closed by epoch {last}, the last any trial reached")
               for p in _paras(gap_blocks({"gap": block})))


def test_the_notes_and_the_scope_are_small_print(keras):
    notes = [b for b in gap_blocks({"gap": keras}) if isinstance(b, Para) and b.css == "note"]
    texts = [str(n.parts[0]).lower() for n in notes]
    assert [f"{n}.".lower() for n in [*keras["notes"], keras["scope"]]] == texts


def test_without_trials_the_section_says_why_and_draws_nothing():
    block = gap_block([])
    section = gap_blocks({"gap": block})
    assert f"Verdict: inconclusive. {block['verdict']['text']}" in _paras(section)
    assert not [b for b in section if isinstance(b, (FigureRef, Table, Bullets))]


# -- settings -----------------------------------------------------------------------------------
def test_groups_get_the_settings_table_verdict_first(grouped):
    section = gap_blocks({"gap": grouped})
    expected = gap_table_rows(grouped)
    table = next(t for t in _tables(section) if t.headers[0] == "setting")
    assert table.headers[:4] == ["setting", "trials", "verdict", "lag"]
    assert sorted(table.headers) == sorted(expected[0])
    for row, want in zip(table.rows, expected, strict=True):
        assert dict(zip(table.headers, row, strict=True)) == want


def test_each_group_gets_its_own_folded_answer(grouped):
    folds = [b for b in gap_blocks({"gap": grouped}) if isinstance(b, Details)]
    assert [f.summary for f in folds] == [
        f"{label}: {g['verdict']['code']} ({g['n_trials']} trials)"
        for label, g in grouped["groups"].items()]
    for fold, group in zip(folds, grouped["groups"].values(), strict=True):
        (table,) = _tables(fold.blocks)
        assert [r[2] for r in table.rows] == [_cell(e["gap"]) for e in group["epochs"]]


def test_groups_keep_the_pooled_epochs_last(grouped):
    section = gap_blocks({"gap": grouped})
    pooled = _tables(section)[-1]
    assert [r[2] for r in pooled.rows] == [_cell(e["gap"]) for e in grouped["epochs"]]
    assert [b.text for b in section if isinstance(b, Heading)][-1] == \
        "All settings pooled, per epoch"


def test_the_pooled_epochs_give_no_verdict_or_closing_of_their_own(grouped):
    """Found by a first user: the pooled verdict ("has not closed by epoch 6") contradicted
    the settings' own line ("catches up by epoch 6 in 6 of 12")."""
    section = gap_blocks({"gap": grouped})
    at = next(i for i, b in enumerate(section)
              if isinstance(b, Heading) and b.text == "All settings pooled, per epoch")
    words = " ".join(str(p) for b in section[at:] if isinstance(b, Para) for p in b.parts)
    assert f"Pooled over {len(GROUPS)} settings chosen to differ, these means answer none" in words
    assert "verdict:" not in words.lower() and "closes at epoch" not in words
    assert "has not closed" not in words


def test_a_figure_of_fewer_panels_than_settings_names_the_ones_it_draws(grouped):
    many = copy.deepcopy(grouped)
    first = next(iter(many["groups"].values()))
    many["groups"] = {f"setting {i}": first for i in range(MAX_PANELS + 2)}
    (figure,) = [b for b in gap_blocks({"gap": many}) if isinstance(b, FigureRef)]
    named = "; ".join(f"setting {i}" for i in range(MAX_PANELS))
    assert (f"One panel for each of the first {MAX_PANELS} of the {MAX_PANELS + 2} settings "
            f"({named}); the table below has all of them.") in figure.caption
    (few,) = [b for b in gap_blocks({"gap": grouped}) if isinstance(b, FigureRef)]
    assert few.caption.startswith("One panel per setting. ")


def test_without_groups_there_is_no_settings_table(keras):
    assert not [b for b in gap_blocks({"gap": keras}) if isinstance(b, Details)
                or (isinstance(b, Heading) and b.anchor == "gap-settings")]


# -- the written report -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, v2: dict[str, Any],
            keras: dict[str, Any]) -> tuple[dict[str, Path], Path]:
    from study.report import write_report

    table = make_table(20)
    out = tmp_path_factory.mktemp("gap") / "out"
    paths = write_report(out, analysis=_v3(v2, keras), table=table,
                         importance=make_importance(), meta=make_meta(table=table))
    return paths, out


def test_the_gap_figure_is_written_beside_the_others(written):
    paths, out = written
    png = paths["figures/gap.png"]
    assert png == out / "figures" / "gap.png"
    assert png.read_bytes().startswith(PNG_SIGNATURE) and png.stat().st_size > 10_000


def test_the_html_embeds_the_gap_figure(written):
    html_text = written[0]["report.html"].read_text(encoding="utf-8")
    assert '<figure id="figure-gap"><img src="data:image/png;base64,' in html_text
    assert f'<h2 id="gap">{QUESTION}</h2>' in html_text


def test_the_markdown_links_the_gap_figure_and_lists_what_to_try(written, keras):
    markdown = written[0]["report.md"].read_text(encoding="utf-8")
    assert "](figures/gap.png)" in markdown and f"## {QUESTION}" in markdown
    assert f"- **Gap: `{keras['verdict']['code']}`**" in markdown
    assert "- More steps per epoch" in markdown


def test_report_json_mirrors_the_gap_block(written, keras):
    document = json.loads(written[0]["report.json"].read_text(encoding="utf-8"))
    assert document["analysis"]["gap"] == json.loads(json.dumps(keras))


def test_a_v2_report_writes_no_gap_figure(tmp_path, v2):
    from study.report import write_report

    paths = write_report(tmp_path, analysis=v2, table=make_table(8), importance=None,
                         meta=None)
    assert "figures/gap.png" not in paths and not (tmp_path / "figures" / "gap.png").exists()
    assert 'id="gap"' not in paths["report.html"].read_text(encoding="utf-8")


def test_a_broken_gap_block_costs_only_its_figure(tmp_path, v2, caplog):
    from study.report import write_report

    broken = {"n_trials": 2, "epochs": [{"epoch": 1, "n": 2}], "verdict": {"code": "x"}}
    with caplog.at_level("WARNING", logger="study.report"):
        paths = write_report(tmp_path, analysis=_v3(v2, broken), table=make_table(8),
                             importance=None, meta=None)
    assert any("gap" in r.getMessage() for r in caplog.records)
    assert paths["figures/gap.png"].read_bytes().startswith(PNG_SIGNATURE)
    assert f'<h2 id="gap">{QUESTION}</h2>' in paths["report.html"].read_text(encoding="utf-8")


def test_the_figure_drawn_is_the_documents_gap_block(tmp_path, v2, keras, monkeypatch):
    import study.report.writers as writers

    drawn: list[Any] = []
    monkeypatch.setattr(writers, "gap_figure", lambda block: drawn.append(block) or
                        PNG_SIGNATURE)
    writers.write_report(tmp_path, analysis=_v3(v2, keras), table=None, importance=None,
                         meta=None)
    assert drawn == [keras]


def test_the_trials_table_shows_the_training_options_the_study_varied(v2):
    """Found by a first user: a gap study of adam against sgd did not say which trial ran
    which."""
    from study.report.blocks import Table

    table = pd.DataFrame({"number": [0, 1], "state": ["COMPLETE"] * 2, "width": [8, 8],
                          "penalty_mode": ["none"] * 2, "optimizer": ["adam", "sgd"],
                          "momentum": [0.9, 0.9], "dropout": [0.0, 0.5],
                          "bn_momentum": [0.1, 0.1]})
    blocks = build_blocks(analysis=v2, table=table, importance=pd.DataFrame(), meta={})[1]
    start = next(i for i, b in enumerate(blocks) if isinstance(b, Heading) and b.anchor == "trials")
    trials = next(b for b in blocks[start:] if isinstance(b, Table))
    assert trials.headers[trials.headers.index("penalty mode") + 1:][:2] == ["optimizer",
                                                                            "dropout"]
    assert "momentum" not in trials.headers and "BN momentum" not in trials.headers
