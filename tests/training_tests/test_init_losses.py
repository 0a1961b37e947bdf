"""The loss at initialization (Trainer.initial_losses): measured as the training loop would see
it, without changing the model, and recomputed here independently."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from study.training import (
    INIT_SAMPLES,
    HParams,
    TensorData,
    Trainer,
    load_dataset,
    penalized_parameters,
)


@pytest.fixture(scope="module")
def digits() -> TensorData:
    return load_dataset("digits", seed=0)


def trainer(data: TensorData, *, mode: str = "l2-in-loss", wd: float = 1e-2, bs: int = 64,
            seed: int = 3) -> Trainer:
    return Trainer(HParams(width=6, lr=1e-3, batch_size=bs, weight_decay=wd, penalty_mode=mode),
                   data, epochs=1, seed=seed)


def test_the_data_loss_is_train_mode_cross_entropy_over_the_first_samples(digits):
    t = trainer(digits, bs=64)
    model = copy.deepcopy(t.model).train()
    n = min(digits.n_train, INIT_SAMPLES)
    total, seen = 0.0, 0
    with torch.no_grad():
        for lo in range(0, n, 64):
            x, y = digits.x_train[lo:min(lo + 64, n)], digits.y_train[lo:min(lo + 64, n)]
            total += float(F.cross_entropy(model(x), y, reduction="sum"))
            seen += len(y)
    init = t.initial_losses()
    assert init.n_samples == seen == min(digits.n_train, INIT_SAMPLES)
    assert init.data_loss == pytest.approx(total / seen, rel=1e-5)


def test_the_penalty_is_exactly_weight_decay_times_the_squared_kernel_norm(digits):
    t = trainer(digits, wd=3e-3)
    init = t.initial_losses()
    expected = sum(float(p.detach().double().pow(2).sum()) for p in penalized_parameters(t.model))
    assert init.weight_sq_norm == pytest.approx(expected, rel=1e-12)
    assert init.penalty == 3e-3 * init.weight_sq_norm
    assert init.loss == init.data_loss + init.penalty


@pytest.mark.parametrize("mode", ["none", "coupled", "decoupled"])
def test_modes_without_a_loss_term_start_with_no_penalty(digits, mode):
    init = trainer(digits, mode=mode).initial_losses()
    assert init.penalty == 0.0 and init.loss == init.data_loss
    assert init.weight_sq_norm > 0


def test_the_model_and_its_batchnorm_statistics_are_left_as_they_were(digits):
    t = trainer(digits)
    t.model.eval()
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    t.initial_losses()
    assert not t.model.training  # its mode is restored too
    after = t.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_measuring_the_start_does_not_change_the_training_that_follows(digits):
    plain = trainer(digits).fit()
    measured = trainer(digits)
    measured.initial_losses()
    assert [r.loss for r in measured.fit()] == [r.loss for r in plain]


def test_same_seed_same_start_other_seed_other_start(digits):
    a, b, c = (trainer(digits, seed=s).initial_losses() for s in (1, 1, 2))
    assert a == b
    assert a.weight_sq_norm != c.weight_sq_norm


@pytest.mark.parametrize(("n_train", "expected"), [(INIT_SAMPLES - 1, INIT_SAMPLES - 1),
                                                   (INIT_SAMPLES + 1, INIT_SAMPLES)])
def test_at_most_init_samples_are_read(digits, n_train, expected):
    big = TensorData("big", digits.x_train.repeat(2, 1, 1, 1)[:n_train],
                     digits.y_train.repeat(2)[:n_train], digits.x_val, digits.y_val, 10)
    # batch 63 leaves a last batch of >= 2 samples on both sides of the boundary
    assert trainer(big, bs=63).initial_losses().n_samples == expected
