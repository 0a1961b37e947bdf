"""The CUDA paths `--device auto` selects, on a real GPU: AMP's dtype and loss scaling,
channels_last, and training that stays finite and decomposed. Skipped where there is no CUDA
(CI and the development machines have none; a GPU session runs them)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from study.training.data import load_dataset
from study.training.trainer import HParams, Trainer, resolve_device

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

HP = HParams(width=8, lr=1e-2, batch_size=64, weight_decay=1e-3)


@pytest.fixture(scope="module")
def digits_cuda():
    return load_dataset("digits", seed=0, device="cuda")


def test_auto_picks_the_gpu():
    assert resolve_device("auto").type == "cuda"


def test_amp_uses_bf16_where_supported_and_scales_fp16_only(digits_cuda):
    trainer = Trainer(HP, digits_cuda, epochs=1)
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert trainer._amp_dtype is expected
    assert trainer._scaler.is_enabled() is (expected is torch.float16)
    assert Trainer(HP, digits_cuda, epochs=1, amp=False)._amp_dtype is None


def test_channels_last_for_images_and_not_for_volumes(digits_cuda):
    assert Trainer(HP, digits_cuda, epochs=1)._memory_format is torch.channels_last
    assert Trainer(HP, digits_cuda, epochs=1,
                   channels_last=False)._memory_format is torch.preserve_format
    volumes = load_dataset("volumes3d", seed=0, device="cuda")
    assert Trainer(HP, volumes, epochs=1)._memory_format is torch.preserve_format


def test_training_on_the_gpu_is_finite_and_decomposed(digits_cuda):
    history = Trainer(HP, digits_cuda, epochs=2).fit()
    for report in history:
        assert math.isfinite(report.loss) and math.isfinite(report.val_loss)
        assert report.loss == pytest.approx(report.data_loss + report.penalty, rel=1e-4)
    assert history[-1].val_loss < history[0].val_loss * 1.5


def test_mixed_precision_lands_near_full_precision(digits_cuda):
    amp = Trainer(HP, digits_cuda, epochs=2, seed=3).fit()[-1].val_loss
    full = Trainer(HP, digits_cuda, epochs=2, seed=3, amp=False).fit()[-1].val_loss
    assert amp == pytest.approx(full, rel=0.15)


# --- the gap measurement on the device (AMP, channels_last) --------------------------------------

GAP_HP = dataclasses.replace(HP, dropout=0.3)


def test_the_gap_parts_add_up_on_the_gpu(digits_cuda):
    for r in Trainer(GAP_HP, digits_cuda, model_name="vgg", epochs=2).fit():
        parts = (r.gap_timing, r.gap_mode, r.gap_generalization)
        assert all(math.isfinite(p) for p in parts)
        assert math.fsum(parts) == pytest.approx(r.val_loss - r.data_loss, rel=0, abs=1e-6)
        assert r.gap_mode_batchnorm + r.gap_mode_dropout == pytest.approx(r.gap_mode, rel=0,
                                                                          abs=1e-6)


def test_the_gap_measurement_barely_changes_gpu_training(digits_cuda):
    # Not bit for bit: some CUDA backward kernels (max pooling) add atomically, so two runs
    # of the same training differ in the last bits whatever the measurement does.
    on = Trainer(GAP_HP, digits_cuda, model_name="vgg", epochs=2, seed=1).fit()
    off = Trainer(GAP_HP, digits_cuda, model_name="vgg", epochs=2, seed=1,
                  measure_gap=False).fit()
    assert [r.data_loss for r in on] == pytest.approx([r.data_loss for r in off], rel=1e-2)
    assert [r.val_loss for r in on] == pytest.approx([r.val_loss for r in off], rel=1e-2)


def test_dropout_training_on_the_gpu_leaves_the_global_rng_alone(digits_cuda):
    torch.cuda.manual_seed(5)
    expected = torch.rand(3, device="cuda")
    torch.cuda.manual_seed(5)
    Trainer(GAP_HP, digits_cuda, model_name="vgg", epochs=1).fit()
    assert torch.equal(torch.rand(3, device="cuda"), expected)
