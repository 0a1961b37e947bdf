"""Tests of study.training.diagnostics: each code just on both sides of its threshold, plus real
runs.

Constructed curves hold ``val_loss == data_loss`` and ``penalty == 0`` unless a test says
otherwise, so only the rule under test can fire. The two real runs train width-4 CNNs on the 8x8
digits for 3 epochs (well under a second each on one CPU thread).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import types
from collections.abc import Iterator

import pytest
import torch

import study.training.diagnostics as diagnostics
from study.errors import ConfigError
from study.keys import CURVE_FIELDS
from study.training import curve_record, curve_rows
from study.training.data import TensorData, load_dataset
from study.training.diagnostics import CODES, FIELDS, Diagnosis, diagnose
from study.training.trainer import EpochReport, HParams, Trainer


def _row(data: float, *, penalty: float = 0.0, val: float | None = None,
         acc: float = 0.9) -> dict[str, float]:
    """One epoch: total loss = data + penalty; validation equals the data loss by default."""
    return {"loss": data + penalty, "data_loss": data, "penalty": penalty,
            "val_loss": data if val is None else val, "val_accuracy": acc}


def _curve(*data: float, **kwargs) -> list[dict[str, float]]:
    return [_row(d, **kwargs) for d in data]


def _codes(curve, **kwargs) -> tuple[str, ...]:
    return diagnose(curve, **kwargs).codes


# --- the module's surface -----------------------------------------------------------------------


def test_fields_mirror_the_objective_curve_fields():
    assert FIELDS == CURVE_FIELDS


def test_module_imports_neither_optuna_mlflow_nor_torch():
    tree = ast.parse(inspect.getsource(diagnostics))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"optuna", "mlflow", "torch"}


def test_module_docstring_documents_every_code_and_threshold():
    doc = diagnostics.__doc__
    for name in (*CODES, "EXPLODE_FACTOR", "RISE_TOL", "NOISE_FLOOR", "STALL_TOL", "GAP_FACTOR",
                 "GAP_MARGIN", "LAG_FACTOR"):
        assert name in doc


def test_healthy_curve_has_no_code_and_an_empty_detail():
    curve = [_row(2.0, penalty=0.05, val=1.9), _row(1.2, penalty=0.06, val=1.1),
             _row(0.8, penalty=0.07, val=0.85)]
    result = diagnose(curve, n_classes=10)
    assert result == Diagnosis((), "")
    assert result.tag_value() == ""


def test_empty_curve_is_an_empty_diagnosis_unless_training_stopped_on_a_non_finite_loss():
    assert diagnose([]) == Diagnosis()
    result = diagnose([], non_finite=True)
    assert result.codes == ("diverged",)
    assert "after 0 finite epoch(s)" in result.detail


def test_diagnosis_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Diagnosis().codes = ("stalled",)  # type: ignore[misc]


# --- diverged ------------------------------------------------------------------------------------


def test_non_finite_flag_gives_diverged_even_on_a_healthy_curve():
    result = diagnose(_curve(2.0, 1.0, 0.5), non_finite=True)
    assert result.codes == ("diverged",)
    assert result.tag_value() == "diverged"


@pytest.mark.parametrize("field", ["loss", "data_loss", "penalty", "val_loss"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, None])
def test_a_non_finite_loss_value_gives_diverged(field, bad):
    curve = _curve(2.0, 1.0, 0.5)
    curve[1][field] = bad
    result = diagnose(curve)
    assert result.codes == ("diverged",)
    assert f"{field} is nan at epoch 2" in result.detail or f"{field} is inf at epoch 2" in \
        result.detail


@pytest.mark.parametrize(("last", "diverged"), [(6.1, True), (5.9, False)])
def test_loss_above_three_times_the_first_epoch_diverges(last, diverged):
    result = diagnose(_curve(2.0, 1.0, last))
    assert ("diverged" in result.codes) is diverged
    if diverged:  # diverged excludes the loss-rising it would otherwise also be
        assert result.codes == ("diverged",)
        assert "loss 6.1 at epoch 3 exceeds 3x the first epoch's 2" in result.detail
    else:
        assert result.codes == ("loss-rising",)


@pytest.mark.parametrize(("first", "diverged"), [(6.95, True), (6.85, False)])
def test_data_loss_above_three_times_chance_diverges_when_n_classes_is_given(first, diverged):
    curve = _curve(first, 3.0, 1.5)  # 3 x ln(10) = 6.908
    assert _codes(curve, n_classes=10) == (("diverged",) if diverged else ())
    assert _codes(curve) == ()  # without n_classes the first epoch is the reference


def test_diverged_excludes_every_other_code():
    curve = [_row(1.0, val=1.0), _row(0.5, penalty=1.0, val=5.0), _row(4.0, penalty=2.0, val=9.0)]
    assert _codes(curve) == ("diverged",)


# --- loss-rising, stalled ------------------------------------------------------------------------


@pytest.mark.parametrize(("last", "codes"), [(1.11, ("loss-rising",)), (1.09, ())])
def test_loss_rising_needs_ten_percent_above_the_best_earlier_epoch(last, codes):
    result = diagnose(_curve(2.0, 1.0, last))
    assert result.codes == codes
    if codes:
        assert "from its best 1 (epoch 2) to 1.11 (epoch 3), +11.0% > 10%" in result.detail


@pytest.mark.parametrize(("last", "codes"), [(0.062, ("loss-rising",)), (0.058, ())])
def test_loss_rising_ignores_rises_below_the_noise_floor(last, codes):
    # both rises exceed 10 % of the best loss 0.05; only the first exceeds 0.01 nats
    assert _codes(_curve(0.5, 0.05, last)) == codes


def test_loss_rising_excludes_stalled():
    assert _codes(_curve(1.0, 0.5, 1.2)) == ("loss-rising",)


@pytest.mark.parametrize(("last", "codes"), [(1.97, ("stalled",)), (1.95, ())])
def test_stalled_below_a_two_percent_decrease(last, codes):
    result = diagnose(_curve(2.0, last))
    assert result.codes == codes
    if codes:
        assert "fell only 1.5% (< 2%) from 2 to 1.97 over 2 epochs" in result.detail


def test_stalled_reads_the_total_loss():
    # the data loss halves but a growing penalty keeps the reported loss flat
    curve = [_row(1.0, penalty=0.1), _row(0.5, penalty=0.6)]
    assert _codes(curve) == ("stalled", "penalty-dominated")


# --- penalty-dominated, generalization-gap, slow-validation --------------------------------------


@pytest.mark.parametrize(("penalty", "codes"), [(0.51, ("penalty-dominated",)), (0.49, ())])
def test_penalty_dominated_when_the_last_penalty_exceeds_the_data_loss(penalty, codes):
    curve = [_row(2.0, penalty=0.1), _row(1.0, penalty=0.3), _row(0.5, penalty=penalty)]
    result = diagnose(curve)
    assert result.codes == codes
    if codes:
        assert "penalty 0.51 exceeds the data loss 0.5 at epoch 3 (50% of the loss)" in \
            result.detail


def test_penalty_dominated_needs_a_positive_penalty():
    assert _codes([_row(1.0), _row(0.0, penalty=0.0)]) == ()


@pytest.mark.parametrize(("val", "codes"), [(0.61, ("generalization-gap",)), (0.59, ())])
def test_generalization_gap_above_one_and_a_half_times_the_data_loss(val, codes):
    curve = [_row(2.0), _row(1.0), _row(0.4, penalty=0.3, val=val)]
    result = diagnose(curve)  # val compares with the data loss 0.4, not the total 0.7
    assert result.codes == codes
    if codes:
        assert "val loss 0.61 is 1.52x the data loss 0.4 at epoch 3" in result.detail


@pytest.mark.parametrize(("val", "codes"), [(0.21, ("generalization-gap",)), (0.19, ())])
def test_generalization_gap_needs_an_absolute_margin_at_tiny_losses(val, codes):
    # both are about 2x the data loss 0.1; only the first is more than 0.1 nats above it
    assert _codes([_row(1.0), _row(0.3), _row(0.1, val=val)]) == codes


@pytest.mark.parametrize(("val", "codes"), [(2.01, ("slow-validation",)), (1.99, ())])
def test_slow_validation_when_early_val_is_twice_the_data_loss_and_closes(val, codes):
    curve = [_row(1.0, val=val), _row(0.6, val=0.8), _row(0.4, val=0.45)]
    result = diagnose(curve)
    assert result.codes == codes
    if codes:
        assert ("val loss averaged 2.01x the data loss over the first 1 epoch(s) (2.01 vs 1) "
                "and closed to 1.12x by epoch 3") in result.detail


def test_slow_validation_averages_the_first_third_of_a_long_run():
    data = [2.0 * 0.9 ** i for i in range(30)]
    lagging = [_row(d, val=2.2 * d if i < 10 else d) for i, d in enumerate(data)]
    assert _codes(lagging) == ("slow-validation",)
    assert "over the first 10 epoch(s)" in diagnose(lagging).detail
    # one noisy early epoch does not make a lag: the window mean stays below 2x
    spike = [_row(d, val=3.0 * d if i == 2 else d) for i, d in enumerate(data)]
    assert _codes(spike) == ()


def test_a_lag_that_does_not_close_is_a_generalization_gap_not_slow_validation():
    curve = [_row(1.0, val=2.5), _row(0.6, val=1.5), _row(0.4, val=0.7)]
    assert _codes(curve) == ("generalization-gap",)


def _parted(data: float, val: float, *, generalization: float,
            mode: float | None = None) -> dict[str, float]:
    """An epoch with the gap's parts measured: ``val - data`` = timing + mode + generalization
    (the mode part takes what the others leave unless given)."""
    mode = val - data - generalization if mode is None else mode
    return {**_row(data, val=val), "gap_generalization": generalization, "gap_mode": mode,
            "gap_timing": val - data - generalization - mode}


@pytest.mark.parametrize(("generalization", "codes"), [(0.31, ("generalization-gap",)),
                                                       (0.29, ("mode-gap",))])
def test_with_the_parts_measured_the_gap_is_overfitting_only_against_seen_samples(
        generalization, codes):
    # val 0.9 is 2.25x the data loss 0.4 either way; against the eval-mode loss of training
    # samples (0.9 - generalization) it is 1.53x (0.59) or 1.48x (0.61)
    curve = [_row(1.0), _row(0.6), _parted(0.4, 0.9, generalization=generalization)]
    assert _codes(curve) == codes


def test_the_generalization_gap_needs_its_margin_against_seen_samples_too():
    # 2x the eval-mode loss 0.09 of training samples, but only 0.09 nats above it
    curve = [_row(1.0), _row(0.3), _parted(0.05, 0.18, generalization=0.09)]
    assert _codes(curve) == ("mode-gap",)


def test_a_mode_gap_names_the_eval_mode_loss_and_the_parts():
    curve = [_row(1.0), _row(0.6), _parted(0.4, 2.0, generalization=0.05, mode=1.7)]
    result = diagnose(curve)
    assert result.codes == ("mode-gap",)
    assert ("mode-gap: val loss 2 is 5.00x the data loss 0.4 at epoch 3, but only 1.03x the "
            "eval-mode loss 1.95 of the same model on training samples") in result.detail
    assert result.detail.endswith("the gap is mostly the switch to eval mode (parts: mode +1.7, "
                                  "generalization +0.05, timing -0.15).")


def test_a_mode_gap_names_only_the_parts_that_widen_it():
    """Found by a user: 'the switch to eval mode and the epoch mean' with a negative timing."""
    both = diagnose([_row(1.0), _parted(0.4, 2.0, generalization=0.05, mode=1.0)]).detail
    assert "mostly the switch to eval mode and the epoch mean (parts: mode +1, " in both
    timing = diagnose([_row(1.0), _parted(0.4, 2.0, generalization=0.05, mode=-0.1)]).detail
    assert "mostly the epoch mean (parts: mode -0.1, generalization +0.05, timing +1.65)" \
        in timing


def test_a_mode_gap_whose_generalization_part_is_the_largest_does_not_say_mostly():
    """Found in review: 'mostly the switch to eval mode' beside a generalization part of 58%."""
    curve = [_row(1.0), _parted(0.4, 0.9, generalization=0.29, mode=0.11)]
    detail = diagnose(curve).detail
    assert "overfitting: the rest of the gap is the switch to eval mode and the epoch mean " \
        "(parts: mode +0.11, generalization +0.29, timing +0.1)" in detail
    assert "mostly" not in detail


def test_parts_of_any_real_number_type_count_and_non_finite_ones_do_not():
    import numpy as np

    numpy_parts = {**_parted(0.4, 2.0, generalization=0.05, mode=1.7),
                   "gap_generalization": np.float32(0.05)}
    assert _codes([_row(1.0), numpy_parts]) == ("mode-gap",)
    unmeasured = {**_parted(0.4, 2.0, generalization=0.05), "gap_generalization": math.nan}
    assert _codes([_row(1.0), unmeasured]) == ("generalization-gap",)  # the rule without parts


def test_a_generalization_gap_with_the_parts_names_the_seen_samples_loss():
    result = diagnose([_row(1.0), _row(0.6), _parted(0.4, 2.0, generalization=1.5)])
    assert result.codes == ("generalization-gap",)
    assert ("val loss 2 is 5.00x the data loss 0.4 at epoch 3, and 4.00x the eval-mode loss "
            "0.5 of training samples") in result.detail


def test_a_lag_that_stays_in_eval_mode_is_a_mode_gap_not_slow_validation():
    curve = [_parted(1.0, 2.5, generalization=0.0), _row(0.6, val=1.5),
             _parted(0.4, 1.2, generalization=0.02)]
    assert _codes(curve) == ("mode-gap",)


def test_validation_below_training_early_is_healthy():
    # end-of-epoch eval vs an epoch-mean training loss: validation often starts BELOW training
    assert _codes([_row(2.0, val=1.2), _row(1.0, val=0.8), _row(0.6, val=0.6)]) == ()


# --- combinations, input forms, bad input ---------------------------------------------------------


def test_one_epoch_can_only_be_diverged_penalty_dominated_or_generalization_gap():
    one = [_row(0.5, penalty=0.8, val=3.0)]
    assert _codes(one) == ("penalty-dominated", "generalization-gap")
    assert _codes([_row(2.3)]) == ()
    assert _codes([_row(7.0)], n_classes=10) == ("diverged",)


def test_codes_follow_the_codes_order_and_detail_names_each():
    curve = [_row(1.0, penalty=0.9, val=1.0), _row(0.5, penalty=1.4, val=2.0)]
    result = diagnose(curve)
    assert result.codes == ("stalled", "penalty-dominated", "generalization-gap")
    assert result.tag_value() == "stalled,penalty-dominated,generalization-gap"
    positions = [result.detail.index(f"{code}: ") for code in result.codes]
    assert positions == sorted(positions)
    assert result.detail.endswith(".") and result.detail.count(".") >= 1


_CURVES = {
    "healthy": _curve(2.0, 1.0, 0.5),
    "rising": _curve(2.0, 1.0, 1.2),
    "gap": [_row(2.0), _row(1.0), _row(0.4, penalty=0.3, val=0.9)],
    "slow": [_row(1.0, val=2.5), _row(0.6, val=0.8), _row(0.4, val=0.45)],
    "nan": [_row(2.0), _row(math.nan)],
}


@pytest.mark.parametrize("name", sorted(_CURVES))
def test_mapping_sequence_and_attribute_rows_give_the_same_diagnosis(name):
    curve = _CURVES[name]
    expected = diagnose(curve)
    assert diagnose([[row[f] for f in FIELDS] for row in curve]) == expected
    assert diagnose([tuple(row[f] for f in FIELDS) for row in curve]) == expected
    assert diagnose([types.SimpleNamespace(**row) for row in curve]) == expected
    assert diagnose([{**row, "extra": 1.0} for row in curve]) == expected


@pytest.mark.parametrize("row", [
    [1.0, 1.0, 0.0, 1.0],
    [1.0, 1.0, 0.0, 1.0, 0.5, 9.9],
    {"loss": 1.0, "data_loss": 1.0, "penalty": 0.0, "val_loss": 1.0},
    [1.0, "abc", 0.0, 1.0, 0.5],
    "1,1,0,1,0.5",
    3.0,
])
def test_malformed_rows_raise_config_error(row):
    with pytest.raises(ConfigError, match=r"curve\[0\]"):
        diagnose([row])


@pytest.mark.parametrize("n_classes", [1, 0, True, 2.5, "10"])
def test_bad_n_classes_raises_a_value_error(n_classes):
    with pytest.raises(ValueError, match="n_classes"):
        diagnose(_curve(1.0), n_classes=n_classes)


# --- real training runs --------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Width-4 convolutions are too small to split; one thread is faster (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits() -> TensorData:
    return load_dataset("digits", seed=0)


def _fit(data: TensorData, lr: float):
    hp = HParams(width=4, lr=lr, batch_size=64, weight_decay=1e-2, penalty_mode="l2-in-loss")
    return Trainer(hp, data, epochs=3, seed=0).fit()


def test_real_healthy_run_has_no_code(digits):
    history = _fit(digits, 1e-2)
    rows = curve_rows(curve_record(history))  # as the objective stores it, read back
    print("lr=1e-2:", [[round(v, 4) for v in row] for row in rows])
    assert diagnose(rows, n_classes=digits.n_classes) == Diagnosis()
    assert diagnose(history) == Diagnosis()  # EpochReport objects work directly


def test_real_lr_5_blows_up_inside_the_first_epoch_and_is_diverged_given_n_classes(digits):
    # Measured (seed 0, 1 thread): no NaN; loss 65.9 -> 13.3 -> 12.1 (data 8.96 -> 3.46 -> 3.59,
    # penalty 56.9 -> 8.5), val accuracy ~0.10 = chance. Adam at lr=5 blows the loss up within
    # the first epoch's batches, then the loss FALLS: at epoch granularity nothing rises, and
    # only the chance-level check (first data loss > 3 x ln 10 = 6.9) sees the divergence.
    history = _fit(digits, 5.0)  # fit() did not raise NonFiniteLossError
    rows = [[getattr(r, f) for f in CURVE_FIELDS] for r in history]
    print("lr=5:", [[round(v, 4) for v in row] for row in rows])
    assert history[0].data_loss > 3 * math.log(digits.n_classes)
    assert history[-1].loss < history[0].loss
    assert all(r.val_accuracy < 0.2 for r in history)
    result = diagnose(rows, n_classes=digits.n_classes)
    assert result.codes == ("diverged",)
    assert "exceeds 3x chance ln(10)" in result.detail
    assert "diverged" not in diagnose(rows).codes  # the documented blind spot without n_classes


def _vgg(data: TensorData, *, bn_momentum: float = 0.1, epochs: int = 2):
    hp = HParams(width=8, lr=3e-3, batch_size=64, weight_decay=0.0, penalty_mode="none",
                 bn_momentum=bn_momentum)
    return Trainer(hp, data, model_name="vgg", epochs=epochs, seed=0).fit()


def test_real_keras_batchnorm_momentum_gives_a_mode_gap_not_overfitting(digits):
    # Measured (seed 0, 1 thread): data 0.26, val 2.29 at epoch 2; mode +2.18, generalization
    # +0.001: BatchNorm's running statistics lag under Keras's momentum (0.99 = PyTorch's 0.01).
    history = _vgg(digits, bn_momentum=0.01)
    assert history[-1].gap_mode > 1.0 > 0.1 > abs(history[-1].gap_generalization)
    assert diagnose(history).codes == ("mode-gap",)
    assert diagnose(curve_record(history)).codes == ("mode-gap",)  # the stored curve too
    # the same gap without its parts reads as overfitting: what the parts are for
    assert diagnose(curve_rows(curve_record(history))).codes == ("generalization-gap",)
    assert diagnose(_vgg(digits, bn_momentum=0.1)).codes == ()  # PyTorch's momentum: no gap


def test_real_memorizing_forty_samples_gives_a_generalization_gap(digits):
    # Measured (seed 0, 1 thread): data 0.23, val 1.27 after 15 epochs; generalization +1.06
    few = dataclasses.replace(digits, x_train=digits.x_train[:40], y_train=digits.y_train[:40])
    hp = HParams(width=16, lr=1e-2, batch_size=16, weight_decay=0.0, penalty_mode="none")
    history = Trainer(hp, few, epochs=15, seed=0).fit()
    assert history[-1].gap_generalization > 0.5
    assert diagnose(history).codes == ("generalization-gap",)


def test_the_stored_curve_is_labelled_and_reads_back_as_rows():
    reports = [EpochReport(epoch=e, loss=2.0 / e, data_loss=1.5 / e, penalty=0.5 / e,
                           weight_sq_norm=50.0, val_loss=2.1 / e, val_accuracy=0.3 * e,
                           samples_per_s=1e3, seconds=1.0) for e in (1, 2)]
    record = curve_record(reports)
    assert record[1] == {"epoch": 2, "loss": 1.0, "data_loss": 0.75, "penalty": 0.25,
                         "val_loss": 1.05, "val_accuracy": 0.6}
    assert curve_rows(record) == [[2.0, 1.5, 0.5, 2.1, 0.3], [1.0, 0.75, 0.25, 1.05, 0.6]]
    assert curve_rows([[1.0, 0.9, 0.1, 1.2, 0.5]]) == [[1.0, 0.9, 0.1, 1.2, 0.5]]  # old format
    assert curve_rows(None) is None and curve_rows([]) is None and curve_rows([1, 2]) is None
