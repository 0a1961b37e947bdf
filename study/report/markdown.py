"""Render report blocks as GitHub-flavoured Markdown, figures referenced as relative files.

Text from the data is HTML-escaped (a Markdown viewer passes raw HTML through) and Markdown's
punctuation is backslash-escaped, so a parameter or mode name cannot inject markup.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any

from study.report.blocks import (
    Bullets,
    Code,
    Details,
    FigureRef,
    Heading,
    Inline,
    KeyValues,
    Para,
    Table,
    Verdict,
)

__all__ = ["md_text", "render_markdown"]

_SPECIAL = re.compile(r"([\\`*_\[|#~])")  # "[" escaped: no link or image can form


def render_markdown(title: str, blocks: list[Any], figure_paths: Mapping[str, str]) -> str:
    """The Markdown document; ``figure_paths`` maps a figure name to its relative path."""
    del title  # the first block is the title heading
    chunks = [_block(b, figure_paths) for b in blocks]
    chunks.append("_Written by study.report._")
    return "\n\n".join(c for c in chunks if c) + "\n"


def md_text(value: Any) -> str:
    """Plain text safe in Markdown: one line, HTML-escaped, Markdown punctuation escaped."""
    one_line = re.sub(r"\s+", " ", str(value))
    escaped = html.escape(one_line, quote=False)
    # html.escape produced &lt; &gt; &amp;: escape the rest, not the entities' '&' and ';'.
    return _SPECIAL.sub(r"\\\1", escaped)


def _code(value: str) -> str:
    one_line = " ".join(value.split()).replace("|", "\\|")
    longest = max((len(m) for m in re.findall(r"`+", one_line)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if one_line.startswith("`") or one_line.endswith("`") else ""
    return f"{fence}{pad}{one_line}{pad}{fence}"


def _inline(parts: list[Inline]) -> str:
    return "".join(_code(p.text) if isinstance(p, Code) else md_text(p) for p in parts)


def _block(block: Any, figure_paths: Mapping[str, str]) -> str:
    if isinstance(block, Heading):
        return "#" * block.level + " " + md_text(block.text)
    if isinstance(block, Para):
        out = _inline(block.parts)
        return f"_{out}_" if block.css == "note" and out else out
    if isinstance(block, Verdict):
        if block.lines:
            rows = "\n".join(f"- **{md_text(label)}: {_code(code)}** {md_text(sentence)}"
                             for label, code, sentence in block.lines)
            return f"{rows}\n\n> {md_text(block.text)}" if block.text else rows
        return f"**Verdict: {_code(block.code)}**\n\n> {md_text(block.text)}"
    if isinstance(block, KeyValues):
        return "\n".join(f"- **{md_text(k)}:** {_inline([v])}" for k, v in block.items)
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Bullets):
        return "\n".join(f"- {_inline(item)}" for item in block.items)
    if isinstance(block, FigureRef):
        path = figure_paths.get(block.name)
        if not path:
            return f"_Figure {md_text(block.name)} is not available._"
        return f"![{md_text(block.alt)}]({path})\n\n_{md_text(block.caption)}_"
    if isinstance(block, Details):
        inner = "\n\n".join(_block(b, figure_paths) for b in block.blocks)
        return f"**{md_text(block.summary)}**\n\n{inner}"
    raise TypeError(f"unknown report block {type(block).__name__}")


def _table(table: Table) -> str:
    head = "| " + " | ".join(md_text(h) for h in table.headers) + " |"
    rule = "|" + "|".join("---:" if j in table.numeric else "---"
                          for j in range(len(table.headers))) + "|"
    rows = []
    for i, row in enumerate(table.rows):
        cells = [_inline([c]) for c in row]
        if i in table.highlight:
            cells = [f"**{c}**" if c else c for c in cells]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows])
