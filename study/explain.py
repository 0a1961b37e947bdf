"""``study explain`` end to end: run the designed experiment of
:mod:`study.runtime.explain` as a study, then analyze and report it like any study."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from study._validation import folder_name
from study.config import StudyConfig
from study.errors import ConfigError
from study.runtime.explain import ExplainDesign, explain_config, width_grid

if TYPE_CHECKING:
    from study.runtime.session import SessionResult

__all__ = ["EXPLAIN_EPOCHS", "ExplainOutcome", "check_explain", "explain_study"]

# The question is about the start: the loss at initialization and over the first epoch. One
# epoch answers it and keeps the default experiment to a minute or two on a laptop CPU.
EXPLAIN_EPOCHS = 1


@dataclasses.dataclass(frozen=True)
class ExplainOutcome:
    """What ``study explain`` ran and concluded."""

    session: SessionResult
    document: dict[str, Any]
    report_dir: Path
    logged: str


def explain_study(config: StudyConfig, given: Mapping[str, Any], *, lr: float,
                  batch_size: int, weight_decay: float, n_widths: int, replicates: int,
                  output_dir: str | Path | None, report: Mapping[str, Any]) -> ExplainOutcome:
    """Run (or resume) the experiment, then write and log its analysis and report.

    Args:
        config: The resolved flags; its ``penalty_mode`` (one mode), width range, data, model,
            epochs and stores are used, its search space is replaced by the design's.
        given: The values the user set explicitly.
        lr: Learning rate, fixed.
        batch_size: Batch size, fixed.
        weight_decay: Weight decay, fixed.
        n_widths: Widths on the log grid.
        replicates: Training seeds per width.
        output_dir: Where the analysis and report go (default ``reports/STUDY_NAME``).
        report: ``evaluators``, ``seed`` and ``n_bootstrap`` of the importance in the report.

    Raises:
        ConfigError: A bad setting (one line naming it); nothing is created then.
    """
    grid = check_explain(config, n_widths=n_widths, replicates=replicates)
    if "epochs" not in given:
        config = config.replace(epochs=max(EXPLAIN_EPOCHS, config.early_epochs))
    design = ExplainDesign(grid, replicates, config.penalty_mode[0], config.seed)
    config = explain_config(config, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
                            design=design)
    if "study_name" not in given:
        config = config.replace(study_name=_name(config, lr, weight_decay))
    defining = {k: getattr(config, k) for k in StudyConfig.field_names("study")}
    # Imported once the settings are checked: a bad flag answers without loading torch.
    from study.analysis.command import analyze_study
    from study.report.command import report_study
    from study.runtime.session import run_session

    session = run_session(config, given={**given, **defining}, queue=design.trials())
    out = Path(output_dir) if output_dir else Path("reports") / folder_name(config.study_name)
    widths = report.get("compare_widths")
    document, _, logged = analyze_study(config, output_dir=out, compare_widths=widths)
    report_study(config, output_dir=out, evaluators=report["evaluators"], seed=report["seed"],
                 n_bootstrap=report["n_bootstrap"], compare_widths=widths)
    return ExplainOutcome(session, document, out, logged)


def check_explain(config: StudyConfig, *, n_widths: int, replicates: int) -> tuple[int, ...]:
    """Check the experiment's own settings before anything runs; returns its width grid.

    Raises:
        ConfigError: Several penalty modes, a bad replicate count, or a grid that does not fit
            the width range.
    """
    if len(config.penalty_mode) != 1:
        raise ConfigError(f"`penalty_mode` must be a single mode for `study explain` (the "
                          f"control runs under none), but got "
                          f"penalty_mode={','.join(config.penalty_mode)!r}.")
    if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 1:
        raise ConfigError(f"`replicates` must be an integer >= 1, but got "
                          f"replicates={replicates!r}.")
    return width_grid(config.width_min, config.width_max, n_widths)


def _name(config: StudyConfig, lr: float, weight_decay: float) -> str:
    """A name that is the same for the same experiment, so running it again resumes it."""
    digest = hashlib.sha256(config.to_json().encode()).hexdigest()[:8]
    return f"explain-{config.penalty_mode[0]}-lr{lr:g}-wd{weight_decay:g}-{digest}"
