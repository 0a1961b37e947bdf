"""Fixtures of the doctor's tests: digits as a study loads it, and the inputs of a check."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from study.doctor.base import DoctorInputs
from study.training import HParams, load_dataset

# The configuration a user starts from: `study trial`'s defaults.
DEFAULT_HP = HParams(width=16, lr=1e-3, batch_size=64, weight_decay=1e-4)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Small convolutions do not split well: two threads spin-wait on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits_data():
    """Clean digits, split and standardized as a study does (seed 0)."""
    return load_dataset("digits", seed=0)


@pytest.fixture
def clean_inputs(digits_data) -> DoctorInputs:
    """The doctor's inputs on clean digits with the default configuration."""
    return DoctorInputs(digits_data, DEFAULT_HP, seed=0)
