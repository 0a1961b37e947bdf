"""``study doctor`` and what it shares with ``study trial``: the flags of one fixed
configuration, resolved into a config and its hyperparameters; ``study run --doctor``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from study._choices import search_spec
from study._cli_options import (
    SEARCH_FIELDS,
    TRAINING_FLAGS,
    WHOLE_NUMBER,
    config_options,
    resolve,
)
from study._validation import check_fixed_hparams
from study.config import TRAINING_OPTIONS, StudyConfig
from study.doctor.names import CHECKS
from study.errors import StudyError

__all__ = ["doctor_command", "doctor_gate", "fixed_config", "fixed_options"]

_NOT_FIXED = (*SEARCH_FIELDS, "n_trials", "timeout", "sampler", "pruner", "heartbeat_interval",
              "storage", "storage_timeout", "study_name")
# One configuration: the help of the flags a study searches says "one", not "searched".
_ONE = {**{name: f"{what} ({one})." for name, (what, one) in TRAINING_FLAGS.items()},
        "seed": "Seed of the data split and the training.",
        # No study here: the run (trial's, or doctor's) is the command's own.
        "experiment": "MLflow experiment of the command's run.",
        "epochs": "Training epochs.",
        "objective": "No Optuna study here: kept as the run's param, as a study's trial would "
                     "(val_loss, val_error or early_loss)."}


def fixed_options(fn: Callable | None = None, *,
                  exclude: tuple[str, ...] = ()) -> Callable:
    """The flags of one fixed configuration: the config's, less the search, the study's and
    ``exclude``, plus ``--width``, ``--lr``, ``--batch-size`` and ``--weight-decay``."""
    if fn is None:
        return lambda f: fixed_options(f, exclude=exclude)
    fn = click.option("--weight-decay", type=float, default=1e-4, show_default=True,
                      help="Weight decay (penalty coefficient in l2-in-loss mode).")(fn)
    fn = click.option("--batch-size", type=WHOLE_NUMBER, default=64, show_default=True,
                      help="Batch size.")(fn)
    fn = click.option("--lr", type=float, default=1e-3, show_default=True,
                      help="Learning rate.")(fn)
    fn = click.option("--width", type=WHOLE_NUMBER, default=16, show_default=True,
                      help="Filters in the first block.")(fn)
    return config_options(exclude=(*_NOT_FIXED, *exclude), helps=_ONE)(fn)


def fixed_config(options: dict[str, Any], *, command: str) -> tuple[StudyConfig, Any]:
    """The config and :class:`~study.training.HParams` of ``fixed_options``' values.

    Raises:
        ConfigError: A value out of range, or several values where one is needed.
    """
    width, lr = options.pop("width"), options.pop("lr")
    batch_size, weight_decay = options.pop("batch_size"), options.pop("weight_decay")
    check_fixed_hparams(width=width, lr=lr, batch_size=batch_size, weight_decay=weight_decay)
    fixed = {"width_min": width, "width_max": width, "lr_min": lr, "lr_max": lr,
             "batch_sizes": (batch_size,), "weight_decay_min": weight_decay,
             "weight_decay_max": weight_decay}
    config, _ = resolve({**options, **fixed})
    if len(config.penalty_mode) != 1:
        raise click.UsageError(f"`penalty_mode` must be a single mode for `study {command}`.")
    from study.training import HParams

    return config, HParams(width=width, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
                           penalty_mode=config.penalty_mode[0], **config.training_options())


@click.command("doctor", short_help="Why is my training loss rising? Run 9 checks.")
# The checks have budgets of their own (steps, folds); a trial's epochs and objective do not
# apply.
@fixed_options(exclude=("epochs", "early_epochs", "objective", "compile"))
@click.option("--output-dir", type=click.Path(file_okay=False), default="reports/doctor",
              show_default=True, help="Where doctor.json, doctor.html and figures/ go.")
@click.option("--checks", default=",".join(CHECKS),
              help=f"The checks to run, comma-separated.  [default: all {len(CHECKS)}: "
                   f"{', '.join(CHECKS)}]")
def doctor_command(output_dir: str, checks: str, **options: Any) -> None:
    """Why is my training loss rising? Run the checklist on this data and model; exit 1 when a
    check fails."""
    names = [c.strip() for c in checks.split(",") if c.strip()]
    unknown = [c for c in names if c not in CHECKS]
    if unknown or not names:
        got = ", ".join(unknown) if unknown else "none"
        raise click.BadParameter(f"must be among {', '.join(CHECKS)}, but got {got}.",
                                 param_hint="'--checks'")
    config, hp = fixed_config(options, command="doctor")
    from study.doctor import run_doctor, summary_text, table_text

    outcome = run_doctor(config, hp, output_dir=Path(output_dir), checks=names)
    click.echo(f"doctor: {outcome.status}: {summary_text(outcome.results)}")  # the answer first
    click.echo(table_text(outcome.results))
    lists = [str(path) for kind, path in outcome.files.items() if kind.startswith("suspects:")]
    listed = f"; every flagged sample in {', '.join(lists)}" if lists else ""
    click.echo(f"wrote {outcome.files['json']}, {outcome.files['html']}{listed}; logged to run "
               f"{outcome.run_id}")
    if outcome.status == "fail":  # said in the first line: the exit code carries it
        raise click.exceptions.Exit(1)


def doctor_gate(config: StudyConfig) -> None:
    """``study run --doctor``: the checklist once on the search's most demanding corner (its
    widest model, highest lr, smallest batch, strongest decay, first penalty mode and training
    options), written to ``reports/<study>/doctor``; a failure stops the study before it is
    created.

    Raises:
        StudyError: A check failed (the table was printed).
    """
    from study._validation import folder_name
    from study.doctor import run_doctor, summary_text, table_text
    from study.training import HParams

    hp = HParams(width=config.width_max, lr=config.lr_max, batch_size=min(config.batch_sizes),
                 weight_decay=config.weight_decay_max, penalty_mode=config.penalty_mode[0],
                 **{field: _first(config, field) for field in TRAINING_OPTIONS})
    folder = Path("reports") / folder_name(config.study_name) / "doctor"
    outcome = run_doctor(config, hp, output_dir=folder)
    click.echo(f"doctor: {outcome.status}: {summary_text(outcome.results)}", err=True)
    click.echo(table_text(outcome.results), err=True)
    if outcome.status == "fail":
        failed = [r.name for r in outcome.results if r.status == "fail"]
        # The flags that set the corner: the checks' advice names its values, not the flags.
        corner = (f"--width-max {hp.width}, --lr-max {hp.lr:g}, --batch-sizes' smallest "
                  f"{hp.batch_size}, --weight-decay-max {hp.weight_decay:g}")
        raise StudyError(f"doctor: {', '.join(failed)} failed on the search's most demanding "
                         f"corner ({corner}; see {folder / 'doctor.html'}); the study was not "
                         f"started")


def _first(config: StudyConfig, field: str) -> Any:
    """A searched training option's first value (a range's low end)."""
    values = getattr(config, field)
    if field == "optimizer":
        return values[0]
    kind, value = search_spec(values)
    return value if kind == "fixed" else value[0]
