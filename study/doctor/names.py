"""The checks' names, without torch: the CLI's ``--checks`` validates against them before it
loads anything."""

from __future__ import annotations

__all__ = ["CHECKS"]

CHECKS = ("labels", "preprocessing", "duplicates", "outliers", "init", "overfit-one-batch", "lr",
          "batch-size", "shuffling")
"""The checks in the order of the checklist (and of ``doctor.json``)."""
