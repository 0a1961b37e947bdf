"""The gap block (study.analysis.gap) on hand-made records: its bookkeeping, each rule just on
both sides of its boundary, and the edges (pruned trials, one trial, missing keys)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from scipy import stats

from study.analysis.gap import CODES, QUESTION, GapTrial, gap_block, gap_table_rows, short_line
from study.analysis.gap_stats import GAP_FLOOR, GAP_FRACTION


def record(epoch: int, data_loss: float, timing: float, mode: float, generalization: float,
           **split: float) -> dict:
    """One epoch's record as the trainer logs it; ``split``: ``mode_batchnorm=...``."""
    rec = {"epoch": epoch, "loss": data_loss, "data_loss": data_loss, "penalty": 0.0,
           "val_loss": data_loss + timing + mode + generalization, "val_accuracy": 0.5,
           "gap_timing": timing, "gap_mode": mode, "gap_generalization": generalization}
    rec.update({f"gap_{k}": v for k, v in split.items()})
    return rec


def spread(center: float, half: float, n: int = 3) -> list[float]:
    """``n`` values whose 95% t interval of the mean is exactly ``center -/+ half``."""
    offsets = np.linspace(-1, 1, n)
    scale = half / (stats.t.ppf(0.975, n - 1) * np.std(offsets, ddof=1) / math.sqrt(n))
    return list(center + scale * offsets)


def study(parts: dict[str, list[float] | float], *, n: int = 3, data_loss: float = 1.0,
          bn: bool = True, dropout: bool = False, epochs: int = 1, **split) -> list[GapTrial]:
    """``n`` trials of ``epochs`` equal epochs; each part a value or one value per trial."""
    def at(value, i):
        return value[i] if isinstance(value, list) else value

    return [GapTrial([record(e, data_loss, *(at(parts[k], i) for k in
                                             ("timing", "mode", "generalization")),
                            **{k: at(v, i) for k, v in split.items()})
                      for e in range(1, epochs + 1)], has_batchnorm=bn, has_dropout=dropout)
            for i in range(n)]


def code(trials, **kwargs) -> str:
    return gap_block(trials, **kwargs)["verdict"]["code"]


JITTER = [-0.01, 0.0, 0.01]  # a small spread, so every interval has a width


# -- bookkeeping --------------------------------------------------------------------------------
def test_parts_add_up_to_the_gap_and_the_gap_to_validation_minus_training():
    trials = study({"timing": [-0.2, -0.1, -0.15], "mode": [0.5, 0.7, 0.4],
                    "generalization": [0.01, 0.03, 0.02]}, epochs=3)
    for entry in gap_block(trials)["epochs"]:
        parts = sum(entry[k]["estimate"] for k in ("timing", "mode", "generalization"))
        assert math.isclose(parts, entry["gap"]["estimate"], abs_tol=1e-12)
        assert math.isclose(entry["val_loss"]["estimate"] - entry["train_data_loss"]["estimate"],
                            entry["gap"]["estimate"], abs_tol=1e-12)
        assert math.isclose(entry["lag"]["estimate"],
                            entry["timing"]["estimate"] + entry["mode"]["estimate"])


def test_an_estimate_is_the_mean_over_trials_with_its_t_interval():
    trials = study({"timing": [0.1, 0.2, 0.3], "mode": 0.0, "generalization": 0.0}, bn=False)
    timing = gap_block(trials)["epochs"][0]["timing"]
    half = stats.t.ppf(0.975, 2) * 0.1 / math.sqrt(3)  # sd 0.1, n 3, 2 df
    assert timing["estimate"] == pytest.approx(0.2)
    assert timing["ci95"] == pytest.approx([0.2 - half, 0.2 + half])


def test_the_level_keyword_sets_the_interval():
    trials = study({"timing": [0.1, 0.2, 0.3], "mode": 0.0, "generalization": 0.0}, bn=False)
    lo, hi = gap_block(trials, level=0.9)["epochs"][0]["timing"]["ci95"]
    assert hi - lo == pytest.approx(2 * stats.t.ppf(0.95, 2) * 0.1 / math.sqrt(3))


def test_the_block_is_plain_json_with_the_question():
    block = gap_block(study({"timing": -0.1, "mode": 0.5, "generalization": JITTER}, epochs=2))
    assert json.loads(json.dumps(block, allow_nan=False)) == block
    assert block["question"] == QUESTION == "Why does validation lag training?"
    assert block["n_trials"] == 3 and "groups" not in block
    assert block["verdict"]["code"] in CODES


# -- the threshold: the gap's interval against max(floor, fraction x training loss) -----------
THRESHOLD = GAP_FRACTION * 1.0  # at a training data loss of 1 the fraction applies
EPS = 1e-6


def _gap(lo: float, hi: float, data_loss: float = 1.0) -> list[GapTrial]:
    """A BatchNorm model whose whole gap is mode, its 95% interval exactly [lo, hi]."""
    return study({"timing": 0.0, "mode": spread((lo + hi) / 2, (hi - lo) / 2),
                  "generalization": 0.0}, data_loss=data_loss)


def test_a_gap_whose_lower_bound_is_just_above_the_threshold_is_explained():
    assert code(_gap(THRESHOLD + EPS, 0.2)) == "normalization-statistics"


