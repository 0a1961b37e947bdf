"""Tests of user model factories: loading by file and by module, building, and the one check a
factory passes before a study (each failure one line naming the factory)."""

from __future__ import annotations

import hashlib
import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from study.errors import ConfigError
from study.training import (
    HParams,
    TensorData,
    Trainer,
    build_model,
    check_model,
    count_parameters,
    is_factory,
    model_sha256,
    penalized_parameters,
)

REPO = Path(__file__).resolve().parents[2]

GOOD = """
from torch import nn

def build(width, *, input_shape, n_classes):
    c = input_shape[0]
    return nn.Sequential(nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, n_classes))
"""


def write(folder: Path, source: str, name: str = "net.py") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


def data(n_classes: int = 3, shape: tuple[int, ...] = (3, 10, 11)) -> TensorData:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(12, *shape, generator=gen)
    y = torch.arange(12) % n_classes
    return TensorData("tiny", x, y, x[:6], y[:6], n_classes)


# --- loading and building ------------------------------------------------------------------------


def test_a_file_factory_builds_at_the_width_it_is_given(tmp_path):
    spec = f"{write(tmp_path, GOOD)}:build"
    small, large = (build_model(spec, width=w, in_channels=3, n_classes=4, input_size=(10, 11))
                    for w in (2, 8))
    assert small[0].out_channels == 2 and large[0].out_channels == 8
    assert count_parameters(large) > count_parameters(small)


def test_a_module_factory_is_imported_from_the_python_path(tmp_path, monkeypatch):
    write(tmp_path, GOOD, name="my_factory_mod.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_factory_mod", raising=False)
    model = build_model("my_factory_mod:build", width=5, in_channels=3, n_classes=2,
                        input_size=(6, 6))
    assert model[0].out_channels == 5


RECORDING = """
from torch import nn
def build(width, *, input_shape, n_classes):
    model = nn.Linear(width, n_classes)
    model.seen = (width, input_shape, n_classes)
    return model
"""


def test_the_factory_gets_channels_first_input_shape_and_classes(tmp_path):
    spec = f"{write(tmp_path, RECORDING)}:build"
    model = build_model(spec, width=3, in_channels=2, n_classes=7, input_size=(4, 5, 6))
    assert model.seen == (3, (2, 4, 5, 6), 7)


def test_seeded_builds_of_a_factory_are_identical(tmp_path):
    spec = f"{write(tmp_path, GOOD)}:build"
    a, b = (build_model(spec, width=4, in_channels=3, n_classes=2, input_size=(6, 6), seed=3)
            for _ in range(2))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_init_schemes_reinitialize_the_factorys_kernels(tmp_path):
    spec = f"{write(tmp_path, GOOD)}:build"
    kwargs = dict(width=4, in_channels=3, n_classes=2, input_size=(6, 6), seed=0)
    torch_init = build_model(spec, **kwargs)
    glorot = build_model(spec, init="glorot", **kwargs)
    assert not torch.equal(torch_init[0].weight, glorot[0].weight)
    assert torch.count_nonzero(glorot[0].bias) == 0


def test_the_penalty_covers_every_conv_and_linear_weight_of_a_factory_model(tmp_path):
    spec = f"{write(tmp_path, GOOD)}:build"
    model = build_model(spec, width=4, in_channels=3, n_classes=2, input_size=(6, 6))
    assert [tuple(p.shape) for p in penalized_parameters(model)] == [(4, 3, 3, 3), (2, 4)]


def test_a_factory_model_trains_with_the_penalty(tmp_path):
    spec = f"{write(tmp_path, GOOD)}:build"
    hp = HParams(width=4, lr=1e-2, batch_size=6, weight_decay=1e-2)
    history = Trainer(hp, data(), model_name=spec, epochs=1, seed=0).fit()
    assert history[0].penalty > 0
    assert history[0].loss == pytest.approx(history[0].data_loss + history[0].penalty)


def test_is_factory_and_source_hash(tmp_path):
    path = write(tmp_path, GOOD)
    assert is_factory(f"{path}:build") and not is_factory("resnet")
    assert model_sha256(f"{path}:build") == hashlib.sha256(path.read_bytes()).hexdigest()
    assert model_sha256("cnn") is None


@pytest.mark.parametrize("example", ["question_cnn.py", "cnn3d.py"])
def test_the_examples_pass_the_check(example):
    shape = (3, 50, 55) if example == "question_cnn.py" else (1, 16, 16, 16)
    found = check_model(f"{REPO / 'examples' / example}:build", widths=(4, 16),
                        data=data(n_classes=30 if len(shape) == 3 else 2, shape=shape))
    assert found.n_params[16] > found.n_params[4]
    assert found.sha256 is not None


# --- the check: one line naming the factory ------------------------------------------------------

