"""The attr-bound bench changes only the service's per-trial attr writes, and only while it
measures: checked on the trials a real service run leaves in a tmp SQLite storage."""

from __future__ import annotations

from typing import Any

import pytest

from bench import attr_bound
from bench.floor import SPEC_ATTRS
from bench.harness import Workspace
from bench.overhead import prepare_service, run_service

WIDTHS = (4, 6)
# What the service keeps of its own on a completed trial (beside the SPEC's nine).
OWN = {"worker", "sampler_seed", "train_seed", "hparams", "final_val_loss",
       "final_val_accuracy", "curve"}


def _trials(ws: Workspace, data: Any, variant: str) -> list[Any]:
    import optuna

    config = prepare_service(ws, WIDTHS, "cpu", variant, epochs=1)
    with attr_bound.attr_writes(variant):
        run_service(config, data)
    return optuna.load_study(study_name=config.study_name, storage=config.storage).trials


def test_the_shipped_service_keeps_the_spec_attrs_and_its_own(workspace, data):
    for trial in _trials(workspace, data, "service"):
        assert set(trial.user_attrs) == set(SPEC_ATTRS) | OWN


def test_packed_keeps_the_spec_attrs_and_moves_its_own_into_records(workspace, data):
    for trial in _trials(workspace, data, "packed"):
        records = {k: v for k, v in trial.user_attrs.items() if k.startswith("record_")}
        assert set(trial.user_attrs) - set(records) == set(SPEC_ATTRS)
        assert 1 < len(records) < len(OWN)  # one per moment, fewer than one per attr
        assert set().union(*(r.keys() for r in records.values())) == OWN


def test_no_attrs_writes_none(workspace, data):
    trials = _trials(workspace, data, "no_attrs")
    assert [t.state.name for t in trials] == ["COMPLETE"] * len(WIDTHS)
    assert all(t.user_attrs == {} for t in trials)


def test_the_shipped_writes_are_back_after_a_failure():
    from study.runtime import objective

    shipped = objective.set_user_attrs
    with pytest.raises(RuntimeError, match="inside"), attr_bound.attr_writes("no_attrs"):
        assert objective.set_user_attrs is not shipped
        raise RuntimeError("inside")
    assert objective.set_user_attrs is shipped


@pytest.mark.parametrize(("attrs", "expected"), [
    ({"n_params": 3}, {"n_params": 3}),
    ({"n_params": 3, "worker": "w", "train_seed": 7},
     {"n_params": 3, "record_worker": {"worker": "w", "train_seed": 7}}),
    ({"worker": "w"}, {"record_worker": {"worker": "w"}}),
])
def test_packed_attrs_moves_only_the_keys_the_spec_does_not_name(attrs, expected):
    assert attr_bound.packed_attrs(attrs) == expected


def test_a_run_prints_every_variant_against_the_service(workspace, data):
    result = attr_bound.bench_attr_bound(workspace, data, widths=WIDTHS[:1], repeats=1)
    printed = dict(line.split("=") for line in attr_bound.lines(result))
    for name in attr_bound.VARIANTS:
        assert float(printed[f"attr_bound_{name}_fixed_ms_per_trial"]) > 0
        assert float(printed[f"attr_bound_{name}_wall_s"]) > 0
    assert "attr_bound_no_attrs_fixed_over_service" in printed
    assert "attr_bound_service_fixed_over_service" not in printed
