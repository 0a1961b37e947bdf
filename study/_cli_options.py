"""The options the ``study`` commands share: one per :class:`StudyConfig` field, the store
options of the commands that read a study, and how they resolve into a config."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from study._validation import check_dataset_path, folder_name
from study.config import StudyConfig, resolve_config

__all__ = [
    "EXPLAIN_HELPS",
    "KERAS_LIKE",
    "REPORT_OPTIONS",
    "SEARCH_FIELDS",
    "TRAINING_FLAGS",
    "WHOLE_NUMBER",
    "WORKER_HELPS",
    "compare_option",
    "config_options",
    "importance_options",
    "landscape_options",
    "output_folder",
    "quiet_libraries",
    "report_options",
    "resolve",
    "store_options",
]

_FIELD_TYPES = typing.get_type_hints(StudyConfig)
# A BatchNorm momentum above this in PyTorch's convention is rarely meant: Keras's 0.9-0.99
# given as is.
KERAS_LIKE = 0.5
SEARCH_FIELDS = ("width_min", "width_max", "lr_min", "lr_max", "batch_sizes",
                  "weight_decay_min", "weight_decay_max")
# `study worker` joins a study: what defines it, and its budget, are the study's own.
WORKER_HELPS = {
    **{f.name: re.sub(r" ?\(default: [^)]*\)", "", f.metadata["help"])
       + "  [default: the study's; another value is refused]"
       for f in dataclasses.fields(StudyConfig) if f.metadata["scope"] == "study"},
    "study_name": "Name of the existing Optuna study to join (study run creates it).",
    "n_trials": "Finished trials the study should reach.  [default: the study's budget]",
}
# What each training flag is, for the commands that do not search it (doctor and trial take
# one value, explain one for size and several crossed for gap): (what it is, how many).
TRAINING_FLAGS = {
    "penalty_mode": ("l2-in-loss, coupled, decoupled or none", "one"),
    "optimizer": ("adam, sgd or adamw", "one"),
    "momentum": ("SGD's momentum", "one value"),
    "dropout": ("Dropout rate before the classifier of the built-in models, 0 for no dropout "
                "layer", "one value"),
    "bn_momentum": ("BatchNorm momentum in PyTorch's convention: keras (Keras's 0.99) = 0.01, "
                    "pytorch = 0.1", "one value"),
}
# `study explain` searches nothing: size fixes every training option, gap crosses their values.
EXPLAIN_HELPS = {
    "study_name": "Name of the Optuna study (created or resumed).  [default: named after "
                  "the question and its settings, e.g. explain-l2-in-loss-lr0.001-wd0.01-...]",
    "epochs": "Training epochs per trial.  [default: 1 for --question size, 6 for gap]",
    "seed": "Seed of the data split and of the design's training seeds (no sampler).",
    **{name: f"{what}: {one} for --question size; several (comma-separated) are crossed for "
             f"--question gap{' (with sgd)' * (name == 'momentum')}."
       for name, (what, one) in TRAINING_FLAGS.items()},
    "penalty_mode": f"{TRAINING_FLAGS['penalty_mode'][0]} (one; --question size pairs each "
                    f"trial with a control under none).",
}


class _WholeNumber(click.ParamType):
    """An integer that also accepts "4.0": MLproject parameters are typed float."""

    name = "integer"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if not number.is_integer():
            self.fail(f"{value!r} is not a whole number.", param, ctx)
        return int(number)


WHOLE_NUMBER = _WholeNumber()


def _click_type(name: str) -> Any:
    hint = _FIELD_TYPES[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if isinstance(hint, types.UnionType) and args else hint
    if typing.get_origin(base) is tuple:
        return str  # comma-separated list
    return {int: WHOLE_NUMBER, float: float}.get(base, str)


def _show_default(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return "none" if value is None else str(value)


def _help(field: dataclasses.Field) -> str:
    """The field's help with its default, unless the help already says it (unset defaults)."""
    text = field.metadata["help"]
    if field.default is None and "(default:" in text:
        return text
    return f"{text}  [default: {_show_default(field.default)}]"


