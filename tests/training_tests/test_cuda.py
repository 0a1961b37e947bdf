"""The CUDA paths `--device auto` selects, on a real GPU: AMP's dtype and loss scaling,
channels_last, and training that stays finite and decomposed. Skipped where there is no CUDA
(CI and the development machines have none; a GPU session runs them)."""

from __future__ import annotations

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
