"""Turning raw setting values (flag strings, MLproject text, file values) into field types."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from study._validation import fail

__all__ = ["as_bool", "as_float", "as_int", "as_list"]


def as_int(name: str, value: Any) -> int:
    """An int from an int, a whole float, or text such as "3" or "3.0"."""
    if isinstance(value, bool):
        fail(name, value, "an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
        try:  # "3.0": MLproject numbers are typed float, and 3.0 itself is accepted above
            number = float(value.strip())
        except ValueError:
            pass
        else:
            if number.is_integer():
                return int(number)
    fail(name, value, "an integer")
    raise AssertionError  # unreachable: fail() raises


def as_bool(name: str, value: Any) -> bool:
    """A bool from a bool or text such as "true", "0", "yes", "off"."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    fail(name, value, "true or false")
    raise AssertionError


def as_float(name: str, value: Any) -> float:
    """A float from a number or its text (bools refused)."""
    if isinstance(value, bool):
        fail(name, value, "a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        fail(name, value, "a number")
    raise AssertionError


def as_list(value: Any) -> list[Any]:
    """Items of comma-separated text, of an iterable, or the one value."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, Iterable):
        return list(value)
    return [value]
