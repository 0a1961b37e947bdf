"""report.html in a real headless Chromium (the system one; Playwright downloads no browser)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from study.report import write_report
from tests.report_tests.factory import (
    make_analysis,
    make_analysis_v3,
    make_importance,
    make_meta,
    make_table,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _skip_or_fail(reason: str) -> None:
    """Skip on a developer machine; fail in CI, which must run the browser test."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the browser test")
    pytest.skip(reason)


def _require_browser() -> Any:
    """Playwright's ``sync_playwright``, or skip/fail when it or the system Chromium is missing."""
    if not CHROMIUM.exists():
        _skip_or_fail(f"{CHROMIUM} is missing (install the Debian package chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip_or_fail("the playwright package is missing (pip install -e '.[dev]')")
    return sync_playwright


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception),
                                             (None, pytest.skip.Exception)])
def test_missing_chromium_skips_except_in_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                              ci: str | None, outcome: type) -> None:
    monkeypatch.setattr(f"{__name__}.CHROMIUM", tmp_path / "no-chromium")
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome):
        _require_browser()


@pytest.mark.slow
def test_report_renders_in_chromium(tmp_path: Path) -> None:
    sync_playwright = _require_browser()
    table = make_table(60)
    analysis = make_analysis()
    paths = write_report(tmp_path / "report", analysis=analysis, table=table,
                         importance=make_importance(), meta=make_meta(table=table))
    url = paths["report.html"].resolve().as_uri()

    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda msg: errors.append(f"console: {msg.text}")
                    if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
            page.on("requestfailed", lambda req: errors.append(f"request failed: {req.url}"))
            page.on("request", lambda req: requests.append(req.url))
            page.goto(url, wait_until="load")
            images: list[dict[str, Any]] = page.evaluate(
                """() => Array.from(document.images).map(img => ({
                    alt: img.alt, complete: img.complete, width: img.naturalWidth,
                    height: img.naturalHeight, scheme: img.src.split(':')[0]}))""")
            verdict = page.locator("#verdict-text")
            verdict_visible = verdict.is_visible()
            verdict_text = verdict.inner_text()
            badges = page.locator("#verdict-box .badge").all_inner_texts()
            lines = page.locator("#verdict-box .verdict-line").all_inner_texts()
            borders = page.evaluate("""() => [document.getElementById('verdict-box'),
                ...document.querySelectorAll('#verdict-box .verdict-line')].map(
                el => getComputedStyle(el).borderLeftColor)""")
            title = page.title()
            overflow = page.evaluate(
                "() => document.documentElement.scrollWidth - window.innerWidth")
            # the trials table fits the page: no sideways scrolling to read a trial
            trials_overflow = page.evaluate("""() => {
                let el = document.getElementById('trials');
                while (el && !(el.classList && el.classList.contains('table-wrap'))) {
                    el = el.nextElementSibling; }
                return el ? el.scrollWidth - el.clientWidth : null; }""")
            screenshot = tmp_path / "report.png"
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()

    artifacts = os.environ.get("STUDY_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, Path(artifacts) / "report_html_screenshot.png")
    print(f"\nscreenshot: {screenshot}")

    assert len(images) == 4
    for image in images:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
        assert image["scheme"] == "data", image
    assert not errors, errors
    # self-contained: the page itself is the only request (images are data: URIs)
    assert [r for r in requests if not r.startswith(("file:", "data:"))] == []
    # one badge and sentence per question, first; then the detail
    verdict = analysis["verdict"]
    assert verdict_visible and verdict_text.strip() == verdict["detail"]
    expected = [verdict["lines"][q] for q in ("init", "early")]
    # (the badge's CSS shows it in capitals)
    assert [b.strip().lower() for b in badges] == [line.split(". ", 1)[0].lower()
                                                   for line in expected]
    assert [" ".join(t.split()).lower() for t in lines] == [line.replace(". ", " ", 1).lower()
                                                            for line in expected]
    # each line in its code's colour; the box, holding several codes, in the neutral one
    assert borders[0] == "rgb(119, 119, 119)", borders
    assert len(borders) == 1 + len(expected) and "rgb(119, 119, 119)" not in borders[1:]
    assert trials_overflow is not None and trials_overflow <= 0
    assert title == "Study report: demo"
    assert overflow <= 0, "the page scrolls horizontally (wide tables must scroll in a box)"
    assert screenshot.stat().st_size > 10_000


@pytest.mark.slow
def test_gap_section_renders_in_chromium(tmp_path: Path) -> None:
    sync_playwright = _require_browser()
    table = make_table(20)
    analysis = make_analysis_v3()
    paths = write_report(tmp_path / "report", analysis=analysis, table=table,
                         importance=make_importance(), meta=make_meta(table=table))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(paths["report.html"].resolve().as_uri(), wait_until="load")
            figure = page.evaluate("""() => {
                const img = document.querySelector('#figure-gap img');
                return img && {complete: img.complete, width: img.naturalWidth}; }""")
            line = page.locator('#verdict-box .verdict-line[data-question="Gap"]')
            line_visible, line_text = line.is_visible(), line.inner_text()
            in_first_screen = line.bounding_box()["y"] + line.bounding_box()["height"] <= 900
            overflow = page.evaluate(
                "() => document.documentElement.scrollWidth - window.innerWidth")
        finally:
            browser.close()
    assert figure and figure["complete"] and figure["width"] > 0
    assert line_visible and in_first_screen
    assert analysis["gap"]["verdict"]["code"] in line_text.lower()
    assert overflow <= 0, "the gap tables must scroll in their box, not the page"
