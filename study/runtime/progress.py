"""Progress of a session: a bar on a terminal, one line per trial in logs."""

from __future__ import annotations

import time
from typing import Any, TextIO

from optuna.trial import FrozenTrial

from study.keys import FAILURE_ATTR

__all__ = ["Progress"]


class Progress:
    """Show finished trials against the budget; a tqdm bar on a TTY, plain lines otherwise."""

    def __init__(self, *, total: int, initial: int, out: TextIO, label: str) -> None:
        self.total, self.out, self.label = total, out, label
        self._start = time.monotonic()
        self._bar: Any = None
        if out.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, file=out, desc=label, unit="trial")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()

    def trial_done(self, trial: FrozenTrial, finished: int) -> None:
        """Report one trial that ended; ``finished`` is the study's count after it."""
        value = "" if trial.value is None else f" value={trial.value:.4g}"
        reason = trial.user_attrs.get(FAILURE_ATTR)
        detail = f"trial {trial.number} {trial.state.name}{value}" + (
            f" ({reason})" if reason else ""
        )
        if trial.state.name == "FAIL" and trial.params:  # what to re-run or avoid
            detail += " with " + " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in trial.params.items()
            )
        if self._bar is not None:
            self._bar.n = min(finished, self.total)
            self._bar.set_postfix_str(detail, refresh=True)
            return
        elapsed = time.monotonic() - self._start
        print(f"[{self.label}] {min(finished, self.total)}/{self.total} finished | {detail} | "
              f"{elapsed:.0f}s", file=self.out, flush=True)