def test_a_gap_whose_lower_bound_is_just_below_the_threshold_is_inconclusive():
    verdict = gap_block(_gap(THRESHOLD - EPS, 0.2))["verdict"]
    assert verdict["code"] == "inconclusive"
    assert "may still be negligible: its interval reaches into ±" in verdict["text"]


def test_a_gap_whose_interval_is_just_inside_the_threshold_is_none():
    verdict = gap_block(_gap(-0.01, THRESHOLD - EPS))["verdict"]
    assert verdict["code"] == "none"
    assert "0.05" in verdict["text"] and verdict["try"] == []


def test_a_gap_whose_interval_reaches_just_past_the_threshold_is_not_none():
    assert code(_gap(-0.01, THRESHOLD + EPS)) == "inconclusive"


def test_the_floor_applies_at_a_small_training_loss():
    # at a loss of 0.2, 5% is 0.01, below the 0.02-nat floor
    assert code(_gap(GAP_FLOOR + EPS, 0.1, data_loss=0.2)) == "normalization-statistics"
    assert code(_gap(GAP_FLOOR - EPS, 0.1, data_loss=0.2)) == "inconclusive"


def test_a_negative_gap_just_past_minus_the_threshold_is_explained():
    trials = study({"timing": spread(-0.1 - THRESHOLD - EPS / 2, 0.1 - EPS / 2), "mode": 0.0,
                    "generalization": 0.0}, bn=False)
    assert code(trials) == "epoch-averaging"


def test_epoch_averaging_names_a_lag_that_remains_at_the_epochs_end_and_its_advice():
    """Found by a first user: validation below the epoch's mean but above its end, by a
    BatchNorm part shown above the threshold, read "nothing to fix"."""
    still = study({"timing": -0.6, "mode": [0.14, 0.15, 0.16], "generalization": 0.02})
    verdict = gap_block(still)["verdict"]
    assert verdict["code"] == "epoch-averaging"
    assert verdict["try"][0].startswith("compare validation with the training loss at the "
                                        "epoch's end"), verdict["try"]
    assert "validation is still 0.17 above it, and BatchNorm statistics put 0.15" in \
        verdict["try"][0], verdict["try"]
    assert any("higher BatchNorm momentum" in t for t in verdict["try"][1:])
    level = study({"timing": -0.6, "mode": [0.0, 0.01, 0.02], "generalization": 0.0})
    tries = gap_block(level)["verdict"]["try"]
    assert len(tries) == 1 and tries[0].startswith("nothing to fix: compare"), tries


# -- the carrier: the largest part, its paired lead over every other part shown ---------------
def _lead(lo: float) -> list[GapTrial]:
    """Mode leads generalization by a per-trial difference whose interval starts at ``lo``;
    both parts are large and vary between trials."""
    generalization = [0.2, 0.3, 0.4]
    lead = spread(lo + 0.05, 0.05)
    return study({"timing": 0.0, "mode": [g + d for g, d in zip(generalization, lead,
                                                                 strict=True)],
                  "generalization": generalization})


def test_a_lead_whose_interval_is_just_above_zero_carries():
    assert code(_lead(EPS)) == "normalization-statistics"


def test_a_lead_whose_interval_is_just_below_zero_does_not_carry():
    verdict = gap_block(_lead(-EPS))["verdict"]
    assert verdict["code"] == "inconclusive"
    assert "BatchNorm statistics" in verdict["text"] and "generalization" in verdict["text"]


def test_the_lead_is_paired_within_trials_not_read_off_overlapping_intervals():
    w = np.array([-0.05, 0.0, 0.05])  # every trial shifts mode and generalization together
    trials = study({"timing": list(-2 * w), "mode": list(0.4 + w),
                    "generalization": list(0.3 + w)})
    entry = gap_block(trials)["epochs"][0]
    assert entry["mode"]["ci95"][0] < entry["generalization"]["ci95"][1]  # they overlap
    assert entry["carrier"] == "mode_batchnorm"


# -- the codes ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("parts", "kinds", "split", "expected"), [
    ((-0.1, 0.5, JITTER), (True, False), {}, "normalization-statistics"),
    ((-0.1, 0.5, JITTER), (True, True), {"mode_batchnorm": 0.6, "mode_dropout": -0.1},
     "normalization-statistics"),
    ((-0.1, -0.4, JITTER), (True, True), {"mode_batchnorm": 0.05, "mode_dropout": -0.45},
     "dropout"),
    ((-0.1, -0.4, JITTER), (False, True), {}, "dropout"),
    ((-0.5, 0.0, JITTER), (False, False), {}, "epoch-averaging"),
    ((-0.02, 0.0, [0.39, 0.4, 0.41]), (False, False), {}, "overfitting"),
    ((0.01, 0.0, JITTER), (False, False), {}, "none"),
])
def test_each_code_from_the_part_that_carries_the_gap(parts, kinds, split, expected):
    trials = study(dict(zip(("timing", "mode", "generalization"), parts, strict=True)),
                   bn=kinds[0], dropout=kinds[1], **split)
    verdict = gap_block(trials)["verdict"]
    assert verdict["code"] == expected
    assert re.search(r"\d\.\d", verdict["text"])
    assert bool(verdict["try"]) == (expected != "none")


