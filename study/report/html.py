"""Render report blocks as one self-contained HTML5 page.

Images are embedded as ``data:image/png;base64`` URIs and the CSS is inline; the page loads
nothing (a Content-Security-Policy forbids any fetch and any script) and needs no JavaScript.
Every string from the data is escaped with :func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
import re
import struct
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

__all__ = ["render_html"]

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_CSS = """
:root { --fg: #1d2430; --muted: #5b6573; --line: #d8dde5; --bg-alt: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; line-height: 1.45;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1280px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 26px; margin: 0 0 12px; word-break: break-word; }
h2 { font-size: 20px; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 2px solid
  var(--line); }
h3 { font-size: 16px; margin: 24px 0 6px; }
nav { margin: 10px 0 18px; font-size: 14px; }
nav a { margin-right: 14px; color: #2457a6; text-decoration: none; white-space: nowrap;
  display: inline-block; }
nav a:hover { text-decoration: underline; }
code { font: 13px/1.3 ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
  background: var(--bg-alt); padding: 1px 4px; border-radius: 3px; word-break: break-all; }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 4px 18px; margin: 0; }
dl.kv dt { color: var(--muted); }
dl.kv dd { margin: 0; word-break: break-word; }
.note { color: var(--muted); font-size: 13px; }
.verdict { border: 1px solid var(--line); border-left: 6px solid var(--accent, #777);
  border-radius: 6px; padding: 12px 16px; background: var(--bg-alt); }
.verdict .badge { display: inline-block; background: var(--accent, #777); color: #fff;
  font-weight: 600; letter-spacing: .03em; padding: 2px 10px; border-radius: 999px;
  font-size: 13px; text-transform: uppercase; }
.verdict p { margin: 8px 0 0; font-size: 16px; }
.verdict .verdict-line { font-size: 17px; border-left: 6px solid var(--accent, #777);
  padding-left: 8px; }
.verdict .verdict-line .badge { margin-right: 6px; }
.verdict .verdict-detail { font-size: 14px; color: #444; }
.verdict-penalty { --accent: #c0392b; } .verdict-optimization { --accent: #2457a6; }
.verdict-both { --accent: #7d3c98; } .verdict-no-increase { --accent: #1e8449; }
.verdict-inconclusive { --accent: #7f8c8d; } .verdict-not-asked { --accent: #95a5a6; }
.verdict-line.verdict-normalization-statistics { --accent: #b9652a; }
.verdict-line.verdict-dropout { --accent: #6c5a9c; }
.verdict-line.verdict-epoch-averaging { --accent: #2457a6; }
.verdict-line.verdict-overfitting { --accent: #c0392b; }
.verdict-line.verdict-none { --accent: #1e8449; }
.verdict-line.verdict-pass, .verdict-pass { --accent: #1e8449; }
.verdict-line.verdict-warn, .verdict-warn { --accent: #b9770e; }
.verdict-line.verdict-fail, .verdict-fail { --accent: #c0392b; }
ul.items { margin: 4px 0 12px; padding-left: 24px; max-width: 900px; }
ul.items li { margin: 2px 0; }
figure { margin: 12px 0 8px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line);
  border-radius: 4px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 6px; max-width: 900px; }
.table-wrap { overflow-x: auto; margin: 8px 0 12px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 7px; text-align: left;
  vertical-align: top; white-space: nowrap; }
td.wrap { white-space: normal; min-width: 22em; max-width: 40em; }
th { background: var(--bg-alt); font-weight: 600; white-space: nowrap; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafbfc; }
tr.key td { background: #fff6d6; font-weight: 600; }
details { margin: 10px 0; } summary { cursor: pointer; color: var(--muted); }
details.part[open] { border-left: 3px solid var(--line); padding-left: 14px; }
details.part[open] > summary { margin-left: -14px; padding-left: 11px; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
"""


def render_html(title: str, blocks: list[Any], figures: Mapping[str, bytes], *,
                author: str = "study.report") -> str:
    """The page for ``blocks``; ``figures`` maps a :class:`FigureRef` name to PNG bytes;
    ``author`` is the command named in the footer."""
    nav = [f'<a href="#{_attr(b.anchor)}">{_esc(b.text)}</a>' for b in blocks
           if isinstance(b, Heading) and b.level == 2 and b.anchor]
    body = [_block(b, figures) for b in blocks]
    if nav:
        body.insert(2 if len(body) > 1 else 1, "<nav>" + "".join(nav) + "</nav>")
    return "\n".join([
        "<!doctype html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        *body,
        f"<footer>Written by {_esc(author)}: self-contained page, figures embedded.</footer>",
        "</main>",
        "</body>",
        "</html>",
        "",
    ])


def _slug(code: str) -> str:
    return re.sub(r"[^a-z0-9-]", "", re.sub(r"\s+", "-", code.strip().lower()))


def _verdict(block: Verdict) -> str:
    """One badge and sentence per question, then the detail in smaller print."""
    if not block.lines:
        return (f'<div class="verdict verdict-{_slug(block.code)}" id="verdict-box">'
                f'<span class="badge">{_esc(block.code)}</span>'
                f'<p class="verdict-text" id="verdict-text">{_esc(block.text)}</p></div>')
    rows = "".join(
        f'<p class="verdict-line verdict-{_slug(code)}" data-question="{_attr(label)}">'
        f'<span class="badge">{_esc(label)}: {_esc(code)}</span> {_esc(sentence)}</p>'
        for label, code, sentence in block.lines)
    # Each line carries its own code's colour; the box, holding several codes, stays neutral.
    detail = (f'<p class="verdict-text verdict-detail" id="verdict-text">{_esc(block.text)}</p>'
              if block.text else "")
    return f'<div class="verdict" id="verdict-box">{rows}{detail}</div>'


def _block(block: Any, figures: Mapping[str, bytes]) -> str:
    if isinstance(block, Heading):
        anchor = f' id="{_attr(block.anchor)}"' if block.anchor else ""
        return f"<h{block.level}{anchor}>{_esc(block.text)}</h{block.level}>"
    if isinstance(block, Para):
        css = f' class="{_attr(block.css)}"' if block.css else ""
        return f"<p{css}>{_inline(block.parts)}</p>"
    if isinstance(block, Verdict):
        return _verdict(block)
    if isinstance(block, KeyValues):
        items = "".join(f"<dt>{_esc(k)}</dt><dd>{_inline([v])}</dd>" for k, v in block.items)
        return f'<dl class="kv">{items}</dl>'
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Bullets):
        items = "".join(f"<li>{_inline(item)}</li>" for item in block.items)
        return f'<ul class="items">{items}</ul>'
    if isinstance(block, FigureRef):
        return _figure(block, figures.get(block.name))
    if isinstance(block, Details):
        inner = "\n".join(_block(b, figures) for b in block.blocks)
        css = f' class="{_attr(block.css)}"' if block.css else ""
        return (f"<details{css}><summary>{_esc(block.summary)}</summary>\n{inner}\n"
                "</details>")
    raise TypeError(f"unknown report block {type(block).__name__}")


def _table(table: Table) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in table.headers)
    lines = []
    for i, row in enumerate(table.rows):
        cells = "".join(f"<td{_td_class(table, j)}>{_inline([c])}</td>"
                        for j, c in enumerate(row))
        css = ' class="key"' if i in table.highlight else ""
        lines.append(f"<tr{css}>{cells}</tr>")
    body = "\n".join(lines)
    return (f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>\n'
            f"<tbody>\n{body}\n</tbody></table></div>")


def _td_class(table: Table, column: int) -> str:
    if column in table.numeric:
        return ' class="num"'
    return ' class="wrap"' if column in table.wrap else ""


def _figure(ref: FigureRef, png: bytes | None) -> str:
    if not png:
        return f'<p class="note">Figure {_esc(ref.name)} is not available.</p>'
    size = ""
    if png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) >= 24:
        width, height = struct.unpack(">II", png[16:24])
        size = f' width="{width}" height="{height}"'
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure id="figure-{_attr(ref.name)}"><img src="data:image/png;base64,{data}" '
            f'alt="{_attr(ref.alt)}"{size}><figcaption>{_esc(ref.caption)}</figcaption>'
            "</figure>")


def _inline(parts: list[Inline]) -> str:
    return "".join(f"<code>{_esc(p.text)}</code>" if isinstance(p, Code) else _esc(p)
                   for p in parts)


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=False)


def _attr(value: Any) -> str:
    return html.escape(str(value), quote=True)
