"""Resuming a ``study explain`` experiment: the stored study read once, and a setting that
differs from it refused in the words of ``study explain``'s own flags.

``study explain`` fills every study-defining value itself (``--lr 0.01`` becomes
``lr_min=lr_max=0.01``, an omitted flag its own default), so the session's generic refusal,
"`lr_min` conflicts ...; drop the flag", named a field the user never typed and gave advice
that does not work: dropping ``--lr`` asks for explain's default, not the stored value.
"""

from __future__ import annotations

import dataclasses
import functools

from study._text import flag_text
from study.config import StudyConfig, config_from_stored
from study.errors import ConfigError, StudyError
from study.keys import CONFIG_ATTR

__all__ = ["StoredExperiment", "check_resume", "stored_experiment"]

# Config fields filled from one flag of `study explain` (the others are spelled as themselves).
_FLAG = {"lr_min": "lr", "lr_max": "lr", "weight_decay_min": "weight_decay",
         "weight_decay_max": "weight_decay", "batch_sizes": "batch_size"}


@dataclasses.dataclass(frozen=True)
class StoredExperiment:
    """What an existing study of the name holds: its settings (``None``: none stored, which the
    session refuses in its own words) and the widths of its designed trials."""

    config: StudyConfig | None
    widths: tuple[int, ...]


def stored_experiment(config: StudyConfig) -> StoredExperiment | None:
    """The study named in ``config`` as stored; ``None`` where there is none (nothing is
    created: a missing store file is not opened; a store the session cannot open is left to
    the session's own error)."""
    from study.runtime.explain import CELL_ATTR
    from study.runtime.lifecycle import missing_local_store, open_study_trials

    if missing_local_store(config.storage):
        return None
    try:
        study, trials = open_study_trials(config)
    except StudyError:
        return None
    stored = study.user_attrs.get(CONFIG_ATTR)
    widths = sorted({int(t.params["width"]) for t in trials
                     if CELL_ATTR in t.user_attrs and "width" in t.params})
    return StoredExperiment(None if stored is None else config_from_stored(stored, config),
                            tuple(widths))


def check_resume(stored: StoredExperiment | None, config: StudyConfig, *, question: str,
                 mlflow_run: bool = False) -> None:
    """Refuse to resume the stored study with other settings than it was created with.

    Args:
        stored: What :func:`stored_experiment` read (``None``: a new study, nothing to check).
        config: This command's study configuration (the design's, flags and defaults filled).
        question: ``size`` or ``gap``.
        mlflow_run: Spell the advice as ``mlflow run``'s ``-P name=value``.

    Raises:
        ConfigError: One line naming the flag, both values and how to resume or start anew.
    """
    if stored is None or stored.config is None:
        return
    was, name = stored.config, config.study_name
    spell = functools.partial(flag_text, mlflow_run=mlflow_run)
    new = spell("study_name", "NAME")
    if not _designed(was):
        raise ConfigError(f"`study_name` must name a study of `study explain` or a new one, but "
                          f"got study_name={name!r}, a study that searches its hyperparameters "
                          f"(`study run`); pass a new {new}.")
    asked = "gap" if was.width_min == was.width_max else "size"
    if asked != question:
        raise ConfigError(f"`question` conflicts with study {name!r}: it is a {asked} "
                          f"experiment, but got question={question!r}; pass "
                          f"{spell('question', asked)} to resume it, or a new {new}.")
    for key in StudyConfig.field_names("study"):
        if getattr(was, key) != getattr(config, key):
            flag = "width_max" if key == "width_min" and question == "gap" else \
                _FLAG.get(key, key)
            before, now = (_value(key, c, question) for c in (was, config))
            created = f"with {spell(flag, before)}" if before is not None else \
                f"without {spell(flag, None)}"
            resume = f"pass {spell(flag, before)}" if before is not None else \
                f"leave out {spell(flag, None)}"
            got = spell(flag, now) if now is not None else f"no {spell(flag, None)}"
            raise ConfigError(f"`{flag}` conflicts with study {name!r}: it was created "
                              f"{created}, but got {got}; {resume} to resume it, or a new "
                              f"{new}.")


def _designed(config: StudyConfig) -> bool:
    """Whether ``config`` is a design of ``study explain`` (every dimension fixed but the
    width and the crossed options, nothing sampled or pruned)."""
    return (config.sampler == "random" and config.pruner == "none"
            and config.lr_min == config.lr_max and len(config.batch_sizes) == 1
            and config.weight_decay_min == config.weight_decay_max)


def _value(key: str, config: StudyConfig, question: str) -> str | None:
    """``config``'s value of ``key`` as its flag takes it (``None``: unset)."""
    if key == "penalty_mode":
        return config.penalty_mode[0]  # the size design adds its control, none, itself
    if key == "width_min" and question == "gap":
        return str(config.width_max)  # the gap's one width is --width-max
    value = getattr(config, key)
    if value is None:
        return None
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)  # reads back as itself