def test_normalization_statistics_says_what_to_try():
    verdict = gap_block(study({"timing": -0.1, "mode": 0.5, "generalization": JITTER}))["verdict"]
    tries = " ".join(verdict["try"])
    assert "higher BatchNorm momentum" in tries and "default is 0.1" in tries \
        and "smaller batches" in tries
    assert "recompute the BatchNorm statistics" in tries
    assert "the BatchNorm statistics carry 0.50" in verdict["text"]


def test_two_equal_parts_are_inconclusive():
    trials = study({"timing": 0.3, "mode": 0.3, "generalization": JITTER})
    assert code(trials) == "inconclusive"


def test_mode_without_batchnorm_or_dropout_cannot_be_attributed():
    trials = study({"timing": -0.1, "mode": 0.5, "generalization": JITTER}, bn=False)
    block = gap_block(trials)
    assert block["early"]["carrier"] == "mode"
    assert block["verdict"]["code"] == "inconclusive"


# -- missing split keys -----------------------------------------------------------------------
def test_both_layers_without_the_split_report_mode_only_and_say_so():
    block = gap_block(study({"timing": -0.1, "mode": 0.5, "generalization": JITTER},
                            dropout=True))
    entry = block["epochs"][0]
    assert "mode" in entry and "mode_batchnorm" not in entry and "mode_dropout" not in entry
    assert block["verdict"]["code"] == "inconclusive"
    assert "3 trials with both BatchNorm and dropout logged no split" in block["verdict"]["text"]


def test_a_split_that_does_not_add_up_to_mode_counts_as_missing():
    trials = study({"timing": -0.1, "mode": 0.5, "generalization": JITTER}, dropout=True,
                   mode_batchnorm=0.4, mode_dropout=0.0)
    assert "mode_batchnorm" not in gap_block(trials)["epochs"][0]


def test_one_trial_without_the_split_leaves_the_epoch_unsplit():
    trials = study({"timing": -0.1, "mode": 0.5, "generalization": JITTER}, dropout=True,
                   mode_batchnorm=0.6, mode_dropout=-0.1)
    bare = study({"timing": -0.1, "mode": 0.5, "generalization": JITTER}, dropout=True, n=1)
    assert "mode_batchnorm" in gap_block(trials)["epochs"][0]
    assert "mode_batchnorm" not in gap_block(trials + bare)["epochs"][0]


def test_a_model_with_batchnorm_only_has_all_of_mode_in_batchnorm():
    entry = gap_block(study({"timing": -0.1, "mode": 0.5, "generalization": JITTER}))
    first = entry["epochs"][0]
    assert first["mode_batchnorm"] == first["mode"] and "mode_dropout" not in first


# -- pruned trials, one trial, no trials, bad records ------------------------------------------
def test_a_pruned_trial_counts_only_at_the_epochs_it_reached():
    full = study({"timing": [-0.1, -0.2, -0.3], "mode": 0.0, "generalization": 0.0}, bn=False,
                 epochs=3)
    pruned = study({"timing": -0.9, "mode": 0.0, "generalization": 0.0}, bn=False, n=1)
    block = gap_block(full + pruned)
    assert [e["n"] for e in block["epochs"]] == [4, 3, 3]
    assert block["epochs"][0]["timing"]["estimate"] == pytest.approx(-1.5 / 4)
    assert block["epochs"][1]["timing"]["estimate"] == pytest.approx(-0.2)
    assert any("pruned" in note for note in block["notes"])


def test_one_trial_gives_estimates_without_intervals_and_says_so():
    block = gap_block(study({"timing": -0.1, "mode": 0.5, "generalization": 0.0}, n=1,
                            epochs=2))
    assert block["n_trials"] == 1
    assert all(e["gap"]["ci95"] == [None, None] and e["carrier"] is None
               for e in block["epochs"])
    assert block["verdict"]["code"] == "inconclusive"
    assert "one trial gives no interval" in block["verdict"]["text"]
    assert block["closes_at_epoch"] is None
    assert "one trial" in short_line(block)
    assert gap_table_rows(block)[0]["gap epoch 1"] == "0.40"  # estimates only over epochs


def test_no_trials_give_an_empty_inconclusive_block():
    block = gap_block([])
    assert (block["n_trials"], block["epochs"], block["closes_at_epoch"]) == (0, [], None)
    assert block["verdict"]["code"] == "inconclusive"
    assert short_line(block) == "Gap: inconclusive. No trial logged it at epoch 1."


def test_trials_without_gap_records_are_left_out_and_counted():
    bare = GapTrial([{"epoch": 1, "data_loss": 1.0, "val_loss": 1.2}], True, False)
    block = gap_block([*study({"timing": -0.1, "mode": 0.5, "generalization": JITTER}), bare])
    assert block["n_trials"] == 3
    assert "1 of 4 trials logged no gap parts" in block["notes"][0]


def test_a_record_whose_parts_do_not_add_up_is_left_out():
    trials = study({"timing": -0.1, "mode": 0.5, "generalization": JITTER})
    broken = record(1, 1.0, -0.1, 0.5, 0.0)
    broken["val_loss"] += 0.01
    block = gap_block([*trials, GapTrial([broken], True, False)])
    assert block["epochs"][0]["n"] == 3
    assert any("do not add up" in note for note in block["notes"])


