"""The ``study`` command line: a click group over the library.

Every :class:`~study.errors.StudyError` is caught once, in :func:`main`, and printed as one line
with exit code 1; click's usage errors become one line with exit code 2.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import click

from study._cli_doctor import doctor_command, doctor_gate, fixed_config, fixed_options
from study._cli_env import mlflow_env_defaults
from study._cli_options import (
    EXPLAIN_HELPS,
    WHOLE_NUMBER,
    WORKER_HELPS,
    compare_option,
    config_options,
    importance_options,
    landscape_options,
    output_folder,
    quiet_libraries,
    report_options,
    resolve,
    store_options,
)
from study._signals import Interrupts
from study._text import finished_of, settings_of, shell_path
from study._validation import check_positive
from study.config import StudyConfig, resolve_config
from study.errors import StudyError
from study.keys import LOCAL_WORKER_ENV
from study.redact import redact

__all__ = ["cli", "main", "run_cli"]

class _Interrupted(Exception):
    """Ctrl-C or SIGTERM in a command, carried past click (which would print a bare line and
    "aborted") to :func:`main`."""

    def __init__(self, interrupt: KeyboardInterrupt) -> None:
        super().__init__(str(interrupt))
        self.interrupt = interrupt


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise _Interrupted(exc) from None


@click.group(cls=_Group,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="study", prog_name="study")
def cli() -> None:
    """Hyperparameter studies of CNN width, learning rate, batch size and weight decay,
    tracked in MLflow, that measure whether bigger models start at a higher training loss and
    why (and why validation lags training)."""


def _print_result(result: Any, *, who: str = "study") -> None:
    counts = result.counts
    # As `study status` says it: an interrupted trial failed through no fault of its own.
    stopped = f" ({result.interrupted} interrupted)" if result.interrupted else ""
    click.echo(
        f"{who} {result.study_name!r}: {finished_of(result.n_finished, result.n_trials)} "
        f"({counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} "
        f"failed{stopped}); parent run {result.parent_run_id}"
    )
    if result.best_value is not None:
        click.echo(f"best {result.objective} {result.best_value:.6g} with "
                   f"{settings_of(result.best_params)}")


_QUIET = click.option("--quiet", is_flag=True, default=False,
                      help="No progress lines (warnings, errors and the summary still print).")


class _Discard(io.TextIOBase):
    """A stream that drops what it is given (progress under --quiet)."""

    def write(self, text: str) -> int:
        return len(text)


def _progress(quiet: bool) -> TextIO | None:
    return _Discard() if quiet else None


@cli.command("run", short_help="Create or resume a study; run trials up to --n-trials.")
@config_options()
@click.option("--workers", type=WHOLE_NUMBER, default=1, show_default=True,
              help="Local worker processes (journal: or postgresql:// storage; not SQLite).")
@click.option("--trials-per-gpu", type=WHOLE_NUMBER, default=None,
              help="Concurrent trials (worker processes) per GPU; needs CUDA.")
@click.option("--doctor", is_flag=True, default=False,
              help="First run `study doctor`'s checks once (on the search's widest model, "
                   "highest lr, smallest batch); stop on a failure.")
@_QUIET
def run_command(workers: int, trials_per_gpu: int | None, doctor: bool, quiet: bool,
                **options: Any) -> None:
    """Create or resume a study and run trials until --n-trials of them have finished."""
    from study.runtime.workers import check_workers

    config, given = resolve(options)
    check_workers(config, workers)
    if trials_per_gpu is not None:
        check_positive("trials_per_gpu", trials_per_gpu)
    quiet_libraries()
    if doctor:
        doctor_gate(config)
    from study.runtime import run_session, run_with_workers

    if workers > 1 or trials_per_gpu is not None:
        _print_result(run_with_workers(config, workers, given=given, out=_progress(quiet),
                                       trials_per_gpu=trials_per_gpu, quiet=quiet,
                                       interrupts=_interrupts()))
    else:
        _print_result(run_session(config, given=given, out=_progress(quiet),
                                  hooks=_checked(), interrupts=_interrupts()))


@cli.command("worker", short_help="Join a study (same --storage) and run its trials.")
@config_options(helps=WORKER_HELPS)
@_QUIET
def worker_command(quiet: bool, **options: Any) -> None:
    """Join an existing study (same --storage) and run trials until its budget is met."""
    config, given = resolve(options)
    quiet_libraries()
    from study.runtime import run_session

    _print_result(run_session(config, given=given, worker=True, out=_progress(quiet),
                              hooks=_checked(), interrupts=_interrupts()),
                  who="worker done, study")


@cli.command("trial")
@fixed_options
def trial_command(**options: Any) -> None:
    """Train one fixed configuration and log it as one MLflow run."""
    config, hp = fixed_config(options, command="trial")
    quiet_libraries()
    from study.runtime import run_single_trial

    result = run_single_trial(config, hp)
    if result.state == "FAIL":
        found = f"; diagnosis: {result.diagnosis.tag_value()}" if result.diagnosis.codes else ""
        raise StudyError(f"trial failed: {result.failure}{found} (run {result.run_id})")
    early = result.early or {}
    click.echo(
        f"run {result.run_id}: n_params={result.n_params} early loss="
        f"{early.get('loss', float('nan')):.4f} (data {early.get('data_loss', float('nan')):.4f}"
        f" + penalty {early.get('penalty', float('nan')):.4f}); final val_loss="
        f"{result.final_val_loss:.4f} val_accuracy={result.final_val_accuracy:.3f}"
    )
    if result.diagnosis.codes:
        click.echo(f"diagnosis: {result.diagnosis.detail}")


cli.add_command(doctor_command)


@cli.command("status", short_help="Trials by state, the best trial, throughput, live workers.")
@click.option("--study-name", default=StudyConfig.study_name, show_default=True,
              help="Name of the Optuna study.")
@click.option("--storage", envvar="STUDY_STORAGE", default="sqlite:///optuna.db",
              show_default=True, help="Optuna storage URL.")
def status_command(study_name: str, storage: str) -> None:
    """Trials by state, the best trial, trials per hour and live workers."""
    config, _ = resolve_config(explicit={"study_name": study_name, "storage": storage})
    quiet_libraries()
    from study.runtime.status import study_status

    click.echo(study_status(config))


@cli.command("analyze", short_help="Answer the questions; write analysis.json, log it to MLflow.")
@store_options
@compare_option
def analyze_command(output_dir: str | None, compare_widths: str | None,
                    **options: Any) -> None:
    """Answer the questions (the size effect at initialization and over the first epoch, why
    validation lags training), print the verdict, write and log analysis.json."""
    config, _ = resolve(options)
    from study.analysis.span import parse_compare_widths

    widths = parse_compare_widths(compare_widths)
    quiet_libraries()
    from study.analysis.command import analyze_study

    document, path, logged = analyze_study(config, output_dir=output_folder(config, output_dir),
                                           compare_widths=widths)
    _echo_answer(document, config.study_name)
    click.echo(f"wrote {path}; {logged}")
    from study.report.command import earlier_report_note

    if note := earlier_report_note(path.parent, logged.run_id, document):  # `study report`'s
        click.echo(note, err=True)


def _echo_answer(document: dict[str, Any], study_name: str) -> None:
    """The answer, then the command that runs the trials that would decide it, if any."""
    from study.analysis.command import answer_text, more_trials_line

    click.echo(answer_text(document["verdict"], document.get("gap")))
    if line := more_trials_line(document, study_name=study_name):
        click.echo(line)


@cli.command("report", short_help="Write the HTML, Markdown, JSON and CSV report; log it.")
@store_options
@report_options
@compare_option
def report_command(output_dir: str | None, evaluators: str, importance_seed: int,
                   n_bootstrap: int, compare_widths: str | None, **options: Any) -> None:
    """Write report.html, report.md, report.json and trials.csv and log them to MLflow."""
    config, _ = resolve(options)
    names = importance_options(evaluators, seed=importance_seed, n_bootstrap=n_bootstrap)
    from study.analysis.span import parse_compare_widths

    widths = parse_compare_widths(compare_widths)
    out = output_folder(config, output_dir)
    quiet_libraries()
    from study.report.command import report_study

    document, files, logged = report_study(
        config, output_dir=out, evaluators=names, seed=importance_seed, n_bootstrap=n_bootstrap,
        compare_widths=widths,
    )
    _echo_answer(document, config.study_name)
    click.echo(f"wrote {len(files)} files to {out} (open {shell_path(out / 'report.html')}); "
               f"{logged}")


@cli.command("explain", short_help="Answer a question with a controlled experiment.")
@config_options(exclude=("lr_min", "lr_max", "batch_sizes", "weight_decay_min",
                         "weight_decay_max", "n_trials", "sampler", "pruner"),
                helps=EXPLAIN_HELPS)
@click.option("--question", default="size", show_default=True,
              help="size: widths on a log grid x seeds paired with penalty-mode none controls. "
                   "gap: the values of --optimizer, --bn-momentum, --dropout (--momentum for "
                   "sgd) crossed at width --width-max, seeds paired; 6 epochs unless --epochs.")
@click.option("--lr", type=float, default=1e-3, show_default=True,
              help="Learning rate, fixed (Adam's usual default).")
@click.option("--batch-size", type=WHOLE_NUMBER, default=32, show_default=True,
              help="Batch size, fixed (Keras's default).")
@click.option("--weight-decay", type=float, default=1e-2, show_default=True,
              help="Weight decay, fixed (Keras's l2() default factor).")
@click.option("--n-widths", type=WHOLE_NUMBER, default=6, show_default=True,
              help="Widths on a log grid from --width-min to --width-max (size only).")
@click.option("--replicates", type=WHOLE_NUMBER, default=2, show_default=True,
              help="Training seeds per width (size) or per setting (gap).")
@click.option("--output-dir", type=click.Path(file_okay=False), default=None,
              help="Where to write the analysis and report.  [default: reports/STUDY_NAME]")
@report_options
@compare_option
def explain_command(question: str, lr: float, batch_size: int, weight_decay: float,
                    n_widths: int, replicates: int, output_dir: str | None, evaluators: str,
                    importance_seed: int, n_bootstrap: int, compare_widths: str | None,
                    **options: Any) -> None:
    """Answer a question with a controlled experiment, then analyze and report it."""
    from study.explain import explain_main, explain_options

    config, given = resolve(explain_options(question, options))
    names = importance_options(evaluators, seed=importance_seed, n_bootstrap=n_bootstrap)
    report = {"evaluators": names, "seed": importance_seed, "n_bootstrap": n_bootstrap,
              "compare_widths": compare_widths}
    for line in explain_main(
            question, config, given, n_widths=n_widths, replicates=replicates, report=report,
            fixed={"lr": lr, "batch_size": batch_size, "weight_decay": weight_decay},
            output_dir=output_dir, before_run=quiet_libraries, interrupts=_interrupts()):
        click.echo(line)


@cli.command("landscape", short_help="Loss-landscape probe of chosen trials, logged to their runs.")
@store_options
@landscape_options
def landscape_command(output_dir: str | None, trials: str, where: str | None,
                      between: str | None, normalization: str, dim: int, radius: float,
                      n_points: int, directions: int, seed: int, **options: Any) -> None:
    """Loss-landscape probe of chosen trials, logged to their runs as landscape/ plots and the
    metrics landscape/sharpness, landscape/flatness_radius (means over directions, with 95%
    bounds) and landscape/hessian_top_eigenvalue."""
    from study.landscape.options import check_between, check_probe

    config, _ = resolve(options)
    if between is not None:
        check_between(between)
    else:
        check_probe(trials=trials, where=where, dim=dim, radius=radius, n_points=n_points,
                    n_directions=directions, seed=seed, normalization=normalization)
    folder = output_folder(config, output_dir) / "landscape"
    quiet_libraries()
    from study.landscape.command import probe_between, probe_trials

    if between is not None:
        line, png, runs = probe_between(config, between=between, output_dir=folder)
        click.echo(f"between {between}: barrier={line.barrier:.4g} (train loss above the "
                   f"straight line between the endpoints); wrote {png}; logged to runs "
                   f"{', '.join(runs)}")
        return
    results = probe_trials(config, trials=trials, where=where, dim=dim, radius=radius,
                           n_points=n_points, seed=seed, n_directions=directions,
                           normalization=normalization, output_dir=folder)
    for r in results:
        click.echo(f"trial {r.trial_number}: {_landscape_line(r, radius)}; "
                   f"wrote {r.plot_path}; logged to run {r.run_id}")


def _landscape_line(r: Any, radius: float) -> str:
    """The figures of one probed trial, intervals in brackets."""
    from study.landscape.directions import DIRECTION_LABELS

    def span(low: float | None, high: float | None) -> str:
        return "" if low is None else f" [{low:.3g}, {high:.3g}]"

    # Directions along which the loss never rose enough count at the probe's radius: a bound.
    censored = (f" (>= for {r.flatness_censored} of {r.n_directions} directions reaching "
                f"the radius {radius:g})" if r.flatness_censored else "")
    return (f"sharpness={r.sharpness:.4g}{span(r.sharpness_low, r.sharpness_high)} "
            f"flatness_radius={r.flatness_radius:.3g}"
            f"{span(r.flatness_low, r.flatness_high)}{censored} "
            f"hessian_top_eigenvalue={r.hessian_top_eigenvalue:.4g} "
            f"({DIRECTION_LABELS[r.normalization]}, weights {r.weights_source})")


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises :class:`KeyboardInterrupt` so the same clean-up
    runs; ``signum`` gives the exit code (128 + 15)."""

    signum = signal.SIGTERM


