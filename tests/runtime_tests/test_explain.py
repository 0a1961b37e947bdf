"""The design of `study explain` (study.runtime.explain): the width grid, the paired trials,
and what a resumed experiment still lacks."""

from __future__ import annotations

import pytest

from study.config import StudyConfig
from study.errors import ConfigError
from study.explain import DEFAULT_N_WIDTHS, _name
from study.keys import TRAIN_SEED_ATTR
from study.runtime.explain import CELL_ATTR, ExplainDesign, explain_config, missing, width_grid


def test_widths_lie_on_a_log_grid_between_the_bounds():
    assert width_grid(2, 64, 6) == (2, 4, 8, 16, 32, 64)


@pytest.mark.parametrize(("n", "ok"), [(2, False), (3, True)])
def test_at_least_three_widths(n, ok):
    if ok:
        assert len(width_grid(4, 32, n)) == n
    else:
        with pytest.raises(ConfigError, match=r"`n_widths` must be an integer >= 3"):
            width_grid(4, 32, n)


@pytest.mark.parametrize(("n", "ok"), [(5, True), (6, False)])
def test_no_more_widths_than_integers_in_the_range(n, ok):
    if ok:
        assert width_grid(4, 8, n) == (4, 5, 6, 7, 8)
    else:
        with pytest.raises(ConfigError, match=r"`n_widths` must fit between width_min=4"):
            width_grid(4, 8, n)


def test_each_trial_is_paired_with_a_control_of_the_same_seed():
    design = ExplainDesign((4, 8, 16), replicates=2, mode="l2-in-loss", seed=0)
    trials = design.trials()
    assert len(trials) == 3 * 2 * 2
    by_seed: dict[int, list[str]] = {}
    for t in trials:
        by_seed.setdefault(t.user_attrs[TRAIN_SEED_ATTR], []).append(t.params["penalty_mode"])
    assert len(by_seed) == 6 and all(sorted(m) == ["l2-in-loss", "none"]
                                     for m in by_seed.values())
    assert len({t.cell for t in trials}) == len(trials)


def test_an_experiment_in_mode_none_has_no_control():
    trials = ExplainDesign((4, 8, 16), replicates=1, mode="none", seed=0).trials()
    assert len(trials) == 3 and all("penalty_mode" not in t.params for t in trials)


def test_a_resumed_experiment_enqueues_only_the_cells_it_lacks():
    trials = ExplainDesign((4, 8, 16), replicates=1, mode="l2-in-loss", seed=0).trials()
    done = [{CELL_ATTR: t.cell} for t in trials[:4]]
    assert missing(trials, done) == trials[4:]


def test_the_design_fixes_everything_but_size_and_mode():
    design = ExplainDesign((4, 8, 16), replicates=2, mode="l2-in-loss", seed=0)
    config = explain_config(StudyConfig(), lr=1e-5, batch_size=32, weight_decay=1e-2,
                            design=design)
    assert config.fixed_dimensions == {"lr": 1e-5, "batch_size": 32, "weight_decay": 1e-2,
                                       "optimizer": "adam", "momentum": 0.9, "dropout": 0.0,
                                       "bn_momentum": 0.1}
    assert config.penalty_mode == ("l2-in-loss", "none")
    assert (config.width_min, config.width_max, config.n_trials) == (4, 16, 12)
    assert (config.pruner, config.sampler) == ("none", "random")


@pytest.mark.parametrize(("n", "renamed"), [(DEFAULT_N_WIDTHS, False),
                                            (DEFAULT_N_WIDTHS - 1, True),
                                            (DEFAULT_N_WIDTHS + 1, True)])
def test_a_grid_of_another_size_names_another_study(n, renamed):
    """The automatic name: the default grid keeps the name it had before the grid was part of
    it (a study started then is resumed), any other grid names a study of its own."""
    config = StudyConfig(width_min=2, width_max=64)
    grid = width_grid(2, 64, n)
    # The name the same experiment had before the grid was part of it (computed at 8ee6e68).
    assert (_name(config, "stem", grid=grid) != "explain-stem-89cd653d") is renamed


def test_the_commands_default_grid_is_the_one_that_keeps_the_names():
    from study.cli import cli

    (option,) = [p for p in cli.commands["explain"].params if p.name == "n_widths"]
    assert option.default == DEFAULT_N_WIDTHS


def test_a_resume_on_the_stored_grid_or_a_grid_holding_it_passes_another_grid_fails():
    from study.explain import check_grid

    config = StudyConfig(study_name="x", width_min=4, width_max=32)
    stored = (4, 8, 16, 32)
    check_grid(config, (4, 6, 9, 14, 21, 32), ())  # no study yet: nothing to hold
    check_grid(config, (4, 8, 16, 32), stored)  # the same grid (more replicates: same widths)
    check_grid(config, (4, 6, 8, 11, 16, 23, 32), stored)  # holds every stored width: extends
    check_grid(config, (4, 8, 16), stored)  # another range: check_resume names --width-max
    with pytest.raises(ConfigError, match=r"`n_widths` must be a grid that holds the widths of "
                       r"study 'x' \(4, 8, 16, 32: --n-widths 4\), not 4, 6, 9, 14, 21, 32; "):
        check_grid(config, (4, 6, 9, 14, 21, 32), stored)
