"""Glue between MLproject entry points and the CLI.

MLflow passes every entry-point parameter, defaults included. A value equal to the built-in
default is treated as not given, so resuming a study with ``mlflow run`` does not collide with
the settings it was created with; a value that differs is passed on and checked as usual.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from study._signals import ignored
from study.cli import main
from study.config import StudyConfig, coerce_values
from study.errors import ConfigError
from study.redact import redact

__all__ = ["mlproject_main", "next_step", "strip_defaults", "study_pipeline", "ui_hint"]

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(StudyConfig)}


def strip_defaults(argv: Sequence[str], *, keep: Sequence[str] = ()) -> list[str]:
    """Drop ``--flag value`` pairs whose value equals the config field's default (unless the
    field is in ``keep``), and pairs with an empty value (an MLproject string left unset)."""
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        flag = args[i]
        name = flag[2:].replace("-", "_") if flag.startswith("--") else None
        if name is not None and i + 1 < len(args) and args[i + 1] == "":
            i += 2
            continue
        if name in _DEFAULTS and name not in keep and i + 1 < len(args):
            value = args[i + 1]
            try:
                is_default = coerce_values({name: value})[name] == _DEFAULTS[name]
            except ConfigError:
                is_default = False  # let the CLI report the bad value
            if not is_default:
                out += [flag, value]
            i += 2
            continue
        out.append(flag)
        i += 1
    return out


def mlproject_main(command: str, argv: Sequence[str], *, keep: Sequence[str] = ()) -> int:
    """Run ``study COMMAND`` with MLproject arguments; returns the exit code.

    When the command fails before the run ``mlflow run`` opened for it became part of a study
    (bad input, a store that cannot be opened), that run is discarded: nothing is left behind.
    """
    code = main([command, *strip_defaults(argv, keep=keep)])
    if code:
        _discard_unclaimed_entry()
    return code


def _discard_unclaimed_entry() -> None:
    """Hand the run ``mlflow run`` opened to the process that deletes it once MLflow has
    closed it, if nothing of a study was written to it (it reads the run itself)."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    from study.tracking.entry import discard_later

    # The command has ended: a second signal (`mlflow run` sends SIGTERM to a command that
    # ended on Ctrl-C) must not break this with a traceback and leave the run behind; and a
    # failure here must never replace the error the user was just shown.
    with ignored(), contextlib.suppress(OSError):
        discard_later(run_id)


_REPORT_FLAGS = ("--evaluators", "--importance-seed", "--n-bootstrap")
_ANALYSIS_FLAGS = ("--compare-widths",)  # analyze's and report's, not run's
_STORE_FLAGS = ("--study-name", "--storage", "--output-dir")


def _pairs(argv: Sequence[str], flags: Sequence[str]) -> list[str]:
    """The ``flag value`` pairs of ``flags`` in ``argv``; an empty value (an MLproject
    parameter left unset) is dropped, so the command's own default applies."""
    out: list[str] = []
    args = list(argv)
    for i, flag in enumerate(args[:-1]):
        if flag in flags and args[i + 1] != "":
            out += [flag, args[i + 1]]
    return out


def _without(argv: Sequence[str], flags: Sequence[str]) -> list[str]:
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        if args[i] in flags and i + 1 < len(args):
            i += 2
            continue
        out.append(args[i])
        i += 1
    return out


def main_pipeline(argv: Sequence[str]) -> int:
    """The ``main`` entry point: ``study run``, then ``study analyze``, then ``study report``.

    Study flags go to ``run``; the store flags to all three; the importance flags to ``report``.
    Stops at the first step that fails and returns its exit code.
    """
    from study.analysis.span import parse_compare_widths  # the statistics: not on every start

    analysis = _pairs(argv, _ANALYSIS_FLAGS)
    try:  # checked before the study runs: a bad value costs no trials
        parse_compare_widths(dict(zip(analysis[::2], analysis[1::2], strict=True)).get(
            "--compare-widths"))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        _discard_unclaimed_entry()
        return 1
    run_args = _without(argv, (*_REPORT_FLAGS, *_ANALYSIS_FLAGS, "--output-dir"))
    code = mlproject_main("run", run_args)
    if code:
        return code
    store = _pairs(argv, _STORE_FLAGS)
    # `report` prints the same verdict again: say it once (analyze's errors still show).
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["analyze", *store, *analysis])
    if code:
        return code
    code = main(["report", *store, *analysis, *_pairs(argv, _REPORT_FLAGS)])
    if code == 0:
        _print_ui_hint()
    return code


