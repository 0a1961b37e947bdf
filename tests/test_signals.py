"""Ctrl-C and SIGTERM: the handlers raise, and latch the signal so that one a finalizer
swallowed is raised again at the session's next epoch."""

from __future__ import annotations

import gc
import signal
import sys
import weakref

import pytest

from study.cli import _Terminated


@pytest.fixture
def unraisable(monkeypatch):
    """What reaches the unraisable hook that was in place before the handlers."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    return seen


@pytest.fixture
def interrupts(unraisable, installed_interrupts):
    return installed_interrupts  # installed over the recording hook of `unraisable`


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
    gc.collect()  # the finalizer runs; the interrupt it raises is swallowed
    assert interrupts.signum == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
        interrupts.check((), None)  # as a session's epoch hook is called


def test_a_swallowed_interrupt_prints_no_traceback_but_other_errors_still_do(interrupts,
                                                                             unraisable):
    class Held:
        pass

    held, other = Held(), Held()
    weakref.finalize(held, signal.raise_signal, signal.SIGINT)
    del held
    gc.collect()
    assert interrupts.signum == signal.SIGINT and unraisable == []
    weakref.finalize(other, lambda: 1 / 0)
    del other
    gc.collect()
    assert [type(u.exc_value) for u in unraisable] == [ZeroDivisionError]


def test_an_unlatched_keyboard_interrupt_in_a_finalizer_is_still_reported(interrupts,
                                                                          unraisable):
    class Held:
        pass

    def interrupt():
        raise KeyboardInterrupt  # not from a signal: nothing latched it

    held = Held()
    weakref.finalize(held, interrupt)
    del held
    gc.collect()
    assert interrupts.signum is None
    assert [type(u.exc_value) for u in unraisable] == [KeyboardInterrupt]


def test_a_signal_inside_deferred_is_latched_not_raised(interrupts):
    with interrupts.deferred():
        signal.raise_signal(signal.SIGINT)  # raises nothing here
    assert interrupts.signum == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
        interrupts.check()


def test_a_second_signal_inside_deferred_raises_at_once(interrupts):
    with interrupts.deferred():
        signal.raise_signal(signal.SIGINT)
        with pytest.raises(_Terminated):
            signal.raise_signal(signal.SIGTERM)


def test_live_raises_a_latched_signal_on_entry_and_defers_again_after(interrupts):
    with interrupts.deferred():
        signal.raise_signal(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt), interrupts.live():
            pytest.fail("the body of live() ran with a signal latched")
        assert interrupts._deferred


def test_a_signal_inside_live_within_deferred_raises_at_once(interrupts):
    with interrupts.deferred(), interrupts.live(), pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)


def test_signals_inside_ignored_are_dropped_and_the_handlers_come_back(interrupts):
    """Found by a user: `mlflow run` sends SIGTERM to a command that ended on Ctrl-C; it
    arrived during the clean-up of its run (importing MLflow) and printed a traceback."""
    from study._signals import ignored

    with ignored():
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)
    assert interrupts.signum is None  # neither reached the handlers
    with pytest.raises(_Terminated):
        signal.raise_signal(signal.SIGTERM)
