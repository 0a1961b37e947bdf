"""``study status`` on a real SQLite storage: RUNNING trials of live and dead workers apart."""

from __future__ import annotations

import subprocess
import sys

import optuna

from study.config import StudyConfig
from study.keys import CONFIG_ATTR, WORKER_ATTR
from study.runtime.recovery import worker_stamp
from study.runtime.status import study_status


def test_status_tells_live_running_trials_from_stale_ones(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    config = StudyConfig(study_name="s", storage=storage)
    study = optuna.create_study(study_name="s", storage=storage)
    study.set_user_attr(CONFIG_ATTR, config.study_settings())
    dead = subprocess.run([sys.executable, "-c", "from study.runtime.recovery import "
                           "worker_stamp; print(worker_stamp())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    for stamp in (worker_stamp(), worker_stamp(), dead):
        study.ask().set_user_attr(WORKER_ATTR, stamp)
    lines = study_status(config).splitlines()
    (running,) = [line for line in lines if line.startswith("running:")]
    assert running == ("running: 2 live trial(s) on 1 worker(s), 1 stale [2] (worker process "
                       "gone; the next `study run` re-queues them)")