def _interrupted(interrupt: BaseException) -> int:
    """Say in one line what an interrupt did (the session's summary where it gives one:
    which trials failed and were queued again, how to resume); exit 128 + the signal. A
    worker of ``study run --workers`` leaves the line to that process (one for all)."""
    if not os.environ.get(LOCAL_WORKER_ENV):
        click.echo(getattr(interrupt, "summary", None) or "interrupted", err=True)
    return 128 + int(getattr(interrupt, "signum", None) or signal.SIGINT)


def _interrupts() -> Interrupts | None:
    """The command's Ctrl-C/SIGTERM handlers, for a session to check (before the first trial
    and after each), defer (between trials) and raise at once (inside a trial)."""
    interrupts = click.get_current_context().obj
    return interrupts if isinstance(interrupts, Interrupts) else None


def _checked() -> tuple[Any, ...]:
    """The session hook that raises a Ctrl-C or SIGTERM a finalizer swallowed (see
    :mod:`study._signals`)."""
    interrupts = click.get_current_context().obj
    return (interrupts.check,) if isinstance(interrupts, Interrupts) else ()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (1 for domain errors, 2 for usage errors)."""
    mlflow_env_defaults()
    interrupts = Interrupts(_Terminated)
    interrupts.install()
    try:
        # Without standalone mode click returns an Exit's code (a command's own exit status).
        code = cli.main(args=list(argv) if argv is not None else None, prog_name="study",
                        standalone_mode=False, obj=interrupts)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"error: {redact(exc.format_message())}", err=True)
        return exc.exit_code
    except _Interrupted as exc:
        return _interrupted(exc.interrupt)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):  # while click parsed the command
            return _interrupted(exc.__cause__)
        click.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt as exc:
        return _interrupted(exc)
    except StudyError as exc:
        click.echo(f"error: {redact(str(exc))}", err=True)
        return 1
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


def run_cli() -> None:
    """Console-script entry point."""
    sys.exit(main())
