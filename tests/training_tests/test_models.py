"""Tests of study.training.models: architectures, parameter counts, initializations, seeding,
validation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from study.errors import ConfigError
from study.training.models import (
    CNN_WIDTH_MULTIPLIERS,
    INITS,
    MODELS,
    build_model,
    count_parameters,
)
from study.training.penalty import penalized_parameters, weight_sq_norm

DIGITS = {"in_channels": 1, "n_classes": 10, "input_size": (8, 8)}
VOLUMES = {"in_channels": 1, "n_classes": 3, "input_size": (16, 16, 16)}
SHAPES = pytest.mark.parametrize("shape", [DIGITS, VOLUMES], ids=["2d", "3d"])


def _kernel_sq_norm(init: str, seed: int) -> float:
    model = build_model("cnn", width=16, init=init, seed=seed, **DIGITS)
    return weight_sq_norm(penalized_parameters(model)).item()


def _state(model: nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in model.state_dict().values()]


def test_public_choices():
    assert MODELS == ("cnn", "vgg", "resnet", "resnet-noskip")
    assert INITS == ("torch", "glorot", "he")


# --- shapes and sizes ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
@SHAPES
def test_forward_returns_logits_per_class(name, shape):
    model = build_model(name, width=4, seed=0, **shape).eval()
    x = torch.randn(3, shape["in_channels"], *shape["input_size"])
    out = model(x)
    assert out.shape == (3, shape["n_classes"])
    assert out.dtype == torch.float32


@pytest.mark.parametrize("name", MODELS)
@SHAPES
def test_parameter_count_grows_strictly_with_width(name, shape):
    counts = [count_parameters(build_model(name, width=w, **shape)) for w in (4, 8, 16, 32)]
    assert counts == sorted(set(counts))


@pytest.mark.parametrize(("shape", "kernel_volume"), [(DIGITS, 9), (VOLUMES, 27)], ids=["2d", "3d"])
def test_cnn_parameter_count_matches_layer_shapes(shape, kernel_volume):
    width = 6
    cin, expected = shape["in_channels"], 0
    for mult in CNN_WIDTH_MULTIPLIERS:
        cout = mult * width
        expected += kernel_volume * cin * cout + 2 * cout  # conv without bias, BN gamma and beta
        cin = cout
    expected += (cin + 1) * shape["n_classes"]
    model = build_model("cnn", width=width, **shape)
    assert count_parameters(model) == expected


def test_count_parameters_ignores_buffers_and_frozen_parameters():
    model = build_model("cnn", width=4, **DIGITS)
    total = count_parameters(model)
    assert any(b.numel() for b in model.buffers())  # BN running statistics exist
    model[0].weight.requires_grad_(False)
    assert count_parameters(model) == total - model[0].weight.numel()


def test_cnn_pools_once_on_digits_and_vgg_skips_its_last_pool():
    cnn = build_model("cnn", width=4, **DIGITS)
    vgg = build_model("vgg", width=4, **DIGITS)
    assert sum(isinstance(m, nn.MaxPool2d) for m in cnn.modules()) == 1
    assert sum(isinstance(m, nn.MaxPool2d) for m in vgg.modules()) == 3  # 8 -> 4 -> 2 -> 1


def test_vgg_on_digits_trains_one_step():
    model = build_model("vgg", width=4, seed=0, **DIGITS)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8) % 10
    before = _state(model)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, _state(model), strict=True))


# --- initialization ------------------------------------------------------------------------------


def test_glorot_kernels_start_larger_than_torch_defaults():
    ratio = _kernel_sq_norm("glorot", seed=0) / _kernel_sq_norm("torch", seed=0)
    print(f"glorot/torch initial squared kernel norm, cnn width 16 on digits: {ratio:.3f}")
    # Expected variances give 86.45 / 35.33 = 2.45 for these layer shapes.
    assert 2.2 < ratio < 2.7


def test_he_differs_from_torch_defaults():
    assert _kernel_sq_norm("he", seed=0) > 2 * _kernel_sq_norm("torch", seed=0)


@pytest.mark.parametrize("init", ["glorot", "he"])
def test_explicit_inits_zero_biases_and_keep_batchnorm_identity(init):
    model = build_model("cnn", width=4, init=init, seed=0, **DIGITS)
    assert torch.count_nonzero(model[-1].bias) == 0
    bn = model[1]
    assert torch.equal(bn.weight, torch.ones_like(bn.weight))
    assert torch.equal(bn.bias, torch.zeros_like(bn.bias))


# --- seeding -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_same_seed_gives_identical_weights(name):
    a = build_model(name, width=4, init="glorot", seed=7, **DIGITS)
    b = build_model(name, width=4, init="glorot", seed=7, **DIGITS)
    assert all(torch.equal(x, y) for x, y in zip(_state(a), _state(b), strict=True))


def test_different_seeds_give_different_weights():
    a = build_model("cnn", width=4, seed=7, **DIGITS)
    b = build_model("cnn", width=4, seed=8, **DIGITS)
    assert not torch.equal(a[0].weight, b[0].weight)


def test_seeded_build_leaves_global_rng_untouched():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    build_model("vgg", width=4, init="he", seed=1, **DIGITS)
    assert torch.equal(torch.get_rng_state(), state)


def test_unseeded_build_uses_global_rng():
    torch.manual_seed(5)
    a = build_model("cnn", width=4, **DIGITS)
    torch.manual_seed(5)
    b = build_model("cnn", width=4, **DIGITS)
    assert torch.equal(a[0].weight, b[0].weight)


# --- validation ----------------------------------------------------------------------------------


def test_unknown_model_is_rejected():
    with pytest.raises(
        ConfigError, match=r"`model` must be one of cnn, vgg, resnet, resnet-noskip, or a "
                           r"factory .*, but got model='resnet50'"
    ):
        build_model("resnet50", width=4, **DIGITS)


def test_unknown_init_is_rejected():
    with pytest.raises(ConfigError, match=r"`init` must be one of .*init='xavier'"):
        build_model("cnn", width=4, init="xavier", **DIGITS)


def test_width_zero_is_rejected():
    with pytest.raises(ConfigError, match=r"`width` must be an integer >= 1, but got width=0\."):
        build_model("cnn", width=0, **DIGITS)


@pytest.mark.parametrize("width", [2.0, True])
def test_non_integer_width_is_rejected(width):
    with pytest.raises(ConfigError, match="`width`"):
        build_model("cnn", width=width, **DIGITS)


@pytest.mark.parametrize("name", MODELS)
def test_width_one_is_accepted(name):
    model = build_model(name, width=1, **DIGITS)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_zero_in_channels_is_rejected():
    with pytest.raises(ConfigError, match=r"in_channels=0"):
        build_model("cnn", width=4, in_channels=0, n_classes=10, input_size=(8, 8))


def test_one_class_is_rejected():
    with pytest.raises(ConfigError, match=r"`n_classes` must be an integer >= 2, .*n_classes=1\."):
        build_model("cnn", width=4, in_channels=1, n_classes=1, input_size=(8, 8))


def test_two_classes_are_accepted():
    model = build_model("cnn", width=4, in_channels=1, n_classes=2, input_size=(8, 8))
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 2)


@pytest.mark.parametrize("input_size", [(8,), (4, 4, 4, 4)])
def test_input_size_must_have_two_or_three_dimensions(input_size):
    with pytest.raises(ConfigError, match=r"`input_size` must be 2 \(H, W\) or 3 \(D, H, W\)"):
        build_model("cnn", width=4, in_channels=1, n_classes=10, input_size=input_size)


def test_input_size_must_be_positive():
    with pytest.raises(ConfigError, match=r"`input_size` must be positive integers"):
        build_model("cnn", width=4, in_channels=1, n_classes=10, input_size=(8, 0))