def config_options(exclude: Sequence[str] = (), *,
                   helps: Mapping[str, str] | None = None) -> Callable[[Callable], Callable]:
    """Add one option per :class:`StudyConfig` field, plus ``--config FILE``.

    Options default to ``None`` so that only values the user gave count as explicit.
    ``helps`` replaces the help of fields a command uses otherwise (the field's default is
    added unless the text gives one).
    """

    def decorate(fn: Callable) -> Callable:
        for field in reversed(dataclasses.fields(StudyConfig)):
            if field.name in exclude:
                continue
            text = (helps or {}).get(field.name)
            if text is None:
                text = _help(field)
            elif "[default:" not in text:
                text = f"{text}  [default: {_show_default(field.default)}]"
            if field.type in (bool, "bool"):
                fn = click.option(f"--{field.name}/--no-{field.name}", field.name,
                                  default=None, help=text)(fn)
                continue
            fn = click.option(
                "--" + field.name.replace("_", "-"), field.name,
                type=_click_type(field.name), default=None,
                envvar=field.metadata.get("envvar"), help=text,
            )(fn)
        return click.option(
            "--config", "config_file", type=click.Path(dir_okay=False), default=None,
            help="TOML or YAML file with the same keys (underscores); flags override it.",
        )(fn)

    return decorate


def resolve(options: dict[str, Any]) -> tuple[StudyConfig, dict[str, Any]]:
    """The config from defaults, ``--config`` and the options given, and the values given;
    a BatchNorm momentum that reads like Keras's convention gets a warning."""
    config_file = options.pop("config_file", None)
    explicit = {k: v for k, v in options.items() if v is not None}
    config, given = resolve_config(explicit=explicit, config_file=config_file)
    for name in _from_environment(explicit):  # an ambient default: a new study's, no conflict
        given.pop(name, None)
    check_dataset_path(config.dataset)
    keras_like = [v for v in config.bn_momentum if ":" not in v and float(v) > KERAS_LIKE]
    if keras_like and "bn_momentum" in given:
        click.echo(f"warning: `bn_momentum` {','.join(keras_like)} is in PyTorch's convention "
                   f"(the weight of the new batch: {float(keras_like[0]):g} keeps "
                   f"{1 - float(keras_like[0]):.0%} of the running statistics); Keras's "
                   f"momentum=0.99 is `--bn-momentum keras` (0.01).", err=True)
    return config, given


def _from_environment(names: Iterable[str]) -> list[str]:
    """The study-defining ``names`` whose value came from an environment variable
    (``MLFLOW_EXPERIMENT_NAME`` set for a whole cluster, not for this study)."""
    context = click.get_current_context(silent=True)
    study = set(StudyConfig.field_names("study"))
    return [name for name in names if context is not None and name in study
            and context.get_parameter_source(name) is click.core.ParameterSource.ENVIRONMENT]


def store_options(fn: Callable) -> Callable:
    """The options that locate an existing study in its stores."""
    for name in reversed(("study_name", "storage", "tracking_uri", "experiment")):
        field = StudyConfig.__dataclass_fields__[name]
        # These commands read an existing study: "(created or resumed)" is `study run`'s.
        text = (f"Name of the Optuna study.  [default: {_show_default(field.default)}]"
                if name == "study_name" else _help(field))
        fn = click.option(
            "--" + name.replace("_", "-"), name, default=None,
            envvar=field.metadata.get("envvar"), help=text,
        )(fn)
    return click.option(
        "--output-dir", type=click.Path(file_okay=False), default=None,
        help="Where to write the files.  [default: reports/STUDY_NAME]",
    )(fn)