BROKEN = {
    "missing_module": ("no_such_module_xyz:build", None,
                       r"`model` 'no_such_module_xyz:build' could not be imported \(is its "
                       r"folder on PYTHONPATH\?\): ModuleNotFoundError"),
    "syntax_error": ("{file}:build", "def build(:\n",
                     r"could not be imported: SyntaxError"),
    "raises_on_import": ("{file}:build", "raise RuntimeError('no GPU here')\n",
                         r"could not be imported: RuntimeError: no GPU here"),
    "missing_attribute": ("{file}:make", GOOD, r"could not be loaded: .* has no attribute "
                                                r"'make'"),
    "not_callable": ("{file}:VALUE", "VALUE = 3\n", r"must name a callable, but VALUE is an int"),
    "missing_file": ("{dir}/nope.py:build", None, r"could not be imported: no file at"),
    "raises": ("{file}:build", "def build(width, *, input_shape, n_classes):\n"
                               "    raise ValueError(f'bad width {width}')\n",
               r"raised at width=2 \(raises.py:2\): ValueError: bad width 2"),
    "returns_no_module": ("{file}:build", "def build(width, **kw):\n    return [width]\n",
                          r"must return a torch.nn.Module, but returned a list at width=2"),
    "wrong_output_shape": ("{file}:build", GOOD.replace("nn.Linear(width, n_classes)",
                                                        "nn.Linear(width, 10)"),
                           r"must map a batch of shape \(2, 3, 10, 11\) to logits of shape "
                           r"\(2, 3\), but returned \(2, 10\) at width=2"),
    "fails_forward": ("{file}:build", GOOD.replace("nn.Conv2d(c,", "nn.Conv2d(c + 1,"),
                      r"failed on a batch of shape \(2, 3, 10, 11\) at width=2: RuntimeError"),
    "ignores_width": ("{file}:build", GOOD.replace("width", "4").replace("def build(4,",
                                                                         "def build(width,"),
                      r"must have more parameters at a larger width, but has (\d+) at width=2 "
                      r"and \1 at width=8 \(does it use its `width` argument\?\)"),
    "no_kernels": ("{file}:build", "from torch import nn\n"
                                   "def build(width, *, input_shape, n_classes):\n"
                                   "    return nn.Sequential(nn.BatchNorm2d(input_shape[0]))\n",
                   r"must contain convolution or linear layers"),
    "non_finite": ("{file}:build", GOOD.replace("nn.Linear(width, n_classes))",
                                                "nn.Linear(width, n_classes), "
                                                "nn.Threshold(1e9, float('nan')))"),
                   r"must return finite logits, but returned NaN/inf at width=2"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_factory_fails_the_check_with_one_line(tmp_path, case):
    spec, source, message = BROKEN[case]
    if source is not None:
        write(tmp_path, source, name=f"{case}.py")
    spec = spec.format(file=tmp_path / f"{case}.py", dir=tmp_path)
    with pytest.raises(ConfigError, match=message) as caught:
        check_model(spec, widths=(2, 8), data=data())
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(f"`model` {spec!r}")


def test_one_width_skips_the_growth_check(tmp_path):
    fixed = GOOD.replace("width", "4").replace("def build(4,", "def build(width,")
    found = check_model(f"{write(tmp_path, fixed)}:build", widths=(6, 6), data=data())
    assert list(found.n_params) == [6]


def test_the_check_leaves_the_global_rng_alone(tmp_path):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    check_model(f"{write(tmp_path, GOOD)}:build", widths=(2, 8), data=data())
    assert torch.equal(torch.rand(3), expected)


# --- dropout and bn_momentum: passed where the factory's signature takes them --------------------

OPTIONS = """
from torch import nn

def build(width, *, input_shape, n_classes, dropout=0.5, bn_momentum=0.2):
    c = input_shape[0]
    model = nn.Sequential(nn.Conv2d(c, width, 3, padding=1),
                          nn.BatchNorm2d(width, momentum=bn_momentum), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                          nn.Linear(width, n_classes))
    model.seen = {"dropout": dropout, "bn_momentum": bn_momentum}
    return model
"""

DROPOUT_ONLY = GOOD.replace("n_classes):", "n_classes, dropout=0.0):")

VAR_KEYWORDS = """
from torch import nn

def build(width, **options):
    model = nn.Linear(width, options["n_classes"])
    model.seen = options
    return model
"""


def _build(spec: str, **options):
    return build_model(spec, width=4, in_channels=3, n_classes=2, input_size=(6, 6), **options)


def test_a_factory_that_takes_the_options_gets_them(tmp_path):
    model = _build(f"{write(tmp_path, OPTIONS)}:build", dropout=0.3, bn_momentum=0.05)
    assert model.seen == {"dropout": 0.3, "bn_momentum": 0.05}
    assert model[1].momentum == 0.05 and model[5].p == 0.3


def test_a_factory_that_takes_the_options_gets_the_defaults_too(tmp_path):
    # The study's values, not the factory's own defaults: the logged params stay true.
    model = _build(f"{write(tmp_path, OPTIONS)}:build")
    assert model.seen == {"dropout": 0.0, "bn_momentum": 0.1}


def test_a_flag_replacing_a_factorys_own_default_is_said_once_per_option(tmp_path, capsys):
    # Found by a first user: build(..., dropout=0.3) without --dropout trained with 0.0, silently.
    from study.config import StudyConfig
    from study.runtime.inputs import check_factory

    spec = f"{write(tmp_path, OPTIONS)}:build"
    check_factory(StudyConfig(model=spec, width_min=2, width_max=8), data())
    assert capsys.readouterr().err.splitlines() == [
        f"warning: {spec} declares dropout=0.5 but is built with dropout=0, the value of "
        f"--dropout; pass --dropout 0.5 to build it with its own.",
        f"warning: {spec} declares bn_momentum=0.2 but is built with bn_momentum=0.1, the value "
        f"of --bn-momentum; pass --bn-momentum 0.2 to build it with its own."]
    check_factory(StudyConfig(model=spec, width_min=2, width_max=8, dropout=("0.5",),
                              bn_momentum=("0.2",)), data())
    check_factory(StudyConfig(model=f"{write(tmp_path, GOOD, 'plain.py')}:build", width_min=2,
                              width_max=8), data())
    assert capsys.readouterr().err == ""  # the same values, or no such argument: nothing to say


def test_a_factory_with_var_keywords_gets_the_options(tmp_path):
    model = _build(f"{write(tmp_path, VAR_KEYWORDS)}:build", dropout=0.2)
    assert model.seen == {"input_shape": (3, 6, 6), "n_classes": 2, "dropout": 0.2,
                          "bn_momentum": 0.1}


def test_a_factory_without_the_options_builds_at_their_defaults(tmp_path):
    model = _build(f"{write(tmp_path, GOOD)}:build", dropout=0.0, bn_momentum=0.1)
    assert model[0].out_channels == 4


def test_a_factory_gets_only_the_options_it_takes(tmp_path):
    model = _build(f"{write(tmp_path, DROPOUT_ONLY)}:build", dropout=0.4)
    assert isinstance(model, torch.nn.Sequential)


@pytest.mark.parametrize(("source", "field", "value"), [
    (GOOD, "dropout", 0.3), (GOOD, "bn_momentum", 0.01), (DROPOUT_ONLY, "bn_momentum", 0.5)])
def test_a_non_default_option_the_factory_cannot_take_is_refused(tmp_path, source, field,
                                                                  value):
    spec = f"{write(tmp_path, source)}:build"
    message = (rf"^`{field}` needs a model factory that accepts a `{field}` argument; "
               rf"{re.escape(spec)} does not, but got {field}={value}\.$")
    with pytest.raises(ConfigError, match=message):
        _build(spec, **{field: value})


def test_the_refusal_names_a_module_factory_by_its_spec(tmp_path, monkeypatch):
    write(tmp_path, GOOD, name="my_plain_net.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_plain_net", raising=False)
    with pytest.raises(ConfigError, match=r"; my_plain_net:build does not, but got "
                                          r"dropout=0\.3\.$"):
        _build("my_plain_net:build", dropout=0.3)


def test_the_check_refuses_the_option_before_a_study_trains(tmp_path):
    spec = f"{write(tmp_path, GOOD)}:build"
    with pytest.raises(ConfigError, match=r"`dropout` needs a model factory"):
        check_model(spec, widths=(2, 8), data=data(), dropout=0.3)
    found = check_model(f"{write(tmp_path, OPTIONS, 'opt.py')}:build", widths=(2, 8),
                        data=data(), dropout=0.3, bn_momentum=0.05)
    assert found.n_params[8] > found.n_params[2]


def test_the_trainer_refuses_the_option_before_training(tmp_path):
    spec = f"{write(tmp_path, GOOD)}:build"
    hp = HParams(width=4, lr=1e-2, batch_size=6, weight_decay=1e-2, bn_momentum=0.01)
    with pytest.raises(ConfigError, match=r"`bn_momentum` needs a model factory .* but got "
                                          r"bn_momentum=0\.01\."):
        Trainer(hp, data(), model_name=spec, epochs=1)


def test_a_factory_model_with_dropout_and_batchnorm_trains_and_splits_the_gap(tmp_path):
    hp = HParams(width=4, lr=1e-2, batch_size=6, weight_decay=1e-2, dropout=0.3)
    trainer = Trainer(hp, data(), model_name=f"{write(tmp_path, OPTIONS)}:build", epochs=1)
    (report,) = trainer.fit()
    assert trainer.has_batchnorm and trainer.has_dropout
    assert report.gap_mode_batchnorm + report.gap_mode_dropout == pytest.approx(
        report.gap_mode, abs=1e-9)