def test_records_without_an_epoch_number_count_from_one():
    records = [record(1, 1.0, -0.1, 0.5, 0.0), record(2, 0.5, -0.05, 0.2, 0.0)]
    for r in records:
        del r["epoch"]
    block = gap_block([GapTrial(records, True, False)] * 2)
    assert [e["epoch"] for e in block["epochs"]] == [1, 2]


# -- the closing epoch ----------------------------------------------------------------------------
def _lags(*lags: float, n: int = 3) -> list[GapTrial]:
    """Trials whose lag (all timing) is exactly ``lags[k]`` at epoch k + 1."""
    return [GapTrial([record(k + 1, 1.0, lag, 0.0, j) for k, lag in enumerate(lags)],
                     False, False) for j in JITTER[:n]]


def test_the_lag_closes_at_the_first_epoch_it_stays_at_most_the_threshold():
    assert gap_block(_lags(0.5, 0.2, THRESHOLD - EPS, 0.0))["closes_at_epoch"] == 3


def test_a_lag_just_past_the_threshold_has_not_closed():
    assert gap_block(_lags(0.5, 0.2, THRESHOLD + EPS, 0.0))["closes_at_epoch"] == 4


def test_validation_below_the_reported_training_loss_has_caught_up():
    assert gap_block(_lags(0.5, -0.3, -0.2))["closes_at_epoch"] == 2


def test_a_lag_that_reopens_has_not_closed_before():
    assert gap_block(_lags(0.5, 0.01, 0.2, 0.0))["closes_at_epoch"] == 4


def test_a_lag_that_never_closes_is_none():
    block = gap_block(_lags(0.5, 0.3))
    assert block["closes_at_epoch"] is None
    assert "not closed by epoch 2" in short_line(block)


def test_an_uncertain_last_epoch_leaves_the_closing_unclear_not_closed_earlier():
    """Found by a user: "no lag from epoch 2" beside a lag whose interval at epoch 4 straddled
    the threshold (+0.076 [+0.053, +0.099] against 0.058): a closing "from epoch N on" must
    hold at every later epoch."""
    trials = _lags(0.5, 0.0)
    trials += [GapTrial([record(1, 1.0, 0.5, 0.0, 0.0), record(2, 1.0, 0.0, 0.0, 0.0),
                         record(3, 1.0, lag, 0.0, 0.0)], False, False) for lag in (-0.3, 0.3)]
    block = gap_block(trials)
    assert block["epochs"][2]["n"] == 2
    assert (block["closes_at_epoch"], block["closing"]) == (None, "unclear")
    assert gap_table_rows(block)[0]["lag"] == "lag unclear at epoch 3"
    assert short_line(block).endswith("; lag unclear at epoch 3.")


def test_an_uncertain_middle_epoch_moves_the_closing_past_it():
    trials = _lags(0.5, 0.0, 0.0)
    trials += [GapTrial([record(1, 1.0, 0.5, 0.0, 0.0), record(2, 1.0, lag, 0.0, 0.0),
                         record(3, 1.0, 0.0, 0.0, 0.0)], False, False) for lag in (-0.3, 0.3)]
    block = gap_block(trials)
    assert block["closes_at_epoch"] == 3
    assert "closes at epoch 3" in short_line(block)


# -- the early window ----------------------------------------------------------------------------
def test_the_early_window_averages_each_trial_over_its_first_epochs():
    trials = [GapTrial([record(1, 1.0, -0.1, 0.6, j), record(2, 0.6, -0.1, 0.2, j)], True,
                       False) for j in JITTER]
    stopped = GapTrial([record(1, 1.0, -0.1, 5.0, 0.0)], True, False)
    block = gap_block([*trials, stopped], early_epochs=2)
    assert block["early"]["epochs"] == [1, 2] and block["early"]["n"] == 3
    assert block["early"]["mode"]["estimate"] == pytest.approx(0.4)
    assert "epochs 1-2" in block["verdict"]["text"]


def test_early_epochs_below_one_is_refused():
    with pytest.raises(ValueError, match="early_epochs"):
        gap_block([], early_epochs=0)


# -- groups, the line, the table -----------------------------------------------------------------
def _grouped() -> list[GapTrial]:
    bn = study({"timing": -0.1, "mode": 0.5, "generalization": JITTER}, epochs=2)
    drop = study({"timing": -0.1, "mode": -0.4, "generalization": JITTER}, bn=False,
                 dropout=True, epochs=2)
    return ([GapTrial(t.curve, t.has_batchnorm, t.has_dropout, "adam, bn 0.01") for t in bn]
            + [GapTrial(t.curve, t.has_batchnorm, t.has_dropout, "sgd, dropout 0.5")
               for t in drop] + [GapTrial(bn[0].curve, True, False)])


def test_each_group_is_the_block_of_its_own_trials():
    trials = _grouped()
    block = gap_block(trials)
    assert list(block["groups"]) == ["adam, bn 0.01", "sgd, dropout 0.5"]
    assert block["n_trials"] == 7
    for label, group in block["groups"].items():
        alone = gap_block([t for t in trials if t.group == label])
        assert group == {k: v for k, v in alone.items() if k not in ("question", "groups")}
    codes = [g["verdict"]["code"] for g in block["groups"].values()]
    assert codes == ["normalization-statistics", "dropout"]


