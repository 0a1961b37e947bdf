"""A finished study in the real MLflow UI: a real ``mlflow server``, the system headless Chromium.

The study's parent run must be listed in the experiment's run table with its trial runs nested
under it (shown after expanding the parent), and a trial metric must plot on MLflow's metric page.

What works in MLflow 3.17 (checked against the real UI, not guessed):

* ``#/experiments/<id>`` opens the GenAI *Overview* for an experiment without an
  ``mlflow.experimentKind`` tag; ``#/experiments/<id>/runs?workflowType=machine_learning`` opens
  the "Model training" run table.
* The run table is AG Grid: one row per top-level run, ``[role=row][row-id=<run id>]`` in
  ``.ag-pinned-left-cols-container``; the parent's expand control is the button of the run name
  cell (``button[data-component-id*=runnamecellrenderer]``). Child rows exist only once expanded.
* ``#/metric?runs=[ids]&metric="key"&experiments=[ids]&plot_metric_keys=[keys]&...`` (built as
  ``Routes.getMetricPageRoute`` builds it) plots with plotly (``.js-plotly-plot`` path
  ``.js-line``) above a table with one ``tr[data-row-key=<run id>]`` per run.
* On localhost the "MLflow Assistant" panel opens itself on the first visit; the UI remembers it in
  ``localStorage`` (``mlflow.assistant.*_v1``), which an init script presets so the screenshots
  show the runs, not the panel. The same script presets which table columns are shown.

Errors: a ``pageerror`` (an uncaught exception in the app) fails the test, and so does any failed
load of the app's own assets (``/static-files/``) or a 5xx from the server. Console errors are
recorded and printed but not asserted: offline, the UI logs "Failed to load resource" for its own
optional calls (``/ajax-api/2.0/mlflow/users/current`` answers 404 without the auth app).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from study.config import StudyConfig
from study.runtime.session import run_session
from tests.conftest import cli_env

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
EXPERIMENT = "ui-study"
STUDY = "digits-l2"
TRIALS = ["trial-0000", "trial-0001", "trial-0002"]
EPOCHS = 2
METRIC = "train/loss"
TIMEOUT_MS = 60_000
SERVER_START_S = 90.0
VIEWPORT = {"width": 1400, "height": 900}
TABLE_COLUMNS = ["metrics.`train/loss`", "metrics.`final/val_accuracy`", "params.`width`",
                 "params.`lr`"]

pytestmark = pytest.mark.usefixtures("clean_env")


def _skip_or_fail(reason: str) -> None:
    """Skip on a developer machine; fail in CI, which must run the browser tests."""
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def mlflow_server(tracking_uri: str, workdir: Path) -> Iterator[str]:
    """A real ``mlflow server`` on a free local port; yields its base URL.

    It runs in its own process group (it forks uvicorn workers), and the whole group is ended on
    exit, whatever happened.
    """
    port = _free_port()
    log = workdir / "mlflow-server.log"
    exe = Path(sys.executable).with_name("mlflow")
    cmd = [str(exe), "server", "--backend-store-uri", tracking_uri,
           "--default-artifact-root", str(workdir / "artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    # No job execution: it starts seven busy huey consumers that this test never uses.
    env = cli_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true",
                  DO_NOT_TRACK="true")
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n{_log_tail(log)}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                    if response.status == 200 and response.read().strip() == b"OK":
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not answer /health within {SERVER_START_S:.0f} s:"
                            f"\n{_log_tail(log)}")
            time.sleep(0.5)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):  # workers left behind by a fast exit
            os.killpg(proc.pid, signal.SIGKILL)


def _metric_page_url(base: str, run_ids: list[str], experiment_id: str, key: str) -> str:
    """The metric page URL as the UI itself builds it (``Routes.getMetricPageRoute``)."""
    query = urllib.parse.urlencode({
        "runs": json.dumps(run_ids), "metric": json.dumps(key),
        "experiments": json.dumps([experiment_id]), "plot_metric_keys": json.dumps([key]),
        "x_axis": "step", "y_axis_scale": "linear", "line_smoothness": "1", "show_point": "true",
        "workflowType": "machine_learning",  # the "Model training" sidebar, as on the run table
    }, quote_via=urllib.parse.quote)
    return f"{base}/#/metric?{query}"


def _init_script(experiment_id: str) -> str:
    """Preset the UI's own localStorage: assistant panel closed, a few study columns shown."""
    page_state = f'MLflowLocalStorage-1.1-ExperimentPage-["{experiment_id}"]-ReactComponentState'
    columns = json.dumps({"selectedColumns": TABLE_COLUMNS})
    return f"""
        localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');
        localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');
        if (localStorage.getItem({json.dumps(page_state)}) === null)
            localStorage.setItem({json.dumps(page_state)}, {json.dumps(columns)});
    """


