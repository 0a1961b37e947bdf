"""Tests of the pre-activation ResNet and its plain twin: the documented parameter formula, the
skips really being there (or not), downsampling, depth, and training in 2D and 3D."""

from __future__ import annotations

import pytest
import torch

from study.errors import ConfigError
from study.training import HParams, TensorData, Trainer, build_model, count_parameters
from study.training.models import DEFAULT_DEPTH

D2 = {"in_channels": 3, "n_classes": 5, "input_size": (8, 8)}
D3 = {"in_channels": 1, "n_classes": 3, "input_size": (16, 16, 16)}
SHAPES = pytest.mark.parametrize("shape", [D2, D3], ids=["2d", "3d"])
FAMILIES = pytest.mark.parametrize("name", ["resnet", "resnet-noskip"])


def documented_count(*, width: int, depth: int, in_channels: int, n_classes: int, dims: int,
                     skip: bool) -> int:
    """README "Models": P(w) = (K(42D - 10) + 10s) w^2 + (CK + 28D + 2 + 4n) w + n."""
    k = 3**dims
    return ((k * (42 * depth - 10) + 10 * skip) * width**2
            + (in_channels * k + 28 * depth + 2 + 4 * n_classes) * width + n_classes)


@FAMILIES
@SHAPES
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("width", [1, 4, 9])
def test_parameter_count_matches_the_documented_formula(name, shape, depth, width):
    model = build_model(name, width=width, depth=depth, **shape)
    assert count_parameters(model) == documented_count(
        width=width, depth=depth, in_channels=shape["in_channels"],
        n_classes=shape["n_classes"], dims=len(shape["input_size"]), skip=name == "resnet")


@FAMILIES
def test_parameter_count_does_not_depend_on_the_input_size(name):
    small = build_model(name, width=4, in_channels=1, n_classes=2, input_size=(4, 4))
    large = build_model(name, width=4, in_channels=1, n_classes=2, input_size=(64, 48))
    assert count_parameters(small) == count_parameters(large)


def test_default_depth_is_two_blocks_per_stage():
    assert DEFAULT_DEPTH == 2
    assert len(build_model("resnet", width=4, **D2).blocks) == 3 * DEFAULT_DEPTH


@FAMILIES
@SHAPES
def test_forward_gives_logits_per_class(name, shape):
    model = build_model(name, width=4, depth=1, seed=0, **shape).eval()
    out = model(torch.randn(2, shape["in_channels"], *shape["input_size"]))
    assert out.shape == (2, shape["n_classes"])


def _zero_residual_branches(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for block in model.blocks:
            block.conv2.weight.zero_()


def test_identity_skip_passes_the_input_through_a_zeroed_block():
    model = build_model("resnet", width=4, depth=1, seed=0, **D2).eval()
    _zero_residual_branches(model)
    block = model.blocks[0]  # stage 1: same channels, stride 1, identity skip
    x = torch.randn(2, 4, 8, 8)
    assert block.project is None
    assert torch.equal(block(x), x)


def test_without_skips_a_zeroed_block_outputs_zero():
    model = build_model("resnet-noskip", width=4, depth=1, seed=0, **D2).eval()
    _zero_residual_branches(model)
    assert torch.count_nonzero(model.blocks[0](torch.randn(2, 4, 8, 8))) == 0


def test_stage_transitions_downsample_and_project_only_with_skips():
    skip = build_model("resnet", width=4, depth=1, **D2)
    plain = build_model("resnet-noskip", width=4, depth=1, **D2)
    assert [b.conv1.stride for b in skip.blocks] == [(1, 1), (2, 2), (2, 2)]
    assert [b.project is not None for b in skip.blocks] == [False, True, True]
    assert all(b.project is None for b in plain.blocks)


def test_maps_below_four_stop_downsampling():
    model = build_model("resnet", width=2, depth=1, in_channels=1, n_classes=2,
                        input_size=(3, 3))
    assert [b.conv1.stride for b in model.blocks] == [(1, 1), (1, 1), (1, 1)]


def _tiny_data(shape: dict, n: int = 24) -> TensorData:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, shape["in_channels"], *shape["input_size"], generator=gen)
    y = torch.arange(n) % shape["n_classes"]
    return TensorData("tiny", x, y, x[:8], y[:8], shape["n_classes"])


@FAMILIES
@SHAPES
def test_trains_with_the_penalty_in_2d_and_3d(name, shape):
    hp = HParams(width=2, lr=1e-2, batch_size=8, weight_decay=1e-3)
    trainer = Trainer(hp, _tiny_data(shape), model_name=name, depth=1, epochs=2, seed=0)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    history = trainer.fit()
    assert len(history) == 2
    assert all(torch.isfinite(torch.tensor(r.loss)) for r in history)
    assert history[0].penalty > 0
    assert history[0].loss == pytest.approx(history[0].data_loss + history[0].penalty)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(),
                                                     strict=True))


@pytest.mark.parametrize("depth", [0, -1, 1.5, True])
def test_depth_below_one_or_not_an_integer_is_rejected(depth):
    with pytest.raises(ConfigError, match=r"`depth` must be an integer >= 1"):
        build_model("resnet", width=4, depth=depth, **D2)


@pytest.mark.parametrize("name", ["cnn", "vgg"])
def test_depth_for_a_model_without_stages_is_rejected(name):
    with pytest.raises(ConfigError, match=rf"`depth` must be unset for model='{name}'"):
        build_model(name, width=4, depth=2, **D2)
