"""``study trial``: one fixed configuration trained and logged as one MLflow run, no study."""

from __future__ import annotations

import dataclasses
from typing import Any

from study.config import StudyConfig
from study.errors import NonFiniteLossError
from study.runtime.inputs import check_batch_sizes, check_factory, load_data
from study.runtime.objective import diagnosis_tags, failure_reason, final_metrics, train_logged
from study.runtime.parent import entry_run_id
from study.tracking import Tracker, end_trial_run
from study.training import Diagnosis, HParams, diagnose, early_losses, resolve_device

__all__ = ["SingleTrialResult", "run_single_trial"]


@dataclasses.dataclass(frozen=True)
class SingleTrialResult:
    """Outcome of ``study trial``."""

    run_id: str
    state: str
    n_params: int | None
    final_val_loss: float | None
    final_val_accuracy: float | None
    early: dict[str, float] | None
    failure: str | None
    diagnosis: Diagnosis = dataclasses.field(default_factory=Diagnosis)


def run_single_trial(config: StudyConfig, hp: HParams) -> SingleTrialResult:
    """Train one fixed configuration and log it as one MLflow run (no Optuna study).

    Under ``mlflow run`` the entry point's run is used; otherwise a run named after the
    configuration is created in ``config.experiment``.

    Raises:
        StudyError: Bad input or an unreachable tracking store (the trial's own failure is
            returned, with the run closed as FAILED).
    """
    device = resolve_device(config.device)
    data = load_data(config, device=device)
    check_batch_sizes(config, data, field="batch_size")
    check_factory(config, data, widths=(hp.width,))  # before any store is opened
    tracker = Tracker(config.tracking_uri, retry_seconds=config.tracking_timeout)
    entry = entry_run_id()
    name = (f"single-w{hp.width}-lr{hp.lr:g}-bs{hp.batch_size}-wd{hp.weight_decay:g}"
            f"-{hp.penalty_mode}")
    tags = {"study.role": "single", "mlflow.runName": name}
    if entry:
        run_id = entry
        tracker.set_tags(run_id, tags)
    else:
        run_id = tracker.create_run(tracker.experiment_id(config.experiment), name=name,
                                    tags=tags)
    n_params: list[int] = []
    seen: list[Any] = []
    try:
        history = train_logged(hp, config, data, tracker, run_id, device=str(device),
                               seed=config.seed, on_start=lambda n, _: n_params.append(n),
                               hooks=[lambda _, report: seen.append(report)])
    except Exception as exc:
        reason = failure_reason(exc)
        found = diagnose([*seen, *([exc.report] if hasattr(exc, "report") else [])],
                         non_finite=isinstance(exc, NonFiniteLossError),
                         n_classes=data.n_classes)
        end_trial_run(tracker, run_id, state="FAIL", failure=reason, tags=diagnosis_tags(found))
        return SingleTrialResult(run_id, "FAIL", n_params[0] if n_params else None,
                                 None, None, None, reason, found)
    except BaseException:
        end_trial_run(tracker, run_id, state="FAIL", failure="interrupted", interrupted=True)
        raise
    found = diagnose(history, n_classes=data.n_classes)
    closing = {"tags": {"optuna.trial_state": "COMPLETE", **diagnosis_tags(found)},
               "metrics": final_metrics(history), "step": history[-1].epoch}
    if entry:  # `mlflow run` ends its own run
        tracker.set_tags(run_id, **closing)
    else:
        tracker.close_run(run_id, "FINISHED", **closing)
    return SingleTrialResult(
        run_id, "COMPLETE", n_params[0], history[-1].val_loss, history[-1].val_accuracy,
        early_losses(history, config.early_epochs), None, found,
    )
