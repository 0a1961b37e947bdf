"""Progress of a session: a line at once, then a bar on a terminal or one line per trial in
logs (with the rate and the time left), and epoch lines while a long trial trains."""

from __future__ import annotations

import time
from typing import Any, TextIO

from optuna.trial import FrozenTrial

from study._text import settings_of
from study.keys import FAILURE_ATTR
from study.training import EpochReport

__all__ = ["EPOCH_LINES_AFTER", "EPOCH_LINES_EVERY", "Progress"]

# A trial that has trained this long shows its epochs: shorter ones are reported when they end.
EPOCH_LINES_AFTER = 5.0
# At most one epoch line this often: epochs of a fraction of a second would flood the log.
EPOCH_LINES_EVERY = 5.0


class Progress:
    """Show finished trials against the budget; a tqdm bar on a TTY, plain lines otherwise.

    Args:
        total: The budget (finished trials the study should reach).
        initial: Finished trials before this session.
        out: The stream (stderr by default in a session).
        label: The study's name.
        start: The first line, printed at once (what runs where).
    """

    def __init__(self, *, total: int, initial: int, out: TextIO, label: str,
                 start: str | None = None) -> None:
        self.total, self.initial, self.out, self.label = total, initial, out, label
        self._start = time.monotonic()
        self._trial_start = self._start
        self._epoch_line = float("-inf")
        self._bar: Any = None
        if start:
            print(f"[{label}] {start}", file=out, flush=True)
        if out.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, file=out, desc=label, unit="trial")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()

    def epoch(self, history: list[EpochReport], report: EpochReport, *, epochs: int,
              trial: int | None = None) -> None:
        """A per-epoch hook: once the running trial has trained for
        :data:`EPOCH_LINES_AFTER` seconds, a line for the epoch that ends, at most one every
        :data:`EPOCH_LINES_EVERY` seconds (plain output only; the bar already moves on a
        terminal)."""
        now = time.monotonic()
        if report.epoch == 1:
            self._trial_start = now - report.seconds
            self._epoch_line = float("-inf")
        if self._bar is not None or now - self._trial_start < EPOCH_LINES_AFTER \
                or now - self._epoch_line < EPOCH_LINES_EVERY:
            return
        self._epoch_line = now
        which = "" if trial is None else f"trial {trial} "
        print(f"[{self.label}]   {which}epoch {report.epoch}/{epochs} loss={report.loss:.4g} "
              f"val_loss={report.val_loss:.4g} | {now - self._trial_start:.0f}s into the trial",
              file=self.out, flush=True)

    def trial_done(self, trial: FrozenTrial, finished: int) -> None:
        """Report one trial that ended; ``finished`` is the study's count after it."""
        value = "" if trial.value is None else f" value={trial.value:.4g}"
        reason = trial.user_attrs.get(FAILURE_ATTR)
        detail = f"trial {trial.number} {trial.state.name}{value}" + (
            f" ({reason})" if reason else ""
        )
        if trial.state.name == "FAIL" and trial.params:  # what to re-run or avoid
            detail += " with " + settings_of(trial.params, digits=4)
        shown = min(finished, self.total)
        if self._bar is not None:
            self._bar.n = shown
            self._bar.set_postfix_str(detail, refresh=True)
            return
        print(f"[{self.label}] {shown}/{self.total} finished | {detail} | "
              f"{self._timing(shown)}", file=self.out, flush=True)

    def _timing(self, finished: int) -> str:
        """Elapsed time, and the time left at this session's rate so far."""
        elapsed = time.monotonic() - self._start
        done_here = finished - self.initial
        text = f"{elapsed:.0f}s"
        if done_here > 0 and finished < self.total:
            left = elapsed / done_here * (self.total - finished)
            text += f", ~{_duration(left)} left"
        return text


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
