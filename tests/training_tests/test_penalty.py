"""Tests of study.training.penalty: which parameters are penalized, the optimizers and the loss
term."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from study.training.models import build_model
from study.training.penalty import (
    PenaltyMode,
    make_optimizer,
    penalized_parameters,
    penalty_term,
    weight_sq_norm,
)

WD = 0.01


@pytest.fixture
def model() -> nn.Module:
    return build_model("cnn", width=4, in_channels=1, n_classes=3, input_size=(8, 8), seed=0)


def _ids(params) -> set[int]:
    return {id(p) for p in params}


# --- modes and parameters ------------------------------------------------------------------------


def test_modes_parse_from_their_values():
    assert [PenaltyMode(m.value) for m in PenaltyMode] == list(PenaltyMode)
    assert str(PenaltyMode.L2_IN_LOSS) == "l2-in-loss"


def test_penalized_parameters_are_exactly_the_conv_and_linear_kernels(model):
    kernels = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(kernels) == 5
    assert _ids(penalized_parameters(model)) == _ids(kernels)


def test_penalized_parameters_exclude_biases_and_batchnorm(model):
    excluded = [model[-1].bias]
    excluded += [
        p for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()
    ]
    assert _ids(penalized_parameters(model)).isdisjoint(_ids(excluded))


# --- optimizers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "optimizer_type"),
    [
        ("l2-in-loss", torch.optim.Adam),
        ("coupled", torch.optim.Adam),
        ("none", torch.optim.Adam),
        ("decoupled", torch.optim.AdamW),
    ],
)
def test_make_optimizer_picks_adam_or_adamw(model, mode, optimizer_type):
    optimizer = make_optimizer(model, mode=PenaltyMode(mode), lr=1e-3, weight_decay=WD)
    assert type(optimizer) is optimizer_type


@pytest.mark.parametrize(
    ("mode", "kernel_decay"),
    [("l2-in-loss", 0.0), ("coupled", WD), ("decoupled", WD), ("none", 0.0)],
)
def test_make_optimizer_decays_only_the_kernel_group(model, mode, kernel_decay):
    optimizer = make_optimizer(model, mode=PenaltyMode(mode), lr=1e-3, weight_decay=WD)
    kernels, others = optimizer.param_groups
    assert _ids(kernels["params"]) == _ids(penalized_parameters(model))
    assert _ids(kernels["params"]) | _ids(others["params"]) == _ids(model.parameters())
    assert kernels["weight_decay"] == kernel_decay
    assert others["weight_decay"] == 0.0
    assert all(g["lr"] == 1e-3 for g in optimizer.param_groups)


# --- the loss term -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["coupled", "decoupled", "none"])
def test_penalty_term_is_none_outside_l2_in_loss(model, mode):
    assert (
        penalty_term(penalized_parameters(model), mode=PenaltyMode(mode), weight_decay=WD) is None
    )


def test_penalty_term_is_none_for_zero_decay(model):
    params = penalized_parameters(model)
    assert penalty_term(params, mode=PenaltyMode.L2_IN_LOSS, weight_decay=0.0) is None


def test_l2_in_loss_term_is_decay_times_sum_of_squared_kernels(model):
    params = penalized_parameters(model)
    by_hand = WD * sum(float((p.detach().double() ** 2).sum()) for p in params)
    term = penalty_term(params, mode=PenaltyMode.L2_IN_LOSS, weight_decay=WD)
    assert term.shape == ()
    assert term.item() == pytest.approx(by_hand, rel=1e-5)


def test_l2_in_loss_gradient_is_twice_decay_times_weight():
    w = nn.Parameter(torch.randn(4, 3))
    penalty_term([w], mode=PenaltyMode.L2_IN_LOSS, weight_decay=WD).backward()
    torch.testing.assert_close(w.grad, 2 * WD * w.detach())


def test_l2_in_loss_step_equals_coupled_step_with_twice_the_decay(model):
    x, y = torch.randn(6, 1, 8, 8), torch.arange(6) % 3
    in_loss, coupled = model, copy.deepcopy(model)

    opt = make_optimizer(in_loss, mode=PenaltyMode.L2_IN_LOSS, lr=1e-2, weight_decay=WD)
    penalty = penalty_term(
        penalized_parameters(in_loss), mode=PenaltyMode.L2_IN_LOSS, weight_decay=WD
    )
    (nn.functional.cross_entropy(in_loss(x), y) + penalty).backward()
    opt.step()

    opt = make_optimizer(coupled, mode=PenaltyMode.COUPLED, lr=1e-2, weight_decay=2 * WD)
    nn.functional.cross_entropy(coupled(x), y).backward()
    opt.step()

    for a, b in zip(in_loss.parameters(), coupled.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_weight_sq_norm_of_no_parameters_is_zero():
    norm = weight_sq_norm([])
    assert norm.shape == ()
    assert norm.item() == 0.0


def test_weight_sq_norm_sums_over_tensors():
    params = [nn.Parameter(torch.full((2, 2), 2.0)), nn.Parameter(torch.tensor([3.0]))]
    assert weight_sq_norm(params).item() == 25.0
