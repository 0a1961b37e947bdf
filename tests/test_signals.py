"""Ctrl-C and SIGTERM: the handlers raise, and latch the signal so that one a finalizer
swallowed is raised again at the session's next epoch."""

from __future__ import annotations

import gc
import signal
import weakref

import pytest

from study._signals import Interrupts
from study.cli import _Terminated


@pytest.fixture
def interrupts():
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    latch = Interrupts(_Terminated)
    latch.install()
    yield latch
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_nothing_is_raised_without_a_signal(interrupts):
    interrupts.check()  # raises nothing


@pytest.mark.parametrize(("signum", "kind"), [(signal.SIGINT, KeyboardInterrupt),
                                              (signal.SIGTERM, _Terminated)])
def test_a_signal_raises_its_interrupt_and_is_latched(interrupts, signum, kind):
    with pytest.raises(kind):
        signal.raise_signal(signum)
    assert interrupts.signum == signum


def test_a_signal_swallowed_by_a_finalizer_is_raised_at_the_next_check(interrupts):
    class Held:
        pass

    held = Held()
    weakref.finalize(held, signal.raise_signal, signal.SIGINT)
    del held
    gc.collect()  # the finalizer runs; the interpreter prints "Exception ignored" for it
    assert interrupts.signum == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
        interrupts.check((), None)  # as a session's epoch hook is called