def test_the_short_line_names_the_gap_the_part_and_the_closing():
    block = gap_block(study({"timing": -0.1, "mode": 0.5, "generalization": JITTER},
                            epochs=1))
    line = short_line(block)
    assert re.fullmatch(r"Gap: normalization-statistics\. Validation lags training by 0\.40 "
                        r"at epoch 1, carried by BatchNorm statistics \(\+0\.50 \[\+0\.50, "
                        r"\+0\.50\]\), more than the whole gap \(the rest: epoch averaging -0\.10, "
                        r"generalization \(overfitting\) 0\.00\); lag not closed by epoch 1\.",
                        line), line


def test_the_short_line_of_a_negative_gap_says_when_a_later_lag_closes():
    below = gap_block(study({"timing": -0.5, "mode": 0.0, "generalization": JITTER}, bn=False,
                            epochs=3))
    assert short_line(below).startswith("Gap: epoch-averaging. Validation is below training")
    assert short_line(below).endswith("; no lag through epoch 3.")
    later = gap_block(_lags(-0.5, 0.5, 0.0))  # a lag opens at epoch 2 and closes at 3
    assert later["closes_at_epoch"] == 3
    assert short_line(later).endswith("; a lag opens later, closes at epoch 3.")
    still = gap_block(_lags(-0.5, 0.5, 0.5))
    assert short_line(still).endswith("; a lag opens later, not closed by epoch 3.")


def test_a_negative_gap_that_only_the_first_epoch_cannot_tell_claims_no_lag_that_opens():
    """Found by a first user: "a lag opens later (closes at epoch 2)" where epoch 1's interval
    straddled the threshold and epoch 2 was wholly below training."""
    first = spread(-0.3, 0.6)
    trials = [GapTrial([record(1, 1.0, first[i], 0.0, 0.0), record(2, 1.0, -0.25 + j, 0.0, 0.0)],
                       has_batchnorm=False, has_dropout=False) for i, j in enumerate(JITTER)]
    block = gap_block(trials)
    assert block["closes_at_epoch"] == 2
    assert (block["closing"], block["closing_reading"]) == ("closed", "no-lag-from")
    line = short_line(block)
    assert "opens" not in line and "closes" not in line
    assert line.endswith("; no lag from epoch 2.")
    assert gap_table_rows(block)[0]["lag"] == "no lag from epoch 2"


def test_a_gap_within_the_threshold_at_every_epoch_is_no_lag_whatever_its_parts_say():
    """Found by a first user: verdict none beside a closing that "cannot be told", because
    the parts' intervals are wide while they cancel in the gap."""
    timing = spread(0.0, 0.4)
    trials = [GapTrial([record(e, 1.0, timing[i], 0.0, -timing[i] + j) for e in (1, 2, 3)],
                       has_batchnorm=False, has_dropout=False) for i, j in enumerate(JITTER)]
    block = gap_block(trials)
    assert block["verdict"]["code"] == "none" and block["closing"] == "unclear"
    assert block["closing_reading"] == "no-gap"
    assert gap_table_rows(block)[0]["lag"] == "no lag through epoch 3"
    grouped = {"groups": {"sgd": block, "adam": gap_block(_lags(0.5, 0.5, 0.5))}}
    assert ("; no lag through epoch 3 in 1 of 2 (sgd), lag not closed by epoch 3 in 1 (adam).") \
        in short_line(grouped)


def test_the_line_of_settings_names_the_largest_carrier_and_its_advice_where_there_is_one():
    """Found by a first user: the line of settings gave codes without a size or advice."""
    bn = gap_block(study({"timing": -0.1, "mode": 0.5, "generalization": JITTER}))
    small = gap_block(study({"timing": -0.1, "mode": 0.2, "generalization": JITTER}))
    line = short_line({"groups": {"bn 0.01": bn, "bn 0.1": small}})
    assert line.endswith(" Largest: BatchNorm statistics +0.50 [+0.50, +0.50] at epoch 1 "
                         "(bn 0.01); try a higher BatchNorm momentum in PyTorch's convention "
                         "(its default is 0.1; Keras's 0.99 is 0.01 there): the running "
                         "statistics then follow the moving weights in fewer steps (each "
                         "setting's advice: its section of the report)."), line
    averaging = {"groups": {"a": gap_block(_lags(0.5, 0.5, 0.5)), "b": gap_block(_lags(0.3))}}
    assert "; try" not in short_line(averaging)  # nothing to fix: no advice in the line


def test_validation_clearly_below_training_reads_as_no_lag_and_gives_no_grouping_advice():
    """Found by a first user: one setting's trials, validation below training at every epoch,
    told to "group the trials by setting" under a verdict that did not say it does not lag."""
    shift = spread(0.0, 0.5)  # timing and mode trade places from trial to trial
    trials = [GapTrial([record(e, 1.0, -0.25 + shift[i], 0.1 - shift[i] + j, 0.0)
                        for e in (1, 2)], has_batchnorm=True, has_dropout=False, group="adam")
              for i, j in enumerate(JITTER)]
    group = gap_block(trials)["groups"]["adam"]
    verdict = group["verdict"]
    assert verdict["code"] == "none"  # the question's answer: validation does not lag
    assert verdict["text"].startswith("At epoch 1 validation does not lag training: it is "
                                      "below it, the gap -0.15 (95% CI")
    assert verdict["text"].endswith("Validation is behind training at no epoch through 2.")
    assert not any("group the trials" in t for t in verdict["try"])
    pooled = gap_block([GapTrial(t.curve, True, False) for t in trials])["verdict"]
    assert pooled["code"] == "none" and pooled["try"] == []


