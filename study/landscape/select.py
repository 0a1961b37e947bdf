"""Which trials ``study landscape`` probes: ``--trials best|all|N,M`` and ``--where k=v,...``.

``--where`` keeps the trials whose hyperparameters (``width``, ``lr``, ``batch_size``,
``weight_decay``, ``penalty_mode``) equal every given value (numbers compared to a relative
1e-9, so ``weight_decay=5e-4`` matches 0.0005). With ``best`` it picks the best trial among
those that match.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from study.errors import ConfigError
from study.keys import HPARAMS_ATTR
from study.landscape.options import WHERE_KEYS, parse_trials, parse_where

__all__ = ["WHERE_KEYS", "parse_trials", "parse_where", "select_trials"]

def _hparams_of(trial: FrozenTrial) -> Mapping[str, Any]:
    stored = trial.user_attrs.get(HPARAMS_ATTR)
    return stored if isinstance(stored, Mapping) else trial.params


def _matches(value: Any, wanted: str) -> bool:
    if isinstance(value, bool) or value is None:
        return str(value).lower() == wanted.lower()
    if isinstance(value, int | float):
        try:
            return math.isclose(float(value), float(wanted), rel_tol=1e-9, abs_tol=0.0)
        except ValueError:
            return False
    return str(value) == wanted


def _numbers(trials: list[FrozenTrial]) -> str:
    numbers = [str(t.number) for t in trials]
    if not numbers:
        return "none"
    return ", ".join(numbers[:30]) + (", ..." if len(numbers) > 30 else "")


def select_trials(study: optuna.Study, trials: str, where: str | None = None
                  ) -> list[FrozenTrial]:
    """The COMPLETE trials ``trials`` and ``where`` name, in trial order (or as listed).

    Raises:
        ConfigError: Bad input, a listed trial that does not exist or is not COMPLETE, or
            nothing selected.
    """
    wanted, filters = parse_trials(trials), parse_where(where)
    all_trials = study.get_trials(deepcopy=False)
    complete = [t for t in all_trials if t.state is TrialState.COMPLETE]
    allowed = f"COMPLETE trials of study {study.study_name!r} (allowed: {_numbers(complete)})"
    if isinstance(wanted, list):
        by_number = {t.number: t for t in all_trials}
        for number in wanted:
            trial = by_number.get(number)
            if trial is None or trial.state is not TrialState.COMPLETE:
                state = "does not exist" if trial is None else f"is {trial.state.name}"
                raise ConfigError(f"`trials` must name {allowed}, but got trials={trials!r}: "
                                  f"trial {number} {state}.")
        pool = [by_number[n] for n in wanted]
    else:
        pool = complete
    chosen = [t for t in pool
              if all(_matches(_hparams_of(t).get(k), v) for k, v in filters.items())]
    if not chosen:
        what = f"trials={trials!r}" + (f" and where={where!r}" if filters else "")
        raise ConfigError(f"`trials` must select at least one of the {allowed}, but got "
                          f"{what}, which selects none.")
    if wanted == "best":
        direction = study.direction
        best = min if direction == optuna.study.StudyDirection.MINIMIZE else max
        return [best(chosen, key=lambda t: t.value)]
    return chosen
