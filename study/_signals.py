"""Ctrl-C and SIGTERM as one interrupt that a running session always sees.

Python raises a signal's exception at the next bytecode boundary of the main thread. When that
boundary lies inside a finalizer (a weakref callback of SQLAlchemy's, a ``__del__``), the
interpreter prints "Exception ignored" and the interrupt is lost: the study would go on. The
handlers here also latch the signal, and :meth:`Interrupts.check`, which a session runs before
its first trial, after every epoch and after every trial, raises it again when it was
swallowed. The swallowed one's "Exception ignored ... KeyboardInterrupt" traceback is not
printed (``sys.unraisablehook``, for that exception only): the latch answers it.

Between trials a session runs Optuna's own code (``ask``, ``tell``, the callbacks): an interrupt
raised in the middle of ``tell`` left the trial RUNNING beside a closed run, and Optuna 5.1's
clean-up there fails with an ``UnboundLocalError`` traceback. Inside :meth:`Interrupts.deferred`
a signal is only latched (a second one raises at once: a store that hangs can still be left);
:meth:`Interrupts.live` (the trial's own code) raises the latched one on entry, and so does the
check after each trial.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["Interrupts", "ignored"]


class Interrupts:
    """The SIGINT and SIGTERM handlers of the ``study`` command, with their latch.

    Args:
        terminated: The exception SIGTERM raises (a ``KeyboardInterrupt`` subclass, so a
            trial ends as on Ctrl-C: its run closed, its parameters queued again).
    """

    def __init__(self, terminated: type[KeyboardInterrupt]) -> None:
        self.signum: int | None = None
        # The trials an interrupt failed in this process: number -> queued again. The line the
        # session ends with says what this process did, not what a read after it finds.
        self.failed: dict[int, bool] = {}
        self._terminated = terminated
        self._deferred = False

    def install(self) -> None:
        """Handle SIGINT and SIGTERM (in the main thread; elsewhere, an embedding
        application's handlers are left alone)."""
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGINT, self._handle)
            signal.signal(signal.SIGTERM, self._handle)
            previous = sys.unraisablehook

            def unraisable(info: Any) -> None:
                if not (self.signum is not None and isinstance(info.exc_value, KeyboardInterrupt)):
                    previous(info)

            sys.unraisablehook = unraisable

    def check(self, *_: Any) -> None:
        """Raise a signal that arrived and was swallowed (an epoch hook: any arguments)."""
        if self.signum is not None:
            self._raise(self.signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Latch a signal inside, without raising it (a second one raises)."""
        before, self._deferred = self._deferred, True
        try:
            yield
        finally:
            self._deferred = before

    @contextlib.contextmanager
    def live(self) -> Iterator[None]:
        """Raise a signal at once inside (also one latched before entering)."""
        before, self._deferred = self._deferred, False
        try:
            self.check()
            yield
        finally:
            self._deferred = before

    def _handle(self, signum: int, frame: object) -> None:
        again = self.signum is not None
        self.signum = signum
        if again or not self._deferred:
            self._raise(signum)

    def _raise(self, signum: int) -> None:
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise self._terminated(f"signal {signum}")


@contextlib.contextmanager
def ignored() -> Iterator[None]:
    """SIGINT and SIGTERM ignored inside (main thread; elsewhere nothing changes), the handlers
    before put back on exit: for a short clean-up after the command has ended, which a second
    signal would otherwise break with a traceback (``mlflow run`` sends SIGTERM to a command
    that already ended on Ctrl-C, and waits for it)."""
    try:
        saved = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        saved = {}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
