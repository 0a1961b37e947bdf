"""The training options of HParams (optimizer, momentum, dropout, BatchNorm momentum): their
checks, how the optimizer combines with the penalty mode, and what they change in the built-in
models (and, at their defaults, what they do not)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from study.errors import ConfigError
from study.training.data import TensorData, load_dataset
from study.training.models import MODELS, build_model, count_parameters
from study.training.penalty import PenaltyMode, make_optimizer, penalized_parameters
from study.training.specs import (
    OPTIMIZERS,
    HParams,
    check_optimizer_mode,
    check_training_options,
)
from study.training.trainer import Trainer

DIGITS = {"in_channels": 1, "n_classes": 10, "input_size": (8, 8)}
VOLUMES = {"in_channels": 1, "n_classes": 3, "input_size": (16, 16, 16)}
WD = 0.01


@pytest.fixture(scope="module")
def digits() -> TensorData:
    return load_dataset("digits", seed=0)


def _hp(**overrides) -> HParams:
    values = {"width": 4, "lr": 1e-2, "batch_size": 64, "weight_decay": WD}
    values.update(overrides)
    return HParams(**values)


def _small(data: TensorData, n: int = 256) -> TensorData:
    return TensorData(data.name, data.x_train[:n], data.y_train[:n], data.x_val[:64],
                      data.y_val[:64], data.n_classes)


# --- HParams and the checks ----------------------------------------------------------------------


def test_the_options_default_to_adam_without_dropout_and_torchs_batchnorm_momentum():
    hp = HParams(4, 1e-3, 64, 1e-4)  # the positional construction of earlier versions
    assert (hp.penalty_mode, hp.optimizer, hp.momentum, hp.dropout, hp.bn_momentum) == (
        "l2-in-loss", "adam", 0.9, 0.0, 0.1)
    assert OPTIMIZERS == ("adam", "sgd", "adamw")


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_passes_the_check(optimizer):
    check_training_options(optimizer=optimizer)


@pytest.mark.parametrize("optimizer", ["rmsprop", "Adam", None])
def test_an_unknown_optimizer_is_refused(optimizer):
    with pytest.raises(ConfigError, match=rf"^`optimizer` must be one of adam, sgd, adamw, but "
                                          rf"got optimizer={optimizer!r}\.$"):
        check_training_options(optimizer=optimizer)


@pytest.mark.parametrize("field", ["momentum", "dropout"])
@pytest.mark.parametrize("value", [0, 0.0, 0.5, 0.999])
def test_momentum_and_dropout_accept_zero_up_to_below_one(field, value):
    check_training_options(**{field: value})


@pytest.mark.parametrize("field", ["momentum", "dropout"])
@pytest.mark.parametrize("value", [-0.01, 1, 1.0, 1.5, math.nan, True, "0.5"])
def test_momentum_and_dropout_refuse_values_outside_zero_one(field, value):
    with pytest.raises(ConfigError, match=rf"^`{field}` must be in \[0, 1\), but got "
                                          rf"{field}={value!r}\.$"):
        check_training_options(**{field: value})


@pytest.mark.parametrize("value", [1e-6, 0.01, 0.1, 1, 1.0])
def test_bn_momentum_accepts_above_zero_up_to_one(value):
    check_training_options(bn_momentum=value)


@pytest.mark.parametrize("value", [0, 0.0, -0.1, 1.0001, math.inf, math.nan, None])
def test_bn_momentum_refuses_values_outside_zero_one(value):
    with pytest.raises(ConfigError, match=rf"^`bn_momentum` must be in \(0, 1\], but got "
                                          rf"bn_momentum={value!r}\.$"):
        check_training_options(bn_momentum=value)


def test_the_trainer_checks_the_options(digits):
    with pytest.raises(ConfigError, match=r"`dropout` must be in \[0, 1\), but got dropout=1\.5"):
        Trainer(_hp(dropout=1.5), digits, epochs=1)


# --- the optimizer and the penalty mode ----------------------------------------------------------


@pytest.fixture
def model() -> nn.Module:
    return build_model("cnn", width=4, seed=0, **DIGITS)


@pytest.mark.parametrize(("optimizer", "mode", "kind", "kernel_decay"), [
    ("adam", "coupled", torch.optim.Adam, WD),
    ("adam", "decoupled", torch.optim.AdamW, WD),
    ("adam", "l2-in-loss", torch.optim.Adam, 0.0),
    ("adam", "none", torch.optim.Adam, 0.0),
    ("adamw", "decoupled", torch.optim.AdamW, WD),
    ("adamw", "l2-in-loss", torch.optim.AdamW, 0.0),
    ("adamw", "none", torch.optim.AdamW, 0.0),
    ("sgd", "coupled", torch.optim.SGD, WD),
    ("sgd", "l2-in-loss", torch.optim.SGD, 0.0),
    ("sgd", "none", torch.optim.SGD, 0.0),
])
def test_the_optimizer_gives_the_rule_and_the_mode_the_decay(model, optimizer, mode, kind,
                                                            kernel_decay):
    built = make_optimizer(model, mode=PenaltyMode(mode), lr=1e-3, weight_decay=WD,
                           optimizer=optimizer)
    assert type(built) is kind
    kernels, others = built.param_groups
    assert {id(p) for p in kernels["params"]} == {id(p) for p in penalized_parameters(model)}
    assert (kernels["weight_decay"], others["weight_decay"]) == (kernel_decay, 0.0)


@pytest.mark.parametrize(("optimizer", "mode"), [("adamw", "coupled"), ("sgd", "decoupled")])
def test_an_optimizer_that_cannot_apply_the_mode_is_refused(model, optimizer, mode):
    message = (rf"^`penalty_mode` must be one of .* with optimizer='{optimizer}', but got "
               rf"penalty_mode='{mode}'\.$")
    with pytest.raises(ConfigError, match=message):
        make_optimizer(model, mode=PenaltyMode(mode), lr=1e-3, weight_decay=WD,
                       optimizer=optimizer)
    with pytest.raises(ConfigError, match=message):
        check_optimizer_mode(optimizer, mode)


def test_make_optimizer_refuses_an_unknown_optimizer(model):
    with pytest.raises(ConfigError, match=r"`optimizer` must be one of adam, sgd, adamw, but got "
                                          r"optimizer='lbfgs'\."):
        make_optimizer(model, mode=PenaltyMode.NONE, lr=1e-3, weight_decay=0.0,
                       optimizer="lbfgs")


def test_sgd_uses_the_momentum(model):
    built = make_optimizer(model, mode=PenaltyMode.NONE, lr=1e-3, weight_decay=0.0,
                           optimizer="sgd", momentum=0.5)
    assert [g["momentum"] for g in built.param_groups] == [0.5, 0.5]


def test_the_trainer_builds_the_optimizer_of_its_hparams(digits):
    trainer = Trainer(_hp(optimizer="sgd", momentum=0.8, penalty_mode="coupled"), digits,
                      epochs=1)
    assert type(trainer.optimizer) is torch.optim.SGD
    assert [g["momentum"] for g in trainer.optimizer.param_groups] == [0.8, 0.8]
    assert trainer.optimizer.param_groups[0]["weight_decay"] == WD


def test_the_trainer_refuses_a_combination_before_training(digits):
    with pytest.raises(ConfigError, match=r"optimizer='adamw', but got penalty_mode='coupled'"):
        Trainer(_hp(optimizer="adamw", penalty_mode="coupled"), digits, epochs=1)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_trains(digits, optimizer):
    history = Trainer(_hp(optimizer=optimizer, lr=3e-2 if optimizer == "sgd" else 1e-2),
                      _small(digits), epochs=2).fit()
    assert history[-1].data_loss < history[0].data_loss


# --- dropout and BatchNorm momentum in the built-in models ---------------------------------------


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape", [DIGITS, VOLUMES], ids=["2d", "3d"])
def test_zero_dropout_leaves_the_model_as_it_was(name, shape):
    before = build_model(name, width=4, seed=3, **shape)
    now = build_model(name, width=4, seed=3, dropout=0.0, bn_momentum=0.1, **shape)
    assert not any(isinstance(m, nn.Dropout) for m in now.modules())
    assert [type(m) for m in now.modules()] == [type(m) for m in before.modules()]
    assert count_parameters(now) == count_parameters(before)
    assert _same_state(now, before)


@pytest.mark.parametrize("name", MODELS)
def test_dropout_goes_right_before_the_classifier_and_changes_no_weight(name):
    plain = build_model(name, width=4, seed=3, **DIGITS)
    dropped = build_model(name, width=4, seed=3, dropout=0.25, **DIGITS)
    leaves = [m for m in dropped.modules() if not list(m.children())]
    dropouts = [m for m in leaves if isinstance(m, nn.Dropout)]
    assert [d.p for d in dropouts] == [0.25]
    assert leaves[-2] is dropouts[0] and isinstance(leaves[-1], nn.Linear)
    assert count_parameters(dropped) == count_parameters(plain)
    # The classifier's index in its Sequential moves by one; the tensors are the same.
    pairs = zip(dropped.state_dict().values(), plain.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("momentum", [0.01, 0.1, 1.0])
def test_every_batchnorm_layer_gets_the_momentum(name, momentum):
    model = build_model(name, width=4, bn_momentum=momentum, **DIGITS)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and {m.momentum for m in norms} == {momentum}


@pytest.mark.parametrize(("field", "value", "allowed"), [
    ("dropout", 1.0, r"in \[0, 1\)"), ("bn_momentum", 0.0, r"in \(0, 1\]")])
def test_build_model_checks_the_options(field, value, allowed):
    with pytest.raises(ConfigError, match=rf"`{field}` must be {allowed}, but got "
                                          rf"{field}={value}\."):
        build_model("cnn", width=4, **{field: value}, **DIGITS)


def test_the_trainer_reports_batchnorm_and_dropout(digits):
    plain = Trainer(_hp(), digits, epochs=1)
    dropped = Trainer(_hp(dropout=0.2), digits, model_name="vgg", epochs=1)
    assert (plain.has_batchnorm, plain.has_dropout) == (True, False)
    assert (dropped.has_batchnorm, dropped.has_dropout) == (True, True)


# --- dropout's randomness ------------------------------------------------------------------------


def _losses(history) -> list[tuple[float, float]]:
    return [(r.data_loss, r.val_loss) for r in history]


def test_dropout_training_depends_on_the_seed_only(digits):
    hp = _hp(dropout=0.5)
    torch.manual_seed(1)
    first = Trainer(hp, _small(digits), epochs=2, seed=3).fit()
    torch.manual_seed(2)
    second = Trainer(hp, _small(digits), epochs=2, seed=3).fit()
    other = Trainer(hp, _small(digits), epochs=2, seed=4).fit()
    assert _losses(first) == _losses(second)
    assert _losses(first) != _losses(other)


def test_dropout_training_leaves_the_global_rng_alone(digits):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    Trainer(_hp(dropout=0.5), _small(digits), epochs=1).fit()
    assert torch.equal(torch.rand(3), expected)


def test_dropout_draws_masks_in_training(digits):
    # Same seed, same weights and batch order: only the masks differ from the dropout-free run.
    plain = Trainer(_hp(), _small(digits), epochs=1, seed=3).fit()
    dropped = Trainer(_hp(dropout=0.5), _small(digits), epochs=1, seed=3).fit()
    assert plain[0].data_loss != dropped[0].data_loss