def test_one_trial_below_training_claims_no_later_lag_it_cannot_show():
    block = gap_block(study({"timing": -0.5, "mode": 0.0, "generalization": 0.0}, n=1,
                            bn=False, epochs=2))
    assert block["closes_at_epoch"] is None
    assert block["closing"] == block["closing_reading"] == "unclear"
    line = short_line(block)
    assert line.endswith("; lag unclear at epoch 2.")
    assert "a lag opens later (" not in line


def test_the_short_line_of_an_uncertain_negative_gap_puts_its_code_first_and_no_closing():
    block = gap_block(study({"timing": [-0.9, 0.1, -0.3], "mode": 0.0, "generalization": 0.0},
                            bn=False, epochs=3))
    line = short_line(block)
    assert block["verdict"]["code"] == "inconclusive" and block["early"]["gap"]["estimate"] < 0
    assert line.startswith("Gap: inconclusive. Validation minus training loss: -0.37 [")
    assert "closes at epoch 1" not in line


def _below_then_unsure() -> list[GapTrial]:
    """Validation below training at epoch 1 (epoch averaging); no lag at epoch 2; at epoch 3
    a lag whose interval straddles the threshold (0.10 [-0.20, 0.40])."""
    lag3 = spread(0.10, 0.30)
    return [GapTrial([record(1, 1.0, -0.5 + j, 0.0, 0.0),
                      record(2, 1.0, -0.1 + j, 0.0, 0.0),
                      record(3, 1.0, lag3[i], 0.0, 0.0)], has_batchnorm=False,
                     has_dropout=False)
            for i, j in enumerate(JITTER)]


def test_a_later_epoch_that_cannot_tell_is_unclear_in_every_text_not_no_lag():
    """Found by a user: "No lag from epoch 3 on ..., though epoch 4 cannot tell" contradicted
    itself, and the table said "no lag" and the line of settings "behind at no epoch"."""
    block = gap_block(_below_then_unsure())
    assert (block["closes_at_epoch"], block["closing"]) == (None, "unclear")
    assert block["closing_reading"] == "unclear"
    line = short_line(block)
    assert line.endswith("; lag unclear at epoch 3.")
    assert gap_table_rows(block)[0]["lag"] == "lag unclear at epoch 3"
    text = block["verdict"]["text"]
    assert text.endswith("Lag unclear at epoch 3: whether validation lags training at epoch 3 "
                         "cannot be told (lag +0.10 [-0.20, +0.40] against a threshold of 0.05, "
                         "3 trials: its interval straddles it; more trials would tell).")
    grouped = short_line({"groups": {"a": block, "b": gap_block(_lags(0.5, 0.5, 0.5))}})
    assert "lag unclear at epoch 3 in 1 of 2 (a)" in grouped
    for said in (line, text, grouped):
        assert "no lag" not in said.lower() and "behind at no epoch" not in said
        assert "though" not in said


def test_a_negative_gap_whose_later_epochs_all_tell_says_no_lag_through_the_last():
    trials = study({"timing": -0.5, "mode": 0.0, "generalization": JITTER}, bn=False, epochs=3)
    block = gap_block(trials)
    assert short_line(block).endswith("; no lag through epoch 3.")
    assert block["verdict"]["text"].endswith("Validation is behind training at no epoch "
                                             "through 3.")


def test_the_short_line_of_a_negative_gap_and_of_none():
    below = gap_block(study({"timing": -0.5, "mode": 0.0, "generalization": JITTER}, bn=False))
    # The lag rule holds from epoch 1 ("closed"); validation was never behind: "no lag".
    assert (below["closing"], below["closes_at_epoch"]) == ("closed", 1)
    assert below["closing_reading"] == "no-gap"
    assert "Validation is below training by 0.50" in short_line(below)
    assert short_line(below).endswith("; no lag through epoch 1.")
    assert "closes" not in short_line(below)
    none = gap_block(study({"timing": 0.0, "mode": 0.0, "generalization": JITTER}, bn=False))
    assert short_line(none).startswith("Gap: none. Nothing worth explaining at epoch 1 (")


def test_table_rows_one_per_group_with_the_same_columns():
    rows = gap_table_rows(gap_block(_grouped()))
    assert [r["setting"] for r in rows] == ["adam, bn 0.01", "sgd, dropout 0.5"]
    assert len({tuple(r) for r in rows}) == 1
    assert rows[0]["verdict"] == "normalization-statistics" and rows[1]["trials"] == "3"
    assert {"gap epoch 1", "gap epoch 2", "timing (epoch 1)", "lag"} <= set(rows[0])


