"""The GPU code paths, checked on the CPU: which path is selected, and that the CPU path's
numbers do not change when the GPU options are asked for."""

from __future__ import annotations

import pytest
import torch

from study.config import StudyConfig
from study.errors import ConfigError
from study.runtime.workers import plan_devices, worker_command, worker_env
from study.training.data import load_dataset
from study.training.trainer import HParams, Trainer, _amp_dtype, resolve_device

HP = HParams(width=4, lr=1e-2, batch_size=64, weight_decay=1e-4)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def test_auto_device_is_cpu_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: auto picks it")
    assert resolve_device("auto").type == "cpu"


def test_amp_is_never_used_on_cpu():
    assert _amp_dtype(torch.device("cpu"), True) is None


def test_channels_last_only_for_2d_cuda(digits):
    trainer = Trainer(HP, digits, epochs=1)
    assert trainer._memory_format is torch.preserve_format


def test_compile_wraps_forward_but_keeps_the_plain_module(digits):
    plain = Trainer(HP, digits, epochs=1)
    compiled = Trainer(HP, digits, epochs=1, compile=True)

    assert compiled._net is not compiled.model
    assert type(compiled.model) is type(plain.model)
    assert compiled.n_params == plain.n_params
    assert list(compiled.model.state_dict()) == list(plain.model.state_dict())


def test_compile_off_by_default_and_a_session_setting():
    assert StudyConfig().compile is False
    assert "compile" in StudyConfig.field_names("session")
    assert StudyConfig().replace(compile="true").compile is True


def test_compile_flag_rejects_non_booleans():
    with pytest.raises(ConfigError, match="`compile` must be true or false"):
        StudyConfig().replace(compile="maybe")


def test_worker_command_passes_compile_on():
    assert "--compile" in worker_command(StudyConfig(compile=True), "cpu")
    assert "--no-compile" in worker_command(StudyConfig(), "cpu")


@pytest.mark.parametrize(("k", "gpus", "expected"), [
    (1, 1, ["cuda:0"]),
    (3, 1, ["cuda:0", "cuda:0", "cuda:0"]),
    (2, 2, ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]),
])
def test_trials_per_gpu_starts_k_workers_per_gpu(k, gpus, expected):
    assert plan_devices("auto", workers=1, trials_per_gpu=k, n_gpus=gpus) == expected


def test_trials_per_gpu_needs_a_gpu():
    with pytest.raises(ConfigError, match="`trials_per_gpu` must be used with CUDA"):
        plan_devices("auto", workers=1, trials_per_gpu=2, n_gpus=0)


def test_trials_per_gpu_below_one_is_refused():
    with pytest.raises(ConfigError, match="`trials_per_gpu` must be >= 1"):
        plan_devices("auto", workers=1, trials_per_gpu=0, n_gpus=1)


def test_workers_spread_round_robin_over_gpus_with_auto():
    assert plan_devices("auto", workers=3, trials_per_gpu=None, n_gpus=2) == [
        "cuda:0", "cuda:1", "cuda:0"]


def test_workers_stay_on_the_asked_device():
    assert plan_devices("cpu", workers=2, trials_per_gpu=None, n_gpus=2) == ["cpu", "cpu"]
    assert plan_devices("auto", workers=2, trials_per_gpu=None, n_gpus=0) == ["auto", "auto"]


def test_amp_request_changes_nothing_on_cpu(digits):
    with_amp = Trainer(HP, digits, epochs=1, amp=True).fit()
    without = Trainer(HP, digits, epochs=1, amp=False).fit()
    assert [r.loss for r in with_amp] == [r.loss for r in without]


def test_worker_urls_travel_in_the_environment_not_on_the_command_line(monkeypatch):
    monkeypatch.setenv("MLFLOW_RUN_ID", "the-entry-point-run")  # workers must not log into it
    storage = "postgresql://user:S3cret@db.example/optuna"
    tracking = "http://user:S3cret@mlflow.example:5000"
    config = StudyConfig(storage=storage)
    command = worker_command(config, "cpu")
    assert not any("S3cret" in part or "example" in part for part in command)  # `ps` shows it
    env = worker_env(config, ["cpu", "cpu"], tracking_uri=tracking)
    assert (env["STUDY_STORAGE"], env["MLFLOW_TRACKING_URI"]) == (storage, tracking)
    assert "MLFLOW_RUN_ID" not in env
