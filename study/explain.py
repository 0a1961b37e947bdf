"""``study explain`` end to end: run a designed experiment as a study, then analyze and report
it like any study.

Two questions: ``size`` (why bigger models start at a higher training loss; the design of
:mod:`study.runtime.explain`) and ``gap`` (why validation lags training, and whether the
optimizer, SGD's momentum, the BatchNorm momentum or dropout change it; the design of
:mod:`study.runtime.gap_design`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from study._choices import search_spec
from study._text import flag_text, shell_path
from study._validation import check_choice, check_fixed_hparams, fail, folder_name
from study.config import TRAINING_OPTIONS, StudyConfig
from study.errors import ConfigError, StudyError
from study.runtime.explain import ExplainDesign, QueuedTrial, explain_config, width_grid
from study.runtime.explain_resume import StoredExperiment, check_resume, stored_experiment
from study.runtime.gap_design import GapDesign, check_replicates, gap_config

if TYPE_CHECKING:
    from study._signals import Interrupts
    from study.runtime.session import SessionResult

__all__ = ["DEFAULT_N_WIDTHS", "EXPLAIN_EPOCHS", "GAP_EPOCHS", "QUESTIONS", "ExplainOutcome",
           "check_explain", "check_gap", "check_grid", "explain_main", "explain_options",
           "explain_study", "gap_lines", "gap_study"]

QUESTIONS = ("size", "gap")
# The question is about the start: the loss at initialization and over the first epoch. One
# epoch answers it and keeps the default experiment to a minute or two on a laptop CPU.
EXPLAIN_EPOCHS = 1
# The gap's question is its shape over "several epochs": six show whether it closes. In a vgg
# (width 8) on digits at batch 32, it closed by epoch 1-2 under PyTorch's BatchNorm momentum
# (0.1) and stayed open through epoch 6 under Keras's (0.01), whatever the optimizer or
# dropout; the 16 trials of that cross trained in under a minute on 2 CPU cores.
GAP_EPOCHS = 6
# `study explain --n-widths`'s default: a grid of this size leaves the study's automatic name as
# it was before the grid was part of it, so a study started then is still resumed by its command.
DEFAULT_N_WIDTHS = 6


@dataclasses.dataclass(frozen=True)
class ExplainOutcome:
    """What ``study explain`` ran and concluded."""

    session: SessionResult
    document: dict[str, Any]
    report_dir: Path
    logged: str


def explain_options(question: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The flags of ``study explain`` before they resolve into a config: for the gap question
    a ``--width-max`` given alone is the width (``--width-min`` follows it, so a width below
    the default ``--width-min`` needs no second flag)."""
    out = dict(options)
    if question == "gap" and out.get("width_min") is None and out.get("width_max") is not None:
        out["width_min"] = out["width_max"]
    return out


def explain_main(question: str, config: StudyConfig, given: Mapping[str, Any], *,
                 fixed: Mapping[str, Any], n_widths: int, replicates: int,
                 output_dir: str | Path | None, report: Mapping[str, Any],
                 before_run: Callable[[], None] = lambda: None,
                 interrupts: Interrupts | None = None) -> list[str]:
    """Check the settings of ``question``, run its experiment, and return the lines to print.

    Args:
        question: ``size`` or ``gap``.
        config: The resolved flags.
        given: The values the user set explicitly.
        fixed: ``lr``, ``batch_size`` and ``weight_decay``, fixed for every trial.
        n_widths: Widths on the log grid (``size`` only).
        replicates: Training seeds per width (``size``) or per setting (``gap``).
        output_dir: Where the analysis and report go (default ``reports/STUDY_NAME``).
        report: ``evaluators``, ``seed``, ``n_bootstrap`` and ``compare_widths`` (``"A,B"``
            or ``None``).
        before_run: Called once the settings are checked, before anything is created.
        interrupts: The command's Ctrl-C/SIGTERM handlers (see
            :func:`~study.runtime.session.run_session`); also checked after every epoch.

    Raises:
        ConfigError: A bad setting (one line naming it); nothing is created then.
    """
    check_fixed_hparams(**fixed)
    check_choice("question", question, QUESTIONS)
    from study.analysis.span import parse_compare_widths

    report = {**report, "compare_widths": parse_compare_widths(report.get("compare_widths"))}
    if question == "gap":
        check_gap(config, given, replicates=replicates, compare_widths=report["compare_widths"])
        before_run()
        outcome = gap_study(config, given, **fixed, replicates=replicates,
                            output_dir=output_dir, report=report, interrupts=interrupts)
        lines = gap_lines(outcome)
        return [*lines[:-1], *_more_gap_replicates(outcome.document, replicates), lines[-1]]
    grid = check_explain(config, n_widths=n_widths, replicates=replicates)
    before_run()
    outcome = explain_study(config, given, **fixed, n_widths=n_widths, replicates=replicates,
                            output_dir=output_dir, report=report, interrupts=interrupts)
    from study.analysis.command import answer_text

    return [answer_text(outcome.document["verdict"], outcome.document.get("gap")),
            *_more_replicates(outcome.document, replicates=replicates, per_replicate=len(
                grid) * len(ExplainDesign(grid, 1, config.penalty_mode[0], config.seed).modes)),
            _wrote(outcome)]