@pytest.mark.slow
def test_study_runs_nest_and_plot_in_the_mlflow_ui(tmp_path: Path, tracking_uri: str,
                                                   storage_url: str) -> None:
    sync_playwright = _require_browser()
    from mlflow import MlflowClient

    started = time.monotonic()
    config = StudyConfig(study_name=STUDY, storage=storage_url, tracking_uri=tracking_uri,
                         experiment=EXPERIMENT, epochs=EPOCHS, width_min=4, width_max=8,
                         batch_sizes=(64,), lr_min=1e-3, lr_max=1e-2, n_trials=len(TRIALS),
                         device="cpu")
    result = run_session(config)
    from study.analysis import analyze_study

    verdict = analyze_study(config, output_dir=tmp_path / "analysis")[0]["verdict"]["text"]
    client = MlflowClient(tracking_uri)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    runs = {r.info.run_name: r for r in client.search_runs([experiment_id])}
    assert sorted(runs) == sorted([STUDY, *TRIALS])
    assert runs[STUDY].info.run_id == result.parent_run_id
    latest = {name: runs[name].data.metrics[METRIC] for name in TRIALS}
    trial_ids = [runs[name].info.run_id for name in TRIALS]
    study_s = time.monotonic() - started

    runs_png = tmp_path / "mlflow_ui_runs.png"
    metric_png = tmp_path / "mlflow_ui_metric.png"
    parent_png = tmp_path / "mlflow_ui_parent.png"
    page_errors: list[str] = []
    asset_failures: list[str] = []
    console_errors: list[str] = []

    def on_response(response: Any) -> None:
        if response.status >= 500 or (response.status >= 400 and "/static-files/" in response.url):
            asset_failures.append(f"{response.status} {response.url}")

    def on_request_failed(request: Any) -> None:
        if "/static-files/" in request.url:
            asset_failures.append(f"failed {request.url}: {request.failure}")

    with mlflow_server(tracking_uri, tmp_path) as base:
        server_s = time.monotonic() - started - study_s
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                 args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport=VIEWPORT)
                page.set_default_timeout(TIMEOUT_MS)
                page.add_init_script(_init_script(experiment_id))
                page.on("pageerror", lambda exc: page_errors.append(str(exc)))
                page.on("console", lambda msg: console_errors.append(msg.text)
                        if msg.type == "error" else None)
                page.on("response", on_response)
                page.on("requestfailed", on_request_failed)

                # The experiment's run table: the parent run, collapsed, then expanded.
                page.goto(f"{base}/#/experiments/{experiment_id}/runs"
                          "?workflowType=machine_learning", wait_until="load")
                parent_row = page.locator(".ag-pinned-left-cols-container [role=row]"
                                          f'[row-id="{result.parent_run_id}"]')
                parent_link = parent_row.get_by_role("link", name=STUDY, exact=True)
                parent_link.wait_for()
                parent_href = parent_link.get_attribute("href")
                trial_links = [page.get_by_role("link", name=name, exact=True)
                               for name in TRIALS]
                collapsed_counts = [link.count() for link in trial_links]
                parent_row.locator("button[data-component-id*=runnamecellrenderer]").click()
                for link in trial_links:
                    link.wait_for()
                trial_hrefs = [link.get_attribute("href") for link in trial_links]
                matching = page.get_by_text(re.compile(r"\d+\s*matching runs")).inner_text()
                page.evaluate("document.activeElement && document.activeElement.blur()")
                page.mouse.click(VIEWPORT["width"] - 300, VIEWPORT["height"] - 200)
                boxes = [link.bounding_box() for link in trial_links]
                table_bottom = max((b["y"] + b["height"] for b in boxes if b), default=400)
                page.screenshot(path=str(runs_png), clip={
                    "x": 0, "y": 0, "width": VIEWPORT["width"],
                    "height": min(VIEWPORT["height"], table_bottom + 60)})

                # The metric page of the trial runs: one plotted line per trial.
                page.goto(_metric_page_url(base, trial_ids, experiment_id, METRIC),
                          wait_until="load")
                lines = page.locator(".js-plotly-plot .scatterlayer path.js-line")
                lines.first.wait_for()
                legend = [page.get_by_text(f"{name} ({METRIC})", exact=True).first
                          for name in TRIALS]
                for item in legend:
                    item.wait_for()
                latest_cells = {
                    name: page.locator(f'tr[data-row-key="{run_id}"] td:nth-child(2)')
                    for name, run_id in zip(TRIALS, trial_ids, strict=True)}
                for cell in latest_cells.values():
                    cell.wait_for()
                latest_texts = {name: cell.inner_text() for name, cell in latest_cells.items()}
                line_paths = lines.evaluate_all(
                    "els => els.map(e => e.getAttribute('d')).filter(Boolean)")
                heading = page.get_by_role("heading", name=METRIC).first.is_visible()
                page.screenshot(path=str(metric_png), clip={
                    "x": 0, "y": 0, "width": VIEWPORT["width"], "height": 730})

                # The parent run's page: its description is the verdict (after analyze).
                page.goto(f"{base}/#/experiments/{experiment_id}/runs/{result.parent_run_id}",
                          wait_until="load")
                shown = page.get_by_text(re.compile(r"At initialization: "))
                shown.first.wait_for()
                description = shown.first.inner_text()
                page.screenshot(path=str(parent_png), clip={
                    "x": 0, "y": 0, "width": VIEWPORT["width"], "height": 900})
            finally:
                browser.close()
    total_s = time.monotonic() - started

    artifacts = os.environ.get("STUDY_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        for png in (runs_png, metric_png, parent_png):
            shutil.copyfile(png, Path(artifacts) / png.name)
    print(f"\nscreenshots: {runs_png} {metric_png} {parent_png}")
    print(f"timing: study {study_s:.1f} s, server start {server_s:.1f} s, total {total_s:.1f} s")
    if console_errors:
        print("console errors (not asserted):", *console_errors, sep="\n  ")

    assert not page_errors, page_errors
    # the parent run's page shows the verdict the analysis wrote, its first line first
    assert description.strip().startswith("At initialization: ")
    assert verdict.split(". ")[0] in description
    assert not asset_failures, asset_failures
    # nested: hidden while the parent is collapsed, listed (and linked) once it is expanded
    assert collapsed_counts == [0, 0, 0]
    assert parent_href.endswith(f"/runs/{result.parent_run_id}")
    assert trial_hrefs == [f"#/experiments/{experiment_id}/runs/{run_id}" for run_id in trial_ids]
    assert matching.split()[0] == str(1 + len(TRIALS))
    # plotted: one line per trial, the legend names them, the table shows MLflow's last values
    assert heading
    assert len(line_paths) >= len(TRIALS)
    for name, text in latest_texts.items():
        value, step = re.fullmatch(r"\s*(\S+) \(step=(\d+)\)\s*", text).groups()
        assert (float(value), int(step)) == (pytest.approx(latest[name]), EPOCHS), (name, text)
    for png in (runs_png, metric_png):
        assert 10_000 < png.stat().st_size < 400_000, png