def test_table_rows_without_groups_are_one_row_for_all_trials():
    rows = gap_table_rows(gap_block(study({"timing": -0.1, "mode": 0.5,
                                           "generalization": JITTER}, epochs=8)))
    assert [r["setting"] for r in rows] == ["all trials"]
    assert "gap epoch 5" in rows[0] and "gap epoch 6" not in rows[0]  # max_epochs=5


def test_the_short_line_of_a_comparison_gives_each_settings_verdict():
    epochs = [{"epoch": 1}, {"epoch": 2}]
    stats = {"verdict": {"code": "normalization-statistics"}, "epochs": epochs,
             "closes_at_epoch": None}
    block = {"groups": {"adam, bn 0.01, dropout 0": stats,
                        "adam, bn 0.1, dropout 0": {"verdict": {"code": "none"},
                                                    "epochs": epochs, "closes_at_epoch": 1},
                        "sgd, bn 0.01, dropout 0": {**stats, "closing": "unclear"}},
             "verdict": {"code": "inconclusive"}}
    assert short_line(block) == (
        "Gap by setting: normalization-statistics in 2 of 3 (adam, bn 0.01, dropout 0; sgd, bn "
        "0.01, dropout 0), none in 1 of 3 (adam, bn 0.1, dropout 0); lag not closed by epoch 2 "
        "in 1 of 3 (adam, bn 0.01, dropout 0), lag closes at epoch 1 in 1 (adam, bn 0.1, "
        "dropout 0), lag unclear at epoch 2 in 1 (sgd, bn 0.01, dropout 0).")


def test_a_lag_shown_above_the_threshold_at_the_last_epoch_is_open():
    block = gap_block(_lags(0.5, 0.3))
    assert (block["closes_at_epoch"], block["closing"]) == (None, "open")
    assert block["closing_reading"] == "open"


def test_a_lag_whose_interval_straddles_the_threshold_is_unclear_not_open():
    trials = [GapTrial([record(1, 1.0, 0.5, 0.0, 0.0), record(2, 1.0, lag, 0.0, 0.0)],
                       False, False) for lag in (-0.3, 0.3)]
    block = gap_block(trials)
    assert (block["closes_at_epoch"], block["closing"]) == (None, "unclear")
    assert "unclear at epoch 2" in short_line(block)
    assert "cannot be told" in block["verdict"]["text"]


def test_a_gap_that_may_be_negligible_but_is_not_above_training_says_it_does_not_lag():
    """Found by a first user: -0.33 [-0.64, -0.03] read only "may still be negligible"."""
    block = gap_block(study({"timing": spread(-0.33, 0.3), "mode": 0.0,
                             "generalization": 0.0}, bn=False, epochs=2))
    verdict = block["verdict"]
    # A later user: "inconclusive" invited more trials; the answer is "it does not lag".
    assert verdict["code"] == "none" and verdict["try"] == []
    assert verdict["text"].startswith("At epoch 1 validation does not lag training: it is "
                                      "below it, the gap -0.33 (95% CI -0.63 to -0.03); "
                                      "whether by more than 0.05, the smallest gap worth "
                                      "explaining")
    assert short_line(block).startswith("Gap: none. Validation does not lag training at epoch 1 "
                                        "(-0.33 [-0.63, -0.03], below +0.05); ")
    level = gap_block(study({"timing": spread(-0.06, 0.08), "mode": 0.0, "generalization": 0.0},
                            bn=False, epochs=2))  # an interval from below training to level
    assert level["early"]["gap"]["ci95"][0] < 0 < level["early"]["gap"]["ci95"][1] <= 0.05
    assert level["verdict"]["text"].startswith("At epoch 1 validation does not lag training: "
                                               "the gap, ")
    assert level["verdict"]["code"] == "none"
    assert short_line(level).startswith("Gap: none. Validation does not lag training at epoch 1 (")
    above = gap_block(study({"timing": spread(0.05, 0.3), "mode": 0.0, "generalization": 0.0},
                            bn=False))
    assert above["verdict"]["text"].startswith("At epoch 1 the gap, ")
    assert "may still be negligible" in above["verdict"]["text"]


def test_an_unclear_last_epoch_after_validation_below_training_claims_no_lag_closing():
    # Found by a first user: "Whether the lag has closed" after "validation does not lag".
    from study.analysis.gap_closing import Closing
    from study.analysis.gap_text import _closing

    assert _closing(Closing("unclear", last=2, below=True)).startswith(
        "Lag unclear at epoch 2: whether validation lags training at epoch 2 cannot be told")
    assert _closing(Closing("unclear", last=2, below=False)).startswith(
        "Lag unclear at epoch 2: whether the lag has closed by epoch 2 cannot be told")


def test_settings_of_one_seed_are_one_sample_of_the_pooled_block():
    """Two settings of one replicate pooled: two trials, one training seed, no interval."""
    trials = [GapTrial([record(1, 1.0, 0.5, 0.1, 0.0)], has_batchnorm=False, has_dropout=False,
                       group=group, seed=7) for group in ("a", "b")]
    pooled = gap_block(trials)
    assert (pooled["early"]["n"], pooled["early"]["seeds"]) == (2, 1)
    assert pooled["early"]["gap"]["ci95"] == [None, None]
    assert pooled["verdict"]["text"].startswith("The 2 trials that reached epoch 1 share one "
                                                "training seed: ")
    assert "seeds" not in pooled["groups"]["a"]["early"]  # one trial per seed there