def _more_gap_replicates(document: Mapping[str, Any], replicates: int) -> list[str]:
    """The flag that gives an inconclusive gap design more trials (twice as many); with
    settings, only where one of them is inconclusive (pooled, they answer none of them)."""
    block = document.get("gap") or {}
    groups = block.get("groups") or {}
    verdicts = {label: (g.get("verdict") or {}).get("code") for label, g in groups.items()} \
        if groups else {"": (block.get("verdict") or {}).get("code")}
    open_ = [label for label, code in verdicts.items() if code == "inconclusive"]
    if not open_:
        return []
    which = f"; inconclusive: {'; '.join(open_)}" if groups else ""
    return [f"more trials: the same command with {_replicates_flag(2 * replicates)} "
            f"(intervals narrow as 1/sqrt(n){which})."]


def _replicates_flag(n: int) -> str:
    """``--replicates N``, or ``-P replicates=N`` under ``mlflow run`` (the MLproject's)."""
    return flag_text("replicates", n)


def _more_replicates(document: Mapping[str, Any], *, per_replicate: int,
                     replicates: int) -> list[str]:
    """The flag that gives a design too small for a verdict its trials ("run at least 2
    more" alone does not say how, in a design of fixed size)."""
    from study.analysis.command import deciding_trials
    from study.analysis.verdict import MIN_TRIALS

    used = int(document.get("n_trials_used") or 0)
    if used < MIN_TRIALS:
        wanted = replicates + -(-(MIN_TRIALS - used) // per_replicate)
        return [f"more trials: the same command with {_replicates_flag(wanted)} runs "
                f"{wanted * per_replicate} (a verdict needs {MIN_TRIALS} usable trials)."]
    # An inconclusive question names the total that would decide it: the replicates for it.
    needed = deciding_trials(document)
    if needed is None:
        return []
    wanted = -(-needed // per_replicate)
    return [f"more trials: the same command with {_replicates_flag(wanted)} runs "
            f"{wanted * per_replicate} (about {needed} would decide, if the estimate holds)."]


def explain_study(config: StudyConfig, given: Mapping[str, Any], *, lr: float,
                  batch_size: int, weight_decay: float, n_widths: int, replicates: int,
                  output_dir: str | Path | None, report: Mapping[str, Any],
                  interrupts: Interrupts | None = None) -> ExplainOutcome:
    """Run (or resume) the size experiment, then write and log its analysis and report.

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
        config = config.replace(study_name=_name(config, f"{config.penalty_mode[0]}-lr{lr:g}-"
                                                         f"wd{weight_decay:g}", grid=grid))
    stored = _resumable(config, question="size")
    check_grid(config, grid, stored.widths if stored else ())
    return _run(config, given, design.trials(), output_dir=output_dir, report=report,
                interrupts=interrupts)


def check_grid(config: StudyConfig, grid: Sequence[int], stored: Sequence[int]) -> None:
    """Refuse to resume a size experiment on another width grid of the same range (its trials
    would mix two designs, and the budget of one would leave the other's cells queued
    forever); a grid that holds every ``stored`` width (those of the study's designed trials)
    extends the study. Another range is refused by :func:`check_resume`.

    Raises:
        ConfigError: The study named in ``config`` holds designed trials of widths off ``grid``.
    """
    if not stored or set(stored) <= set(grid) or (stored[0], stored[-1]) != (grid[0], grid[-1]):
        return
    fail("n_widths", len(grid), f"a grid that holds the widths of study {config.study_name!r} "
         f"({', '.join(map(str, stored))}: {flag_text('n_widths', len(stored))}), not "
         f"{', '.join(map(str, grid))}; another grid is another study "
         f"({flag_text('study_name', 'NAME')})")


def _resumable(config: StudyConfig, *, question: str) -> StoredExperiment | None:
    """The study of the name as stored, once :func:`check_resume` found nothing that keeps
    ``config`` from resuming it."""
    from study.runtime.parent import entry_run_id

    stored = stored_experiment(config)
    check_resume(stored, config, question=question, mlflow_run=entry_run_id() is not None)
    return stored


def check_explain(config: StudyConfig, *, n_widths: int, replicates: int) -> tuple[int, ...]:
    """Check the size experiment's own settings before anything runs; returns its width grid.

    Raises:
        ConfigError: Several penalty modes, several values (or a range) of a training option,
            a bad replicate count, or a grid that does not fit the width range.
    """
    _one_mode(config, "the control runs under none")
    for field in TRAINING_OPTIONS:
        values = getattr(config, field)
        if len(values) != 1 or (field != "optimizer" and search_spec(values)[0] == "range"):
            fail(field, ",".join(values), "a single value for `study explain --question size` "
                 "(the design varies the width only)")
    check_replicates(replicates)
    return width_grid(config.width_min, config.width_max, n_widths)


def check_gap(config: StudyConfig, given: Mapping[str, Any], *, replicates: int,
              compare_widths: Sequence[int] | None = None) -> GapDesign:
    """Check the gap experiment's own settings before anything runs; returns its design.

    Raises:
        ConfigError: Several penalty modes, a ``--width-min`` other than ``--width-max``,
            ``--compare-widths`` (one width), or a bad design (:meth:`GapDesign.from_config`).
    """
    _one_mode(config, "the design fixes it")
    if "width_min" in given and config.width_min != config.width_max:
        fail("width_min", config.width_min, f"width_max={config.width_max} for `study explain "
             "--question gap` (it trains one width, --width-max)")
    if compare_widths is not None:
        fail("compare_widths", ",".join(map(str, compare_widths)),
             "unset for `study explain --question gap` (it trains one width)")
    return GapDesign.from_config(config, replicates=replicates)


def gap_study(config: StudyConfig, given: Mapping[str, Any], *, lr: float, batch_size: int,
              weight_decay: float, replicates: int, output_dir: str | Path | None,
              report: Mapping[str, Any],
              interrupts: Interrupts | None = None) -> ExplainOutcome:
    """Run (or resume) the gap experiment, then write and log its analysis and report.

    Args:
        config: The resolved flags; its ``penalty_mode`` (one mode), ``width_max`` (the width),
            training options (crossed), data, model, epochs and stores are used.
        given: The values the user set explicitly.
        lr: Learning rate, fixed.
        batch_size: Batch size, fixed.
        weight_decay: Weight decay, fixed.
        replicates: Paired training seeds per setting.
        output_dir: Where the analysis and report go (default ``reports/STUDY_NAME``).
        report: ``evaluators``, ``seed`` and ``n_bootstrap`` of the importance in the report.

    Raises:
        ConfigError: A bad setting (one line naming it); nothing is created then.
    """
    design = check_gap(config, given, replicates=replicates)
    if "epochs" not in given:
        config = config.replace(epochs=max(GAP_EPOCHS, config.early_epochs))
    config = gap_config(config, width=config.width_max, lr=lr, batch_size=batch_size,
                        weight_decay=weight_decay, design=design)
    if "study_name" not in given:
        config = config.replace(study_name=_name(config, f"gap-{'-'.join(design.optimizers)}"
                                                         f"-lr{lr:g}"))
    _resumable(config, question="gap")
    return _run(config, given, design.trials(), output_dir=output_dir, report=report,
                interrupts=interrupts)


def gap_lines(outcome: ExplainOutcome) -> list[str]:
    """What ``study explain --question gap`` prints: one table row per setting, the gap's
    verdict line, and where the files went.

    Raises:
        StudyError: The analysis has no ``gap`` block (a version that does not split the gap).
    """
    block = outcome.document.get("gap")
    if not block:
        raise StudyError(f"the analysis of study {outcome.session.study_name!r} has no `gap` "
                         f"block, so there is no gap table to print; the trials ran and "
                         f"{outcome.report_dir} holds what the analysis found.")
    from study.analysis.gap import gap_table_rows, short_line

    return [*table_lines(gap_table_rows(block, max_epochs=GAP_EPOCHS)), short_line(block),
            _wrote(outcome)]


def table_lines(rows: Sequence[Mapping[str, str]]) -> list[str]:
    """Rows of strings (the same keys each) as a header, a rule and aligned lines."""
    if not rows:
        return []
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r.get(k, ""))) for r in rows)) for k in keys}

    def line(cells: Mapping[str, str]) -> str:
        return "  ".join(str(cells.get(k, "")).ljust(widths[k]) for k in keys).rstrip()

    return [line({k: k for k in keys}), line({k: "-" * widths[k] for k in keys}),
            *(line(r) for r in rows)]


def _run(config: StudyConfig, given: Mapping[str, Any], queue: Sequence[QueuedTrial], *,
         output_dir: str | Path | None, report: Mapping[str, Any],
         interrupts: Interrupts | None = None) -> ExplainOutcome:
    """Run the designed trials of ``config`` (those the study lacks), then analyze and report."""
    defining = {k: getattr(config, k) for k in StudyConfig.field_names("study")}
    # Imported once the settings are checked: a bad flag answers without loading torch.
    from study.analysis.command import analyze_study
    from study.report.command import report_study
    from study.runtime.session import run_session

    session = run_session(config, given={**given, **defining}, queue=queue,
                          hooks=(interrupts.check,) if interrupts else (), interrupts=interrupts)
    out = Path(output_dir) if output_dir else Path("reports") / folder_name(config.study_name)
    widths = report.get("compare_widths")
    document, _, logged = analyze_study(config, output_dir=out, compare_widths=widths)
    _, _, reported = report_study(config, output_dir=out, evaluators=report["evaluators"],
                                  seed=report["seed"], n_bootstrap=report["n_bootstrap"],
                                  compare_widths=widths)
    # Both go to the study's parent run: "logged to run X, artifacts analysis/ and report/".
    both = f"{logged} and report/" if reported.run_id else f"{logged}; report {reported}"
    return ExplainOutcome(session, document, out, both)


def _one_mode(config: StudyConfig, why: str) -> None:
    if len(config.penalty_mode) != 1:
        raise ConfigError(f"`penalty_mode` must be a single mode for `study explain` ({why}), "
                          f"but got penalty_mode={','.join(config.penalty_mode)!r}.")


def _wrote(outcome: ExplainOutcome) -> str:
    page = shell_path(outcome.report_dir / "report.html")
    return f"wrote {outcome.report_dir} (open {page}); {outcome.logged}"


def _name(config: StudyConfig, stem: str, *, grid: Sequence[int] | None = None) -> str:
    """A name that is the same for the same experiment, so running it again resumes it (a
    width ``grid`` of another size than the default's names another study)."""
    key = config.to_json()
    if grid is not None and len(grid) != DEFAULT_N_WIDTHS:
        key += f"|widths={','.join(map(str, grid))}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    return f"explain-{stem}-{digest}"
