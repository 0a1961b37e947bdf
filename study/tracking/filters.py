"""Tag values in MLflow search filters, quoted so that any study name works (``o'brien``).

MLflow's filter grammar (``mlflow.utils.search_utils.SearchUtils``, tokenized by ``sqlparse``)
takes a string value in single or double quotes and only strips them: it knows no escape, so a
doubled quote (``'o''brien'``) or a backslash (``'o\\'brien'``) stays in the value compared. A
value is therefore put in the quote kind it does not contain; one that contains both kinds
cannot be written exactly and becomes a ``LIKE`` pattern matching a superset of runs (each quote
and backslash a one-character wildcard), which :func:`tags_match` then narrows to exact matches.

Imports nothing of MLflow: the analysis builds filters without loading it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["is_exact", "tag_equals", "tags_match"]


def is_exact(value: str) -> bool:
    """Whether ``tags.x = <value>`` can be written exactly (the value lacks a quote kind)."""
    return "'" not in value or '"' not in value


def tag_equals(key: str, value: str) -> str:
    """A filter clause matching the runs whose tag ``key`` is ``value``.

    Exact when :func:`is_exact`; else a ``LIKE`` clause matching a superset of those runs, to be
    narrowed with :func:`tags_match`.

    Args:
        key: The tag name (written in backticks; it must not contain one).
        value: The tag value, any string.

    Returns:
        A clause such as ``tags.`study.name` = "o'brien"``.

    Raises:
        ValueError: ``key`` contains a backtick.
    """
    if "`" in key:
        raise ValueError(f"`key` must be a tag name without '`', but got key={key!r}.")
    if "'" not in value:
        return f"tags.`{key}` = '{value}'"
    if '"' not in value:
        return f'tags.`{key}` = "{value}"'
    # PostgreSQL and MySQL read a backslash in a LIKE pattern as an escape: a wildcard too.
    pattern = "".join("_" if c in "\"\\" else c for c in value)
    return f"tags.`{key}` LIKE '{pattern.replace(chr(39), '_')}'"


def tags_match(run: Any, tags: Mapping[str, str]) -> bool:
    """Whether ``run`` (an MLflow ``Run``) carries every tag of ``tags`` with exactly that value."""
    have = run.data.tags
    return all(have.get(key) == value for key, value in tags.items())
