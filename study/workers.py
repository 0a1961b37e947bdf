"""``study run --workers N``: N local worker processes on one shared storage.

The scheduler is Optuna's storage itself (journal file or PostgreSQL): this module only starts
``study worker`` processes, forwards Ctrl-C/SIGTERM to them and waits. Nothing is assigned
from here, so a worker that dies loses nothing but its current trial, which is retried.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from study.config import StudyConfig
from study.errors import ConfigError
from study.storage import storage_kind

__all__ = ["check_workers", "start_workers", "worker_command", "worker_devices"]

# If a round of workers ends short of the budget (trials failed while others stopped), a few
# more rounds finish it; a study that keeps failing is stopped by the workers themselves.
MAX_ROUNDS = 3


def check_workers(config: StudyConfig, workers: int) -> None:
    """Refuse several processes on SQLite (it is not safe for concurrent writers).

    Raises:
        ConfigError: ``workers`` < 1, or > 1 with a SQLite storage.
    """
    if workers < 1:
        raise ConfigError(f"`workers` must be >= 1, but got workers={workers}.")
    if workers > 1 and storage_kind(config.storage) == "sqlite":
        raise ConfigError(
            f"`workers` must be 1 with SQLite storage, but got workers={workers}; use "
            f"--storage journal:PATH (one machine) or postgresql://... (many machines)."
        )


def worker_devices(device: str, workers: int) -> list[str]:
    """One device per worker: with several GPUs and ``auto``, spread workers round-robin."""
    import torch

    if device == "auto" and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        return [f"cuda:{i % torch.cuda.device_count()}" for i in range(workers)]
    return [device] * workers


def worker_command(config: StudyConfig, device: str, tracking_uri: str) -> list[str]:
    """The ``study worker`` command line for one local worker."""
    return [
        sys.executable, "-m", "study", "worker", "--study-name", config.study_name,
        "--storage", config.storage, "--tracking-uri", tracking_uri, "--device", device,
        "--heartbeat-interval", str(config.heartbeat_interval),
        "--tracking-timeout", str(config.tracking_timeout), "--n-trials", str(config.n_trials),
    ]


def start_workers(config: StudyConfig, workers: int, *, tracking_uri: str) -> list[int]:
    """Run ``workers`` worker processes to completion; returns their exit codes.

    Ctrl-C or SIGTERM is passed on to every worker, each of which fails its current trial
    cleanly (closing its run) before exiting.
    """
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
    procs = [
        subprocess.Popen(worker_command(config, device, tracking_uri), env=env)
        for device in worker_devices(config.device, workers)
    ]

    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return [proc.wait() for proc in procs]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
