"""``study doctor``: the checklist on the user's data and model, written to a folder and logged
to an MLflow run (``study.role=doctor``)."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from study.config import StudyConfig
from study.doctor.base import CheckResult, DoctorInputs, worst
from study.doctor.output import write_outputs
from study.doctor.runner import CHECKS, run_checks
from study.redact import redact
from study.runtime.inputs import check_batch_sizes, check_factory
from study.runtime.parent import entry_run_id
from study.tracking import Tracker
from study.training import HParams, load_dataset, resolve_device

__all__ = ["DoctorOutcome", "load_inputs", "run_doctor"]

ARTIFACT_PATH = "doctor"


@dataclasses.dataclass(frozen=True)
class DoctorOutcome:
    """What ``study doctor`` found and where it put it."""

    results: list[CheckResult]
    status: str
    files: dict[str, Path]
    run_id: str


def run_doctor(config: StudyConfig, hp: HParams, *, output_dir: Path,
               out: TextIO | None = None, checks: Sequence[str] = CHECKS) -> DoctorOutcome:
    """Run the checklist on ``config``'s data and model with the fixed ``hp``.

    Inputs are checked before anything is created; the run is created before the checks
    spend their minute (an unreachable store fails at once), and closed FINISHED whatever the
    checks found (FAILED if the doctor itself broke, KILLED on Ctrl-C).

    Args:
        config: Dataset, model, init, depth, device, seed and the stores.
        hp: The configuration to examine (``study trial``'s flags).
        output_dir: Where ``doctor.json``, ``doctor.html`` and ``figures/`` go.
        out: Progress lines (default stderr).
        checks: A subset of :data:`~study.doctor.runner.CHECKS`.

    Raises:
        StudyError: Bad input or an unreachable tracking store.
    """
    stream = out if out is not None else sys.stderr
    inputs = load_inputs(config, hp)
    tracker = Tracker(config.tracking_uri, retry_seconds=config.tracking_timeout)
    meta = _meta(config, inputs)
    run_id = _open_run(tracker, config, meta)
    try:
        def progress(result: CheckResult, done: int, total: int) -> None:
            print(f"doctor [{done}/{total}] {result.name}: {result.status} "
                  f"({result.seconds:.1f} s)", file=stream, flush=True)

        results = run_checks(inputs, progress=progress, checks=checks)
        files = write_outputs(results, inputs={**meta, "mlflow_run_id": run_id},
                              folder=Path(output_dir))
        for path in files.values():  # this run's files only, not whatever else the folder holds
            sub = path.parent.relative_to(Path(output_dir)).as_posix()
            tracker.log_artifacts(run_id, path, ARTIFACT_PATH if sub == "." else
                                  f"{ARTIFACT_PATH}/{sub}")
    except BaseException as exc:
        tracker.end_run(run_id, "FAILED" if isinstance(exc, Exception) else "KILLED")
        raise
    status = worst(results)
    tags = {"study.doctor.status": status,
            **{f"study.doctor.{r.name}": r.status for r in results}}
    metrics = {"doctor/failed": sum(r.status == "fail" for r in results),
               "doctor/warned": sum(r.status == "warn" for r in results),
               **{f"doctor/seconds/{r.name}": r.seconds for r in results}}
    if entry_run_id() == run_id:  # `mlflow run` ends its own run
        tracker.set_tags(run_id, tags, metrics=metrics)
    else:
        tracker.close_run(run_id, "FINISHED", tags=tags, metrics=metrics)
    return DoctorOutcome(results, status, files, run_id)


def load_inputs(config: StudyConfig, hp: HParams) -> DoctorInputs:
    """The checks' inputs: the data as a study loads it (NaN and inf kept as 0, for the
    outliers check to list them) and the model checked once (a factory built and run).

    Raises:
        StudyError: Bad data, a batch size above the training split, or a broken factory.
    """
    device = resolve_device(config.device)
    data = load_dataset(config.dataset, seed=config.seed, device=device,
                        image_size=config.image_size, keep_non_finite=True)
    check_batch_sizes(dataclasses.replace(config, batch_sizes=(hp.batch_size,)), data,
                      field="batch_size")
    check_factory(config, data, widths=(hp.width,))
    return DoctorInputs(data, hp, model=config.model, init=config.init, depth=config.depth,
                        seed=config.seed)


def _meta(config: StudyConfig, inputs: DoctorInputs) -> dict[str, Any]:
    data = inputs.data
    return {
        "dataset": redact(config.dataset), "model": redact(config.model), "init": config.init,
        **({"depth": config.depth} if config.depth is not None else {}),
        **dataclasses.asdict(inputs.hparams), "seed": config.seed,
        "device": str(data.x_train.device), "n_train": data.n_train, "n_val": data.n_val,
        "n_classes": data.n_classes,
        "split": "given" if inputs.given_split else f"made (seed {config.seed})",
    }


def _open_run(tracker: Tracker, config: StudyConfig, meta: dict[str, Any]) -> str:
    model = config.model.rpartition(":")[2]  # a factory by its callable's name
    name = f"doctor-{model}-w{meta['width']}-lr{meta['lr']:g}-bs{meta['batch_size']}"
    tags = {"study.role": "doctor", "mlflow.runName": name}
    entry = entry_run_id()
    if entry:
        tracker.set_tags(entry, tags)
        run_id = entry
    else:
        run_id = tracker.create_run(tracker.experiment_id(config.experiment),
                                    name=tags["mlflow.runName"], tags=tags)
    tracker.log_params(run_id, {f"doctor.{k}": v for k, v in meta.items()}, new_run=not entry)
    return run_id
