"""The design of `study explain --question gap` (study.runtime.gap_design) and the checks and
table of study.explain: the cells, the paired seeds, the params that fix each cell in Optuna,
what a resumed design still lacks, and the settings refused before anything runs."""

from __future__ import annotations

import re

import pytest

from study.config import StudyConfig
from study.errors import ConfigError, StudyError
from study.explain import ExplainOutcome, check_explain, check_gap, gap_lines, table_lines
from study.keys import TRAIN_SEED_ATTR
from study.runtime.explain import CELL_ATTR, missing
from study.runtime.gap_design import MAX_GAP_TRIALS, GapDesign, gap_config
from study.runtime.lifecycle import load_study, prepare_study
from study.runtime.space import suggest_hparams

# The seed question's cross: Adam against SGD at two momenta, Keras's and PyTorch's BatchNorm
# momentum, no dropout against 0.5.
SEED_QUESTION = {"optimizer": "adam,sgd", "momentum": "0.5,0.9", "bn_momentum": "keras,pytorch",
                 "dropout": "0,0.5"}


def config(**values) -> StudyConfig:
    return StudyConfig().replace(**values)


def design(replicates: int = 2, **values) -> GapDesign:
    return GapDesign.from_config(config(**{**SEED_QUESTION, **values}), replicates=replicates)


def test_momentum_is_crossed_for_the_sgd_cells_only():
    cells = design().cells()
    assert len(cells) == 2 * 2 + 2 * 2 * 2  # adam: bn x dropout; sgd: momentum x bn x dropout
    assert {c.momentum for c in cells if c.optimizer == "adam"} == {None}
    assert {c.momentum for c in cells if c.optimizer == "sgd"} == {"0.5", "0.9"}
    assert len({c.name for c in cells}) == len(cells)


def test_every_cell_of_a_replicate_shares_its_training_seed():
    trials = design(replicates=3).trials()
    seeds: dict[int, set[str]] = {}
    for t in trials:
        seeds.setdefault(t.user_attrs[TRAIN_SEED_ATTR], set()).add(t.cell.rsplit("-r", 1)[0])
    assert len(seeds) == 3
    assert all(len(cells) == 12 for cells in seeds.values())
    assert len({t.cell for t in trials}) == len(trials) == 36


def test_the_params_fix_the_searched_options_only():
    trials = {t.cell: t.params for t in design(dropout="0.5").trials()}
    assert trials["adam-bn0.01-do0.5-r0"] == {"optimizer": "adam", "bn_momentum": 0.01}
    assert trials["sgd-m0.9-bn0.1-do0.5-r1"] == {"optimizer": "sgd", "momentum": 0.9,
                                                 "bn_momentum": 0.1}


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask() outside optimize()
def test_the_enqueued_params_are_what_the_trials_train_with(storage_url):
    gap = design(replicates=1)
    study_config = gap_config(config(storage=storage_url, **SEED_QUESTION), width=8, lr=1e-3,
                              batch_size=32, weight_decay=1e-4, design=gap)
    study = load_study(prepare_study(study_config)).study
    for queued in gap.trials():
        study.enqueue_trial(queued.params, user_attrs=queued.user_attrs)
    for queued in gap.trials():
        hp = suggest_hparams(study.ask(), study_config)
        cell = next(c for c in gap.cells() if queued.cell == f"{c.name}-r0")
        assert (hp.optimizer, hp.bn_momentum, hp.dropout) == (
            cell.optimizer, float(cell.bn_momentum), float(cell.dropout))
        assert cell.momentum is None or hp.momentum == float(cell.momentum)
        assert (hp.width, hp.lr, hp.batch_size) == (8, 1e-3, 32)


def test_the_design_fixes_everything_but_the_crossed_options_and_never_prunes():
    gap = design(replicates=2)
    study_config = gap_config(config(**SEED_QUESTION), width=16, lr=1e-3, batch_size=32,
                              weight_decay=1e-4, design=gap)
    assert study_config.fixed_dimensions == {"width": 16, "lr": 1e-3, "batch_size": 32,
                                             "weight_decay": 1e-4, "penalty_mode": "l2-in-loss"}
    assert (study_config.pruner, study_config.n_trials) == ("none", 24)


def test_a_resumed_design_enqueues_only_the_cells_it_lacks():
    trials = design(replicates=2).trials()
    done = [{CELL_ATTR: t.cell} for t in trials[:12]]  # the first replicate ran
    assert missing(trials, done) == trials[12:]


@pytest.mark.parametrize(("replicates", "ok"), [(4, True), (5, False)])
def test_at_most_the_trial_limit(replicates, ok):
    if ok:
        assert len(design(replicates=replicates).trials()) == MAX_GAP_TRIALS
    else:
        with pytest.raises(ConfigError, match=r"^The gap design must have at most 48 trials "
                           r"\(settings x replicates\), but got 12 settings x 5 replicates = "
                           r"60 trials"):
            design(replicates=replicates)


BAD_DESIGNS = {
    "range": ({"dropout": "0:0.5"}, 2,
              "`dropout` must be values for `study explain --question gap`"),
    "momenta_without_sgd": ({"optimizer": "adam,adamw"}, 2,
                            "`momentum` must be a single value when sgd is not among"),
    "replicates": ({}, 0, "`replicates` must be an integer >= 1, but got replicates=0."),
}


@pytest.mark.parametrize("case", BAD_DESIGNS)
def test_a_bad_design_is_refused(case):
    values, replicates, message = BAD_DESIGNS[case]
    with pytest.raises(ConfigError, match=re.escape(message)):
        design(replicates=replicates, **values)


def test_a_width_min_other_than_the_width_is_refused():
    with pytest.raises(ConfigError, match=r"`width_min` must be width_max=32 for `study "
                                          r"explain --question gap`.*but got width_min=4\."):
        check_gap(config(), {"width_min": 4}, replicates=2)


def test_compare_widths_is_refused_for_the_gap():
    with pytest.raises(ConfigError, match=r"`compare_widths` must be unset"):
        check_gap(config(), {}, replicates=2, compare_widths=(4, 32))


def test_the_size_question_refuses_several_values_of_a_training_option():
    with pytest.raises(ConfigError, match=r"`optimizer` must be a single value for `study "
                                          r"explain --question size`"):
        check_explain(config(optimizer="adam,sgd"), n_widths=3, replicates=2)


def test_the_table_aligns_its_columns():
    lines = table_lines([{"setting": "adam, bn 0.01", "verdict": "none"},
                         {"setting": "sgd", "verdict": "overfitting"}])
    assert lines == ["setting        verdict", "-------------  -----------",
                     "adam, bn 0.01  none", "sgd            overfitting"]


def test_an_analysis_without_a_gap_block_is_an_error_not_an_empty_table(tmp_path):
    from study.runtime.session import SessionResult

    session = SessionResult("s", "run", {}, 0, 0, None, None)
    with pytest.raises(StudyError, match=r"study 's' has no `gap` block"):
        gap_lines(ExplainOutcome(session, {"verdict": {}}, tmp_path, "run"))


def test_the_size_question_refuses_a_range_of_a_training_option():
    with pytest.raises(ConfigError, match=r"`dropout` must be a single value"):
        check_explain(config(dropout="0:0.5"), n_widths=3, replicates=2)


def test_the_size_question_accepts_single_training_options():
    assert check_explain(config(optimizer="sgd", momentum="0.5"), n_widths=3,
                         replicates=2) == (4, 11, 32)
