"""The renderer-neutral blocks a report is made of; the HTML and Markdown renderers draw the
same blocks, so both say the same thing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Bullets", "Code", "Details", "FigureRef", "Heading", "Inline", "KeyValues", "Para",
           "Table", "Verdict"]


@dataclass(frozen=True)
class Code:
    """Inline code (formulas, coefficient and parameter names)."""

    text: str


Inline = str | Code


@dataclass
class Heading:
    level: int
    text: str
    anchor: str | None = None


@dataclass
class Para:
    parts: list[Inline]
    css: str | None = None  # "note" for small print


@dataclass
class Verdict:
    """The verdict box: one line per question (label, code, plain sentence), then the
    detail; ``code`` is the early window's (the box's colour when it has no lines)."""

    code: str
    text: str
    lines: tuple[tuple[str, str, str], ...] = ()


@dataclass
class Bullets:
    """A bulleted list, one line of inline parts per item."""

    items: list[list[Inline]]


@dataclass
class KeyValues:
    items: list[tuple[str, Inline]]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Inline]]
    numeric: frozenset[int] = frozenset()
    highlight: frozenset[int] = frozenset()
    wrap: frozenset[int] = frozenset()  # long free-text columns (others do not wrap)


@dataclass
class FigureRef:
    name: str  # key of the figure (file figures/<name>.png)
    alt: str
    caption: str


@dataclass
class Details:
    summary: str
    blocks: list[Any] = field(default_factory=list)
    css: str | None = None  # "part" for one part of a section (indented when open)
