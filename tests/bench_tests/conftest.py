"""What the bench's tests share: a workspace of fresh stores and the digits data, per module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bench.harness import Workspace


@pytest.fixture(scope="module")
def workspace() -> Iterator[Workspace]:
    """A temporary folder with a migrated MLflow template database, removed after the module."""
    ws = Workspace()
    yield ws
    ws.close()


@pytest.fixture(scope="module")
def data() -> Any:
    """The digits dataset as the bench trains on it (seed 0, CPU)."""
    import torch

    from study.training.data import load_dataset

    return load_dataset("digits", seed=0, device=torch.device("cpu"))
