"""The study's lifecycle in Optuna: create or resume it with its stored config, sampler, pruner
and budget; open it for reading; count its trials."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from study._validation import check_new_study_name, folder_problem, sqlite_file
from study.config import StudyConfig, check_no_conflict, config_from_stored
from study.errors import ConfigError, StorageError
from study.keys import CONFIG_ATTR
from study.redact import redact
from study.runtime.recovery import StaleTrialHandler
from study.storages import JOURNAL_PREFIX, create_storage, storage_kind

__all__ = [
    "FINISHED_STATES",
    "LoadedStudy",
    "PreparedStudy",
    "TrialCounter",
    "check_store_folder",
    "count_states",
    "load_study",
    "make_pruner",
    "make_sampler",
    "missing_local_store",
    "n_finished",
    "open_study",
    "open_study_trials",
    "prepare_study",
    "sampler_seed",
]

FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclasses.dataclass(frozen=True)
class LoadedStudy:
    """An Optuna study together with the config it runs under."""

    study: optuna.Study
    config: StudyConfig
    created: bool
    sampler_seed: int


def sampler_seed(config: StudyConfig, *, n_existing: int = 0, salt: int = 0) -> int:
    """The sampler's seed. It is offset by the trials already run, so a resumed session does
    not replay the first session's random start-up points, and by ``salt`` (from a worker's
    identity, :func:`~study.runtime.recovery.worker_salt`), so concurrent workers do not
    propose the same points. ``qmc`` (a scrambled Sobol sequence, space-filling) keeps the
    study's seed: Optuna numbers its points study-wide, and later sessions and other workers
    continue the one sequence instead of restarting it."""
    if config.sampler == "qmc":
        return config.seed
    return (config.seed + n_existing + salt) % 2**32


def make_sampler(
    config: StudyConfig, *, n_existing: int = 0, salt: int = 0
) -> optuna.samplers.BaseSampler:
    """The sampler of ``config``, seeded by :func:`sampler_seed`."""
    seed = sampler_seed(config, n_existing=n_existing, salt=salt)
    if config.sampler == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, scramble=True,
                                          warn_independent_sampling=False)
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if config.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    """The pruner; it never prunes before the early window is complete, so every pruned trial
    still contributes its early loss to the analysis."""
    if config.pruner == "none":
        return optuna.pruners.NopPruner()
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=config.early_epochs, max_resource=config.epochs, reduction_factor=3
        )
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=config.early_epochs)


def _study_id(storage: optuna.storages.BaseStorage, name: str) -> int | None:
    try:
        return storage.get_study_id_from_name(name)
    except KeyError:
        return None


@dataclasses.dataclass(frozen=True)
class PreparedStudy:
    """A study looked up but not yet created: its storage and the config it will run under."""

    storage: optuna.storages.BaseStorage
    config: StudyConfig
    study_id: int | None
    stored: bool
    stale_handler: StaleTrialHandler


def prepare_study(
    config: StudyConfig, *, given: Mapping[str, Any] | None = None, create: bool = True
) -> PreparedStudy:
    """Open the storage and resolve the config of the study named in ``config``.

    The study is not created yet, but a SQLite or journal file is: callers of a new study check
    the rest of the input first (see :func:`missing_local_store`).

    Args:
        config: The resolved config of this session.
        given: Values the user set explicitly; a study-defining one that differs from the
            stored config is an error.
        create: Whether a missing study may be created later; otherwise it is an error.

    Raises:
        StorageError: The storage cannot be opened, or the study is missing and ``create``
            is false.
        ConfigError: An explicit value conflicts with the stored config.
    """
    if not create and missing_local_store(config.storage):
        raise StorageError(
            f"`storage` must point to an existing study database, but got "
            f"storage={redact(config.storage)!r}, which does not exist{_stores_here()}."
        )
    handler = StaleTrialHandler()
    storage = create_storage(config.storage, heartbeat_interval=config.heartbeat_interval,
                             stale_callback=handler,
                             storage_timeout=config.storage_timeout)
    study_id = _study_id(storage, config.study_name)
    stored = None if study_id is None else storage.get_study_user_attrs(study_id).get(CONFIG_ATTR)
    if study_id is None and create:
        check_new_study_name(config.study_name)
    if study_id is None and not create:
        raise StorageError(
            f"`study_name` must name an existing study in {redact(config.storage)}, but got "
            f"study_name={config.study_name!r}; known: {_known(storage)}."
        )
    if stored is not None:
        resumed = config_from_stored(stored, config)
        check_no_conflict(resumed, given or {}, study_name=config.study_name)
        note = kept_settings_note(resumed, given or {}, environ=os.environ)
        if note:
            print(note, file=sys.stderr, flush=True)
        config = resumed
    elif study_id is not None and storage.get_all_trials(study_id, deepcopy=False):
        raise ConfigError(
            f"`study_name` must name a study created by this tool, but got "
            f"study_name={config.study_name!r}, which has trials and no stored config."
        )
    return PreparedStudy(storage=storage, config=config, study_id=study_id,
                         stored=stored is not None, stale_handler=handler)


def kept_settings_note(stored: StudyConfig, given: Mapping[str, Any], *,
                       environ: Mapping[str, str]) -> str | None:
    """The line saying which stored settings a resumed study keeps where this command could
    seem to ask for others: an environment variable's value (it applies to new studies), and,
    under ``mlflow run``, the settings left at their MLproject defaults (a ``-P`` equal to the
    default cannot be told from one not given). ``None`` when there is nothing to say."""
    kept, flat = {}, stored.to_params()
    for field in dataclasses.fields(StudyConfig):
        name, value = field.name, getattr(stored, field.name)
        if name in given or field.metadata.get("scope") != "study":
            continue
        env = field.metadata.get("envvar")
        if env and environ.get(env, value) != value:
            kept[name] = f"{name}={value!r} ({env}={environ[env]!r} applies to new studies)"
        elif "MLFLOW_RUN_ID" in environ and value != field.default:
            kept[name] = f"{name}={flat.get(name, value)}"
    if not kept:
        return None
    why = (" (-P values equal to the MLproject defaults count as not given)"
           if "MLFLOW_RUN_ID" in environ else "")
    return (f"note: study {stored.study_name!r} keeps the settings it was created with: "
            f"{', '.join(kept.values())}{why}.")


def load_study(prepared: PreparedStudy, *, salt: int = 0) -> LoadedStudy:
    """Create or load the prepared study; a new one stores its config first thing.

    ``salt`` varies the sampler's seed between concurrent workers (see :func:`sampler_seed`).

    Raises:
        StorageError: The storage refused the study.
    """
    config, storage = prepared.config, prepared.storage
    n_existing = 0
    if prepared.study_id is not None:
        n_existing = len(storage.get_all_trials(prepared.study_id, deepcopy=False))
    seed = sampler_seed(config, n_existing=n_existing, salt=salt)
    try:
        study = optuna.create_study(
            study_name=config.study_name, storage=storage, direction="minimize",
            sampler=make_sampler(config, n_existing=n_existing, salt=salt),
            pruner=make_pruner(config),
            load_if_exists=True,
        )
    except (optuna.exceptions.OptunaError, ValueError) as exc:
        raise StorageError(f"study {config.study_name!r} could not be opened: {exc}") from None
    if not prepared.stored:
        study.set_user_attr(CONFIG_ATTR, config.study_settings())
        study.set_metric_names([config.objective])  # named in optuna-dashboard, not "Objective 0"
    return LoadedStudy(study=study, config=config, created=not prepared.stored,
                       sampler_seed=seed)


def open_study(config: StudyConfig) -> optuna.Study:
    """Open an existing study without changing it (status, analysis)."""
    return _open(config)[1]


def open_study_trials(config: StudyConfig) -> tuple[optuna.Study, list[FrozenTrial]]:
    """Open an existing study without changing it, with all its trials read through the
    storage's public ``get_all_trials`` (the plain-SQL reader where it serves: Optuna's
    ``Study.get_trials`` goes through its cache, which the fast reader does not see)."""
    prepared, study = _open(config)
    return study, prepared.storage.get_all_trials(prepared.study_id, deepcopy=False)


def _open(config: StudyConfig) -> tuple[PreparedStudy, optuna.Study]:
    prepared = prepare_study(config, create=False)
    return prepared, optuna.load_study(study_name=config.study_name, storage=prepared.storage)


def _local_path(url: str) -> Path | None:
    """The file of a SQLite or journal storage URL (``None`` for a server or in-memory)."""
    kind = storage_kind(url)
    if kind == "journal":
        return Path(url[len(JOURNAL_PREFIX):])
    return sqlite_file(url) if kind == "sqlite" else None


def missing_local_store(url: str) -> bool:
    """Whether ``url`` is a SQLite or journal file that does not exist yet (opening it would
    create it)."""
    path = _local_path(url)
    return path is not None and not path.exists()


def check_store_folder(url: str) -> None:
    """Check that the folder of a new SQLite or journal file exists, before anything else
    is created for the study (the tracking store included).

    Raises:
        StorageError: It does not, or is not a folder.
    """
    problem = folder_problem(_local_path(url))
    if problem:
        raise StorageError(f"`storage` could not be opened: {redact(url)}: {problem}.")


def _stores_here() -> str:
    """``; here: journal:optuna.journal`` when the working folder holds study stores by the
    usual names (a forgotten --storage), else nothing."""
    here = Path.cwd()
    found = [f"journal:{p.name}" for p in sorted(here.glob("*.journal"))] + \
        [f"sqlite:///{p.name}" for p in sorted(here.glob("*.db")) if p.name != "mlflow.db"]
    return f"; here: {', '.join(found[:3])} (pass one as --storage)" if found else ""


def _known(storage: optuna.storages.BaseStorage) -> str:
    names = sorted(s.study_name for s in storage.get_all_studies())
    return ", ".join(names[:10]) + (" ..." if len(names) > 10 else "") if names else "none"


def count_states(study: optuna.Study | Sequence[FrozenTrial]) -> dict[str, int]:
    """Number of trials per state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING), of a study
    or of trials already read."""
    trials = study.get_trials(deepcopy=False) if isinstance(study, optuna.Study) else study
    counts = {state.name: 0 for state in TrialState}
    for trial in trials:
        counts[trial.state.name] += 1
    return counts


def n_finished(study: optuna.Study) -> int:
    """COMPLETE + PRUNED trials: what the budget counts."""
    return len(study.get_trials(deepcopy=False, states=FINISHED_STATES))


@dataclasses.dataclass(frozen=True)
class TrialCounter:
    """How many trials of one study are in some states, through its storage's public
    ``get_n_trials``: one ``COUNT`` on the service's RDB storage, where ``Study.get_trials``
    reads every unfinished trial again (all queued ones included) to count them."""

    storage: optuna.storages.BaseStorage
    study_id: int

    @classmethod
    def of(cls, storage: optuna.storages.BaseStorage, study_name: str) -> TrialCounter:
        return cls(storage, storage.get_study_id_from_name(study_name))

    def __call__(self, *states: TrialState) -> int:
        return self.storage.get_n_trials(self.study_id, state=states)
