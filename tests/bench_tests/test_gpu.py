"""The GPU benchmark's machinery, run on the CPU (its figures are only reported for CUDA): the
seeded image task, the loop comparison with each GPU option switched, and trials per hour of a
real ``study run`` with concurrent workers on a journal storage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench import gpu, results
from bench.harness import QUICK
from bench.images32 import images32
from study.training.data import load_dataset


def test_the_image_task_is_seeded_balanced_and_learnable():
    x, y = images32(n_samples=200)
    again, _ = images32(n_samples=200)
    other, _ = images32(n_samples=200, seed=1)
    assert x.shape == (200, 3, 32, 32) and x.dtype == np.float32
    assert np.array_equal(x, again) and not np.array_equal(x, other)
    assert np.bincount(y).tolist() == [20] * 10
    # A signal to learn: class means of one half classify the other half far above chance.
    x, y = images32(n_samples=1000)
    means = np.stack([x[:500][y[:500] == c].mean(axis=0) for c in range(10)])
    distance = ((x[500:, None] - means[None]) ** 2).sum(axis=(2, 3, 4))
    assert (distance.argmin(axis=1) == y[500:]).mean() > 0.5  # chance: 0.1


def test_loop_figures_compare_the_same_training_on_the_device():
    data = load_dataset("digits", seed=0)
    loop = gpu.loop_figures(data, torch.device("cpu"), repeats=1, width=4, epochs=1,
                            compile=False)
    assert set(loop["median"]) == {"trainer", "bare", "no_amp", "no_channels_last"}
    assert loop["samples"] == data.n_train
    assert loop["trainer_vs_bare"] == pytest.approx(loop["median"]["bare"]
                                                    / loop["median"]["trainer"])
    assert loop["compile_speedup"] is None
    assert gpu.trial_memory_mb(data, torch.device("cpu")) is None


@pytest.mark.slow
def test_trials_per_hour_counts_the_trials_of_a_real_concurrent_study(workspace):
    row = gpu.trials_per_hour(workspace, torch.device("cpu"), 2, n_trials=4,
                              dataset=f"{gpu.IMAGES}_small", width=4, epochs=1)
    assert row["k"] == 2 and row["n_trials"] >= 4  # two workers may each finish one more
    assert 0 < row["span"] < row["wall"]
    assert row["per_hour"] == pytest.approx(row["n_trials"] / row["span"] * 3600)


def test_gpu_figures_and_section_come_from_the_document():
    doc = {"machine": {"gpu": "Test GPU 80GB"}, "gpu": {
        "dataset": "images32", "n_train": 8192, "width": 64, "batch_size": 128, "epochs": 2,
        "memory_mb": 321.0,
        "loop": {"median": {"trainer": 1.0, "bare": 0.9, "no_amp": 1.5,
                            "no_channels_last": 1.2}, "samples": 16384,
                 "trainer_vs_bare": 0.9, "amp_speedup": 1.5, "channels_last_speedup": 1.2,
                 "compile_speedup": 1.1, "compile_seconds": 40.0},
        "concurrency": [{"k": k, "n_trials": 16, "span": 100.0 / k, "per_hour": 576.0 * k,
                         "startup": 9.0, "wall": 109.0} for k in (1, 2, 4, 8)],
    }}
    pairs = dict(gpu.figures(doc["gpu"]))
    assert pairs["gpu_amp_speedup"] == 1.5 and pairs["gpu_trials_per_hour_8"] == 4608.0
    assert pairs["gpu_memory_per_trial_mb"] == 321.0
    fields = gpu.section(doc)
    assert fields["gpu_name"] == "Test GPU 80GB" and fields["gpu_compile"] == "1.10"
    assert "| 8 | 16 | 12.5 s | 4608 | 9.0 s |" in fields["gpu_k_table"]


def test_a_run_without_a_gpu_says_so():
    from tests.bench_tests.test_results import quick_doc

    md = results.render(quick_doc())
    assert "## 1c. On a GPU\n\nNot measured: this run had no GPU." in md
    assert not [p for p in results.pair_lines(quick_doc()) if p.startswith("gpu_")]
    assert QUICK.name == "quick"
