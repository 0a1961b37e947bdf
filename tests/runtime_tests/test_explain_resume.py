"""Resuming `study explain` (study.runtime.explain_resume): the stored study read from a real
storage, and a changed setting refused in the words of explain's own flags, with advice that
resumes it."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import IntDistribution

from study.config import StudyConfig
from study.errors import ConfigError
from study.keys import CONFIG_ATTR
from study.runtime.explain import CELL_ATTR, ExplainDesign, explain_config, width_grid
from study.runtime.explain_resume import (
    StoredExperiment,
    check_resume,
    stored_experiment,
)
from study.runtime.gap_design import GapDesign, gap_config


def size_config(*, lr: float = 1e-3, weight_decay: float = 1e-2, batch_size: int = 32,
                **flags) -> StudyConfig:
    """The study configuration `study explain --question size` builds from these flags."""
    base = StudyConfig(study_name="e", **{"epochs": 1, **flags})
    grid = width_grid(base.width_min, base.width_max, 3)
    design = ExplainDesign(grid, 1, base.penalty_mode[0], base.seed)
    return explain_config(base, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
                          design=design)


def gap_study_config(*, width: int = 8, **flags) -> StudyConfig:
    """The study configuration `study explain --question gap --width-max WIDTH` builds."""
    base = StudyConfig(study_name="e", **{"epochs": 6, **flags}).replace(width_min=width,
                                                                      width_max=width)
    design = GapDesign.from_config(base, replicates=1)
    return gap_config(base, width=width, lr=1e-3, batch_size=32, weight_decay=1e-2,
                      design=design)


def stored(config: StudyConfig) -> StoredExperiment:
    return StoredExperiment(config, (config.width_min, config.width_max))


def test_a_new_study_has_nothing_to_check():
    check_resume(None, size_config(), question="size")
    check_resume(StoredExperiment(None, ()), size_config(), question="size")


def test_the_same_settings_resume():
    check_resume(stored(size_config(epochs=2)), size_config(epochs=2), question="size")
    check_resume(stored(gap_study_config()), gap_study_config(), question="gap")


@pytest.mark.parametrize(("flags", "created", "got"), [
    ({"lr": 1e-2}, "--lr 0.001", "--lr 0.01"),
    ({"weight_decay": 0.1}, "--weight-decay 0.01", "--weight-decay 0.1"),
    ({"batch_size": 16}, "--batch-size 32", "--batch-size 16"),
    ({"epochs": 2}, "--epochs 1", "--epochs 2"),
    ({"penalty_mode": ("coupled",)}, "--penalty-mode l2-in-loss", "--penalty-mode coupled"),
    ({"width_min": 5}, "--width-min 4", "--width-min 5"),
    ({"dropout": ("0.2",)}, "--dropout 0.0", "--dropout 0.2"),
])
def test_a_changed_flag_is_named_as_the_flag_with_both_values(flags, created, got):
    flag = created.split()[0]
    with pytest.raises(ConfigError, match=(
            rf"^`{flag[2:].replace('-', '_')}` conflicts with study 'e': it was created with "
            rf"{created}, but got {got}; pass {created} to resume it, or a new "
            rf"--study-name NAME\.$")):
        check_resume(stored(size_config()), size_config(**flags), question="size")


def test_the_advice_resumes_where_dropping_the_flag_would_not():
    """A study made with --epochs 2: the same command without the flag asks for explain's
    default (1 epoch), so "drop the flag" cannot resume it; the flag it names does."""
    made = stored(size_config(epochs=2))
    with pytest.raises(ConfigError, match=r"pass --epochs 2 to resume it"):
        check_resume(made, size_config(), question="size")
    check_resume(made, size_config(epochs=2), question="size")


def test_the_gap_width_is_named_as_width_max():
    with pytest.raises(ConfigError, match=r"^`width_max` conflicts with study 'e': it was "
                       r"created with --width-max 8, but got --width-max 16; "):
        check_resume(stored(gap_study_config()), gap_study_config(width=16), question="gap")


@pytest.mark.parametrize(("made", "asked"), [("size", "gap"), ("gap", "size")])
def test_the_other_question_on_the_same_name_is_refused(made, asked):
    was = size_config() if made == "size" else gap_study_config()
    now = gap_study_config() if asked == "gap" else size_config()
    with pytest.raises(ConfigError, match=rf"^`question` conflicts with study 'e': it is a "
                       rf"{made} experiment, but got question='{asked}'; pass --question "
                       rf"{made} to resume it"):
        check_resume(stored(was), now, question=asked)


def test_a_searched_study_is_not_resumed_by_explain():
    searched = StudyConfig(study_name="e")  # study run's defaults: tpe over ranges
    with pytest.raises(ConfigError, match=r"^`study_name` must name a study of `study "
                       r"explain` or a new one, but got study_name='e', a study that searches"):
        check_resume(stored(searched), size_config(), question="size")


def test_under_mlflow_run_the_advice_names_the_mlproject_parameters():
    with pytest.raises(ConfigError, match=r"created with -P lr=0.001, but got -P lr=0.01; pass "
                       r"-P lr=0.001 to resume it, or a new -P study_name=NAME\.$"):
        check_resume(stored(size_config()), size_config(lr=1e-2), question="size",
                     mlflow_run=True)


def test_the_stored_study_is_read_from_the_storage_without_creating_one(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    config = size_config(epochs=2).replace(storage=storage)
    assert stored_experiment(config) is None
    assert not (tmp_path / "optuna.db").exists()  # a missing store file is not created

    study = optuna.create_study(study_name="other", storage=storage)
    assert stored_experiment(config) is None  # no study of the name

    study = optuna.create_study(study_name="e", storage=storage)
    study.set_user_attr(CONFIG_ATTR, config.study_settings())
    for width in (4, 32, 10):
        study.add_trial(optuna.trial.create_trial(
            params={"width": width}, distributions={"width": IntDistribution(4, 32)},
            value=1.0, user_attrs={CELL_ATTR: f"w{width}-r0-none"}))
    study.add_trial(optuna.trial.create_trial(  # not a designed trial: not a stored width
        params={"width": 7}, distributions={"width": IntDistribution(4, 32)}, value=1.0))
    found = stored_experiment(config)
    assert found.widths == (4, 10, 32)
    assert found.config == config


def test_an_unset_value_is_said_as_without_the_flag():
    with pytest.raises(ConfigError, match=r"^`depth` conflicts with study 'e': it was created "
                       r"without --depth, but got --depth 3; leave out --depth to resume it, "
                       r"or a new --study-name NAME\.$"):
        check_resume(stored(size_config(model="resnet")), size_config(model="resnet", depth=3),
                     question="size")
    with pytest.raises(ConfigError, match=r"created with --depth 3, but got no --depth; pass "
                       r"--depth 3 to resume it"):
        check_resume(stored(size_config(model="resnet", depth=3)), size_config(model="resnet"),
                     question="size")


def test_a_value_is_written_so_that_passing_it_resumes():
    """Found in review: six significant digits showed two different lrs as one, and passing
    the advised value did not resume."""
    was, now = size_config(lr=0.00012345678), size_config(lr=0.000123456789)
    with pytest.raises(ConfigError) as caught:
        check_resume(stored(was), now, question="size")
    advised = float(str(caught.value).split("; pass --lr ")[1].split()[0])
    check_resume(stored(was), size_config(lr=advised), question="size")
