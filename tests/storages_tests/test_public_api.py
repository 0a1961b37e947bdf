"""The service's storage class changes Optuna's ``RDBStorage`` through public methods only
(imports are checked for the whole code base by tests/test_public_apis.py)."""

from __future__ import annotations

import optuna

from study.storages import StudyRDBStorage


def test_the_storage_overrides_no_private_method_of_optunas():
    overridden = {name for name in vars(StudyRDBStorage)
                  if callable(getattr(optuna.storages.RDBStorage, name, None))}
    private = {name for name in overridden
               if name.startswith("_") and not (name.startswith("__") and name.endswith("__"))}
    assert "get_all_trials" in overridden
    assert private == set()