def test_a_carrier_larger_than_the_gap_names_the_rest_of_the_parts_signed():
    """Found by a first user: "validation is 1.13 above training; the BatchNorm statistics
    carry 1.86" needs the negative timing part to add up; a later one read "BatchNorm
    statistics takes 0.061 off it" of a part of +0.061: the rest is given with its signs."""
    block = gap_block(study({"timing": -0.73, "mode": 1.86, "generalization": JITTER}))
    assert block["verdict"]["code"] == "normalization-statistics"
    assert (", more than the whole gap (the rest: epoch averaging -0.73, generalization "
            "(overfitting) 0.00): ") in block["verdict"]["text"]
    within = gap_block(study({"timing": 0.1, "mode": 0.5, "generalization": JITTER}))
    assert within["verdict"]["code"] == "normalization-statistics"
    assert "more than the whole gap" not in within["verdict"]["text"]


def test_a_negative_carrier_larger_than_the_gap_gives_the_positive_rest_with_plus_signs():
    """The user's line: validation below training by 0.41, epoch averaging -0.50, BatchNorm
    +0.061 and generalization +0.032."""
    block = gap_block(study({"timing": [-0.51, -0.50, -0.49], "mode": 0.061,
                             "generalization": 0.032}))
    line = short_line(block)
    assert block["verdict"]["code"] == "epoch-averaging"
    assert ("more than the whole gap (the rest: BatchNorm statistics +0.061, generalization "
            "(overfitting) +0.032)") in line, line
    assert "off it" not in line and "takes" not in line


def test_unequal_clusters_keep_the_trial_mean_and_its_count():
    """A seed that lost one of its settings: the estimate stays the mean of the trials shown
    (n = 3), the interval is the clusters' (2 seeds)."""
    gaps = {("a", 1): 1.0, ("b", 1): 0.2, ("a", 2): 1.0}
    trials = [GapTrial([record(1, 1.0, gap, 0.0, 0.0)], has_batchnorm=False, has_dropout=False,
                       group=group, seed=seed) for (group, seed), gap in gaps.items()]
    early = gap_block(trials)["early"]
    assert (early["n"], early["seeds"]) == (3, 2)
    assert early["timing"]["estimate"] == pytest.approx((1.0 + 0.2 + 1.0) / 3)
    assert early["timing"]["ci95"][0] is not None


def test_trials_without_a_recorded_seed_are_each_their_own_sample():
    """train_seed is a nullable integer column: a missing one is pandas' NA, never one
    shared seed."""
    import pandas as pd

    from study.analysis.gap_source import gap_trials

    curve = [{"epoch": 1, "loss": 1.0, "data_loss": 1.0, "penalty": 0.0, "val_loss": 1.5,
              "gap_timing": 0.1, "gap_mode": 0.0, "gap_generalization": 0.4}]
    table = pd.DataFrame({"state": ["COMPLETE"] * 3, "gap_curve": [curve] * 3,
                          "train_seed": pd.array([None, None, 5], dtype="Int64")})
    assert [t.seed for t in gap_trials(table)] == [None, None, 5]


def _level_then_lagging(data_loss: float = 1.0) -> list[GapTrial]:
    """The user's setting (adam, bn 0.01, dropout 0): the gap about 0 at epoch 1, then a lag
    of 0.13 (BatchNorm +0.19, timing -0.06) at epochs 2-4, against a threshold of 0.05."""
    return [GapTrial([record(1, data_loss, -0.186, 0.2 + j, 0.0),
                      *(record(e, data_loss, -0.06, 0.19 + j, 0.0) for e in (2, 3, 4))],
                     has_batchnorm=True, has_dropout=False) for j in JITTER]


def test_none_at_epoch_1_with_a_lag_open_later_says_so_and_gives_its_parts_advice():
    """Found by a user: verdict none, nothing to try, beside "has not caught up by epoch 4"
    (lag +0.129 [+0.121, +0.138] against 0.052, BatchNorm +0.192). The code stays the
    window's (epoch 1 has nothing to explain); the words and the advice are the lag's."""
    block = gap_block(_level_then_lagging())
    verdict = block["verdict"]
    assert verdict["code"] == "none" and block["closing"] == "open"
    assert verdict["text"].endswith("But a lag opens after epoch 1: at epoch 4 it is +0.13 "
                                    "[+0.11, +0.15], above the threshold 0.05, carried by "
                                    "BatchNorm statistics (+0.19 [+0.17, +0.21]).")
    assert verdict["try"][0].startswith("a higher BatchNorm momentum")
    assert short_line(block).endswith("; a lag opens after it: lag not closed by epoch 4, "
                                      "carried by BatchNorm statistics there.")


def test_none_with_a_lag_that_closes_later_gives_no_advice():
    trials = [GapTrial([record(1, 1.0, -0.2, 0.2 + j, 0.0), record(2, 1.0, -0.06, 0.19 + j, 0.0),
                        record(3, 1.0, 0.0, j, 0.0)], has_batchnorm=True, has_dropout=False)
              for j in JITTER]
    block = gap_block(trials)
    assert block["verdict"]["code"] == "none" and block["verdict"]["try"] == []
    assert "opens after" not in block["verdict"]["text"] + short_line(block)
