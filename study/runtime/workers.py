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
from collections.abc import Sequence

from study.config import StudyConfig
from study.errors import ConfigError
from study.keys import LOCAL_WORKER_ENV
from study.storages import storage_kind

__all__ = [
    "WorkersInterrupted",
    "check_workers",
    "plan_devices",
    "start_workers",
    "worker_command",
    "worker_devices",
    "worker_env",
]

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


def plan_devices(device: str, *, workers: int, trials_per_gpu: int | None,
                 n_gpus: int) -> list[str]:
    """One device per worker process.

    ``trials_per_gpu`` K gives K workers on each of ``n_gpus`` GPUs (small CNNs leave a GPU
    mostly idle, so concurrent trials raise its use); otherwise ``workers`` processes, spread
    round-robin over the GPUs when ``device`` is ``auto`` and there are several.

    Raises:
        ConfigError: ``trials_per_gpu`` without a GPU, or below 1.
    """
    if trials_per_gpu is not None:
        if trials_per_gpu < 1:
            raise ConfigError(f"`trials_per_gpu` must be >= 1, but got "
                              f"trials_per_gpu={trials_per_gpu}.")
        if n_gpus == 0 or device not in ("auto", "cuda"):
            raise ConfigError(f"`trials_per_gpu` must be used with CUDA devices, but got "
                              f"trials_per_gpu={trials_per_gpu} with device={device!r} and "
                              f"{n_gpus} GPU(s); use --workers instead.")
        return [f"cuda:{gpu}" for gpu in range(n_gpus) for _ in range(trials_per_gpu)]
    if device == "auto" and n_gpus > 1:
        return [f"cuda:{i % n_gpus}" for i in range(workers)]
    return [device] * workers


def worker_devices(device: str, workers: int, trials_per_gpu: int | None = None) -> list[str]:
    """:func:`plan_devices` for the GPUs of this machine."""
    import torch

    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return plan_devices(device, workers=workers, trials_per_gpu=trials_per_gpu, n_gpus=n_gpus)


def worker_command(config: StudyConfig, device: str, *, quiet: bool = False) -> list[str]:
    """The ``study worker`` command line for one local worker.

    The storage and tracking URLs are not on it (a command line is visible to every user of
    the machine in ``ps``, passwords included): :func:`worker_env` passes them.
    """
    return [
        sys.executable, "-m", "study", "worker", "--study-name", config.study_name,
        "--device", device, "--heartbeat-interval", str(config.heartbeat_interval),
        "--tracking-timeout", str(config.tracking_timeout),
        "--storage-timeout", str(config.storage_timeout), "--n-trials", str(config.n_trials),
        "--compile" if config.compile else "--no-compile",
        *(["--quiet"] if quiet else []),
    ]


def worker_env(config: StudyConfig, devices: Sequence[str], *,
               tracking_uri: str) -> dict[str, str]:
    """The environment of the local workers: this one, with the storage and tracking URLs
    (``STUDY_STORAGE``, ``MLFLOW_TRACKING_URI``), no inherited ``mlflow run`` run, CPU
    threads split between CPU workers, and :data:`LOCAL_WORKER_ENV` (a worker stopped by a
    signal leaves the one line saying so to this process, which speaks for all of them)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
    env["STUDY_STORAGE"] = config.storage
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env[LOCAL_WORKER_ENV] = str(os.getpid())
    if not any(d.startswith("cuda") for d in devices) and "OMP_NUM_THREADS" not in env:
        # CPU workers share the cores: oversubscribed intra-op threads would slow all of them.
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // len(devices)))
    return env


class WorkersInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM reached the workers, which have all exited since."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


def start_workers(config: StudyConfig, devices: Sequence[str], *,
                  tracking_uri: str, quiet: bool = False) -> list[int]:
    """Run ``workers`` worker processes to completion; returns their exit codes.

    Ctrl-C or SIGTERM is passed on to every worker, each of which fails its current trial
    cleanly (closing its run) before exiting. The workers run in a session of their own, so
    the terminal's Ctrl-C reaches them once, through this process.

    Raises:
        WorkersInterrupted: A signal was passed on (raised once every worker has exited).
    """
    env = worker_env(config, devices, tracking_uri=tracking_uri)
    # Their summaries repeat the one this process prints for the study: stdout stays one
    # summary; their progress, warnings and errors (stderr) still show.
    procs = [subprocess.Popen(worker_command(config, device, quiet=quiet), env=env,
                              start_new_session=True, stdout=subprocess.DEVNULL)
             for device in devices]
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = [proc.wait() for proc in procs]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise WorkersInterrupted(received[0])
    return codes
