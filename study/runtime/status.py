"""``study status``: where a study stands, read from its Optuna storage."""

from __future__ import annotations

import datetime as dt

from optuna.trial import TrialState

from study._text import settings_of
from study.config import StudyConfig
from study.keys import CONFIG_ATTR, FAILURE_ATTR, HPARAMS_ATTR, INTERRUPTED, WORKER_ATTR
from study.redact import redact
from study.runtime.lifecycle import FINISHED_STATES, count_states, open_study
from study.runtime.recovery import dead_here

__all__ = ["busy_time", "study_status"]

# Stretches longer than this with no trial running are idle time between sessions, not part
# of the rate (a session's own pauses between trials, sampling and closing runs, are shorter).
IDLE_GAP = dt.timedelta(minutes=1)


def study_status(config: StudyConfig) -> str:
    """A short multi-line summary of the study named in ``config``.

    Raises:
        StorageError: The storage or the study does not exist.
    """
    study = open_study(config)
    counts = count_states(study)
    stored = study.user_attrs.get(CONFIG_ATTR, {})
    trials = study.get_trials(deepcopy=False)
    lines = [
        f"study {study.study_name!r} in {redact(config.storage)}",
        "trials: " + ", ".join(_count(counts[s.name], s, trials) for s in TrialState),
    ]
    lines.append(_throughput_line(trials))
    try:
        best = study.best_trial
        lines.append(f"best: trial {best.number} value={best.value:.6g} "
                     f"{settings_of(dict(best.user_attrs.get(HPARAMS_ATTR, best.params)))}")
    except ValueError:
        lines.append("best: none yet")
    lines.append(_running_line(trials))
    lines.append(_diagnoses_line(trials))
    if stored:
        lines.append(f"objective: {stored.get('objective')} | model {stored.get('model')} on "
                     f"{stored.get('dataset')} | {stored.get('epochs')} "
                     f"epoch{'' if stored.get('epochs') == 1 else 's'}")
    return "\n".join(lines)


def _count(n: int, state: TrialState, trials: list) -> str:
    """``3 fail (2 interrupted)``: a Ctrl-C or SIGTERM fails the trial it stops (Optuna has no
    other state for it) and queues it again; nothing in it went wrong."""
    said = f"{n} {state.name.lower()}"
    if state is not TrialState.FAIL:
        return said
    stopped = sum(t.state is TrialState.FAIL and t.user_attrs.get(FAILURE_ATTR) == INTERRUPTED
                  for t in trials)
    return f"{said} ({stopped} interrupted)" if stopped else said


def _throughput_line(trials: list) -> str:
    """Finished (COMPLETE or PRUNED) trials per hour of busy time: the union of every trial's
    run (failed ones too: that time was spent), idle stretches between sessions left out."""
    finished = [t for t in trials if t.state in FINISHED_STATES
                and t.datetime_start and t.datetime_complete]
    if not finished:
        return "throughput: no finished trials yet"
    hours = busy_time(trials) / dt.timedelta(hours=1)
    if hours <= 0:
        return f"throughput: {len(finished)} finished trial(s), no time span yet"
    return (f"throughput: {len(finished) / hours:.1f} finished trials per hour "
            f"({_duration(hours)} of running trials)")


def busy_time(trials: list) -> dt.timedelta:
    """The time during which some trial ran: the union of the trials' [start, end] spans,
    gaps under :data:`IDLE_GAP` counted as busy (a process's own work between its trials)
    unless the trial after the gap is a process's that ran none before it (its ``worker``
    stamp is new: a session ended and another started)."""
    spans = sorted(((t.datetime_start, t.datetime_complete, t.user_attrs.get(WORKER_ATTR))
                    for t in trials if t.datetime_start and t.datetime_complete),
                   key=lambda span: span[:2])
    total, start, end, seen = dt.timedelta(0), None, None, set()
    for lo, hi, worker in spans:
        known = worker is None or worker in seen or seen <= {None}  # unstamped: as before
        if end is not None and (lo <= end or (lo - end <= IDLE_GAP and known)):
            end = max(end, hi)
            seen.add(worker)
            continue
        if end is not None:
            total += end - start
        start, end, seen = lo, hi, {worker}
    return total + (end - start if end is not None else dt.timedelta(0))


def _duration(hours: float) -> str:
    if hours * 60 < 1:  # tiny trials: "0.0 min" read as no time at all
        return f"{hours * 3600:.1f} s"
    return f"{hours * 60:.1f} min" if hours < 1 else f"{hours:.1f} h"


def _diagnoses_line(trials: list) -> str:
    """``diagnoses: 3 mode-gap, 1 penalty-dominated (of 20 trials; each trial's: study
    report)``: the codes the trials' curves were given when they ended, most common first."""
    codes: dict[str, int] = {}
    for trial in trials:
        for code in filter(None, str(trial.user_attrs.get("diagnosis") or "").split(",")):
            codes[code] = codes.get(code, 0) + 1
    if not codes:
        return "diagnoses: none"
    said = ", ".join(f"{n} {code}" for code, n in sorted(codes.items(), key=lambda c: -c[1]))
    return f"diagnoses: {said} (of {len(trials)} trials; which, and why: study report)"


def _running_line(trials: list) -> str:
    """RUNNING trials split into live ones and stale ones (their worker process on this host is
    gone; the next session fails and re-queues them)."""
    running = [t for t in trials if t.state is TrialState.RUNNING]
    stale = [t.number for t in running if dead_here(t.user_attrs.get(WORKER_ATTR))]
    workers = {t.user_attrs.get(WORKER_ATTR) for t in running if t.number not in stale}
    line = (f"running: {len(running) - len(stale)} live trial(s) on {len(workers)} worker(s)"
            f", {len(stale)} stale")
    if stale:
        line += (f" {stale} (worker process gone; the next `study run` or `study worker` "
                 f"re-queues them)")
    return line
