"""The Optuna objective: one call trains one trial and logs it as one nested MLflow run."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import optuna

from study.errors import NonFiniteLossError, StorageError, TrackingError, TrialFailedError
from study.keys import (
    CURVE_ATTR,
    FAILURE_ATTR,
    HPARAMS_ATTR,
    INTERRUPTED,
    RUN_ID_ATTR,
    TRAIN_SEED_ATTR,
    WEIGHTS_ARTIFACT,
    WORKER_ATTR,
)
from study.redact import one_line
from study.runtime._attrs import set_user_attrs
from study.runtime.recovery import (
    RETRIED_FROM_ATTR,
    original_number,
    retry_trial,
    running_trial,
    worker_stamp,
)
from study.runtime.space import suggest_hparams, train_seed, trial_params
from study.tracking import end_trial_run, start_trial_run
from study.training import (
    Diagnosis,
    EpochReport,
    HParams,
    InitReport,
    Trainer,
    curve_record,
    diagnose,
    early_losses,
)

if TYPE_CHECKING:
    from study._signals import Interrupts
    from study.config import StudyConfig
    from study.tracking import Tracker
    from study.training import TensorData

__all__ = [
    "INTERRUPTED",
    "SAMPLER_ATTR",
    "EpochHook",
    "Objective",
    "diagnosis_tags",
    "failure_reason",
    "objective_value",
    "summary_metrics",
    "train_logged",
]

# Trial user attr: the seed of the sampler that proposed the trial and, for a worker, the
# identity its salt came from (see study.runtime.recovery.worker_identity).
SAMPLER_ATTR = "sampler_seed"


def objective_value(objective: str, history: list[EpochReport], early_epochs: int) -> float:
    """The value Optuna minimizes after the epochs in ``history``."""
    last = history[-1]
    if objective == "val_loss":
        return last.val_loss
    if objective == "val_error":
        return 1.0 - last.val_accuracy
    window = history[:early_epochs]
    return sum(r.loss for r in window) / len(window)


def summary_metrics(history: list[EpochReport], early_epochs: int) -> dict[str, float]:
    """``early/*`` metrics once the early window is complete, else nothing."""
    early = early_losses(history, early_epochs)
    if early is None:
        return {}
    return {f"early/{k}": v for k, v in early.items()}


EpochHook = Callable[[list[EpochReport], EpochReport], None]


def train_logged(
    hp: HParams, config: StudyConfig, data: TensorData, tracker: Tracker, run_id: str, *,
    device: str, seed: int, on_epoch: EpochHook | None = None,
    on_start: Callable[[int, InitReport], None] | None = None, hooks: Sequence[EpochHook] = (),
    save_weights: bool = True, new_run: bool = False,
) -> list[EpochReport]:
    """Train ``hp`` with training seed ``seed`` and log everything to the open run ``run_id``;
    the run is left open.

    Before the first update, the params, ``n_params`` and the loss at initialization
    (``init/*``) go in one batched write and ``on_start(n_params, init)`` runs. Per epoch one
    batched write (plus the ``early/*`` metrics when the window completes), then
    ``on_epoch(history, report)`` (Optuna reporting and pruning), then each of ``hooks``.
    Exceptions propagate; a non-finite epoch is logged before it does. The final weights are
    logged as ``weights/final.pt``. ``new_run``: ``run_id`` was just created by this process
    (it has no params yet).
    """
    history: list[EpochReport] = []

    def log_epoch(report: EpochReport) -> None:
        history.append(report)
        metrics = report.metrics()
        if report.epoch == config.early_epochs:
            metrics.update(summary_metrics(history, config.early_epochs))
        tracker.log_metrics(run_id, metrics, step=report.epoch)
        if on_epoch is not None:
            on_epoch(history, report)
        for hook in hooks:
            hook(history, report)

    trainer = Trainer(hp, data, model_name=config.model, init=config.init, depth=config.depth,
                      epochs=config.epochs, seed=seed, callbacks=[log_epoch],
                      compile=config.compile)
    init = trainer.initial_losses()
    tracker.log_params(
        run_id, trial_params(hp, config, device=device, n_params=trainer.n_params, seed=seed,
                             input_shape=(data.in_channels, *data.input_size)),
        metrics={"n_params": trainer.n_params, **init.metrics()}, new_run=new_run)
    if on_start is not None:
        on_start(trainer.n_params, init)
    try:
        trainer.fit()
    except NonFiniteLossError as exc:
        report: EpochReport | None = getattr(exc, "report", None)
        if report is not None:
            tracker.log_metrics(run_id, report.metrics(), step=report.epoch)
        raise
    if save_weights:
        tracker.log_state_dict(run_id, trainer.model.state_dict(), WEIGHTS_ARTIFACT)
    return history


def final_metrics(history: Sequence[EpochReport]) -> dict[str, float]:
    """The ``final/*`` summary metrics of a finished training (logged with the run's close,
    at the last epoch's step)."""
    return {"final/val_loss": history[-1].val_loss,
            "final/val_accuracy": history[-1].val_accuracy}


def _keep_end(trial: optuna.Trial, history: Sequence[EpochReport],
              ending: Mapping[str, Any]) -> None:
    """The trial's per-epoch figures as user attr ``curve`` (one row per epoch), with the
    figures gathered for its end (``ending``); nothing when both are empty."""
    attrs = {**ending, **({CURVE_ATTR: curve_record(history)} if history else {})}
    if attrs:
        set_user_attrs(trial, attrs)


def _keep_start(trial: optuna.Trial, n_params: int, init: InitReport, *,
                also: Mapping[str, Any] | None = None) -> None:
    """The parameter count and the loss at initialization as user attrs (``init_*``), with
    ``also`` (a write per attr: Optuna has no call that sets several)."""
    set_user_attrs(trial, {**(also or {}), "n_params": n_params,
                           **{k.replace("/", "_"): v for k, v in init.metrics().items()}})


def _retry_running(trial: optuna.Trial, reason: str) -> bool:
    """Queue the running ``trial`` again (it is about to fail through no fault of its own);
    returns whether it was queued."""
    frozen = running_trial(trial.study, trial.number)
    return frozen is not None and retry_trial(trial.study, frozen, reason=reason)


def diagnosis_tags(found: Diagnosis) -> dict[str, str]:
    """The run tags of a diagnosis (none for a healthy trial)."""
    if not found.codes:
        return {}
    return {"study.diagnosis": found.tag_value(), "study.diagnosis.detail": found.detail}


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _release_cuda_memory() -> None:
    """Free the failed trial's cached blocks so the next trial starts with the whole GPU."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def failure_reason(exc: BaseException) -> str:
    """One redacted line saying why a trial failed."""
    if isinstance(exc, TrialFailedError):
        return one_line(exc)
    if _is_out_of_memory(exc):
        return one_line(f"out of memory ({type(exc).__name__}): {exc}")
    return one_line(f"{type(exc).__name__}: {exc}")


class Objective:
    """Callable passed to :meth:`optuna.Study.optimize`.

    Args:
        config: The resolved study config.
        data: The dataset, loaded once per process and resident on ``device``.
        tracker: MLflow access.
        experiment_id: The experiment of the parent run.
        parent_run_id: The study's parent run (every trial run nests under it).
        device: The resolved device name, logged with each trial.
        hooks: Extra per-epoch callbacks ``hook(history, report)`` (custom stopping rules);
            an exception they raise fails the trial like any other.
        sampler: Recorded on each trial as ``sampler_seed`` (the sampler's seed, and a
            worker's identity it was salted with).
        interrupts: The command's Ctrl-C/SIGTERM handlers: a call runs
            :meth:`~study._signals.Interrupts.live` (the session defers them between trials).
    """

    def __init__(
        self, config: StudyConfig, data: TensorData, tracker: Tracker, *,
        experiment_id: str, parent_run_id: str, device: str, hooks: Sequence[EpochHook] = (),
        sampler: Mapping[str, Any] | None = None, interrupts: Interrupts | None = None,
    ) -> None:
        self.interrupts = interrupts
        self.sampler = dict(sampler) if sampler else None
        self.hooks = tuple(hooks)
        self.config = config
        self.data = data
        self.tracker = tracker
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.device = device
        self.number: int | None = None  # the running trial's (for progress lines)

    def __call__(self, trial: optuna.Trial) -> float:
        with contextlib.ExitStack() as live:
            return self._call(trial, live)

    def _call(self, trial: optuna.Trial, live: contextlib.ExitStack) -> float:
        self.number = trial.number
        try:
            if self.interrupts is not None:  # one latched between trials is raised here
                live.enter_context(self.interrupts.live())
            seed, recorded = self._train_seed(trial)
            # Who runs the trial (crash recovery reads it), with which sampler seed, and,
            # once, its training seed.
            set_user_attrs(trial, {WORKER_ATTR: worker_stamp(),
                                   **({SAMPLER_ATTR: self.sampler} if self.sampler else {}),
                                   **({} if recorded else {TRAIN_SEED_ATTR: seed})})
            hp = suggest_hparams(trial, self.config)
        except (KeyboardInterrupt, SystemExit):  # before training: nothing lost, queue it again
            with contextlib.suppress(StorageError):
                trial.set_user_attr(FAILURE_ATTR, INTERRUPTED)
                self._stopped(trial, _retry_running(trial, INTERRUPTED))
            raise
        # The epochs so far, kept on the trial as its curve once it ends, however it ends
        # (written every epoch, the growing list would cost O(epochs^2) storage), with the
        # early-window, final and diagnosis figures gathered meanwhile: written once, at the
        # end (a completed trial writes them before its run closes and empties both).
        seen: list[EpochReport] = []
        ending: dict[str, Any] = {}
        try:
            return self._train(trial, hp, seen, seed, ending)
        except TrackingError as exc:
            # Anywhere in the trial (opening, logging or closing its run) logs would be lost:
            # the session stops; Optuna fails the trial, its run is closed on resume, and the
            # same parameters are queued again so nothing is lost. A trial that had already
            # failed on its own (and recorded why) keeps its reason and is not retried.
            if FAILURE_ATTR not in trial.user_attrs:
                reason = f"MLflow tracking unavailable: {exc}"
                trial.set_user_attr(FAILURE_ATTR, reason)
                _retry_running(trial, reason)
            raise
        finally:
            with contextlib.suppress(StorageError):  # the storage's own error is the one to tell
                _keep_end(trial, seen, ending)

    def _train(self, trial: optuna.Trial, hp: HParams, seen: list[EpochReport],
               seed: int, ending: dict[str, Any]) -> float:
        config = self.config
        run_id = start_trial_run(
            self.tracker, self.experiment_id, parent_run_id=self.parent_run_id,
            study_name=trial.study.study_name, trial_number=trial.number,
        )
        # The trial's link to its run goes with its first figures (recovery finds a run not
        # yet linked by its tags). Every failure path below writes it too.
        linked = {RUN_ID_ATTR: run_id, HPARAMS_ATTR: dict(vars(hp))}
        prune = config.pruner != "none"  # the no-op pruner would still read the trial back

        def on_epoch(history: list[EpochReport], report: EpochReport) -> None:
            seen[:] = history
            if report.epoch == config.early_epochs:
                ending.update({k.replace("/", "_"): v for k, v in
                               summary_metrics(history, config.early_epochs).items()})
            trial.report(objective_value(config.objective, history, config.early_epochs),
                         report.epoch)
            if prune and trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {report.epoch}")

        started: list[bool] = []  # train_logged logged the params (with n_params)

        def on_start(n_params: int, init: InitReport) -> None:
            started.append(True)
            _keep_start(trial, n_params, init, also=linked)

        try:
            history = train_logged(
                hp, config, self.data, self.tracker, run_id, device=self.device, seed=seed,
                on_epoch=on_epoch, on_start=on_start, hooks=self.hooks, new_run=True,
            )
            value = objective_value(config.objective, history, config.early_epochs)
            ending.update({"final_val_loss": history[-1].val_loss,
                           "final_val_accuracy": history[-1].val_accuracy})
            if not math.isfinite(value):
                raise TrialFailedError(f"objective {config.objective} is {value}")
            # Inside the try: a Ctrl-C while the trial's figures are kept or its run closes
            # still fails and re-queues the trial and closes its run KILLED.
            found = self._diagnose(history, ending)
            _keep_end(trial, history, ending)
            seen.clear()
            ending.clear()  # kept: the write at the end of __call__ has nothing left to do
            end_trial_run(self.tracker, run_id, state="COMPLETE", tags=diagnosis_tags(found),
                          metrics=final_metrics(history), step=history[-1].epoch)
        except optuna.TrialPruned:
            found = self._diagnose(seen, ending)
            end_trial_run(self.tracker, run_id, state="PRUNED", tags=diagnosis_tags(found))
            raise
        except TrackingError:
            raise  # handled in __call__
        except StorageError as exc:
            # The Optuna storage is gone for longer than --storage-timeout: the session stops.
            # The trial stays RUNNING there; the next session fails and re-queues it.
            end_trial_run(self.tracker, run_id, state="FAIL",
                          failure=f"Optuna storage unavailable: {exc}")
            raise
        except Exception as exc:  # one trial's crash must not end the study
            if _is_out_of_memory(exc):
                _release_cuda_memory()
            reason = failure_reason(exc)
            set_user_attrs(trial, {**linked, FAILURE_ATTR: reason})
            if not started:
                self._log_sampled(run_id, hp, seed)
            report = getattr(exc, "report", None)
            found = self._diagnose([*seen, *([report] if report is not None else [])], ending,
                                   non_finite=isinstance(exc, NonFiniteLossError))
            end_trial_run(self.tracker, run_id, state="FAIL", failure=reason,
                          tags=diagnosis_tags(found))
            raise TrialFailedError(reason) from None
        except BaseException:  # KeyboardInterrupt, SIGTERM, SystemExit: Optuna marks it FAIL
            set_user_attrs(trial, {**linked, FAILURE_ATTR: INTERRUPTED})
            self._stopped(trial, _retry_running(trial, INTERRUPTED))
            if not started:
                self._log_sampled(run_id, hp, seed)
            end_trial_run(self.tracker, run_id, state="FAIL", failure=INTERRUPTED, interrupted=True)
            raise
        return value

    def _stopped(self, trial: optuna.Trial, queued: bool) -> None:
        """Record that an interrupt failed ``trial`` (and whether it was queued again)."""
        if self.interrupts is not None:
            self.interrupts.failed[trial.number] = queued

    def _log_sampled(self, run_id: str, hp: HParams, seed: int) -> None:
        """The params of a trial that failed before its model was built (no ``n_params``):
        its run can still be found in MLflow by the configuration that failed."""
        self.tracker.log_params(run_id, trial_params(
            hp, self.config, device=self.device, n_params=None, seed=seed,
            input_shape=(self.data.in_channels, *self.data.input_size)), new_run=True)

    def _train_seed(self, trial: optuna.Trial) -> tuple[int, bool]:
        """The trial's own training seed, and whether the trial already records it: carried
        by an enqueued trial (a retry keeps its original's; ``study explain`` pairs its
        trials), else derived from the study seed and the trial number."""
        seed = trial.user_attrs.get(TRAIN_SEED_ATTR)
        if seed is not None:
            return int(seed), True
        number = trial.number
        if RETRIED_FROM_ATTR in trial.user_attrs:
            # A retry of a trial that died before recording its seed takes the original's.
            frozen = running_trial(trial.study, trial.number)
            number = original_number(frozen) if frozen is not None else number
        return train_seed(self.config.seed, number), False

    def _diagnose(self, curve: list[EpochReport], ending: dict[str, Any], *,
                  non_finite: bool = False) -> Diagnosis:
        """Diagnose the trial's curve; a finding goes to ``ending`` (kept on the trial as
        ``diagnosis`` and ``diagnosis_detail`` when it ends) and is returned for the run's
        tags."""
        found = diagnose(curve, non_finite=non_finite, n_classes=self.data.n_classes)
        if found.codes:
            ending.update({"diagnosis": found.tag_value(), "diagnosis_detail": found.detail})
        return found
