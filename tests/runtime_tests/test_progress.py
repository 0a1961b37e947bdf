"""Progress lines: one at once, one per finished trial with the time left, epoch lines for
long trials only, nothing under --quiet."""

from __future__ import annotations

import io
import re

import optuna
import pytest

from study.runtime import progress as progress_module
from study.runtime.progress import EPOCH_LINES_AFTER, EPOCH_LINES_EVERY, Progress
from study.training import EpochReport


def _trial(value: float) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(value=value)


def _report(epoch: int, seconds: float) -> EpochReport:
    return EpochReport(epoch=epoch, loss=1.5, data_loss=1.4, penalty=0.1, weight_sq_norm=10.0,
                       val_loss=1.6, val_accuracy=0.5, samples_per_s=1000.0, seconds=seconds)


def test_the_start_line_is_printed_at_once():
    out = io.StringIO()
    Progress(total=5, initial=2, out=out, label="s", start="2/5 finished; running on cpu")
    assert out.getvalue() == "[s] 2/5 finished; running on cpu\n"


def test_each_finished_trial_tells_the_time_left_until_the_last():
    out = io.StringIO()
    progress = Progress(total=3, initial=0, out=out, label="s")
    for finished in (1, 2, 3):
        progress.trial_done(_trial(0.5), finished)
    lines = out.getvalue().splitlines()
    assert [line.split(" | ")[0] for line in lines] == ["[s] 1/3 finished", "[s] 2/3 finished",
                                                      "[s] 3/3 finished"]
    assert all(re.search(r"\| \d+s, ~\d+s left$", line) for line in lines[:2]), lines
    assert re.search(r"\| \d+s$", lines[2])  # nothing left to wait for


@pytest.mark.parametrize(("seconds", "shown"), [(EPOCH_LINES_AFTER - 1, False),
                                                (EPOCH_LINES_AFTER + 1, True)])
def test_epoch_lines_only_once_a_trial_has_trained_a_while(seconds, shown):
    out = io.StringIO()
    progress = Progress(total=3, initial=0, out=out, label="s")
    progress.epoch([], _report(1, seconds), epochs=4)
    assert ("epoch 1/4 loss=1.5 val_loss=1.6" in out.getvalue()) is shown


@pytest.mark.parametrize(("gap", "shown"), [(EPOCH_LINES_EVERY - 0.5, False),
                                            (EPOCH_LINES_EVERY + 0.5, True)])
def test_short_epochs_of_a_long_trial_print_at_most_one_line_every_few_seconds(monkeypatch, gap,
                                                                                shown):
    clock = [1000.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    progress = Progress(total=3, initial=0, out=out, label="s")
    progress.epoch([], _report(1, EPOCH_LINES_AFTER + 1), epochs=400)  # printed
    clock[0] += gap
    progress.epoch([], _report(2, 0.1), epochs=400)
    assert ("epoch 2/400" in out.getvalue()) is shown
    assert "epoch 1/400" in out.getvalue()


def test_an_epoch_line_names_its_trial():
    # Found by a first user: epoch lines of trials that overlap in time could not be told apart.
    out = io.StringIO()
    Progress(total=3, initial=0, out=out, label="s").epoch(
        [], _report(1, EPOCH_LINES_AFTER + 1), epochs=4, trial=7)
    assert re.match(r"\[s\]   trial 7 epoch 1/4 loss=1\.5 val_loss=1\.6 \| \d+s into the trial$",
                    out.getvalue().strip())