def output_folder(config: StudyConfig, given: str | None) -> Path:
    """``--output-dir``, else ``reports/STUDY_NAME`` (a name that is not a safe folder name
    gets one derived from it, and a note says so)."""
    if given:
        return Path(given)
    folder = folder_name(config.study_name)
    if folder != config.study_name:
        click.echo(f"note: study name {config.study_name!r} is not a safe folder name; "
                   f"writing to reports/{folder}", err=True)
    return Path("reports") / folder


def report_options(fn: Callable) -> Callable:
    """The importance options of ``study report`` (and of the commands that end in a report)."""
    fn = click.option("--n-bootstrap", type=WHOLE_NUMBER, default=30, show_default=True,
                      help="Bootstrap resamples for the importance intervals.")(fn)
    fn = click.option("--importance-seed", type=WHOLE_NUMBER, default=0, show_default=True,
                      help="Seed of the evaluators' forests and of the bootstrap.")(fn)
    return click.option("--evaluators", default="fanova,ped-anova", show_default=True,
                        help="Importance evaluators (fanova, ped-anova, mdi), "
                             "comma-separated.")(fn)


def importance_options(evaluators: str, *, seed: int, n_bootstrap: int) -> list[str]:
    """The evaluator names of ``--evaluators``, checked with the seed and the resample count
    before any study is read.

    Raises:
        ConfigError: An unknown evaluator, or a bad seed or count.
    """
    from study.analysis.importance import check_args

    names = [name.strip() for name in evaluators.split(",") if name.strip()]
    check_args(names, seed=seed, n_bootstrap=n_bootstrap)
    return names


def compare_option(fn: Callable) -> Callable:
    """``--compare-widths A,B``: the two model sizes every size effect is read between."""
    return click.option(
        "--compare-widths", default=None, metavar="A,B",
        help="Read the size effect between the models of widths A and B (the same for every "
             "replicate of a study).  [default: the study's --width-min and --width-max]")(fn)


def landscape_options(fn: Callable) -> Callable:
    """The probe settings of ``study landscape`` (checked by :mod:`study.landscape.options`)."""
    whole = {"type": WHOLE_NUMBER, "show_default": True}
    for flag, settings in reversed((
        ("--trials", {"default": "best", "show_default": True, "help": "best, all, or "
                      "comma-separated numbers of COMPLETE trials (e.g. 3,7)."}),
        ("--where", {"default": None, "help": "Keep trials whose hyperparameters match, e.g. "
                     "batch_size=32,weight_decay=0 (with best: the best of those)."}),
        ("--between", {"default": None, "metavar": "A,B", "help": "Instead of probing: loss and "
                       "accuracy along the line between two COMPLETE trials' weights, t in "
                       "[-0.5, 1.5] (same width needed)."}),
        ("--normalization", {"default": "filter", "show_default": True, "help": "Directions: "
                             "filter (Li et al.), layer, or none (unit norm in weight space)."}),
        ("--dim", {**whole, "default": 1, "help": "1 (curves) or 2 (contour)."}),
        ("--radius", {"type": float, "default": 1.0, "show_default": True,
                      "help": "Grid half-width, in the units of --normalization."}),
        ("--n-points", {**whole, "default": 21, "help": "Grid points per axis."}),
        ("--directions", {**whole, "default": 5, "help": "Random directions (1D); sharpness and "
                          "flatness are means over them, with 95% intervals from 2 on."}),
        ("--seed", {**whole, "default": 0, "help": "Seed of the random directions."}),
        ("--device", {"default": None, "help": "auto, cpu, cuda, cuda:N or mps.  "
                      "[default: auto]"}),
    )):
        fn = click.option(flag, **settings)(fn)
    return fn

REPORT_OPTIONS = ("evaluators", "importance_seed", "n_bootstrap")


def quiet_libraries() -> None:
    """Our own progress lines replace Optuna's per-trial INFO logs and experimental notices.

    Called by each command once its inputs are checked, not at start-up: importing Optuna
    takes about a second that ``--help`` and a bad flag should not wait for.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