def study_pipeline(argv: Sequence[str]) -> int:
    """The ``study`` entry point: ``study run``, then, once it succeeded, what to run next and
    where to see the study (as ``main`` ends with)."""
    code = mlproject_main("run", argv)
    if code == 0:
        print(next_step(argv), flush=True)
        _print_ui_hint()
    return code


def _print_ui_hint() -> None:
    parent, experiment = _study_parent(os.environ)
    print(ui_hint(os.environ, parent_run_id=parent, experiment=experiment), flush=True)


def next_step(argv: Sequence[str]) -> str:
    """The ``mlflow run`` command that answers the study ``argv`` ran: its ``report`` entry
    point with the study's name and storage (where they are not the defaults)."""
    store = _pairs(argv, ("--study-name", "--storage"))
    params = [f"-P {flag[2:].replace('-', '_')}={shlex.quote(value)}"
              for flag, value in zip(store[::2], store[1::2], strict=True)
              if value != str(_DEFAULTS[flag[2:].replace("-", "_")])]
    command = " ".join(["mlflow run . -e report --env-manager local", *params])
    return (f"next: {redact(command)} writes the answer and the report (-e analyze: the "
            f"answer alone)")


def _study_parent(environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The study's parent run (this ``mlflow run`` run, or the parent it is a later session
    of: its tags say which) and the name of this run's experiment; ``None`` for what cannot be
    read."""
    from study.tracking import Tracker
    from study.tracking.runs import PARENT_TAG, ROLE_TAG

    run_id = environ.get("MLFLOW_RUN_ID")
    try:
        tracker = Tracker(environ.get("MLFLOW_TRACKING_URI"), retry_seconds=0)
        run = tracker.get_run(run_id) if run_id else None
        experiment = tracker.experiment_name(run.info.experiment_id) if run else None
    except Exception:  # only the hint's names are at stake: the study is done
        return None, None
    if run is None:
        return None, None
    tags = run.data.tags
    parent = tags.get(PARENT_TAG, run_id) if tags.get(ROLE_TAG) == "session" else run_id
    return parent, experiment


def ui_hint(environ: Mapping[str, str], *, parent_run_id: str | None = None,
            experiment: str | None = None) -> str:
    """Where to see the study: the command that starts this environment's MLflow UI (its own
    ``mlflow``, which may not be on ``PATH``) and the URL of the experiment's runs, for the
    tracking store and experiment that ``mlflow run`` set in ``environ``, and the study's
    ``parent_run_id`` (this ``mlflow run`` run's, ``MLFLOW_RUN_ID``, when not given).
    ``experiment``: its name, where ``environ`` holds only its id."""
    tracking = environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    experiment_id = environ.get("MLFLOW_EXPERIMENT_ID")
    # MLflow 3 opens the GenAI view of an experiment first; this opens its training runs.
    page = f"/#/experiments/{experiment_id}/runs?workflowType=machine_learning" \
        if experiment_id else ""
    # The command and the URL on lines of their own: nothing to trim after a copy.
    if tracking.startswith(("http://", "https://")):
        where = [f"  open {redact(tracking).rstrip('/')}{page}"]
    else:
        where = [f"  {shlex.join([*_mlflow_command(), 'ui', '--backend-store-uri'])} "
                 f"{shlex.quote(redact(tracking))}",
                 f"  then open http://127.0.0.1:5000{page}"]
    return "\n".join([
        f"the study in the MLflow UI (experiment "
        f"{environ.get('MLFLOW_EXPERIMENT_NAME') or experiment or experiment_id or 'of this run'}, "
        f"parent run {parent_run_id or environ.get('MLFLOW_RUN_ID', '?')}):", *where])


def _mlflow_command() -> list[str]:
    """This environment's ``mlflow`` command: the script beside its Python, else
    ``python -m mlflow``."""
    script = Path(sys.executable).with_name("mlflow")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mlflow"]
